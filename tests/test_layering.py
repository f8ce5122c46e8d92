"""The import direction of the package's layers holds, and the check that says so can fail.

Every module under ``microexp/`` is parsed with :mod:`ast`; every import in it counts, wherever it stands
(module level, inside a function, under ``if TYPE_CHECKING:``), relative imports are resolved to absolute
module names, and ``importlib.import_module("...")`` with a literal name counts too.

The rules (the README's "Where things live" table states them, and a test keeps the two equal):

- the lower layers (:data:`LOWER`) never import the upper ones (:data:`UPPER`);
- ``microexp.models`` and ``microexp.data`` never import each other;
- ``microexp.inference`` imports none of :data:`UPPER` (the engine above all: inference needs only a
  checkpoint, ``microexp.checkpoint``);
- nothing but the CLI imports ``microexp.cli`` (engine, sweep, studies, benchmark included).

Alias modules kept for old import paths get no exemption: importing an alias runs its imports, so an alias
in a lower layer that re-exported an upper one would pull that layer in as surely as real code. An alias
belongs on the side of the line where its import is allowed (``engine/checkpoint.py`` re-exports
``microexp.checkpoint``; ``data/synthetic.py`` re-exports ``microexp.synth``: both point downwards or across).
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

import microexp

PACKAGE = Path(microexp.__file__).parent

#: Layers that never import :data:`UPPER`. ``microexp.checkpoint`` is here too: inference reads checkpoints
#: without the engine, so the checkpoint module must not bring the engine back in.
LOWER = (
    "microexp.data", "microexp.synth", "microexp.models", "microexp.losses", "microexp.metrics",
    "microexp.splits", "microexp.config", "microexp.errors", "microexp.fileio", "microexp.workers",
    "microexp.seed", "microexp.checkpoint", "microexp.label_noise", "microexp.spotting_metrics",
)
UPPER = ("microexp.engine", "microexp.sweep", "microexp.inference", "microexp.studies", "microexp.benchmark",
         "microexp.cli")
README = PACKAGE.parent / "README.md"


def _rules() -> dict[str, tuple[str, ...]]:
    """layer -> the modules it must not import (each a package or module name)."""
    rules = {layer: UPPER for layer in LOWER}
    rules["microexp.data"] += ("microexp.models",)
    rules["microexp.models"] += ("microexp.data",)
    rules["microexp.label_noise"] += ("microexp.data", "microexp.models")  # tensor maths the engine wires
    rules["microexp.inference"] = UPPER[:2] + UPPER[3:]  # everything upper but itself
    for layer in ("microexp.engine", "microexp.sweep", "microexp.studies", "microexp.benchmark"):
        rules[layer] = ("microexp.cli",)
    # launchers start `python -m microexp ...` processes: they need nothing of the layers above
    rules["microexp.launch"] = UPPER
    return rules


RULES = _rules()


class Import(NamedTuple):
    """One import statement's target, resolved to an absolute module name."""

    file: Path
    line: int
    target: str
    statement: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.statement} (-> {self.target})"


# ---------------------------------------------------------------------------------------------------
# the checker: pure functions of a source tree


def module_name(path: Path, root: Path) -> str:
    """``root/microexp/data/video/base.py`` -> ``microexp.data.video.base`` (``__init__`` is its package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` reads from (``from ..engine import x`` in microexp.models.a ->
    microexp.engine)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if node.level - 1 > len(package) - 1:
        raise ValueError(f"{module}: relative import beyond the top-level package (level {node.level})")
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, root: Path) -> Iterator[Import]:
    """Every module ``path`` imports, anywhere in the file, as absolute names.

    ``from A import b`` yields ``A`` and ``A.b`` (``b`` may be a submodule: ``from microexp import engine``).
    """
    module = module_name(path, root)
    is_package = path.name == "__init__.py"
    shown = path.relative_to(root)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(shown, node.lineno, alias.name, ast.unparse(node))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_package)
            yield Import(shown, node.lineno, base, ast.unparse(node))
            for alias in node.names:
                if alias.name != "*":
                    yield Import(shown, node.lineno, f"{base}.{alias.name}", ast.unparse(node))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and _is_import_call(node.func)):
            yield Import(shown, node.lineno, node.args[0].value, ast.unparse(node))


def _is_import_call(func: ast.expr) -> bool:
    """``importlib.import_module(...)``, ``import_module(...)`` or ``__import__(...)``."""
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def files_of(layer: str, root: Path) -> list[Path]:
    """The source files of a package (all of its modules) or of a single module."""
    path = root.joinpath(*layer.split("."))
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    file = path.with_suffix(".py")
    return [file] if file.is_file() else []


def violations(root: Path, layer: str, forbidden: tuple[str, ...]) -> list[Import]:
    """The imports in ``layer`` (under ``root``) of any module within ``forbidden``."""
    found = []
    for file in files_of(layer, root):
        seen = set()
        for imp in imports_of(file, root):
            if any(_within(imp.target, f) for f in forbidden) and (imp.line, imp.statement) not in seen:
                seen.add((imp.line, imp.statement))  # one report per statement, not per imported name
                found.append(imp)
    return found


def exists(name: str, root: Path = PACKAGE.parent) -> bool:
    return bool(files_of(name, root))


# ---------------------------------------------------------------------------------------------------
# the rules hold


def test_every_named_layer_exists():
    named = set(RULES) | {f for forbidden in RULES.values() for f in forbidden}
    missing = sorted(n for n in named if not exists(n))
    assert missing == [], f"the layering rules name modules that do not exist (typo?): {missing}"


def readme_rules(text: str) -> dict[str, set[str]]:
    """layer -> forbidden modules, from the README's "Where things live" table (``| `pkg/` | owns | a, b |``)."""
    section = text.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    rules: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        layers = [name.strip("`/").removeprefix("microexp/").removesuffix(".py").replace("/", ".")
                  for name in cells[0].split(", ")]
        forbidden = {f"microexp.{name.strip()}" for name in cells[2].split(",") if name.strip() not in ("", "-")}
        for layer in layers:
            rules[f"microexp.{layer}"] = forbidden
    return rules


def test_the_readme_table_states_exactly_these_rules():
    stated = readme_rules(README.read_text(encoding="utf-8"))
    checked = {layer: set(forbidden) for layer, forbidden in RULES.items()}
    assert {k: v for k, v in stated.items() if v} == checked
    top = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
           if (p.suffix == ".py" or (p / "__init__.py").exists()) and not p.name.startswith("_")}
    assert top - {layer.split(".")[1] for layer in stated} == set(), "a package the README's table does not list"


@pytest.mark.parametrize("layer", sorted(RULES))
def test_layer_does_not_import_what_it_must_not(layer):
    found = violations(PACKAGE.parent, layer, RULES[layer])
    assert not found, f"{layer} must not import {', '.join(RULES[layer])}:\n" + "\n".join(map(str, found))


# ---------------------------------------------------------------------------------------------------
# the checker can fail


@pytest.fixture
def package_copy(tmp_path) -> Path:
    """A copy of the package's sources in a temporary folder (the root above ``microexp/``)."""
    shutil.copytree(PACKAGE, tmp_path / "microexp", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


PLANTED = [
    # (layer, file to plant in, code appended to it, the target the checker must name)
    ("microexp.models", "models/layers.py",
     "\n\ndef _planted():\n    from ..engine import trainer\n    return trainer\n", "microexp.engine"),
    ("microexp.data", "data/video/base.py",
     "\n\ndef _planted():\n    from ... import cli\n    return cli\n", "microexp.cli"),
    ("microexp.data", "data/sampling.py",
     "\n\ndef _planted():\n    from .. import models\n    return models\n", "microexp.models"),
    ("microexp.losses", "losses.py",
     "\n\ndef _planted():\n    import microexp.inference.predictor\n", "microexp.inference.predictor"),
    ("microexp.inference", "inference/spotting.py",
     "\n\ndef _planted():\n    import importlib\n    return importlib.import_module('microexp.engine.trainer')\n",
     "microexp.engine.trainer"),
    ("microexp.config", "config.py",
     "\n\nif False:\n    from microexp import benchmark\n", "microexp.benchmark"),
]


@pytest.mark.parametrize("layer,file,code,target", PLANTED, ids=[p[1] for p in PLANTED])
def test_a_planted_forbidden_import_is_reported(package_copy, layer, file, code, target):
    path = package_copy / "microexp" / file
    before = violations(package_copy, layer, RULES[layer])
    lines = len(path.read_text().splitlines())
    path.write_text(path.read_text() + code)
    found = [v for v in violations(package_copy, layer, RULES[layer]) if v not in before]
    assert len(found) == 1, found
    assert found[0].file == Path("microexp", file) and found[0].line > lines
    assert _within(found[0].target, target) or _within(target, found[0].target), found[0]


def test_relative_imports_resolve_to_absolute_names(tmp_path):
    (tmp_path / "microexp" / "models").mkdir(parents=True)
    source = tmp_path / "microexp" / "models" / "a.py"
    source.write_text("from . import b\nfrom .. import engine\nfrom ..engine.trainer import x\nfrom .c import d\n")
    package = tmp_path / "microexp" / "models" / "__init__.py"
    package.write_text("from . import a\nfrom ..data import video\n")
    assert {i.target for i in imports_of(source, tmp_path)} == {
        "microexp.models", "microexp.models.b", "microexp", "microexp.engine", "microexp.engine.trainer",
        "microexp.engine.trainer.x", "microexp.models.c", "microexp.models.c.d"}
    assert {i.target for i in imports_of(package, tmp_path)} == {
        "microexp.models", "microexp.models.a", "microexp.data", "microexp.data.video"}


def test_a_name_that_merely_starts_like_a_layer_is_not_that_layer(tmp_path):
    (tmp_path / "microexp" / "data").mkdir(parents=True)
    (tmp_path / "microexp" / "data" / "x.py").write_text("import microexp.engineering\nfrom microexp import clip\n")
    assert violations(tmp_path, "microexp.data", ("microexp.engine", "microexp.cli")) == []
