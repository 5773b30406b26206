"""Where things are in this checkout, so no test computes it from its own file's place."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent
DATA = TESTS / "data"
OUTPUT = TESTS / "output"  # artefacts a person may want to look at (rendered panels, figures)
