"""The whole job from the command line: one model, or an ensemble's members side by side, averaged.

    python -m kernel --data DIR --out DIR [--preset kaggle] [--field value ...] [--restart]

What the notebook calls, `kernel.ensemble.run(config)`; `python -m kernel.train` trains one model (each
member's process runs that). Here, above both, so that kernel.ensemble imports kernel.train and not back.
"""
from .config import parse_args
from .ensemble import run
from .errors import cli


def main(argv: list[str]) -> None:
    run(parse_args(argv, __doc__.splitlines()[0]))


if __name__ == "__main__":
    cli(main)
