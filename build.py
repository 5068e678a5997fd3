"""paddy kernel kit: build -> dry-run -> push -> submit a fastai Kaggle code-competition kernel.

    python build.py build   [--out build] [--weights FILE | --no-pretrained] [--wheel FILE ...] [--user NAME]
                            [--preset rttt] [--accelerator NAME] [--field value ...]
    python build.py dry-run [--data DIR] [--out build] [--preset cpu] [--field value ...]
    python build.py push    [--out build] [--timeout SECONDS] [--session K] [--wait] [same options as build]
    python build.py submit  [--build build] [--message TEXT] [--code | --file] [--infer] [--partial]
                            [--timeout SECONDS]
    python build.py status  [--build build] [--follow]
    python build.py output  [--wait] [--out DIR] [--build build] [--timeout SECONDS]

`--field value` is any kernel.Config field (`--arch`, `--stages`, `--members`, `--lr`, `--tta`, ...): for
build and push it sets the Kaggle run (over the kaggle preset, and `--preset NAME` over that, e.g. rttt);
for the dry run, the run here (over the cpu preset, or `--preset`) and the build it runs. A thin CLI: the
work lives in kit/ and kernel/.
"""
from pathlib import Path

from kernel.config import LAPTOP_PRESETS, PRESETS, Parser, given, options
from kernel.errors import UserError, cli

# Not build options: where the kernel finds its data and writes (Kaggle's paths), which weights file it
# reads (--weights here ships one), and --restart (a pushed run starts fresh).
NOT_AT_BUILD = ("data", "out", "weights", "restart")


def main(argv: list[str]) -> None:
    p = Parser(prog="build.py", description=__doc__.split("\n")[0], allow_abbrev=False)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="the Kaggle dataset (wheels, weights) and the two kernel notebooks, "
                       "under --out")
    d = sub.add_parser("dry-run", help="build, then execute the built notebooks here on CPU")
    u = sub.add_parser("push", help="build, then create/version the dataset and push the training kernel")
    for s in (b, d, u):
        s.add_argument("--out", default="build", help="build folder (default: build)")
        s.add_argument("--weights",
                       help="a pretrained weights file to ship instead of fetching the arch's own")
        s.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                       help="ship no pretrained weights: train from scratch")
        s.add_argument("--user", help="Kaggle username for the ids (default: from your Kaggle credentials)")
        s.add_argument("--wheel", action="append", default=[], metavar="FILE",
                       help="an extra wheel to ship and install offline (repeatable), "
                       "for a package Kaggle lacks")
        options(s, skip=NOT_AT_BUILD)
    d.add_argument("--data", help="competition folder (default: a generated sample)")
    d.add_argument("--full", action="store_true",
                   help="train on all of --data's images (default: a class-stratified subset: minutes)")
    u.add_argument("--timeout", type=float, default=600,
                   help="seconds to wait for Kaggle to process the dataset (default: 600)")
    u.add_argument("--session", type=int, metavar="K",
                   help="with --sessions N: push session K alone again (one that failed); the others' runs "
                   "stay")
    u.add_argument("--wait", action="store_true",
                   help="with --sessions N: carry on the last push without building: push the sessions that "
                   "wait as ours end (at most two run at once)")
    u.add_argument("--wait_timeout", dest="timeout_wait", type=float, default=4 * 12 * 3600,
                   help="seconds --wait waits at most (default: 48 hours)")
    m = sub.add_parser("submit", help="wait for the pushed training run, submit its predictions (through the "
                       "inference kernel for a code competition, or with --infer), print the score; rerun it "
                       "freely: it never submits twice")
    m.add_argument("--message", help="the submission's description (the inference kernel's version is added)")
    how = m.add_mutually_exclusive_group()
    how.add_argument("--code", dest="code", action="store_const", const=True, default=None,
                     help="submit the inference kernel (a code competition); default: as Kaggle says the "
                     "competition takes submissions")
    how.add_argument("--file", dest="code", action="store_const", const=False,
                     help="submit the inference kernel's submission.csv as a file")
    m.add_argument("--infer", action="store_true",
                   help="run the inference kernel on the training run's output even for a file competition "
                   "(default: its submission is made here from the run's probabilities, no second GPU session)")
    m.add_argument("--partial", action="store_true",
                   help="with --sessions N: submit the ensemble of the sessions that finished (a failed one, "
                   "and those still waiting, left out), saying which members are missing")
    m.add_argument("--timeout", type=float, default=13 * 3600,
                   help="seconds to wait, in all, for the training run, the inference run and the score "
                   "(default: 13 hours)")
    t = sub.add_parser("status", help="the pushed kernel's run state (each running member's last epoch "
                       "line), your latest submissions and their scores")
    t.add_argument("--follow", action="store_true",
                   help="then print each member's epoch lines as they come, until the runs end")
    o = sub.add_parser("output", help="download the kernel's output files once it is complete")
    o.add_argument("--out", default="output", help="where to put them (default: output)")
    o.add_argument("--wait", action="store_true",
                   help="poll until the kernel finishes (bounded by --timeout)")
    o.add_argument("--timeout", type=float, default=12 * 3600,
                   help="seconds --wait waits at most (default: 12 hours)")
    for s in (m, t, o):
        s.add_argument("--build", default="build", help="the build folder pushed from (default: build)")
    args = p.parse_args(argv)

    if args.cmd in ("build", "dry-run", "push"):
        overrides = given(args, NOT_AT_BUILD)
        if args.cmd != "dry-run" and args.preset:  # the Kaggle run: the kaggle preset, this one over it
            gpu = [k for k in PRESETS if k and k not in LAPTOP_PRESETS]
            if args.preset not in gpu:
                raise UserError(f"--preset {args.preset} trains on a CPU, not a Kaggle GPU; for {args.cmd} "
                                f"give one of {', '.join(gpu)} (or try it here with dry-run --preset)")
            overrides = {**PRESETS[args.preset], **overrides}
        kw = dict(overrides=overrides, weights=args.weights, pretrained=args.pretrained,
                  user=args.user, wheels=args.wheel)
    if args.cmd == "build":
        from kit.bundle import build
        build(Path(args.out), **kw)
    elif args.cmd == "dry-run":
        from kit.dryrun import dry_run
        dry_run(Path(args.out), data=args.data, preset=args.preset or "cpu", full=args.full, **kw)
    elif args.cmd == "push" and args.wait:
        from kit.push import push_waiting
        push_waiting(Path(args.out), timeout=args.timeout_wait)
    elif args.cmd == "push":
        from kit.push import push
        push(Path(args.out), timeout=args.timeout, session=args.session, **kw)
    elif args.cmd == "submit":
        from kit.submit import submit
        submit(Path(args.build), message=args.message, code=args.code, timeout=args.timeout, infer=args.infer,
               partial=args.partial)
    elif args.cmd == "status":
        from kit.status import status
        status(Path(args.build), follow=args.follow)
    elif args.cmd == "output":
        from kit.push import output
        output(Path(args.out), wait=args.wait, out=Path(args.build), timeout=args.timeout)


if __name__ == "__main__":
    cli(main)
