#!/usr/bin/env python
"""Thin script: the same as `microexp inspect ...`."""

import sys

from microexp.cli import main

if __name__ == "__main__":
    sys.exit(main(["inspect", *sys.argv[1:]]))
