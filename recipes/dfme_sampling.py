#!/usr/bin/env python
"""The DFME sampling study: see `python recipes/dfme_sampling.py --help` and microexp/studies/dfme.py."""

import sys
from pathlib import Path

from microexp.studies.script import main

if __name__ == "__main__":
    sys.exit(main("dfme_sampling", recipes_dir=Path(__file__).resolve().parent))
