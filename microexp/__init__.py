"""microexp: micro-expression video recognition on DFME-style data.

The curated public API; sub-modules hold the rest:

- ``microexp.data``: clip tables from official sheets, video readers, key-frame sampling, the Dataset,
  the synthetic DFME-style generator.
- ``microexp.models``: the model registry (``create_model``, ``list_models``).
"""

__version__ = "0.1.0"
