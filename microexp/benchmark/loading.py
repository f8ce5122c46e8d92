"""Key-frame loading: T=16 sampled frames of a 300-frame clip from each store and reader.

Per frame size (128x128 and 480x640) one clip is generated (synthetic face frames with sensor noise, see
:func:`make_frames`) and stored as a PNG folder, a JPEG folder, both pack modes and the clip cache:

(a) ``packed_decord``: packed by ``microexp pack --mode lossless`` (RGB H.264 qp 0, intra-only;
    :func:`pack_clip`), read with decord through :func:`open_video`; ``packed_pyav`` and (when it can
    run) ``packed_torchcodec``: the same file with microexp's PyAV reader or torchcodec;
(b) ``naive_pyav``: the same video decoded with PyAV from the first frame up to the last needed one,
    keeping the needed frames (a naive sequential reader: the baseline of the ``speedup_vs_naive`` ratios);
(c) ``folder``: the original PNG frame folder, read with :func:`open_video` (PIL);
(d) ``cache``: the preprocessed clip cache (:class:`ClipCache`) holding the clip resized to 112x112 as
    the Dataset stores it, memory-mapped;
(e) ``folder_jpeg``: the frames as a JPEG folder at the mjpeg pack's quality (OpenCV, 4:2:0), read with
    PIL: the practical floor for decoding 16 frames, the target of the ``vs_jpeg`` ratios;
(f) ``mjpeg_decord``, ``mjpeg_pyav``, ``mjpeg_torchcodec``: packed by ``microexp pack --mode mjpeg``
    (the default; those very JPEG images in one AVI file); ``auto`` reads it with PyAV;
(g) ``*_pooled``: the same with the reader opened once and kept in a :class:`ReaderPool` (a file read
    again and again by one DataLoader worker), for ``mjpeg_pyav`` and ``packed_decord``.

Every other reader is opened anew per clip, as the Dataset does per item. ``vs_folder`` ratios compare with
(c). All methods are timed interleaved in one process, so the ratios share the machine's load. The OS page
cache is warm (the files were just written), so these are decode costs, not disk reads.
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
#: Always measured; ``packed_torchcodec`` and ``mjpeg_torchcodec`` are added when torchcodec can run.
METHODS = ("packed_decord", "naive_pyav", "folder", "cache", "packed_pyav", "folder_jpeg", "mjpeg_decord",
           "mjpeg_pyav", "mjpeg_pyav_pooled", "packed_decord_pooled")
TORCHCODEC_METHODS = ("packed_torchcodec", "mjpeg_torchcodec")
#: Lossy stores: decoded frames must be at least this close to the source (PSNR, dB).
MIN_PSNR = 30.0


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


def _write_folder(folder: Path, frames: np.ndarray, *, jpeg_quality: int | None = None) -> None:
    """Frames ``00001.png`` ... (or ``.jpg`` at ``jpeg_quality``, 4:2:0, as :func:`write_mjpeg` encodes them)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    suffix, params = ".png", []
    if jpeg_quality is not None:
        suffix, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality,
                                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
    for number, frame in enumerate(frames, start=1):
        if not cv2.imwrite(str(folder / f"{number:05d}{suffix}"), frame[..., ::-1], params):
            raise OSError(f"{folder}: cannot write frame {number}")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255 ** 2 / mse))


def _megabytes(path: Path) -> float:
    size = sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size
    return round(size / 1e6, 2)


def _prepare(work: Path, height: int, width: int, *, preset: str, quality: int) -> dict[str, Any]:
    """Write the stores of one clip; returns paths, sizes and preparation times."""
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
    pack_clip(folder, packed, fps=200.0, settings=PackSettings(mode="lossless", preset=preset), first_frame=1)
    encoded = time.perf_counter()
    mjpeg = work / f"mjpeg_{height}x{width}.avi"
    pack_clip(folder, mjpeg, fps=200.0, settings=PackSettings(mode="mjpeg", quality=quality), first_frame=1)
    mjpeg_encoded = time.perf_counter()
    jpeg_folder = work / f"jpeg_{height}x{width}"
    _write_folder(jpeg_folder, frames, jpeg_quality=quality)
    cache = ClipCache(work / "cache")
    key = {"clip": f"bench_{height}x{width}", "source": clip_fingerprint(packed), "first_frame": 0,
           "span": [0, CLIP_FRAMES - 1], "size": CACHE_SIZE, "resize": "short-side+center-crop,antialias"}
    cache.put(key, resize_frames(frames, CACHE_SIZE))
    return {"folder": folder, "packed": packed, "mjpeg": mjpeg, "jpeg_folder": jpeg_folder, "cache": cache, "key": key,
            "frames": frames,
            "prepare_seconds": {"render_and_png": round(written - start, 2), "pack": round(encoded - written, 2),
                                "pack_mjpeg": round(mjpeg_encoded - encoded, 2)},
            "sizes_mb": {"folder": _megabytes(folder), "packed": _megabytes(packed), "mjpeg": _megabytes(mjpeg),
                         "folder_jpeg": _megabytes(jpeg_folder)}}


def measure_loading(work: Path, *, repeats: int, preset: str = "medium", sizes=SIZES,
                    quality: int | None = None) -> Section:
    """Clips/s of each store and reader at each size, with ratios to the naive PyAV reader (b), the PNG
    folder (c) and the JPEG folder (e).

    Args:
        work: an empty temporary folder for the clips.
        repeats: timed repeats per method (interleaved; the median is reported).
        preset: x264 preset of the lossless packed file (``microexp pack`` uses ``medium``).
        quality: JPEG quality of the mjpeg pack and the JPEG folder (default: ``microexp pack``'s).
    """
    from microexp.data.sampling import sample_indices
    from microexp.data.video import DEFAULT_JPEG_QUALITY, ReaderPool, open_video, torchcodec_problem

    quality = DEFAULT_JPEG_QUALITY if quality is None else quality
    torchcodec = torchcodec_problem()
    methods = METHODS + (TORCHCODEC_METHODS if torchcodec is None else ())
    positions = [int(p) for p in sample_indices("uniform", 0, CLIP_FRAMES // 2, CLIP_FRAMES - 1, KEY_FRAMES)]
    section = Section("loading", details={
        "clip_frames": CLIP_FRAMES, "key_frames": KEY_FRAMES, "positions": positions, "pack_preset": preset,
        "jpeg_quality": quality, "cache_frame_size": CACHE_SIZE,
        "torchcodec": "measured" if torchcodec is None else f"not measured: {torchcodec}",
        "methods": {
            "packed_decord": "(a) packed lossless intra-only H.264, decord (open_video backend=decord)",
            "naive_pyav": "(b) the packed file, PyAV decoding every frame up to the last needed one",
            "folder": "(c) the original PNG frame folder (open_video, PIL)",
            "cache": f"(d) preprocessed clip cache, {CACHE_SIZE}x{CACHE_SIZE} uint8 .npy, memory-mapped",
            "packed_pyav": "(a) the lossless packed file through microexp's PyAV reader",
            "packed_torchcodec": "(a) the lossless packed file through torchcodec (when it can run)",
            "folder_jpeg": f"(e) JPEG folder at quality {quality}, 4:2:0 (open_video, PIL): the floor",
            "mjpeg_decord": f"(f) packed --mode mjpeg --quality {quality} (AVI), decord",
            "mjpeg_pyav": f"(f) the mjpeg pack, PyAV (what backend auto picks for it)",
            "mjpeg_torchcodec": "(f) the mjpeg pack, torchcodec (when it can run)",
            "mjpeg_pyav_pooled": "(g) the mjpeg pack, PyAV, reader opened once (ReaderPool)",
            "packed_decord_pooled": "(g) the lossless pack, decord, reader opened once (ReaderPool)",
        }, "sizes": {}})
    numbers = [p + 1 for p in positions]  # the folder's frames are numbered from 1
    for height, width in sizes:
        label = f"{height}x{width}"
        stores = _prepare(work, height, width, preset=preset, quality=quality)
        cache, key = stores["cache"], stores["key"]
        pool = ReaderPool(capacity=4)

        def video(path: Path, backend: str):
            def read() -> np.ndarray:
                with open_video(path, backend=backend) as reader:
                    return reader.get_frames(positions)
            return read

        def pooled(path: Path, backend: str, pool=pool):
            return lambda: pool.get(path, backend=backend).get_frames(positions)

        def folder(path: Path):
            def read() -> np.ndarray:
                with open_video(path) as reader:
                    return reader.get_frames_by_number(numbers)
            return read

        def read_cache(cache=cache, key=key) -> np.ndarray:
            span = cache.get(key)
            return np.asarray(span[positions])

        packed, mjpeg = stores["packed"], stores["mjpeg"]
        functions = {"packed_decord": video(packed, "decord"), "naive_pyav": lambda p=packed: naive_read(p, positions),
                     "folder": folder(stores["folder"]), "cache": read_cache, "packed_pyav": video(packed, "pyav"),
                     "folder_jpeg": folder(stores["jpeg_folder"]), "mjpeg_decord": video(mjpeg, "decord"),
                     "mjpeg_pyav": video(mjpeg, "pyav"), "mjpeg_pyav_pooled": pooled(mjpeg, "pyav"),
                     "packed_decord_pooled": pooled(packed, "decord"),
                     "packed_torchcodec": video(packed, "torchcodec"), "mjpeg_torchcodec": video(mjpeg, "torchcodec")}
        functions = {name: functions[name] for name in methods}
        reference = naive_read(packed, positions)
        if not np.array_equal(reference, stores["frames"][positions]):
            raise RuntimeError(f"loading benchmark: the lossless pack does not decode to its frames at {label}")
        quality_db = {}
        for name in methods:
            if name in ("cache", "naive_pyav"):  # the cache holds resized frames; naive_pyav gave the reference
                functions[name]()  # the warm-up round
                continue
            got = functions[name]()  # also the warm-up round (and the pools' open)
            if name.startswith(("packed", "folder")) and name != "folder_jpeg":
                if not np.array_equal(got, reference):  # lossless: every reader must agree exactly
                    raise RuntimeError(f"loading benchmark: {name} frames differ from the naive decode at {label}")
            else:
                quality_db[name] = round(_psnr(got, reference), 2)
                if quality_db[name] < MIN_PSNR:
                    raise RuntimeError(f"loading benchmark: {name} frames are {quality_db[name]} dB from the source "
                                       f"at {label}, expected >= {MIN_PSNR}")
        times = time_calls(functions, repeats=repeats, warmup=0)  # the check above was the warm-up round
        pool.close()
        section.details["sizes"][label] = {k: v for k, v in stores.items() if k in ("prepare_seconds", "sizes_mb")}
        section.details["sizes"][label]["psnr_db"] = quality_db
        for name in methods:
            seconds = times[name]
            section.figures.append(Figure(f"{label}.{name}.seconds", tuple(seconds), "s"))
            section.figures.append(Figure(f"{label}.{name}.clips_per_s", tuple(1.0 / s for s in seconds), "clips/s"))
        ratios = (("naive_pyav", "speedup_vs_naive"), ("folder", "vs_folder"), ("folder_jpeg", "vs_jpeg"))
        for against, ratio in ratios:
            base = section.figure(f"{label}.{against}.seconds")
            assert base is not None
            for name in methods:
                if name == against or (ratio != "speedup_vs_naive" and name in ("naive_pyav", "cache")):
                    continue
                own = section.figure(f"{label}.{name}.seconds")
                assert own is not None
                # per-round ratios of the interleaved repeats; the reported figure is their median
                values = tuple(b / o for b, o in zip(base.values, own.values))
                section.figures.append(Figure(f"{label}.{name}.{ratio}", values, "x"))
        logger.info("loading %s: %s", label, ", ".join(
            f"{n} {section.figure(f'{label}.{n}.clips_per_s').median:.1f} clips/s" for n in methods))  # type: ignore[union-attr]
    return section
