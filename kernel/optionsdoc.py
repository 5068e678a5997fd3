"""Prints docs/options.md, the options reference, from `kernel.config.markdown()`:

    python -m kernel.optionsdoc > docs/options.md

(Its own module: `python -m kernel.config` would run config.py a second time beside the one
`import kernel` loaded.)"""
from .config import markdown

if __name__ == "__main__":
    print(markdown(), end="")
