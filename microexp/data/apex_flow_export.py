"""Compute once, share: the apex flows of a whole clip table as files, plus clip tables pointing at them.

:func:`export_apex_flows` (``microexp flow --apex``) computes each clip's onset->apex flow
(:mod:`microexp.data.apex_flow`) from its frames and writes, under ``OUT/flows/``, one ``.npy`` float32
``(size, size, 3)`` of u, v (pixels of the resized flow) and strain, and one 8-bit ``.png`` in the public
MEGC convention (R, G, B = u, v, strain, each min-max scaled to 0-255). ``OUT/annotations.csv`` points
at the images and ``OUT/annotations_npy.csv`` at the arrays; both are our CSV with a ``flow_path`` column
and no frame paths, so they can be shared without the licence-gated frames (the phases and fps stay,
for reference). Files are written atomically and a rerun skips clips whose two files exist.

Clip ids become file names as they are (``sub01/EP02_01f`` -> ``flows/sub01/EP02_01f.png``; spaces
kept), with empty, ``.`` and ``..`` parts removed so that nothing is written outside ``OUT/flows``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from microexp.data.apex_flow import apex_flow_pixels, flow_to_image, resize_flow
from microexp.data.flow import MIN_SIDE, sampled_frames
from microexp.errors import ConfigError, MicroexpError
from microexp.fileio import OutputError, atomic_path, check_writable
from microexp.workers import worker_context

__all__ = ["FLOWS_FOLDER", "IMAGE_TABLE", "NPY_TABLE", "ApexExportSummary", "export_apex_flows", "flow_file_stem"]

logger = logging.getLogger(__name__)

FLOWS_FOLDER = "flows"
IMAGE_TABLE = "annotations.csv"
NPY_TABLE = "annotations_npy.csv"
#: the columns of the shared tables (our CSV, without frame paths)
TABLE_COLUMNS = ("subject", "clip", "flow_path", "onset", "apex", "offset", "fps", "emotion", "aus", "dataset")

_CLIP_ERRORS = (MicroexpError, ValueError, cv2.error, FileNotFoundError, IsADirectoryError, NotADirectoryError)


@dataclass
class ApexExportSummary:
    """What :func:`export_apex_flows` did: clips written now, kept from an earlier run, failed (with reasons)."""

    total: int = 0
    written: int = 0
    kept: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    tables: tuple[Path, ...] = ()


@dataclass(frozen=True)
class _Job:
    flows: Path
    method: str
    compute_size: int
    size: int
    backend: str


def flow_file_stem(clip: str) -> str:
    """The relative file name (without suffix) of a clip's flow files: its id with unsafe parts removed."""
    parts = [p for p in str(clip).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"clip id {clip!r} gives no usable file name")
    return "/".join(parts)


def _write_one(job: _Job, row: dict[str, Any], stem: str) -> tuple[str, str, str]:
    """Compute and write one clip's two files; ``(clip, 'written'|'kept'|'failed', reason)``."""
    clip = str(row["clip"])
    npy, png = job.flows / f"{stem}.npy", job.flows / f"{stem}.png"
    if npy.is_file() and png.is_file():
        return clip, "kept", ""
    try:
        if not isinstance(row.get("path"), str) or not row["path"]:
            raise ValueError("no frames (path) to compute the flow from")
        frames = sampled_frames(row, [float(row["onset"]), float(row["apex"])], size=job.compute_size,
                                backend=job.backend)
        flow = resize_flow(apex_flow_pixels(frames[0], frames[1], job.method), job.size)
    except _CLIP_ERRORS as exc:
        return clip, "failed", " ".join(str(exc).split()) or type(exc).__name__
    try:
        npy.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(npy) as tmp:
            np.save(tmp, flow.astype(np.float32))
        ok, encoded = cv2.imencode(".png", flow_to_image(flow)[..., ::-1])  # R, G, B = u, v, strain
        if not ok:
            raise OutputError(f"{png}: PNG encoding failed")
        with atomic_path(png) as tmp:
            tmp.write_bytes(encoded.tobytes())
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"{png.parent}: cannot write flow files ({exc.strerror or exc})") from None
    return clip, "written", ""


def _init_worker() -> None:
    cv2.setNumThreads(1)


def export_apex_flows(
    table: pd.DataFrame,
    out: str | Path,
    *,
    method: str = "tvl1",
    compute_size: int = 128,
    size: int = 28,
    backend: str = "auto",
    workers: int = 1,
    progress: bool | None = None,
) -> ApexExportSummary:
    """Write every clip's apex flow as ``.npy`` and 8-bit ``.png`` under ``out/flows`` and the two tables.

    Args:
        table: a resolved clip table (frames in ``path``, phases, ``first_frame``).
        out: the output folder (created; a rerun resumes).
        method: flow estimator; compute_size: side of the frames the flow is computed on; size: side of
            the written flows (28 for STSTNet and HTNet).
        backend: video backend for files; workers: processes; progress: tqdm bar (None: on a terminal).

    Returns:
        :class:`ApexExportSummary`; the tables list the clips written or kept (failed ones are left out).

    Raises:
        OutputError: ``out`` cannot be written (checked before any flow is computed).
        ConfigError: bad sizes or workers.
    """
    from tqdm.auto import tqdm

    for name, value, low in (("size", size, MIN_SIDE // 8), ("compute_size", compute_size, MIN_SIDE), ("workers", workers, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name}={value!r}: expected an integer >= {low}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; expected a folder for the flow files")
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out)
    rows = table.to_dict("records")
    stems = _unique_stems([str(r["clip"]) for r in rows])
    job = _Job(out / FLOWS_FOLDER, method, int(compute_size), int(size), backend)
    summary = ApexExportSummary(total=len(rows))
    done: dict[str, str] = {}
    start = time.perf_counter()
    bar = tqdm(total=len(rows), desc=f"apex flow ({method})", unit="clip",
               disable=None if progress is None else not progress)
    try:
        if workers == 1 or len(rows) <= 1:
            results = (_write_one(job, row, stem) for row, stem in zip(rows, stems))
            for result in results:
                _tally(summary, result, done)
                bar.update()
        else:
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(),
                                                        initializer=_init_worker) as pool:
                futures = [pool.submit(_write_one, job, row, stem) for row, stem in zip(rows, stems)]
                for future in concurrent.futures.as_completed(futures):
                    _tally(summary, future.result(), done)
                    bar.update()
    finally:
        bar.close()
    summary.tables = _write_tables(out, rows, stems, done)
    summary.seconds = time.perf_counter() - start
    return summary


def _unique_stems(clips: list[str]) -> list[str]:
    """One file stem per clip; a stem two clips would share gets ``-2``, ``-3``... (ids differ only in unsafe parts)."""
    seen: dict[str, int] = {}
    stems = []
    for clip in clips:
        stem = flow_file_stem(clip)
        count = seen.get(stem.lower(), 0) + 1  # case-insensitive file systems
        seen[stem.lower()] = count
        stems.append(stem if count == 1 else f"{stem}-{count}")
    return stems


def _tally(summary: ApexExportSummary, result: tuple[str, str, str], done: dict[str, str]) -> None:
    clip, status, reason = result
    if status == "failed":
        logger.warning("apex flow for clip %s failed: %s", clip, reason)
        summary.failed.append((clip, reason))
        return
    done[clip] = status
    if status == "written":
        summary.written += 1
    else:
        summary.kept += 1


def _write_tables(out: Path, rows: list[dict[str, Any]], stems: list[str], done: dict[str, str]) -> tuple[Path, ...]:
    kept = [(row, stem) for row, stem in zip(rows, stems) if str(row["clip"]) in done]
    written = []
    for name, suffix in ((IMAGE_TABLE, ".png"), (NPY_TABLE, ".npy")):
        frame = pd.DataFrame([{c: row.get(c, "") for c in TABLE_COLUMNS} for row, _ in kept], columns=list(TABLE_COLUMNS))
        frame["flow_path"] = [f"{FLOWS_FOLDER}/{stem}{suffix}" for _, stem in kept]
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False)
        written.append(out / name)
    return tuple(written)

