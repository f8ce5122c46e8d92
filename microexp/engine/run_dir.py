"""The run directory's guards: checks before it is touched, and the lock held for a run's duration."""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Iterator

from microexp.config import ExperimentConfig, config_differences, load_config, save_config
from microexp.errors import ConfigError, MicroexpError
from microexp.fileio import OutputError, check_writable, output_error, write_json

__all__ = ["LOCK_NAME", "RunLockedError", "check_not_a_file", "hold_lock", "keep_config", "probe_writable"]

#: the run directory's lock file (its holder is described in ``LOCK_NAME + ".json"`` beside it)
LOCK_NAME = "train.lock"


class RunLockedError(MicroexpError, RuntimeError):
    """Another process holds the run directory's lock."""


def check_not_a_file(out: Path) -> None:
    """``--out`` (or a folder above it) being a file is refused before anything is read or written."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                error = OutputError(f"cannot use {out} as the run directory: not a directory ({path} is a file); "
                                    "nothing was written")
                error.errno = errno.ENOTDIR
                raise error
            return


def probe_writable(folder: Path, *, what: str) -> None:
    """Create ``folder`` and a temporary file in it, so a read-only or full place fails before training."""
    check_writable(folder, name=f"{what}{folder}", kept="nothing was written; training did not start")


def keep_config(config: ExperimentConfig, out: Path, *, what: str, recipe: str | Path | None = None) -> None:
    """Write ``out/config.yaml``, or refuse to resume into ``out`` when it holds another result-relevant config.

    Args:
        what: the kind of run ``out`` holds, for the message (``an audit``, ``a pretraining run``).
    """
    path = out / "config.yaml"
    if not path.exists():
        save_config(config, path, recipe=recipe)
        return
    differences = config_differences(load_config(path), config)
    if differences:
        raise ConfigError(f"{out} holds {what} with a different config.yaml ({'; '.join(differences)}); use a new "
                          "--out, or the same config to resume")


@contextlib.contextmanager
def hold_lock(path: Path, *, what: str, shared: bool = False, wait: bool = False) -> Iterator[None]:
    """Hold an OS-level lock on ``path`` for the block; refuse at once when another process holds it.

    The lock is the operating system's (``flock`` / ``msvcrt.locking``), so it dies with its process: a
    killed run never blocks the next one. An exclusive holder's pid, host, start time and command are
    written beside it in ``path + ".json"`` and named in the refusal.

    Args:
        shared: a shared lock: any number of shared holders at once, none while an exclusive one holds it
            (fold shards share their run directory this way; audits and pretraining hold it exclusively).
            Shared holders write no holder note.
        wait: block until the lock is free instead of refusing (for short critical sections: writing a
            run's shared files).

    Raises:
        RunLockedError: another process holds the lock (only without ``wait``).
        OutputError: the lock file cannot be created.
    """
    info_path = path.with_name(path.name + ".json")
    try:
        handle = open(path, "a+b")
    except OSError as exc:
        raise output_error(path, exc, kept="nothing was written; training did not start") from exc
    try:
        if not _try_lock(handle, shared=shared, wait=wait):
            raise RunLockedError(f"{what} is in use by {_describe_holder(info_path)}; wait for it to finish "
                                 f"or use another --out (the lock dies with its process: {path})")
        try:
            if not shared and not wait:
                write_json(info_path, {"pid": os.getpid(), "host": socket.gethostname(),
                                       "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                                       "command": " ".join(sys.argv)})
            yield
        finally:
            if not shared and not wait:
                with contextlib.suppress(OSError):
                    info_path.unlink()
            _unlock(handle)
    finally:
        handle.close()


def _try_lock(handle: Any, *, shared: bool = False, wait: bool = False) -> bool:
    if os.name == "nt":  # pragma: no cover - exercised on Windows only; msvcrt has no shared locks
        import msvcrt

        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        fcntl.flock(handle.fileno(), mode if wait else mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(handle: Any) -> None:
    if os.name == "nt":  # pragma: no cover
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _describe_holder(info_path: Path) -> str:
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its pid is not recorded yet)"
