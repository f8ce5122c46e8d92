"""``microexp models``: list the registered models with their family, modality, input and size.

Parameters are counted on models built on the ``meta`` device (shapes only, no weights allocated), so
listing TimeSformer-Base's 121 M parameters takes milliseconds and no memory.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: class count at which ``params`` is reported (the DFME 7-class protocol)
PARAMS_AT_CLASSES = 7


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "models",
        help="list the registered models (family, modality, frames, size, parameters)",
        description=(
            "List every registered model: family, input modality, default frames and size, trainable "
            f"parameters at {PARAMS_AT_CLASSES} classes, and whether it is CPU-friendly."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects instead of a table")
    parser.add_argument("--family", default=None, help="only this family (3dcnn, two_stream, tsm, transformer, frame, apex_flow)")
    parser.add_argument("--modality", default=None, help="only this input modality (rgb, flow, rgb+flow, apex_flow)")
    parser.add_argument("--cpu", action="store_true", help="only CPU-friendly models")
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern, e.g. 'tsm_*'")
    return parser


def run(args: argparse.Namespace) -> int:
    from microexp.errors import ConfigError
    from microexp.models import FAMILIES, MODALITIES

    if args.family is not None and args.family not in FAMILIES:
        raise ConfigError(f"--family: expected one of {', '.join(FAMILIES)}, got {args.family!r}")
    if args.modality is not None and args.modality not in MODALITIES:
        raise ConfigError(f"--modality: expected one of {', '.join(MODALITIES)}, got {args.modality!r}")
    rows = describe_models(args.pattern, family=args.family, modality=args.modality, cpu_only=args.cpu)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        print(format_table(rows))
    return 0


def describe_models(
    pattern: str = "*", *, family: str | None = None, modality: str | None = None, cpu_only: bool = False
) -> list[dict[str, Any]]:
    """One JSON-ready dict per registered model (built on the meta device: no weights are allocated)."""
    from microexp.models import count_params, list_models, model_info

    rows = []
    for name in list_models(pattern, family=family, modality=modality, cpu_friendly=True if cpu_only else None):
        info = model_info(name)
        model = build_on_meta(name, num_classes=PARAMS_AT_CLASSES)
        spec = model.spec
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "modality": spec.modality,
                "params": count_params(model),
                "num_frames": spec.num_frames,
                "input_size": spec.input_size,
                "in_channels": spec.in_channels,
                "cpu_friendly": info.cpu_friendly,
                "description": info.description,
            }
        )
    return rows


#: the factories ``nn.Module`` constructors allocate parameters and buffers with (then initialised in place)
_WEIGHT_FACTORIES = ("empty", "empty_strided", "zeros", "ones", "full", "rand", "randn")

#: tensors with fewer elements stay on the CPU when a builder needs values back (see :func:`build_on_meta`)
SMALL_TENSOR = 4096


def build_on_meta(name: str, **kwargs: Any) -> torch.nn.Module:
    """``create_model(name, **kwargs)`` with its weights on the ``meta`` device: shapes, no memory.

    The model is built inside ``with torch.device("meta"):``. A builder that reads a value back while
    building (pytorchvideo's MViT calls ``.item()`` on ``torch.linspace`` and ``torch.ones`` results) cannot
    run there; it is built again with only tensors of at least :data:`SMALL_TENSOR` elements on ``meta``
    and smaller ones on the CPU (a few kB in all), so no registered model allocates its weights.
    """
    import torch

    from microexp.models import create_model

    if kwargs.get("pretrained") is not None:
        raise ValueError("build_on_meta: pretrained weights cannot be loaded on the meta device")
    try:
        with torch.device("meta"):
            return create_model(name, **kwargs)
    except (RuntimeError, NotImplementedError) as exc:
        if "meta" not in str(exc).lower():
            raise
    with _large_tensors_on_meta():
        return create_model(name, **kwargs)


def _requested_numel(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """Elements a factory call such as ``torch.zeros(2, 3)`` or ``torch.full((2, 3), 1.0)`` asks for."""
    size = kwargs.get("size", args[0] if args else None)
    if isinstance(size, int):  # torch.empty(2, 3): the size is the leading ints
        size = [a for a in args if isinstance(a, int)] if "size" not in kwargs else [size]
    if not isinstance(size, (tuple, list)) or not all(isinstance(n, int) for n in size):
        return None
    numel = 1
    for n in size:
        numel *= n
    return numel


def _large_tensors_on_meta() -> Any:
    """A torch function mode in which factories asked for at least :data:`SMALL_TENSOR` elements use ``meta``."""
    import torch
    from torch.overrides import TorchFunctionMode

    factories = {getattr(torch, f) for f in _WEIGHT_FACTORIES}

    class LargeTensorsOnMeta(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            kwargs = dict(kwargs or {})
            if func in factories and (_requested_numel(args, kwargs) or 0) >= SMALL_TENSOR:
                kwargs["device"] = torch.device("meta")
            return func(*args, **kwargs)

    return LargeTensorsOnMeta()


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`describe_models` rows."""
    header = ("name", "family", "modality", "input", "params", "cpu", "description")
    lines = [
        (
            r["name"],
            r["family"],
            r["modality"],
            f"{r['in_channels']}x{r['num_frames']}x{r['input_size']}x{r['input_size']}",
            f"{r['params'] / 1e6:.2f}M" if r["params"] >= 10_000 else f"{r['params'] / 1e3:.1f}k",
            "yes" if r["cpu_friendly"] else "",
            r["description"],
        )
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    if not rows:
        out.append("(no model matches)")
    return "\n".join(s.rstrip() for s in out)
