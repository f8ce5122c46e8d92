"""Shared test fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> tuple[Path, list[str]]:
    """An untrained 4-frame 32 px ``r3d_tiny`` checkpoint over DFME's 7 classes (seed 0), and those classes:
    enough to run prediction and spot-then-recognise paths, not to recognise anything."""
    import torch

    from microexp.checkpoint import save_checkpoint
    from microexp.data.class_maps import get_class_map
    from microexp.models import create_model

    classes = list(get_class_map("dfme7").classes)
    torch.manual_seed(0)
    model = create_model("r3d_tiny", num_classes=len(classes), num_frames=4, input_size=32)
    path = tmp_path_factory.mktemp("tiny_checkpoint") / "model.pt"
    return save_checkpoint(path, model=model, class_names=classes,
                           data={"num_frames": 4, "sampling": "uniform", "size": 32, "class_map": "dfme7"}), classes


class _Tmpfs:
    """Mounts small or read-only tmpfs folders under a test's ``tmp_path``; unmounts them all at teardown."""

    def __init__(self, tmp_path: Path):
        self._tmp_path = tmp_path
        self._mounted: list[Path] = []
        self._chmodded: list[Path] = []

    def __call__(self, name: str, size: str = "64k", read_only: bool = False, chmod_fallback: bool = False) -> Path:
        """A real tmpfs of ``size`` at ``tmp_path / name`` (read-only if asked), else the test is skipped.

        With ``chmod_fallback`` and not root, a read-only folder is instead a plain folder with mode 0o555.
        """
        target = self._tmp_path / name
        target.mkdir(exist_ok=True)
        if os.geteuid() != 0 and chmod_fallback and read_only:
            os.chmod(target, 0o555)
            self._chmodded.append(target)
            return target
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("needs root and mount to mount a tmpfs (root ignores file permissions)")
        options = ("ro," if read_only else "") + f"size={size}"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        self._mounted.append(target)
        return target

    def remount(self, target: Path, size: str) -> None:
        """Give the tmpfs at ``target`` a new size (e.g. to free space on a full disk)."""
        subprocess.run(["mount", "-o", f"remount,size={size}", str(target)], check=True)

    def _teardown(self) -> None:
        for target in reversed(self._mounted):
            if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(target)], capture_output=True)
        for target in self._chmodded:
            os.chmod(target, 0o755)


@pytest.fixture
def tmpfs(tmp_path):
    """Factory: ``tmpfs("name", size="64k", read_only=False, chmod_fallback=False) -> Path``; ``tmpfs.remount``."""
    mounts = _Tmpfs(tmp_path)
    yield mounts
    mounts._teardown()


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """The CLI and the study scripts reconfigure logging (root level and a handler bound to the sys.stderr of
    the moment, which pytest swaps per test; named microexp levels): restore it so no test's -q leaks on."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    named = {name: logging.getLogger(name).level for name in list(logging.root.manager.loggerDict)
             if name.startswith("microexp")}  # the study scripts quieten microexp.engine
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("microexp"):
            logging.getLogger(name).setLevel(named.get(name, logging.NOTSET))
