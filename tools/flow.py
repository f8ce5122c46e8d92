#!/usr/bin/env python
"""Thin script: the same as `microexp flow ...`."""

import sys

from microexp.cli import main

if __name__ == "__main__":
    sys.exit(main(["flow", *sys.argv[1:]]))
