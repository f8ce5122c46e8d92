"""Atomic output files and one-line file-system errors: the one helper every output goes through.

A kill, a full disk or a read-only folder must never leave a half-written ``metrics.json``, CSV, plot or
checkpoint behind: every output is written to a temporary file in the target's folder, flushed and
fsync'd, then renamed over the target (``os.replace`` is atomic on POSIX and Windows). Outputs get the
normal permissions of a new file (``0666 & ~umask``), not the ``0600`` of ``tempfile.mkstemp``.

A file-system failure caused by the user's environment (disk full, read-only, not a directory, no
permission) becomes an :class:`OutputError` whose one-line message names the path and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from microexp.errors import MicroexpError

#: errno -> the cause as a user reads it
_CAUSES = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.EEXIST: "already exists",
    errno.ENOENT: "no such file or directory",
}


class OutputError(MicroexpError, OSError):
    """An output could not be written (disk full, read-only, not a directory, no permission)."""


def describe_os_error(exc: OSError) -> str:
    """The cause of ``exc`` in words (``disk full``, ``read-only file system``, ...)."""
    return _CAUSES.get(exc.errno or -1, exc.strerror or type(exc).__name__)


def output_error(path: str | Path, exc: OSError, *, kept: str | None = None) -> OutputError:
    """A one-line :class:`OutputError` naming ``path``, the cause and, when given, what was kept."""
    suffix = f"; {kept}" if kept else ""
    error = OutputError(f"cannot write {path}: {describe_os_error(exc)}{suffix}")
    error.errno = exc.errno
    return error


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _make_parent(target: Path) -> None:
    """Create ``target``'s folder; a file in the way is reported as "not a directory" with its path."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        blocker = next((p for p in (target.parent, *target.parent.parents) if p.exists() and not p.is_dir()),
                       target.parent)
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(blocker)) from exc


@contextlib.contextmanager
def atomic_write(path: str | Path, *, durable: bool = True, shared: bool = False,
                 keep_suffix: bool = True) -> Iterator[Path]:
    """The one atomic-replace step: yield a temporary path beside ``path``, then rename it over ``path``.

    The temporary file gets a new file's normal permissions (``0666 & ~umask``, not mkstemp's ``0600``)
    and is removed on any exception, leaving the previous ``path`` untouched. OS errors propagate as they
    are: :func:`atomic_path` turns them into one-line :class:`OutputError` s; the clip cache reports its own.

    Args:
        durable: fsync before the rename (outputs); False where a file lost in a power cut is recomputed
            (cache entries).
        shared: several processes may write the same content (cache entries): when the rename is refused
            because another reader holds ``path`` open (Windows), the complete file already there stands.
        keep_suffix: end the temporary name with ``path``'s suffix, for writers that pick a format from it.
    """
    target = Path(path)
    suffix = f".tmp{target.suffix}" if keep_suffix else ".tmp"
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())
        try:
            os.replace(tmp, target)
        except PermissionError:
            if not (shared and target.exists()):
                raise
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, kept: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically (:func:`atomic_write`).

    For writers that want a file name (``DataFrame.to_csv``, ``savefig``). Give ``torch.save`` an open
    file handle, not the name: on a full disk it raises ``RuntimeError`` for a name (not ``OSError``), and
    ``torch.jit.save`` aborts the process (see ``microexp/checkpoint.py``). The temporary
    file keeps the target's suffix, so writers that pick a format from it still do. On any exception
    the temporary file is removed and the previous ``path`` (if any) is left untouched; an ``OSError``
    becomes an :class:`OutputError` naming ``path`` (``kept`` says what survived, e.g. "the previous
    checkpoint is kept").
    """
    target = Path(path)
    try:
        _make_parent(target)
        with atomic_write(target) as tmp:
            yield tmp
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(target, exc, kept=kept) from exc


def check_writable(folder: str | Path, *, name: str | None = None, kept: str | None = None) -> None:
    """Create ``folder`` and a temporary file in it now, so a read-only, full or blocked place fails before
    long work starts; an :class:`OutputError` names ``name`` (default ``folder``) and what was kept."""
    target = Path(folder)
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as exc:
        raise output_error(name or target, exc, kept=kept) from exc


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, kept: str | None = None,
                encoding: str | None = "utf-8", newline: str | None = None) -> Iterator[IO[Any]]:
    """``open(path, mode)`` whose content appears at ``path`` only when the block ends without error."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode {mode!r}: expected 'w' or 'wb'")
    with atomic_path(path, kept=kept) as tmp:
        if mode == "wb":
            with open(tmp, "wb") as handle:
                yield handle
        else:
            with open(tmp, "w", encoding=encoding, newline=newline) as handle:
                yield handle


def write_text(path: str | Path, text: str, *, kept: str | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_open(path, "w", kept=kept) as handle:
        handle.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes, *, kept: str | None = None) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb", kept=kept) as handle:
        handle.write(data)
    return Path(path)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN or Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # NumPy / torch scalars
        return json_safe(value.item())
    return value


def dumps_json(value: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text: non-finite floats become ``null`` (never the invalid ``NaN`` token)."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False)


def write_json(path: str | Path, value: Any, *, indent: int | None = 2, kept: str | None = None) -> Path:
    """Write ``value`` as strict JSON (see :func:`dumps_json`) to ``path`` atomically."""
    return write_text(path, dumps_json(value, indent=indent) + "\n", kept=kept)
