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


def build_on_meta(name: str, **kwargs: Any) -> torch.nn.Module:
    """``create_model(name, **kwargs)`` with its weights on the ``meta`` device: shapes, no memory."""
    from microexp.models._registry import build_on_meta as build

    return build(name, **kwargs)


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
