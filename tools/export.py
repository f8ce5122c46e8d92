#!/usr/bin/env python
"""Thin script: the same as `microexp export ...`."""

import sys

from microexp.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
