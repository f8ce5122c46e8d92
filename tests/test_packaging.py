"""setup.py's requirements: ranges (not pins), the scikit-learn floor, decord only where it has wheels, and a
constraints.txt whose exact pins satisfy them and are what `make install` / environment.yml use."""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _setup_kwargs() -> dict:
    """The keyword arguments setup.py passes to ``setup()``, evaluated without running ``setup()``."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    namespace: dict = {}
    call = None
    for statement in tree.body:
        if (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)
                and getattr(statement.value.func, "id", None) == "setup"):
            call = statement.value
            continue
        exec(compile(ast.Module([statement], type_ignores=[]), "setup.py", "exec"), namespace)  # noqa: S102
    assert call is not None, "setup.py calls setup(...)"
    wanted = {"install_requires", "extras_require", "python_requires"}
    return {kw.arg: eval(compile(ast.Expression(kw.value), "setup.py", "eval"), namespace)  # noqa: S307
            for kw in call.keywords if kw.arg in wanted}


def _requirements() -> list[Requirement]:
    return [Requirement(r) for r in _setup_kwargs()["install_requires"]]


def _by_name(requirements: list[Requirement]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in requirements}


def _constraints() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([0-9][A-Za-z0-9.+!]*)", line)
        assert match, f"constraints.txt: {line!r} is not an exact NAME==VERSION pin"
        pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def test_install_requires_are_ranges_not_exact_pins():
    for requirement in _requirements():
        operators = {spec.operator for spec in requirement.specifier}
        assert operators and not operators & {"==", "==="}, f"{requirement}: a range, not an exact pin"


def test_scikit_learn_floor_has_groupkfold_shuffle():
    specifier = _by_name(_requirements())["scikit-learn"].specifier
    assert not specifier.contains("1.5.2") and specifier.contains("1.6.0")
    import sklearn
    from sklearn.model_selection import GroupKFold

    GroupKFold(n_splits=2, shuffle=True, random_state=0)  # the call microexp.splits makes (new in 1.6)
    assert Version(sklearn.__version__) in specifier


@pytest.mark.parametrize("system, machine, wanted", [
    ("Linux", "x86_64", True), ("Windows", "AMD64", True),
    ("Linux", "aarch64", False), ("Darwin", "arm64", False), ("Darwin", "x86_64", False), ("Windows", "ARM64", False),
])
def test_decord_only_where_it_has_wheels(system, machine, wanted):
    decord = _by_name(_requirements())["decord"]
    assert decord.marker is not None
    environment = {**default_environment(), "platform_system": system, "platform_machine": machine}
    assert decord.marker.evaluate(environment) is wanted
    av = _by_name(_requirements())["av"]  # the fallback reader is always installed
    assert av.marker is None or av.marker.evaluate(environment)


def test_constraints_pin_every_requirement_within_its_range():
    pins = _constraints()
    kwargs = _setup_kwargs()
    wanted = _requirements() + [Requirement(r) for r in kwargs["extras_require"]["test"]]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt has no pin for {requirement.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]} outside setup.py's {requirement}"


def test_constraints_are_the_installed_set_up():
    """The README's set-up (`make install`) installs exactly these versions; this environment is one."""
    environment = default_environment()
    markers = {canonicalize_name(r.name): r.marker for r in _requirements()}
    for name, version in _constraints().items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            marker = markers.get(name)
            assert marker is not None and not marker.evaluate(environment), f"{name} pinned but not installed"
            continue
        assert Version(installed.base_version) == Version(version.base_version), \
            f"{name}: constraints.txt pins {version}, installed {installed}"


def test_install_paths_use_the_constraints():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "pip install" in makefile and "-c constraints.txt -e '.[test]'" in makefile
    assert re.search(r"^\$\(BIN\)/microexp:.*constraints\.txt", makefile, re.M), "reinstall when the pins change"
    environment = (ROOT / "environment.yml").read_text(encoding="utf-8")
    pip_lines = [line.strip()[2:].strip() for line in environment.splitlines() if line.strip().startswith("- ")]
    assert "-c constraints.txt" in pip_lines and any(line.startswith("-e .[test]") for line in pip_lines)
    python = re.search(r"python=(\d+\.\d+)", environment)
    assert python and Version(python[1]) in _python_specifier()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.M), ".ci/run runs the README's test command"


def _python_specifier():
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(_setup_kwargs()["python_requires"])


def _target(makefile: str, name: str) -> str:
    match = re.search(rf"^{name}:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert match, f"Makefile has a {name} target"
    return match[1]


def test_make_demo_ends_by_saying_how_to_run_the_commands():
    demo = _target((ROOT / "Makefile").read_text(encoding="utf-8"), "demo")
    lines = [line.strip() for line in demo.splitlines()]
    train = max(i for i, line in enumerate(lines) if "microexp train" in line)
    after = " ".join(lines[train + 1:])
    assert "echo" in after and ". $(VENV)/bin/activate" in after and "$(BIN)/microexp" in after
