"""``microexp export``: a checkpoint's model as TorchScript or ONNX, with the metadata to predict with it."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to TorchScript or ONNX",
        description="Export the model of a microexp checkpoint to TorchScript or ONNX (dynamic batch size), with "
        "class names, data config and model spec stored inside the file, so that microexp predict --checkpoint "
        "FILE runs it. The export is checked against the eager model on a random batch. A model card "
        "(FILE.model_card.md: data, protocol, the run's cross-validation metrics, failure modes, intended and "
        "out-of-scope uses) is written beside it.",
    )
    parser.add_argument("--checkpoint", required=True, help="a microexp checkpoint (fold_XX/model.pt)")
    parser.add_argument("--format", required=True, choices=("torchscript", "onnx"), help="export format")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="the file to write, e.g. model.ts or model.onnx (a folder is refused; the file is "
                        "replaced atomically, so a failed export leaves a previous one intact)")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest accepted |exported - eager| (default 1e-4)")
    return parser


def run(args: argparse.Namespace) -> int:
    import math

    from microexp.errors import ConfigError
    from microexp.inference.export import export_checkpoint

    if not (math.isfinite(args.atol) and args.atol >= 0):
        raise ConfigError(f"--atol {args.atol:g}: expected a number >= 0")

    result = export_checkpoint(args.checkpoint, fmt=args.format, out=args.out, atol=args.atol)
    shape = "x".join(str(v) for v in result.input_shape)
    print(f"wrote {result.path} ({result.format}, input {shape}, max |exported - eager| = {result.max_abs_diff:.2g})")
    card = write_model_card(args.checkpoint, result.path)
    print(f"wrote {card} (model card)")
    return 0


def write_model_card(checkpoint: str, exported: Path) -> Path:
    """``EXPORTED.model_card.md`` beside the export, atomically."""
    from microexp.checkpoint import load_checkpoint
    from microexp.fileio import write_text
    from microexp.inference.model_card import model_card

    path = Path(f"{exported}.model_card.md")
    write_text(path, model_card(checkpoint, load_checkpoint(checkpoint), export=str(exported)))
    return path
