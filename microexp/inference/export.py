"""Export a checkpoint's model to TorchScript or ONNX, with the metadata a predictor needs, and run it.

``export_checkpoint(ckpt, fmt="torchscript"|"onnx", out=FILE)`` rebuilds the model from the checkpoint,
exports it with a dynamic batch dimension and an example input of the model's shape ``(1, C, T, H, W)``,
checks that the exported model and the eager one agree on a random batch (``max_abs_diff``), and
stores the metadata (class names, data config, model spec) inside the file: as the TorchScript extra
file ``microexp.json``, or as the ONNX ``metadata_props`` entry ``microexp``. So one file is all
:meth:`ClipPredictor.from_exported` needs.

TorchScript uses ``torch.jit.trace`` (the models' forward has no data-dependent control flow).
ONNX uses ``torch.onnx.export`` (the TorchScript-based exporter, opset 17) and ``onnxruntime`` for the
check and for running; both come with ``pip install microexp[export]``.

The metadata also holds a SHA-256 of the weights (TorchScript: the archive's tensor storages; ONNX: the
graph's initializers and constant tensors), verified on load, so weights modified after export are
refused like a modified checkpoint. An exported file is a program: load exported models only from sources you trust (a checkpoint, by
contrast, is loaded with ``weights_only=True`` and never runs code).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from microexp import __version__
from microexp.errors import ConfigError, MicroexpError
from microexp.fileio import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["EXPORT_FORMATS", "ExportError", "ExportResult", "ExportedModel", "detect_export_format",
           "export_checkpoint", "load_exported"]

EXPORT_FORMATS = ("torchscript", "onnx")
EXPORT_FORMAT = "microexp-export"
METADATA_KEY = "microexp.json"
ONNX_METADATA_KEY = "microexp"
#: metadata key of the weights digest (absent in exports written before it existed: loaded with a warning)
WEIGHTS_DIGEST_KEY = "weights_sha256"
ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "video", "logits"
#: largest metadata entry read from an export (ours are a few kB)
_MAX_METADATA = 1 << 20


class ExportError(MicroexpError, ValueError):
    """An export cannot be written or read (missing package, not a microexp export, parity failure)."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_checkpoint` wrote and how closely it matches the eager model."""

    path: Path
    format: str
    input_shape: tuple[int, ...]
    max_abs_diff: float


def _require(package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ExportError(
            f"ONNX export/inference needs the '{package}' package, which is not installed "
            f"(pip install 'microexp[export]' or pip install onnx onnxruntime)"
        ) from exc


def _metadata(payload: Mapping[str, Any], spec: Any, input_shape: tuple[int, ...], source: str) -> dict[str, Any]:
    return {"format": EXPORT_FORMAT, "format_version": 1, "microexp_version": __version__,
            "model_name": payload["model_name"], "model_kwargs": dict(payload["model_kwargs"]),
            "spec": spec.to_dict(), "class_names": list(payload["class_names"]), "data": dict(payload.get("data") or {}),
            "input_shape": list(input_shape), "source_checkpoint": Path(source).name}


def export_checkpoint(
    checkpoint: str | Path,
    *,
    fmt: str,
    out: str | Path,
    atol: float = 1e-4,
    seed: int = 0,
) -> ExportResult:
    """Export the model of a microexp checkpoint and check it against the eager model.

    Args:
        checkpoint: a microexp checkpoint (``fold_XX/model.pt``).
        fmt: ``'torchscript'`` or ``'onnx'``.
        out: the file to write (replaced atomically).
        atol: largest accepted absolute difference between exported and eager logits.
        seed: seed of the random check input.

    Raises:
        ConfigError: unknown format. ExportError: missing package or outputs that disagree.
        CheckpointError, FileNotFoundError: a bad checkpoint.
    """
    from microexp.checkpoint import load_checkpoint, model_from_checkpoint
    from microexp.data.pipeline import ClipPipeline

    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"export format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "onnx":
        _require("onnx"), _require("onnxruntime")
    target = _check_out(out, fmt)
    payload = load_checkpoint(checkpoint)
    model = model_from_checkpoint(payload, source=str(checkpoint)).eval()
    if model.num_classes == 0:  # its outputs are AU logits, which an export's reader would take for classes
        raise ExportError(f"{checkpoint}: a model that detects AUs alone (model.emotion_head=false) cannot be "
                          "exported yet (exports carry emotion logits); predict from the checkpoint itself")
    spec = model.spec
    shape = ClipPipeline.from_checkpoint_data(payload.get("data") or {}, spec).input_shape()
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn((1, *shape), generator=generator)
    check = torch.randn((3, *shape), generator=generator)
    meta = _metadata(payload, spec, shape, str(checkpoint))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings of torch.jit / torch.onnx
        if fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(model, example, check_trace=False)
            data = _torchscript_bytes(traced, meta)
        else:
            data = _onnx_bytes(model, example, meta)
    kept = "the previous file is kept" if target.exists() else "nothing was written"
    with atomic_path(target, kept=kept) as tmp:
        with open(tmp, "wb") as handle:  # Python writes: a full disk is an OSError, not a crash inside torch
            handle.write(data)
        exported = load_exported(tmp, fmt=fmt)
        with torch.no_grad():
            expected = model(check)
        diff = float((exported(check) - expected).abs().max())
        if not diff <= atol:
            raise ExportError(f"{checkpoint}: {fmt} export disagrees with the eager model (max |diff| {diff:.3g} > {atol}); "
                              f"{kept}")
    logger.info("exported %s to %s (%s), max |exported - eager| = %.3g", checkpoint, target, fmt, diff)
    return ExportResult(target, fmt, (1, *shape), diff)


def _check_out(out: str | Path, fmt: str) -> Path:
    """``--out`` must name a file: a folder (existing, or written with a trailing slash) is refused."""
    ext = "onnx" if fmt == "onnx" else "ts"
    text = str(out)
    target = Path(out)
    if target.is_dir() or text.endswith(("/", "\\")):
        raise ExportError(f"--out {text}: is a folder; expected the path of the file to write, "
                          f"e.g. {target / f'model.{ext}'}")
    return target


def _torchscript_bytes(traced: Any, meta: Mapping[str, Any]) -> bytes:
    """The TorchScript archive in memory: ``torch.jit.save`` to a full disk aborts the process."""
    first = io.BytesIO()
    torch.jit.save(traced, first, _extra_files={METADATA_KEY: json.dumps(meta)})
    digest = _torchscript_weights_digest(first)
    buffer = io.BytesIO()  # saved again with the digest in its metadata; the storages are written alike
    torch.jit.save(traced, buffer, _extra_files={METADATA_KEY: json.dumps({**meta, WEIGHTS_DIGEST_KEY: digest})})
    if _torchscript_weights_digest(buffer) != digest:
        raise RuntimeError("torch.jit.save wrote different tensor storages for the same module")
    return buffer.getvalue()


def _torchscript_weights_digest(source: Any) -> str:
    """SHA-256 over a TorchScript archive's tensor storages (``<archive>/data/<n>``), in name order."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(source) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            parts = info.filename.split("/")
            if len(parts) == 3 and parts[1] == "data":
                digest.update(parts[2].encode() + b"\0")
                digest.update(archive.read(info))
    return digest.hexdigest()


def _onnx_weights_digest(proto: Any) -> str:
    """SHA-256 over an ONNX graph's initializers and Constant-node tensors (name, type, shape, values)."""
    from onnx import numpy_helper

    digest = hashlib.sha256()
    tensors = [(t.name, t) for t in proto.graph.initializer]
    tensors += [(f"{node.name}/{a.name}", a.t) for node in proto.graph.node if node.op_type == "Constant"
                for a in node.attribute if a.HasField("t")]
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        values = numpy_helper.to_array(tensor)
        digest.update(f"{name}|{tensor.data_type}|{list(tensor.dims)}".encode() + b"\0")
        digest.update(values.tobytes())
    return digest.hexdigest()


def _verify_weights(path: Path, meta: Mapping[str, Any], actual: str) -> None:
    expected = meta.get(WEIGHTS_DIGEST_KEY)
    if expected is None:
        logger.warning("%s: exported by an older microexp without a weights digest: its weights cannot be verified",
                       path)
    elif expected != actual:
        raise ExportError(f"{path}: the weights do not match the SHA-256 stored with them: the file was modified or "
                          "damaged after export; refusing it")


def _onnx_bytes(model: torch.nn.Module, example: torch.Tensor, meta: Mapping[str, Any]) -> bytes:
    onnx = _require("onnx")
    buffer = io.BytesIO()
    torch.onnx.export(model, (example,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                      opset_version=ONNX_OPSET, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps({**meta, WEIGHTS_DIGEST_KEY: _onnx_weights_digest(proto)})
    return proto.SerializeToString()


def detect_export_format(path: str | Path) -> str | None:
    """'torchscript' or 'onnx' for an exported file, None for anything else (e.g. a checkpoint)."""
    p = Path(path)
    if not p.is_file():
        return None
    if p.suffix.lower() == ".onnx":
        return "onnx"
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        if any("/code/" in n or n.startswith("code/") for n in names):
            return "torchscript"
    return None


class ExportedModel:
    """An exported model as a callable: float ``(B, C, T, H, W)`` -> logits ``(B, num_classes)`` on CPU.

    Attributes:
        metadata: the microexp metadata stored in the file.
        format: 'torchscript' or 'onnx'.
    """

    def __init__(self, run: Any, metadata: dict[str, Any], fmt: str) -> None:
        self._run = run
        self.metadata = metadata
        self.format = fmt

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)


def load_exported(path: str | Path, *, device: str | torch.device = "cpu", fmt: str | None = None) -> ExportedModel:
    """Load a file written by :func:`export_checkpoint` (format detected from the file unless ``fmt``).

    Raises:
        FileNotFoundError: no such file. ExportError: not a microexp export, or a missing package.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"exported model not found: {p}")
    fmt = fmt or detect_export_format(p) or "torchscript"
    dev = torch.device(device)
    if fmt == "torchscript":
        meta = _parse_metadata(p, _torchscript_metadata(p))  # checked before torch.jit.load runs the file's code
        try:
            actual = _torchscript_weights_digest(p)
        except (zipfile.BadZipFile, OSError, RuntimeError, ValueError) as exc:
            raise ExportError(f"{p}: not a loadable TorchScript file ({' '.join(str(exc).split())[:200]})") from exc
        _verify_weights(p, meta, actual)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
                module = torch.jit.load(str(p), map_location=dev)
        except (RuntimeError, ValueError) as exc:
            raise ExportError(f"{p}: not a loadable TorchScript file ({' '.join(str(exc).split())[:200]})") from exc
        module.eval()

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return module(x.to(dev)).float().cpu()

        return ExportedModel(run, meta, fmt)
    onnx = _require("onnx")
    ort = _require("onnxruntime")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a damaged file
        raise ExportError(f"{p}: not a loadable ONNX file ({' '.join(str(exc).split())[:200]})") from exc
    props = {e.key: e.value for e in proto.metadata_props}
    meta = _parse_metadata(p, props.get(ONNX_METADATA_KEY, ""))  # checked before a session is created
    _verify_weights(p, meta, _onnx_weights_digest(proto))
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if dev.type == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(p), providers=[x for x in providers if x in ort.get_available_providers()])
    input_name = session.get_inputs()[0].name

    def run_onnx(x: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {input_name: x.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(out).float()

    return ExportedModel(run_onnx, meta, fmt)


def _torchscript_metadata(path: Path) -> bytes:
    """The ``<archive>/extra/microexp.json`` entry of a TorchScript zip, read without loading the model.

    Empty when the file has none (or is no zip); a larger entry than any export writes counts as none.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                parts = info.filename.split("/")
                if len(parts) == 3 and parts[1:] == ["extra", METADATA_KEY] and info.file_size <= _MAX_METADATA:
                    return archive.read(info)
    except (zipfile.BadZipFile, OSError, RuntimeError, ValueError):
        pass
    return b""


def _parse_metadata(path: Path, text: str | bytes) -> dict[str, Any]:
    try:
        meta = json.loads(text) if text else None
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path}: not a microexp export (no {EXPORT_FORMAT!r} metadata; use microexp export)")
    return meta
