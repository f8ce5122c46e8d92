"""Preprocessed clip cache: hits, misses on any change, atomic writes, key canonicalisation."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from microexp.data.cache import ClipCache, cache_key, clip_fingerprint


class Producer:
    """Counts calls; returns a fixed small clip."""

    def __init__(self, value: int = 7):
        self.calls = 0
        self.value = value

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return np.full((3, 4, 4, 3), self.value, dtype=np.uint8)


@pytest.fixture
def clip(tmp_path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"not really a video, but a file with a size and an mtime")
    return path


def parts(clip: Path, **params) -> dict:
    return {"source": clip_fingerprint(clip), "frames": [1, 2, 3], "size": 4, "grayscale": False, **params}


def test_hit_does_not_call_the_producer(tmp_path, clip):
    cache = ClipCache(tmp_path / "cache")
    producer = Producer()
    first = cache.get_or_create(parts(clip), producer)
    second = cache.get_or_create(parts(clip), producer)
    assert producer.calls == 1
    np.testing.assert_array_equal(first, producer())
    np.testing.assert_array_equal(second, first)
    assert isinstance(second, np.memmap) and not second.flags.writeable
    assert parts(clip) in cache
    assert cache.path_for(parts(clip)).with_suffix(".json").is_file()
    assert not [p for p in (tmp_path / "cache").rglob("*.tmp")]


def test_changed_parameter_or_frames_is_a_miss(tmp_path, clip):
    cache = ClipCache(tmp_path / "cache")
    producer = Producer()
    cache.get_or_create(parts(clip), producer)
    cache.get_or_create(parts(clip, size=8), producer)
    cache.get_or_create(parts(clip, grayscale=True), producer)
    cache.get_or_create(parts(clip, interpolation="bilinear"), producer)
    cache.get_or_create({**parts(clip), "frames": [1, 2, 4]}, producer)
    assert producer.calls == 5
    cache.get_or_create(parts(clip, size=8), producer)
    assert producer.calls == 5


def test_touched_or_changed_source_is_a_miss(tmp_path, clip):
    cache = ClipCache(tmp_path / "cache")
    producer = Producer()
    cache.get_or_create(parts(clip), producer)
    st = clip.stat()
    os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched, same bytes
    cache.get_or_create(parts(clip), producer)
    assert producer.calls == 2
    clip.write_bytes(clip.read_bytes() + b"!")  # new content
    cache.get_or_create(parts(clip), producer)
    assert producer.calls == 3


def test_frame_folder_fingerprint_follows_its_files(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(folder / f"img{i}.png")
    before = clip_fingerprint(folder)
    assert clip_fingerprint(folder) == before
    st = (folder / "img1.png").stat()
    os.utime(folder / "img1.png", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = clip_fingerprint(folder)
    assert touched != before
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "img3.png")
    assert clip_fingerprint(folder) != touched


def test_content_fingerprint_survives_a_copy(tmp_path, clip):
    copy = tmp_path / "elsewhere" / "clip.mp4"
    copy.parent.mkdir()
    shutil.copy(clip, copy)
    assert clip_fingerprint(clip) != clip_fingerprint(copy)
    assert clip_fingerprint(clip, content=True) == clip_fingerprint(copy, content=True)


def test_missing_source_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.mp4"):
        clip_fingerprint(tmp_path / "gone.mp4")


def test_failing_producer_leaves_nothing(tmp_path, clip):
    cache = ClipCache(tmp_path / "cache")

    def broken():
        raise RuntimeError("decode failed")

    with pytest.raises(RuntimeError, match="decode failed"):
        cache.get_or_create(parts(clip), broken)
    assert cache.get(parts(clip)) is None
    assert not [p for p in (tmp_path / "cache").rglob("*.npy")]


def test_unreadable_entry_is_recomputed(tmp_path, clip):
    cache = ClipCache(tmp_path / "cache")
    producer = Producer()
    cache.get_or_create(parts(clip), producer)
    cache.path_for(parts(clip)).write_bytes(b"\x93NUMPY garbage")
    np.testing.assert_array_equal(cache.get_or_create(parts(clip), producer), producer())
    assert producer.calls == 3  # recomputed (plus the call in the comparison)


def test_key_canonicalisation():
    base = {"size": 112, "frames": [1, 2], "scale": 0.5, "crop": None}
    same = {"crop": None, "scale": np.float64(0.5), "frames": (np.int64(1), 2), "size": 112.0}
    assert cache_key(base) == cache_key(same)
    assert cache_key(base) != cache_key({**base, "size": 113})
    assert cache_key({"path": Path("/a/b")}) == cache_key({"path": "/a/b"})
    with pytest.raises(TypeError, match="cannot use a object in a cache key"):
        cache_key({"bad": object()})


def test_non_mmap_mode_and_dtypes(tmp_path):
    cache = ClipCache(tmp_path, mmap=False)
    flows = np.linspace(-1, 1, 24, dtype=np.float16).reshape(2, 3, 4)
    out = cache.get_or_create({"kind": "flow"}, lambda: flows)
    out = cache.get_or_create({"kind": "flow"}, lambda: pytest.fail("producer called on a hit"))
    assert not isinstance(out, np.memmap) and out.dtype == np.float16
    np.testing.assert_array_equal(out, flows)


def _worker(root: str) -> int:
    cache = ClipCache(root)
    array = cache.get_or_create({"clip": "shared"}, lambda: np.arange(200_000, dtype=np.int64))
    return int(array.sum())


def test_concurrent_workers_never_see_partial_files(tmp_path):
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        sums = pool.map(_worker, [str(tmp_path)] * 6)
    assert set(sums) == {sum(range(200_000))}
    assert not [p for p in tmp_path.rglob("*.tmp")]
