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

**What an entry costs** (the size rule; ``microexp cache info DIR`` prints it with the folder's totals):

* frames (``kind`` = frames, written by the Dataset with ``data.cache_dir``): every frame from onset to
  offset, ``(offset - onset + 1) x S x S x 3`` bytes (uint8) per clip per cache size ``S`` (``data.size``).
  One entry serves every sampling strategy, ``num_frames``, epoch, fold and recipe with that size; a
  flow recipe stores these spans too (its frames are decoded through them).
* flow (``kind`` = flow, from flow modalities or ``microexp flow``): ``T x S x S x C x 2`` bytes (float16,
  ``C`` = 2, or 3 with strain) per clip per set of sampled frames (strategy and ``num_frames``), flow
  method and reference.
* each entry adds a 128-byte ``.npy`` header and a ``.json`` of its key (about 0.5 kB).

So the cache grows with the clips' lengths in frames, not with the dataset's size on disk: compressed
video is far smaller than its decoded frames. The demo (``make demo``: 300 clips, onset to offset 67.7
frames on average, ``size`` 112, 8 Farneback flows per clip) caches 300 x 67.7 x 112 x 112 x 3 B = 765 MB
of frame spans plus 300 x 8 x 112 x 112 x 2 x 2 B = 120 MB of flows: 885 MB for a 36 MB dataset.

**Housekeeping**: :func:`scan_cache` lists the entries (``microexp cache info``) and :func:`prune_cache`
removes entries by age, by total size (least recently used first) or all of them (``microexp cache
prune``); files that are not cache entries are never touched. Pruning while a run reads the cache is
safe: a removed entry is recomputed on its next use.

A write that fails because of the file system (read-only ``data.cache_dir``, disk full) raises
:class:`microexp.fileio.OutputError` naming the path and the cause.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from microexp.fileio import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["format_bytes", "ClipCache", "clip_fingerprint", "cache_key", "CACHE_FORMAT_VERSION", "CacheEntry", "CacheScan",
           "PruneResult", "SIZE_RULE", "scan_cache", "prune_cache", "entry_bytes"]

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
        meta = {"version": CACHE_FORMAT_VERSION, "parts": _canonical(key_parts),
                "shape": list(array.shape), "dtype": str(array.dtype)}
        target = path.with_suffix(".json")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(target, lambda fh: fh.write(json.dumps(meta, sort_keys=True, indent=1).encode()))
            target = path
            _atomic_write(path, lambda fh: np.save(fh, np.ascontiguousarray(array), allow_pickle=False))
        except OSError as exc:
            from microexp.fileio import output_error

            if target == path and not path.exists():  # the key file alone is no entry: do not leave it
                path.with_suffix(".json").unlink(missing_ok=True)
            cause = exc
            # NumPy's short write has no errno; the entry's blocks (header, key file, block rounding) need
            # more than array.nbytes, and the temporary file is already gone, so leave a margin
            if exc.errno is None and _free_bytes(path.parent) < array.nbytes + _ENTRY_OVERHEAD:
                cause = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
            raise output_error(target, cause, kept=f"the cache {self.root} keeps its complete entries; free space, "
                               "fix the permissions or point data.cache_dir elsewhere") from exc
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
    """Write through ``write(file)`` into a temporary file beside ``path``, then rename over it.

    Concurrent writers of one entry each write their own temporary file; the last rename wins and a
    reader only ever sees a complete file. No fsync: a cache entry lost in a power cut is recomputed
    (an unreadable entry counts as a miss). Entries get a new file's normal permissions, so a shared
    cache folder stays readable.
    """
    with atomic_write(path, durable=False, shared=True, keep_suffix=False) as tmp:
        with open(tmp, "wb") as fh:
            write(fh)


#: bytes an entry may need beyond its array: the .npy header, the .json key file and block rounding
_ENTRY_OVERHEAD = 64 * 1024


def _free_bytes(folder: Path) -> int:
    """Bytes available to this user on ``folder``'s file system (a large number when unknown)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return 1 << 62
    return st.f_bavail * st.f_frsize



# ---------------------------------------------------------------------------------------------------------
# Housekeeping: what is in a cache folder, and removing entries

#: What one entry costs, in words (printed by ``microexp cache info``).
SIZE_RULE = (
    "frames entry: (offset - onset + 1) x S x S x 3 bytes (uint8) per clip per cache size S, shared by every "
    "sampling, num_frames, fold and recipe with that size (flow recipes store these spans too); "
    "flow entry: T x S x S x C x 2 bytes (float16, C = 2, or 3 with strain) per clip per set of sampled "
    "frames, flow method and reference; plus a 128-byte .npy header and a ~0.5 kB .json per entry"
)

_ENTRY = re.compile(r"^[0-9a-f]{64}\.(npy|json)$")
_SHARD = re.compile(r"^[0-9a-f]{2}$")
_TEMP = re.compile(r"^\.[0-9a-f]{64}\.(npy|json)\..+\.tmp$")
#: a temporary file older than this is left over from a killed writer (a live writer finishes in seconds)
STALE_TEMP_SECONDS = 3600.0


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One cached array: its ``.npy`` (and ``.json`` of the key) and what it holds.

    Attributes:
        key: the 64-hex key.
        files: the entry's files (the ``.npy``, and the ``.json`` when present).
        bytes: their total size on disk.
        last_used: when the entry was last read or written (the later of access and modification time of
            the ``.npy``; access times follow the file system's ``relatime`` rule, about once a day).
        kind: ``frames``, ``flow``, another ``kind`` from the key, or ``unknown`` (no readable ``.json``).
        setting: the parameters that make entries of one kind differ (size, flow method, frames, ...).
    """

    key: str
    files: tuple[Path, ...]
    bytes: int
    last_used: float
    kind: str
    setting: str


@dataclasses.dataclass(frozen=True)
class CacheScan:
    """A cache folder's entries, plus files in it that are not entries (never touched by pruning).

    Attributes:
        temp_files: temporary files of writers (live, or left over from killed ones: see ``stale_temp``).
        orphans: ``.json`` key files whose ``.npy`` is gone (removed with their entry's kind ``unknown``).
        foreign: every other file under the folder (not ours).
    """

    root: Path
    entries: tuple[CacheEntry, ...]
    temp_files: tuple[Path, ...] = ()
    orphans: tuple[Path, ...] = ()
    foreign: tuple[Path, ...] = ()

    @property
    def bytes(self) -> int:
        return sum(e.bytes for e in self.entries)

    def breakdown(self) -> list[tuple[str, str, int, int]]:
        """``(kind, setting, entries, bytes)`` per kind and setting, largest first."""
        groups: dict[tuple[str, str], list[int]] = {}
        for e in self.entries:
            count_bytes = groups.setdefault((e.kind, e.setting), [0, 0])
            count_bytes[0] += 1
            count_bytes[1] += e.bytes
        return sorted(((k, s, n, b) for (k, s), (n, b) in groups.items()), key=lambda g: (-g[3], g[0], g[1]))


@dataclasses.dataclass(frozen=True)
class PruneResult:
    """What :func:`prune_cache` removed (or would remove, with ``dry_run``)."""

    removed: tuple[CacheEntry, ...]
    temp_files: tuple[Path, ...]
    orphans: tuple[Path, ...]
    freed_bytes: int
    kept_entries: int
    kept_bytes: int


def entry_bytes(shape: tuple[int, ...] | list[int], dtype: str | np.dtype) -> int:
    """The bytes of an entry's array (the size rule): ``prod(shape) x itemsize``, without header or key file."""
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _describe(meta: Mapping[str, Any] | None) -> tuple[str, str]:
    """``(kind, setting)`` of an entry from its ``.json``."""
    if not isinstance(meta, Mapping) or not isinstance(meta.get("parts"), Mapping):
        return "unknown", "no readable key file"
    parts, shape, dtype = meta["parts"], list(meta.get("shape") or []), str(meta.get("dtype", "?"))
    if parts.get("kind") == "optical_flow":
        channels = "dx,dy,strain" if parts.get("strain") else "dx,dy"
        frames = len(parts["times"]) if isinstance(parts.get("times"), list) else (shape[0] if shape else "?")
        return "flow", (f"{parts.get('method', '?')}, {frames} frames, {parts.get('size', '?')} px, {channels}, "
                        f"reference {parts.get('reference', '?')}, {dtype}")
    if "span" in parts:
        return "frames", f"{parts.get('size', '?')} px, {dtype}"
    kind = str(parts.get("kind", "other"))
    return kind, f"shape {'x'.join(map(str, shape[1:])) or '?'}, {dtype}"


def scan_cache(root: str | os.PathLike[str]) -> CacheScan:
    """List a cache folder's entries (``ROOT/<2 hex>/<64 hex>.npy`` + ``.json``) and its other files.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is a file.
    """
    base = Path(root).expanduser()
    if not base.exists():
        raise FileNotFoundError(f"cache folder not found: {base}")
    if not base.is_dir():
        raise NotADirectoryError(f"not a cache folder (a file): {base}")
    entries: list[CacheEntry] = []
    temps: list[Path] = []
    orphans: list[Path] = []
    foreign: list[Path] = []
    for path in _walk(base):
        relative = path.relative_to(base).parts
        in_shard = (len(relative) == 2 and _SHARD.match(relative[0]) is not None and not path.is_symlink()
                    and not path.parent.is_symlink())
        name = path.name
        if not in_shard:
            foreign.append(path)
        elif _TEMP.match(name):
            temps.append(path)
        elif not _ENTRY.match(name) or not name.startswith(relative[0]):
            foreign.append(path)
        elif name.endswith(".json"):
            if not path.with_suffix(".npy").is_file():
                orphans.append(path)
        else:
            key_file = path.with_suffix(".json")
            try:
                meta = json.loads(key_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = None
            try:
                st = path.stat()
            except FileNotFoundError:  # removed concurrently
                continue
            files = (path, key_file) if key_file.is_file() else (path,)
            size = st.st_size + (key_file.stat().st_size if len(files) == 2 else 0)
            kind, setting = _describe(meta)
            entries.append(CacheEntry(key=name[:64], files=files, bytes=size,
                                      last_used=max(st.st_atime, st.st_mtime), kind=kind, setting=setting))
    return CacheScan(root=base, entries=tuple(entries), temp_files=tuple(temps), orphans=tuple(orphans),
                     foreign=tuple(foreign))


def _walk(base: Path) -> list[Path]:
    """Every file and symbolic link under ``base``, sorted; symbolic links to folders are not followed."""
    found = []
    for folder, dirs, files in os.walk(base, followlinks=False):
        here = Path(folder)
        found += [here / name for name in files]
        found += [here / name for name in dirs if (here / name).is_symlink()]  # listed, never entered
    return sorted(found)


def prune_cache(
    root: str | os.PathLike[str],
    *,
    older_than_days: float | None = None,
    max_bytes: int | None = None,
    remove_all: bool = False,
    dry_run: bool = False,
    now: float | None = None,
) -> PruneResult:
    """Remove cache entries: unused for ``older_than_days``, then least recently used ones until the cache
    holds at most ``max_bytes``, or every entry with ``remove_all``.

    Also removes writers' temporary files older than an hour (left over from killed processes) and key
    files whose array is gone. Only files named like cache entries inside their 2-hex shard folders are
    ever removed (then empty shard folders); everything else under ``root`` is left alone.

    Returns:
        What was removed (``dry_run``: what would be), the bytes freed and what is kept.
    """
    if older_than_days is None and max_bytes is None and not remove_all:
        raise ValueError("prune_cache: give older_than_days, max_bytes or remove_all")
    if older_than_days is not None and (not math.isfinite(older_than_days) or older_than_days < 0):
        raise ValueError(f"older_than_days={older_than_days}: expected a number >= 0")
    if max_bytes is not None and max_bytes < 0:
        raise ValueError(f"max_bytes={max_bytes}: expected >= 0")
    scan = scan_cache(root)
    now = time.time() if now is None else now
    entries = sorted(scan.entries, key=lambda e: e.last_used)  # least recently used first
    if remove_all:
        doomed = list(entries)
    else:
        doomed = []
        if older_than_days is not None:
            doomed = [e for e in entries if now - e.last_used > older_than_days * 86400.0]
        if max_bytes is not None:
            chosen = {e.key for e in doomed}
            total = sum(e.bytes for e in entries if e.key not in chosen)
            for e in entries:
                if total <= max_bytes:
                    break
                if e.key not in chosen:
                    doomed.append(e)
                    total -= e.bytes
    temps = []
    for path in scan.temp_files:
        try:
            if now - path.stat().st_mtime > STALE_TEMP_SECONDS:
                temps.append(path)
        except FileNotFoundError:
            continue
    freed = 0
    for path in (*[f for e in doomed for f in e.files], *temps, *scan.orphans):
        try:
            size = path.stat().st_size
            if not dry_run:
                path.unlink()
            freed += size
        except FileNotFoundError:  # removed concurrently
            continue
        except OSError as exc:
            from microexp.fileio import OutputError, describe_os_error

            error = OutputError(f"cannot remove {path}: {describe_os_error(exc)}; {format_bytes(freed)} freed before it")
            error.errno = exc.errno
            raise error from exc
    if not dry_run:
        for shard in {p.parent for e in doomed for p in e.files} | {p.parent for p in (*temps, *scan.orphans)}:
            try:
                shard.rmdir()  # only when empty
            except OSError:
                pass
    gone = {e.key for e in doomed}
    kept = [e for e in scan.entries if e.key not in gone]
    return PruneResult(removed=tuple(doomed), temp_files=tuple(temps), orphans=scan.orphans, freed_bytes=freed,
                       kept_entries=len(kept), kept_bytes=sum(e.bytes for e in kept))


def format_bytes(n: float) -> str:
    """Bytes in words: ``885.2 MB``."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
