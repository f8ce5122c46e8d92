"""Annotation readers (package; was the module ``microexp/data/annotations.py``): see :mod:`.table`."""

from microexp.data.annotations.table import *  # noqa: F401,F403
from microexp.data.annotations.table import __all__, __doc__  # noqa: F401
