"""An on-disk cache of preprocessed clips: decode, crop and resize once, then memory-map.

Each entry is one ``.npy`` array (usually ``(T, H, W, C)`` uint8) under a key that hashes everything the
array depends on: the source clip's fingerprint (path, size, mtime), the frame numbers and every
preprocessing parameter. A changed source file or parameter gives a new key, so a stale entry is never
read. Preprocessing itself lives elsewhere: the cache takes a ``producer`` callable that returns the
array.

Writes are atomic (a temporary file in the same folder, then :func:`os.replace`), so DataLoader workers
that race on one entry never see a half-written file; at worst both compute it and the last one wins.

Example::

    cache = ClipCache("~/.cache/microexp/clips")
    parts = {"source": clip_fingerprint(clip_path), "frames": frame_numbers, "size": 112,
             "crop": "face", "grayscale": False, "interpolation": "bilinear"}
    frames = cache.get_or_create(parts, lambda: preprocess(read(clip_path, frame_numbers)))

Keep the decoding backend out of the key: decord and PyAV decode lossless files identically, and the
key should not change when the backend does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["ClipCache", "clip_fingerprint", "cache_key", "CACHE_FORMAT_VERSION"]

#: Part of every key; bump it when the layout or meaning of cached arrays changes.
CACHE_FORMAT_VERSION = 1


def clip_fingerprint(path: str | os.PathLike[str], *, content: bool = False) -> dict[str, Any]:
    """Identify the current state of a clip (video file or frame folder).

    By default: the absolute path plus size and modification time (in ns) of the file, or of every
    file in the folder (name, size, mtime). With ``content=True`` a SHA-256 of the bytes replaces the
    path and times, so the fingerprint survives copying the dataset elsewhere (slower: reads
    everything).

    Returns:
        A JSON-serialisable dict for use in a cache key.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"clip not found: {p}")
    p = p.resolve()
    files = [p] if p.is_file() else sorted(q for q in p.iterdir() if q.is_file())
    if content:
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.name.encode() + b"\0" if p.is_dir() else b"")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            digest.update(b"\0")
        return {"sha256": digest.hexdigest(), "files": len(files)}
    if p.is_file():
        st = p.stat()
        return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    listing = hashlib.sha256()
    for f in files:
        st = f.stat()
        listing.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"path": str(p), "files": len(files), "listing": listing.hexdigest()}


def _canonical(value: Any, where: str = "key") -> Any:
    """Turn key parts into plain JSON values; refuses anything without a stable text form."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            return repr(f)
        return int(f) if f.is_integer() else f
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"cache {where}: keys must be str, got {k!r}")
            out[k] = _canonical(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray) and value.ndim <= 1 and value.dtype.kind in "biuf":
        return [_canonical(v, where) for v in value.tolist()]
    raise TypeError(f"cache {where}: cannot use a {type(value).__name__} in a cache key: {value!r}")


def cache_key(key_parts: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the canonical JSON form of ``key_parts`` (plus the format version).

    Ints and integral floats hash alike (``112`` and ``112.0``); lists and tuples hash alike.
    """
    doc = {"version": CACHE_FORMAT_VERSION, "parts": _canonical(key_parts)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


class ClipCache:
    """A folder of cached arrays, ``ROOT/<2 hex>/<64 hex>.npy`` plus a ``.json`` of the key parts.

    Args:
        root: cache folder (created on first write).
        mmap: return entries memory-mapped read-only (default) rather than loaded into memory.
    """

    def __init__(self, root: str | os.PathLike[str], *, mmap: bool = True) -> None:
        self.root = Path(root).expanduser()
        self.mmap = mmap

    def key(self, key_parts: Mapping[str, Any]) -> str:
        """The hex key of ``key_parts`` (see :func:`cache_key`)."""
        return cache_key(key_parts)

    def path_for(self, key_parts: Mapping[str, Any]) -> Path:
        """The ``.npy`` path an entry has (whether or not it exists)."""
        key = self.key(key_parts)
        return self.root / key[:2] / f"{key}.npy"

    def __contains__(self, key_parts: Mapping[str, Any]) -> bool:
        return self.path_for(key_parts).is_file()

    def get(self, key_parts: Mapping[str, Any]) -> np.ndarray | None:
        """The cached array, or None when absent or unreadable (an unreadable entry is logged)."""
        path = self.path_for(key_parts)
        try:
            return np.load(path, mmap_mode="r" if self.mmap else None, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (ValueError, OSError, EOFError) as exc:
            logger.warning("ignoring unreadable cache entry %s (%s)", path, exc)
            return None

    def put(self, key_parts: Mapping[str, Any], array: np.ndarray) -> np.ndarray:
        """Store ``array`` atomically and return the stored entry (memory-mapped if ``mmap``)."""
        array = np.asarray(array)
        if array.dtype == object:
            raise TypeError("cannot cache an object array")
        path = self.path_for(key_parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"version": CACHE_FORMAT_VERSION, "parts": _canonical(key_parts),
                "shape": list(array.shape), "dtype": str(array.dtype)}
        _atomic_write(path.with_suffix(".json"), lambda fh: fh.write(
            json.dumps(meta, sort_keys=True, indent=1).encode()))
        _atomic_write(path, lambda fh: np.save(fh, np.ascontiguousarray(array), allow_pickle=False))
        stored = self.get(key_parts)
        if stored is None:  # e.g. removed concurrently by a cleaner; the data is still good
            return array
        return stored

    def get_or_create(
        self, key_parts: Mapping[str, Any], producer: Callable[[], np.ndarray]
    ) -> np.ndarray:
        """Return the cached array for ``key_parts``; on a miss call ``producer()`` and store its result.

        Args:
            key_parts: everything the array depends on: the source's :func:`clip_fingerprint`, the
                frame numbers and every preprocessing parameter.
            producer: computes the array (e.g. decode, crop, resize -> ``(T, H, W, C)`` uint8).

        Returns:
            The array; read-only memory map when ``mmap`` (copy it before modifying in place).
        """
        cached = self.get(key_parts)
        if cached is not None:
            return cached
        return self.put(key_parts, producer())


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Write through ``write(file)`` into a temporary file beside ``path``, then rename over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        try:
            os.replace(tmp, path)
        except PermissionError:  # Windows: target is open (memory-mapped) by another reader
            if not path.exists():
                raise
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
