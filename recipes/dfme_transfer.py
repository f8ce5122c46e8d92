#!/usr/bin/env python
"""The cross-dataset transfer study: a shortcut for `microexp study dfme_transfer` (same options; see its --help)."""

import sys
from pathlib import Path

from microexp.cli import main

if __name__ == "__main__":  # the recipes are this script's neighbours, wherever it is run from
    recipes = str(Path(__file__).resolve().parent)
    raise SystemExit(main(["study", "dfme_transfer", "--recipes-dir", recipes, *sys.argv[1:]]))
