#!/usr/bin/env python
"""Thin script: the same as `microexp predict ...`."""

import sys

from microexp.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
