"""Every name the package advertises resolves (the layering rules: tests/test_layering.py)."""

import pytest

import microexp


@pytest.mark.parametrize("name", [n for n in microexp.__all__ if n != "__version__"])
def test_public_names_resolve(name):
    assert getattr(microexp, name) is not None
