#!/usr/bin/env python
"""Thin script: the same as `microexp benchmark ...`."""

import sys

from microexp.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
