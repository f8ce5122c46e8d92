"""The registry: one :class:`~microexp.data.annotations.format.Format` record per dataset, in this order.

Adding a dataset: write ``formats/<name>.py`` with its record (rules as small named functions) and add it
to :data:`DATASET_FORMATS`; the order is the order messages list formats in.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from microexp.data.annotations.format import Format
from microexp.data.annotations.formats.casme2 import CASME2
from microexp.data.annotations.formats.casme3 import CASME3
from microexp.data.annotations.formats.dfme import DFME
from microexp.data.annotations.formats.megc_list import MEGC_LIST
from microexp.data.annotations.formats.microexp import MICROEXP
from microexp.data.annotations.formats.mmew import MMEW
from microexp.data.annotations.formats.samm import SAMM
from microexp.data.annotations.formats.smic import SMIC

__all__ = ["DATASET_FORMATS", "DATASET_NAMES", "DEFAULT_FPS", "FORMATS", "KNOWN_EMOTIONS"]

#: Format name -> its record: every reader, in the order messages list them.
DATASET_FORMATS: Mapping[str, Format] = MappingProxyType(
    {f.name: f for f in (MICROEXP, DFME, CASME2, SAMM, SMIC, CASME3, MMEW, MEGC_LIST)})
#: Values of the ``dataset`` column (one per reader).
DATASET_NAMES = tuple(DATASET_FORMATS)
#: Accepted ``format=`` values (``'auto'`` detects the format).
FORMATS = ("auto",) + DATASET_NAMES
#: fps of formats whose sheets have no fps column (casme3 and mmew are assumptions, see their modules).
DEFAULT_FPS: Mapping[str, float] = {n: f.default_fps for n, f in DATASET_FORMATS.items() if f.default_fps is not None}
#: Emotion names (lower case) each dataset's sheets use; others are reported. ``microexp`` accepts any.
KNOWN_EMOTIONS: Mapping[str, frozenset[str]] = {n: f.emotions for n, f in DATASET_FORMATS.items()
                                                if f.emotions is not None}
