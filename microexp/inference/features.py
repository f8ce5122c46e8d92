"""Pooled features of every clip of a clip table, from a checkpoint: batched, written in resumable shards.

``extract_features(checkpoint, table, out)`` runs each clip through the checkpoint's own evaluation
preprocessing (the :class:`~microexp.inference.predictor.ClipPredictor`'s, hence the Dataset's
``train=False`` path: no augmentation) and the model's ``forward_features`` followed by
``forward_head(..., pre_logits=True)``: the pooled ``(B, num_features)`` vector the classifier reads.

The output folder ``FEATURES``::

    features.npy     float32 (N, D), row i = index.csv row i (clips that failed are not rows)
    index.csv        clip, subject, dataset, emotion, label (the checkpoint's class index, -1 outside its classes)
    failures.csv     clip, subject, dataset, reason: the clips that could not be read (header only when none)
    features.json    checkpoint path and digests, model name, D, N, classes, pipeline, failures, ...
    extraction.json  what the shards were computed from (checkpoint, table, settings): a resume must match
    shards/NNNNN.npz one per ``shard_size`` table rows (features, table rows, failures), each written atomically

Resuming: a run that stopped (killed, Ctrl-C, ``max_shards``) keeps its finished shards; the same command
computes only the missing ones and then writes the final files. A resume with another checkpoint (weights or
spec digest), another table (its rows' content) or another shard size or preprocessing option is refused with
one line. A clip that failed stays failed on resume (its shard is done): delete that shard to retry it.

Labels: a checkpoint records its class names (label index -> name) and, in ``data.class_map``, the class map
that turned the training table's (dataset, emotion) pairs into labels. The same map labels the clips here, so
``label`` is what training would have given the clip; an emotion the map drops or does not know is -1. With
no class map, or ``identity`` (classes named after emotions), an emotion counts when it equals a class name
(ignoring case). A model that detects AUs alone has no classes: every label is -1.

:func:`load_features` reads a finished folder back (checked: lengths, dtype, columns) without torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from microexp.errors import ConfigError, MicroexpError
from microexp.fileio import atomic_open, check_writable, write_json, write_text

logger = logging.getLogger(__name__)

__all__ = ["FEATURES_FILE", "INDEX_FILE", "INDEX_COLUMNS", "FeatureExtraction", "FeatureSet", "checkpoint_labels",
           "extract_features", "load_features"]

FEATURES_FILE = "features.npy"
INDEX_FILE = "index.csv"
FAILURES_FILE = "failures.csv"
META_FILE = "features.json"
MANIFEST_FILE = "extraction.json"
SHARDS_DIR = "shards"
INDEX_COLUMNS = ("clip", "subject", "dataset", "emotion", "label")
FAILURE_COLUMNS = ("clip", "subject", "dataset", "reason")
FORMAT = "microexp-features"
FORMAT_VERSION = 1
DEFAULT_SHARD_SIZE = 256
#: the table columns whose content decides a clip's features (a resume must find them unchanged)
_TABLE_KEYS = ("clip", "path", "subject", "dataset", "emotion", "onset", "apex", "offset", "first_frame", "fps",
               "flow_path")


class FeatureError(MicroexpError, ValueError):
    """A features folder is missing, incomplete, inconsistent, or does not fit the requested extraction."""


@dataclass(frozen=True)
class FeatureExtraction:
    """What :func:`extract_features` did.

    Attributes:
        out: the features folder.
        num_clips: clips with features (rows of ``features.npy``); 0 when the run stopped early.
        num_features: D.
        failures: ``(clip, reason)`` of each clip that could not be read.
        shards_total, shards_done, shards_computed: shards of the table, done now (all when complete), and
            computed by this call (the others were found from an earlier run).
        complete: every shard is done and the final files are written.
        seconds: time of this call's extraction; ``clips_per_second`` over the clips it computed.
    """

    out: Path
    num_clips: int
    num_features: int
    failures: tuple[tuple[str, str], ...]
    shards_total: int
    shards_done: int
    shards_computed: int
    complete: bool
    seconds: float
    clips_per_second: float | None


@dataclass(frozen=True)
class FeatureSet:
    """A finished features folder, read back by :func:`load_features`.

    Attributes:
        features: ``(N, D)`` float32.
        index: N rows of :data:`INDEX_COLUMNS` (``label`` int, -1 outside the checkpoint's classes).
        meta: ``features.json``.
        folder: where it was read from.
    """

    features: np.ndarray
    index: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.meta.get("class_names", [])]


# ---------------------------------------------------------------------------------------------------
# labels


def checkpoint_labels(table: pd.DataFrame, class_names: Sequence[str], class_map: str | None) -> np.ndarray:
    """Each clip's label as the checkpoint numbers its classes, -1 where the clip has none.

    Args:
        table: a clip table (``clip``, ``dataset``, ``emotion`` columns).
        class_names: the checkpoint's classes in label order (empty for a model that detects AUs alone).
        class_map: the checkpoint's ``data.class_map`` (None or ``identity``: emotions matched to class names).

    Returns:
        int64 ``(N,)``.
    """
    from microexp.data.class_maps import IDENTITY, get_class_map

    labels = np.full(len(table), -1, dtype=np.int64)
    if not class_names or "emotion" not in table.columns:
        return labels
    emotions = table["emotion"].fillna("").astype(str).str.strip().tolist()
    datasets = (table["dataset"].fillna("").astype(str).tolist() if "dataset" in table.columns
                else [""] * len(table))
    if class_map and class_map != IDENTITY:
        try:
            cm = get_class_map(class_map)
        except MicroexpError as exc:
            logger.warning("the checkpoint's class map %r is unknown here (%s): clips are labelled by emotion name",
                           class_map, " ".join(str(exc).split()))
            cm = None
        if cm is not None and list(cm.classes) != list(class_names):
            logger.warning("class map %r has classes %s, the checkpoint %s: clips are labelled by emotion name",
                           class_map, list(cm.classes), list(class_names))
            cm = None
        if cm is not None:
            for i, (dataset, emotion) in enumerate(zip(datasets, emotions)):
                try:
                    target = cm.lookup(dataset, emotion)
                except KeyError:
                    continue
                if target is not None:
                    labels[i] = cm.label(target)
            return labels
    names = {str(n).lower(): i for i, n in enumerate(class_names)}
    for i, emotion in enumerate(emotions):
        labels[i] = names.get(emotion.lower(), -1)
    return labels


# ---------------------------------------------------------------------------------------------------
# identity of an extraction (what a resume must match)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def table_digest(table: pd.DataFrame) -> str:
    """SHA-256 of the clip table's rows as extraction reads them (:data:`_TABLE_KEYS`, in order)."""
    cols = [c for c in _TABLE_KEYS if c in table.columns]
    text = table[cols].astype(str).to_csv(index=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _check_resume(out: Path, manifest: Mapping[str, Any]) -> None:
    """Refuse to continue ``out`` when its manifest was written for other inputs (one line)."""
    path = out / MANIFEST_FILE
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FeatureError(f"{path}: unreadable ({exc}); use a new --out folder or delete this one") from None
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        raise FeatureError(f"{path}: not a microexp features manifest; use a new --out folder")
    labels = {"checkpoint": "a checkpoint", "table": "a clip table", "settings": "settings"}
    for key, what in labels.items():
        if found.get(key, {}).get("digest") != manifest[key]["digest"]:
            was = found.get(key, {}).get("source") or found.get(key, {}).get("digest", "?")
            raise FeatureError(f"{out}: was extracted with {what} ({was}, digest "
                               f"{str(found.get(key, {}).get('digest', '?'))[:12]}), not {manifest[key]['source']} "
                               f"(digest {manifest[key]['digest'][:12]}); use a new --out folder or delete {out}")


# ---------------------------------------------------------------------------------------------------
# extraction


def _clip_inputs(table: pd.DataFrame) -> list[Any]:
    """One :class:`ClipInput` per table row, as the Dataset reads the row (its first_frame, phases and fps)."""
    from microexp.inference.predictor import ClipInput

    def fps(value: Any) -> float | None:
        return float(value) if value == value and value is not None else None

    return [ClipInput(str(row["path"]), int(row["onset"]), int(row["apex"]), int(row["offset"]),
                      int(row["first_frame"]) if "first_frame" in row and row["first_frame"] == row["first_frame"]
                      else None,
                      fps(row.get("fps")), str(row["clip"]), apex_estimated=bool(row.get("apex_estimated", False)),
                      subject=int(row["subject"]), flow_path=row.get("flow_path") or None)
            for row in table.to_dict("records")]


def _shard_path(out: Path, k: int) -> Path:
    return out / SHARDS_DIR / f"{k:05d}.npz"


def _read_shard(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _write_shard(path: Path, features: np.ndarray, rows: Sequence[int], failed: Sequence[int],
                 reasons: Sequence[str]) -> None:
    with atomic_open(path, "wb", kept="the shards already written are kept") as handle:
        np.savez(handle, features=features.astype(np.float32, copy=False), rows=np.asarray(rows, np.int64),
                 failed_rows=np.asarray(failed, np.int64), failed_reasons=np.asarray(list(reasons), dtype=str))


def _failure_line(exc: BaseException, name: str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    for prefix in (f"{name}: ",):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text


def extract_features(
    checkpoint: str | Path,
    table: str | Path | pd.DataFrame,
    out: str | Path,
    *,
    format: str = "auto",
    root: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    shard_size: int = DEFAULT_SHARD_SIZE,
    face_crop: bool = False,
    backend: str = "auto",
    progress: bool | None = None,
    max_shards: int | None = None,
) -> FeatureExtraction:
    """Extract pooled features of every clip of ``table`` into ``out`` (see the module docstring).

    Args:
        checkpoint: a microexp checkpoint (``model.pt``); exports (TorchScript/ONNX) hold no feature output.
        table: an annotation file (read by :func:`~microexp.data.annotations.load_clip_table` with ``format``
            and ``root``; rows with annotation errors are dropped with a warning) or a clip table.
        out: the features folder (created; an unfinished one of the same inputs is resumed).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: clips per model call.
        shard_size: table rows per shard (a resume needs the same).
        face_crop: detect and crop the face first (off: the table's clips are what training read, as the
            Dataset reads them).
        backend: video decoder ('auto', 'decord', 'pyav').
        progress: tqdm bar (clips, with ETA) on stderr; None = only on a terminal.
        max_shards: compute at most this many new shards, then stop (a time-boxed run; call again to go on).

    Returns:
        :class:`FeatureExtraction`.

    Raises:
        ConfigError: bad batch or shard size, device; FeatureError: a resume of other inputs, an export.
        FileNotFoundError, CheckpointError, AnnotationError: the checkpoint or table cannot be read.
    """
    import torch
    from tqdm import tqdm

    from microexp.checkpoint import load_checkpoint, model_from_checkpoint
    from microexp.inference.export import detect_export_format
    from microexp.inference.predictor import ClipPredictor, _check_device

    for name, value in (("batch size", batch_size), ("shard size", shard_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} {value!r}: expected an integer >= 1")
    if max_shards is not None and (isinstance(max_shards, bool) or not isinstance(max_shards, int) or max_shards < 0):
        raise ConfigError(f"max shards {max_shards!r}: expected an integer >= 0")
    out = Path(out)
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise FileNotFoundError(2, "No such file or directory", str(ckpt))
    if detect_export_format(ckpt) is not None:
        raise FeatureError(f"{ckpt}: an exported model (TorchScript/ONNX) gives logits only; extract features "
                           "from the model.pt it was exported from")
    dev = _check_device(device)
    frame, table_source = _load_table(table, format=format, root=root)
    if frame.empty:
        raise FeatureError(f"{table_source}: no clips to extract (every row was dropped or the table is empty)")

    payload = load_checkpoint(ckpt)
    model = model_from_checkpoint(payload, source=str(ckpt)).to(dev).eval()
    class_names = list(payload["class_names"]) if model.num_classes else []
    data = payload.get("data") or {}

    def pooled(x: "torch.Tensor") -> "torch.Tensor":
        """``(B, C, T, H, W)`` -> ``(B, num_features)``: the vector the classifier reads."""
        with torch.inference_mode():
            return model.forward_head(model.forward_features(x.to(dev)), pre_logits=True).float().cpu()

    predictor = ClipPredictor(pooled, spec=model.spec, data=data, class_names=class_names,
                              model_name=payload["model_name"], source=str(ckpt), face_crop=face_crop,
                              backend=backend)
    pipeline = predictor.preprocessing.to_dict()
    settings = {"shard_size": shard_size, "face_crop": face_crop,
                "face_margin": predictor.face_margin if face_crop else None}
    digests = {k: payload.get(k) for k in ("weights_sha256", "spec_sha256")}
    ckpt_digest = (hashlib.sha256(f"{digests['weights_sha256']}:{digests['spec_sha256']}".encode()).hexdigest()
                   if all(digests.values()) else _file_sha256(ckpt))
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "checkpoint": {"source": str(ckpt), "digest": ckpt_digest, **digests},
        "table": {"source": table_source, "digest": table_digest(frame), "clips": len(frame)},
        "settings": {"source": json.dumps(settings, sort_keys=True),
                     "digest": hashlib.sha256(json.dumps([settings, pipeline], sort_keys=True,
                                                         default=repr).encode()).hexdigest(), **settings},
    }
    if (out / MANIFEST_FILE).exists():
        _check_resume(out, manifest)
    else:
        check_writable(out)
        write_json(out / MANIFEST_FILE, manifest)

    items = _clip_inputs(frame)
    n_shards = math.ceil(len(items) / shard_size)
    done = {k for k in range(n_shards) if _shard_path(out, k).exists()}
    todo = [k for k in range(n_shards) if k not in done]
    if max_shards is not None:
        todo = todo[:max_shards]
    done_clips = sum(min(shard_size, len(items) - k * shard_size) for k in done)
    if done:
        logger.info("%s: %d of %d shard(s) already done (%d clips); computing %d", out, len(done), n_shards,
                    done_clips, len(todo))
    computed_clips = 0
    num_features = int(model.num_features)
    start = time.perf_counter()
    with tqdm(total=len(items), initial=done_clips, unit="clip", desc="features",
              disable=None if progress is None else not progress) as bar:
        for k in todo:
            lo, hi = k * shard_size, min(len(items), (k + 1) * shard_size)
            feats: list[np.ndarray] = []
            rows: list[int] = []
            failed: list[int] = []
            reasons: list[str] = []
            batch: list[Any] = []
            batch_rows: list[int] = []

            def flush() -> None:
                if not batch:
                    return
                values = predictor.runner(torch.stack(batch)).numpy()
                finite = np.isfinite(values).all(axis=1)
                for row, vec, ok in zip(batch_rows, values, finite):
                    if ok:
                        feats.append(vec)
                        rows.append(row)
                    else:
                        failed.append(row)
                        reasons.append(f"the model's features are not finite for this clip: {ckpt} is damaged "
                                       "or diverged")
                bar.update(len(batch))
                batch.clear()
                batch_rows.clear()

            for row in range(lo, hi):
                item = items[row]
                try:
                    batch.append(predictor.preprocess(item))
                    batch_rows.append(row)
                except (MicroexpError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
                    failed.append(row)
                    reasons.append(_failure_line(exc, item.name or item.path))
                    logger.debug("%s: %s", item.name or item.path, reasons[-1])  # listed at the end
                    bar.update()
                if len(batch) == batch_size:
                    flush()
            flush()
            matrix = np.stack(feats).astype(np.float32) if feats else np.zeros((0, num_features), np.float32)
            order = np.argsort(np.asarray(rows, np.int64), kind="stable")
            fo = np.argsort(np.asarray(failed, np.int64), kind="stable")
            _write_shard(_shard_path(out, k), matrix[order] if len(rows) else matrix, np.asarray(rows)[order],
                         np.asarray(failed, np.int64)[fo], [reasons[i] for i in fo])
            done.add(k)
            computed_clips += hi - lo
    seconds = time.perf_counter() - start
    rate = computed_clips / seconds if computed_clips and seconds > 0 else None
    if len(done) < n_shards:
        logger.info("%s: stopped after %d of %d shard(s); run the same command again to continue", out, len(done),
                    n_shards)
        return FeatureExtraction(out, 0, num_features, (), n_shards, len(done), len(todo), False, seconds, rate)
    extra = payload.get("extra") or {}
    if "seen_subject_keys" in extra:  # (dataset, subject) as the sheets number them: matches across tables
        seen: set[Any] = {(str(d), int(s)) for d, s in extra["seen_subject_keys"]}
    else:  # an older checkpoint: bare subject ids, compared with the table's
        seen = {int(s) for key in ("subjects", "train_subjects", "val_subjects") for s in extra.get(key, ())}
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "checkpoint": str(ckpt), "checkpoint_digest": ckpt_digest, **digests,
        "model_name": payload["model_name"], "model_kwargs": payload.get("model_kwargs", {}),
        "class_map": data.get("class_map"), "class_names": class_names,
        "table": table_source, "table_digest": manifest["table"]["digest"],
        "pipeline": pipeline, "face_crop": face_crop, "pooling": "forward_head(forward_features(x), pre_logits=True)",
        "device": str(dev), "dtype": "float32",
    }
    result = _assemble(out, frame, checkpoint_labels(frame, class_names, data.get("class_map")), n_shards, meta,
                       seen, num_features)
    return FeatureExtraction(out, result[0], num_features, result[1], n_shards, n_shards, len(todo), True, seconds,
                             rate)


def _load_table(table: str | Path | pd.DataFrame, *, format: str, root: str | Path | None) -> tuple[pd.DataFrame, str]:
    if isinstance(table, pd.DataFrame):
        return table.reset_index(drop=True), "<table>"
    from microexp.data.annotations import load_clip_table

    result = load_clip_table(table, format=format, root=root, check_files=False, require_emotion=False)
    return result.resolve(strict=False).reset_index(drop=True), str(table)


def _assemble(out: Path, frame: pd.DataFrame, labels: np.ndarray, n_shards: int, meta: dict[str, Any],
              seen: set[Any], num_features: int) -> tuple[int, tuple[tuple[str, str], ...]]:
    """Join the shards into features.npy, index.csv, failures.csv and features.json (each atomic)."""
    parts, rows, failed, reasons = [], [], [], []
    for k in range(n_shards):
        shard = _read_shard(_shard_path(out, k))
        parts.append(shard["features"])
        rows += shard["rows"].tolist()
        failed += shard["failed_rows"].tolist()
        reasons += [str(r) for r in shard["failed_reasons"]]
    matrix = np.concatenate(parts, axis=0) if parts else np.zeros((0, num_features), np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != num_features or matrix.shape[0] != len(rows):
        raise FeatureError(f"{out / SHARDS_DIR}: shards hold {matrix.shape} features for {len(rows)} clips, expected "
                           f"D={num_features}; delete the folder and extract again")
    dataset = frame["dataset"].fillna("").astype(str) if "dataset" in frame.columns else pd.Series([""] * len(frame))
    emotion = frame["emotion"].fillna("").astype(str) if "emotion" in frame.columns else pd.Series([""] * len(frame))
    index = pd.DataFrame({"clip": frame["clip"].astype(str).to_numpy()[rows],
                          "subject": frame["subject"].astype("int64").to_numpy()[rows],
                          "dataset": dataset.to_numpy()[rows], "emotion": emotion.to_numpy()[rows],
                          "label": labels[rows]})
    failures = pd.DataFrame({"clip": frame["clip"].astype(str).to_numpy()[failed],
                             "subject": frame["subject"].astype("int64").to_numpy()[failed],
                             "dataset": dataset.to_numpy()[failed], "reason": reasons}, columns=list(FAILURE_COLUMNS))
    with atomic_open(out / FEATURES_FILE, "wb") as handle:
        np.save(handle, matrix.astype(np.float32, copy=False))
    write_text(out / INDEX_FILE, index.to_csv(index=False, lineterminator="\n"))
    write_text(out / FAILURES_FILE, failures.to_csv(index=False, lineterminator="\n"))
    if seen and isinstance(next(iter(seen)), tuple):
        held_in = sum((d, int(s)) in seen for d, s in zip(index["dataset"], index["subject"]))
    else:
        held_in = int(index["subject"].isin(seen).sum()) if seen else 0
    meta = dict(meta, num_clips=int(matrix.shape[0]), num_features=int(num_features), num_failed=len(failed),
                labelled_clips=int((index["label"] >= 0).sum()), seen_subject_clips=held_in,
                files={"features": FEATURES_FILE, "index": INDEX_FILE, "failures": FAILURES_FILE})
    write_json(out / META_FILE, meta)
    if held_in:
        logger.warning("%d of %d clips are from subjects the checkpoint was trained on (per its checkpoint): a probe "
                       "on them measures the training fit, not held-out transfer", held_in, len(index))
    return int(matrix.shape[0]), tuple(zip(failures["clip"].tolist(), reasons))


# ---------------------------------------------------------------------------------------------------
# reading a features folder


def load_features(folder: str | Path) -> FeatureSet:
    """Read a finished features folder (``features.npy`` + ``index.csv`` [+ ``features.json``]), checked.

    Raises:
        FileNotFoundError: no such folder; FeatureError: a file missing (an unfinished extraction), unreadable,
            or the two disagree (row counts, columns, non-finite values).
    """
    path = Path(folder)
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    if not path.is_dir():
        raise FeatureError(f"{path}: not a folder; expected the --out folder of microexp extract-features")
    for name in (FEATURES_FILE, INDEX_FILE):
        if not (path / name).is_file():
            unfinished = (" (an unfinished extraction: run extract-features again)"
                          if (path / MANIFEST_FILE).exists() else "")
            raise FeatureError(f"{path}: no {name}{unfinished}; expected the --out folder of microexp extract-features")
    try:
        features = np.load(path / FEATURES_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FeatureError(f"{path / FEATURES_FILE}: unreadable ({' '.join(str(exc).split())})") from None
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating):
        raise FeatureError(f"{path / FEATURES_FILE}: shape {features.shape} dtype {features.dtype}; expected a float "
                           "(N, D) matrix")
    try:
        index = pd.read_csv(path / INDEX_FILE, dtype={"clip": str, "dataset": str, "emotion": str},
                            keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise FeatureError(f"{path / INDEX_FILE}: unreadable ({' '.join(str(exc).split())})") from None
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise FeatureError(f"{path / INDEX_FILE}: no column(s) {', '.join(missing)}; "
                           f"expected {', '.join(INDEX_COLUMNS)}")
    if len(index) != features.shape[0]:
        raise FeatureError(f"{path}: {INDEX_FILE} has {len(index)} rows but {FEATURES_FILE} {features.shape[0]}; "
                           "they must match row for row")
    for column in ("subject", "label"):
        if not pd.api.types.is_integer_dtype(index[column]):
            raise FeatureError(f"{path / INDEX_FILE}: column {column} must hold integers")
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        raise FeatureError(f"{path / FEATURES_FILE}: row {first} (clip {index['clip'].iloc[first]!r}) is not finite")
    meta: dict[str, Any] = {}
    if (path / META_FILE).is_file():
        try:
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FeatureError(f"{path / META_FILE}: unreadable ({exc})") from None
    return FeatureSet(features.astype(np.float32, copy=False), index, meta, path)


def describe(extraction: FeatureExtraction) -> str:
    """One line about an extraction, for the CLI."""
    rate = f", {extraction.clips_per_second:.1f} clips/s" if extraction.clips_per_second else ""
    if not extraction.complete:
        return (f"{extraction.out}: {extraction.shards_done} of {extraction.shards_total} shard(s) done "
                f"({extraction.shards_computed} now{rate}); run the same command again to continue")
    reused = extraction.shards_total - extraction.shards_computed
    again = f", {reused} shard(s) from an earlier run" if reused else ""
    failed = f"; {len(extraction.failures)} clip(s) failed (listed in {FAILURES_FILE})" if extraction.failures else ""
    return (f"wrote {extraction.num_clips} x {extraction.num_features} features to {extraction.out / FEATURES_FILE} "
            f"(index {INDEX_FILE}; {extraction.shards_computed} shard(s) computed{again}{rate}){failed}")

