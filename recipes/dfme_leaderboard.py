#!/usr/bin/env python
"""The DFME leaderboard: a shortcut for `microexp study dfme_leaderboard` (same options; see its --help)."""

import sys
from pathlib import Path

from microexp.cli import main

if __name__ == "__main__":  # the recipes are this script's neighbours, wherever it is run from
    recipes = str(Path(__file__).resolve().parent)
    raise SystemExit(main(["study", "dfme_leaderboard", "--recipes-dir", recipes, *sys.argv[1:]]))
