"""Every name the package advertises resolves, and the layering rules hold."""

import ast
from pathlib import Path

import pytest

import microexp

PACKAGE = Path(microexp.__file__).parent


@pytest.mark.parametrize("name", [n for n in microexp.__all__ if n != "__version__"])
def test_public_names_resolve(name):
    assert getattr(microexp, name) is not None


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


@pytest.mark.parametrize("layer,forbidden", [
    ("data", ("microexp.models", "microexp.cli", "microexp.engine", "microexp.sweep", "microexp.predict")),
    ("models", ("microexp.data", "microexp.cli", "microexp.engine", "microexp.sweep", "microexp.predict")),
    ("inference", ("microexp.cli", "microexp.sweep")),
])
def test_layers_do_not_import_upwards(layer, forbidden):
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in (PACKAGE / layer).rglob("*.py")
        for module in _imports(path)
        if module.startswith(forbidden)
    ]
    assert offenders == []
