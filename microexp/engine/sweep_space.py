"""Moved to :mod:`microexp.sweep.space`.

This alias keeps ``from microexp.engine.sweep_space import ...`` working for one release.
"""

from microexp.sweep.space import (
    FIXED_KEYS, TYPES, ParamSpec, SearchSpace, apply_params, flatten, load_space, parse_space,
)

__all__ = [
    "FIXED_KEYS", "ParamSpec", "SearchSpace", "TYPES", "apply_params", "flatten", "load_space", "parse_space",
]
