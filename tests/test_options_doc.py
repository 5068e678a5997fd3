"""docs/options.md, the options reference, is generated from kernel.config (each field's `doc(...)` and every
preset's default, as --help is) and must be current: a field, a doc or a preset changed without regenerating
it fails here with the command that regenerates it."""
from dataclasses import fields
from pathlib import Path

import pytest

from kernel.config import PRESETS, Config, markdown

pytestmark = pytest.mark.kernel  # no laptop-only package: also run on Kaggle's versions, on the wheel (tests/run)

DOC = Path(__file__).resolve().parents[1] / "docs" / "options.md"
REGENERATE = "python -m kernel.optionsdoc > docs/options.md"


def test_docs_options_md_is_current():
    if not DOC.is_file() or DOC.read_text() != markdown():
        pytest.fail(f"docs/options.md is not current with kernel/config.py; regenerate it: {REGENERATE}",
                    pytrace=False)


def test_it_names_every_option_and_every_preset():
    text = markdown()
    assert all(f"| `--{f.name}` |" in text for f in fields(Config))
    assert all(f"`{p}`" in text for p in PRESETS if p)
    assert "| `0.01` |" in text.split("| `--lr` |")[1].splitlines()[0]  # the cpu preset's lr, in its row
