#!/usr/bin/env python
"""The DFME imbalance study: see `python recipes/dfme_imbalance.py --help` and microexp/studies/dfme.py."""

import sys
from pathlib import Path

from microexp.studies.script import main

if __name__ == "__main__":
    sys.exit(main("dfme_imbalance", recipes_dir=Path(__file__).resolve().parent))
