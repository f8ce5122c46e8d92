"""``python -m microexp`` is the ``microexp`` command."""

import sys

from microexp.cli import main

sys.exit(main())
