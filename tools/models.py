#!/usr/bin/env python
"""Thin script: the same as `microexp models ...`."""

import sys

from microexp.cli import main

if __name__ == "__main__":
    sys.exit(main(["models", *sys.argv[1:]]))
