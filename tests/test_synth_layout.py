"""The layout of microexp.synth: a low layer, one concern per module, and the old data.synthetic* aliases."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import microexp
import microexp.data.synthetic as old_synthetic
import microexp.data.synthetic_faces as old_faces
import microexp.synth as synth
import microexp.synth.faces as faces
import microexp.synth.write as write

PACKAGE = Path(microexp.__file__).parent
#: what synth may import from microexp: itself and the layers below it
SYNTH_MAY_IMPORT = ("microexp.synth", "microexp.data", "microexp.errors", "microexp.fileio", "microexp.workers")
#: the data modules that may import synth: the aliases kept for one release
DATA_ALIASES = {"synthetic.py", "synthetic_faces.py"}
#: the names microexp.data.synthetic exported before the move
OLD_ALL = [
    "EMOTIONS", "EMOTION_AUS", "FPS_PARTS", "PRESETS", "ActionUnit", "ClipSpec", "Preset", "RenderedClip",
    "SynthSummary", "au_displacement_field", "class_counts", "expression_profile", "face_position",
    "generate_dataset", "get_preset", "plan_dataset", "render_clip",
]
OLD_CONSTANTS = [
    "AU_BLOBS", "CSV_COLUMNS", "DEFAULT_CLIPS", "DEFAULT_IMBALANCE_RATIO", "DEFAULT_SUBJECTS", "DFME_COLUMNS",
    "DFME_SHEET_NAME", "FORMATS", "FREQUENCY_ORDER", "GENERATOR_VERSION", "MAX_SIZE", "MAX_UNCROPPED", "MIN_SIZE",
]
OLD_FACE_NAMES = ["EyeBox", "FaceGeometry", "FaceLook", "RenderedFace", "draw_face", "jitter_geometry", "random_face"]


def _module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package_dir: Path = PACKAGE) -> list[str]:
    """Every module ``path`` imports, anywhere in the file, relative imports resolved to absolute names."""
    name = _module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            # `from . import x` / `from microexp.data import video` may import submodules: count both
            found.append(module)
            found += [f"{module}.{alias.name}" for alias in node.names]
    return found


def test_the_import_scan_resolves_relative_imports(tmp_path):
    """The checks below can fail: a relative import of an upper layer is seen as what it is."""
    fake = tmp_path / "microexp"
    (fake / "synth").mkdir(parents=True)
    module = fake / "synth" / "bad.py"
    module.write_text("from ..engine import trainer\nfrom . import plan\n\ndef f():\n    from ..cli import main\n")
    assert {"microexp.engine.trainer", "microexp.synth.plan", "microexp.cli.main"} <= set(_imports(module, fake))


def test_synth_imports_only_lower_layers():
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in sorted((PACKAGE / "synth").rglob("*.py"))
        for module in _imports(path)
        if module.split(".")[0] == "microexp" and not module.startswith(SYNTH_MAY_IMPORT)
    ]
    assert offenders == []


def test_data_imports_synth_only_in_its_aliases():
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in sorted((PACKAGE / "data").rglob("*.py"))
        if path.name not in DATA_ALIASES
        for module in _imports(path)
        if module.startswith(("microexp.synth", "microexp.data.synthetic"))
    ]
    assert offenders == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "synth").glob("*.py")), ids=lambda p: p.name)
def test_synth_modules_stay_small(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 600


def test_synth_exports_what_data_synthetic_exported():
    assert sorted(synth.__all__) == sorted(OLD_ALL)
    assert sorted(old_synthetic.__all__) == sorted(OLD_ALL)


@pytest.mark.parametrize("name", OLD_ALL + OLD_CONSTANTS)
def test_data_synthetic_alias_is_the_same_object(name):
    module = next(m for m in ("options", "plan", "fields", "render", "tables", "write", "streams")
                  if hasattr(getattr(synth, m), name))
    assert getattr(old_synthetic, name) is getattr(getattr(synth, module), name)


@pytest.mark.parametrize("name", OLD_FACE_NAMES)
def test_data_synthetic_faces_alias_is_the_same_object(name):
    assert getattr(old_faces, name) is getattr(faces, name)


def test_the_clip_pool_uses_the_one_worker_context(tmp_path, monkeypatch):
    from microexp import workers

    calls = []

    def spy():
        calls.append(1)
        return workers.worker_context()

    monkeypatch.setattr(write, "worker_context", spy)
    summary = synth.generate_dataset(tmp_path / "out", clips=2, subjects=2, size=32, fmt="frames", workers=2,
                                     progress=False)
    assert calls == [1] and summary.clips == 2
