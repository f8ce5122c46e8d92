"""Key-frame loading: T=16 sampled frames of a 300-frame clip from four sources.

Per frame size (128x128 and 480x640) one clip is generated (synthetic face frames with sensor noise, see
:func:`make_frames`) and stored four ways:

(a) ``packed_decord``: a video packed by ``microexp pack`` (lossless, intra-only; :func:`pack_clip`), read
    with decord through :func:`open_video`;
(b) ``naive_pyav``: the same video decoded with PyAV from the first frame up to the last needed one,
    keeping the needed frames (a naive sequential reader: the baseline of the ratios);
(c) ``folder``: the original PNG frame folder, read with :func:`open_video` (PIL);
(d) ``cache``: the preprocessed clip cache (:class:`ClipCache`) holding the clip resized to 112x112 as
    the Dataset stores it, memory-mapped.

Also measured, for reference: ``packed_pyav``, the packed video through microexp's PyAV reader (it
seeks to the keyframe before each wanted frame). Every reader is opened anew per clip, as the Dataset
does per item; the OS page cache is warm (the files were just written), so these are decode costs, not
disk reads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from microexp.benchmark.report import Figure, Section, time_calls

logger = logging.getLogger(__name__)

__all__ = ["CLIP_FRAMES", "KEY_FRAMES", "SIZES", "make_frames", "naive_read", "measure_loading"]

CLIP_FRAMES = 300
KEY_FRAMES = 16
#: (height, width) of the two clips.
SIZES = ((128, 128), (480, 640))
CACHE_SIZE = 112
METHODS = ("packed_decord", "naive_pyav", "folder", "cache", "packed_pyav")


def make_frames(height: int, width: int, *, frames: int = CLIP_FRAMES, unique: int = 30, seed: int = 0) -> np.ndarray:
    """``(frames, height, width, 3)`` uint8 face frames: ``unique`` rendered synthetic frames (with the
    generator's sensor noise and head drift), repeated in a ping-pong order to ``frames``."""
    from microexp.synth import plan_dataset, render_clip

    spec = plan_dataset(subjects=1, clips=1, seed=seed)[0]
    side = max(height, width)
    side += side % 2
    count = min(unique, spec.num_frames)
    rendered = render_clip(spec, size=side, frame_numbers=np.arange(1, count + 1)).frames
    top, left = (side - height) // 2, (side - width) // 2
    rendered = rendered[:, top:top + height, left:left + width]
    order = np.concatenate([np.arange(count), np.arange(count - 2, 0, -1)]) if count > 2 else np.arange(count)
    return np.ascontiguousarray(rendered[np.resize(order, frames)])


def naive_read(path: str | Path, positions: list[int]) -> np.ndarray:
    """Decode ``path`` with PyAV from its first frame up to ``max(positions)``, keeping ``positions``.

    The baseline reader (b): no seeking, no index; every frame before the last one wanted is decoded.
    """
    import av

    wanted = set(positions)
    last = max(positions)
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                out.append(frame.to_ndarray(format="rgb24"))
            if index >= last:
                break
    if len(out) != len(wanted):
        raise RuntimeError(f"{path}: decoded {len(out)} of {len(wanted)} wanted frames")
    return np.stack(out)


def _write_folder(folder: Path, frames: np.ndarray) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for number, frame in enumerate(frames, start=1):
        if not cv2.imwrite(str(folder / f"{number:05d}.png"), frame[..., ::-1]):
            raise OSError(f"{folder}: cannot write frame {number}")


def _prepare(work: Path, height: int, width: int, *, preset: str) -> dict[str, Any]:
    """Write the four stores of one clip; returns paths and preparation times."""
    import time

    from microexp.data.cache import ClipCache, clip_fingerprint
    from microexp.data.pack import PackSettings, pack_clip
    from microexp.data.transforms import resize_frames

    start = time.perf_counter()
    frames = make_frames(height, width)
    folder = work / f"frames_{height}x{width}"
    _write_folder(folder, frames)
    written = time.perf_counter()
    packed = work / f"packed_{height}x{width}.mp4"
    pack_clip(folder, packed, fps=200.0, settings=PackSettings(preset=preset), first_frame=1)
    encoded = time.perf_counter()
    cache = ClipCache(work / "cache")
    key = {"clip": f"bench_{height}x{width}", "source": clip_fingerprint(packed), "first_frame": 0,
           "span": [0, CLIP_FRAMES - 1], "size": CACHE_SIZE, "resize": "short-side+center-crop,antialias"}
    cache.put(key, resize_frames(frames, CACHE_SIZE))
    return {"folder": folder, "packed": packed, "cache": cache, "key": key,
            "prepare_seconds": {"render_and_png": round(written - start, 2), "pack": round(encoded - written, 2)},
            "sizes_mb": {"folder": round(sum(f.stat().st_size for f in folder.iterdir()) / 1e6, 1),
                         "packed": round(packed.stat().st_size / 1e6, 1)}}


def measure_loading(work: Path, *, repeats: int, preset: str = "medium", sizes=SIZES) -> Section:
    """Clips/s of each source at each size, and the ratios to the naive PyAV reader (b).

    Args:
        work: an empty temporary folder for the clips.
        repeats: timed repeats per source (interleaved; the median is reported).
        preset: x264 preset of the packed file (``microexp pack`` uses ``medium``).
    """
    from microexp.data.sampling import sample_indices
    from microexp.data.video import open_video

    positions = [int(p) for p in sample_indices("uniform", 0, CLIP_FRAMES // 2, CLIP_FRAMES - 1, KEY_FRAMES)]
    section = Section("loading", details={
        "clip_frames": CLIP_FRAMES, "key_frames": KEY_FRAMES, "positions": positions, "pack_preset": preset,
        "cache_frame_size": CACHE_SIZE, "methods": {
            "packed_decord": "(a) packed lossless intra-only H.264, decord (open_video backend=decord)",
            "naive_pyav": "(b) the packed file, PyAV decoding every frame up to the last needed one",
            "folder": "(c) the original PNG frame folder (open_video, PIL)",
            "cache": f"(d) preprocessed clip cache, {CACHE_SIZE}x{CACHE_SIZE} uint8 .npy, memory-mapped",
            "packed_pyav": "reference: the packed file through microexp's PyAV reader (keyframe seeks)",
        }, "sizes": {}})
    numbers = [p + 1 for p in positions]  # the folder's frames are numbered from 1
    for height, width in sizes:
        label = f"{height}x{width}"
        stores = _prepare(work, height, width, preset=preset)
        cache, key = stores["cache"], stores["key"]

        def read_decord(path=stores["packed"]) -> np.ndarray:
            with open_video(path, backend="decord") as reader:
                return reader.get_frames(positions)

        def read_pyav(path=stores["packed"]) -> np.ndarray:
            with open_video(path, backend="pyav") as reader:
                return reader.get_frames(positions)

        def read_folder(path=stores["folder"]) -> np.ndarray:
            with open_video(path) as reader:
                return reader.get_frames_by_number(numbers)

        def read_cache(cache=cache, key=key) -> np.ndarray:
            span = cache.get(key)
            return np.asarray(span[positions])

        functions = {"packed_decord": read_decord, "naive_pyav": lambda p=stores["packed"]: naive_read(p, positions),
                     "folder": read_folder, "cache": read_cache, "packed_pyav": read_pyav}
        reference = naive_read(stores["packed"], positions)
        for name in ("packed_decord", "packed_pyav", "folder"):
            if not np.array_equal(functions[name](), reference):  # lossless: every reader must agree exactly
                raise RuntimeError(f"loading benchmark: {name} frames differ from the naive decode at {label}")
        times = time_calls(functions, repeats=repeats, warmup=0)  # the check above was the warm-up round
        section.details["sizes"][label] = {k: v for k, v in stores.items() if k in ("prepare_seconds", "sizes_mb")}
        for name in METHODS:
            seconds = times[name]
            section.figures.append(Figure(f"{label}.{name}.seconds", tuple(seconds), "s"))
            section.figures.append(Figure(f"{label}.{name}.clips_per_s", tuple(1.0 / s for s in seconds), "clips/s"))
        base = section.figure(f"{label}.naive_pyav.seconds")
        assert base is not None
        for name in METHODS:
            if name == "naive_pyav":
                continue
            own = section.figure(f"{label}.{name}.seconds")
            assert own is not None
            # per-round ratios of the interleaved repeats; the reported figure is their median
            values = tuple(b / o for b, o in zip(base.values, own.values))
            section.figures.append(Figure(f"{label}.{name}.speedup_vs_naive", values, "x"))
        logger.info("loading %s: %s", label, ", ".join(
            f"{n} {section.figure(f'{label}.{n}.clips_per_s').median:.1f} clips/s" for n in METHODS))  # type: ignore[union-attr]
    return section
