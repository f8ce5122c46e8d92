#!/usr/bin/env python
"""Thin script: the same as `microexp sweep ...`."""

import sys

from microexp.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
