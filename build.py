"""paddy kernel kit: build -> dry-run -> push a fastai Kaggle code-competition kernel.

    python build.py build   [--out build] [--weights FILE] [--wheel FILE ...] [--user NAME]
    python build.py dry-run [--data DIR] [--out build] [--field value ...]
    python build.py push    [--out build] [--weights FILE] [--timeout SECONDS]
    python build.py status  [--build build]
    python build.py output  [--wait] [--out DIR] [--build build] [--timeout SECONDS]

A thin CLI: the work lives in kit/ (bundle, notebook, dryrun, push) and kernel/ (what runs on Kaggle).
"""
import argparse
from pathlib import Path

from kernel.errors import cli


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="build.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="the Kaggle dataset (wheels, weights) and kernel notebook, under --out")
    d = sub.add_parser("dry-run", help="build, then execute the built notebook here on CPU")
    u = sub.add_parser("push", help="build, then create/version the dataset and push the kernel")
    for s in (b, d, u):
        s.add_argument("--out", default="build", help="build folder (default: build)")
        s.add_argument("--weights", help="pretrained weights file to ship in the dataset")
        s.add_argument("--user", help="Kaggle username for the ids (default: from your Kaggle credentials)")
        s.add_argument("--wheel", action="append", default=[], metavar="FILE",
                       help="an extra wheel to ship and install offline (repeatable), for a package Kaggle's image lacks")
    d.add_argument("--data", help="competition folder (default: a generated sample)")
    u.add_argument("--timeout", type=float, default=600, help="seconds to wait for Kaggle to process the dataset (default: 600)")
    t = sub.add_parser("status", help="the pushed kernel's run state")
    o = sub.add_parser("output", help="download the kernel's output files once it is complete")
    o.add_argument("--out", default="output", help="where to put them (default: output)")
    o.add_argument("--wait", action="store_true", help="poll until the kernel finishes (bounded by --timeout)")
    o.add_argument("--timeout", type=float, default=12 * 3600, help="seconds --wait waits at most (default: 12 hours)")
    for s in (t, o): s.add_argument("--build", default="build", help="the build folder pushed from (default: build)")
    args, rest = p.parse_known_args(argv)
    if rest and args.cmd != "dry-run": p.error(f"unrecognized arguments: {' '.join(rest)}")

    if args.cmd == "build":
        from kit.bundle import build
        build(Path(args.out), weights=args.weights, user=args.user, wheels=args.wheel)
    elif args.cmd == "dry-run":
        from kit.dryrun import dry_run
        dry_run(Path(args.out), data=args.data, overrides=rest, weights=args.weights, user=args.user, wheels=args.wheel)
    elif args.cmd == "push":
        from kit.push import push
        push(Path(args.out), weights=args.weights, user=args.user, wheels=args.wheel, timeout=args.timeout)
    elif args.cmd == "status":
        from kit.push import status
        status(Path(args.build))
    elif args.cmd == "output":
        from kit.push import output
        output(Path(args.out), wait=args.wait, out=Path(args.build), timeout=args.timeout)


if __name__ == "__main__":
    cli(main)
