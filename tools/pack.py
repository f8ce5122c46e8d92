#!/usr/bin/env python
"""Thin script: the same as `microexp pack ...`."""

import sys

from microexp.cli import main

if __name__ == "__main__":
    sys.exit(main(["pack", *sys.argv[1:]]))
