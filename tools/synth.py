#!/usr/bin/env python
"""Thin script: the same as `microexp synth ...`."""

import sys

from microexp.cli import main

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]]))
