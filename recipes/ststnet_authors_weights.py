"""The STSTNet authors' per-subject weights, scored through microexp on their own flow images.

    python recipes/ststnet_authors_weights.py LABEL_LIST --root FLOW_IMAGES --weights STSTNet_Weights \\
        [--out predictions.csv]

``LABEL_LIST`` is the composite's label list (``combined_3class_gt.csv``: dataset, sub, filename_o, label),
read with microexp's ``megc_list`` format, which finds each clip's flow image under ``--root``. Each
held-out subject's clips are predicted by that subject's weights (``STSTNet_Weights/{sub}.pth``, trained
on the other 67 subjects: leave-one-subject-out), loaded strictly into microexp's ``ststnet``. The input
is what their code fed the network: the image as OpenCV reads it, B, G, R = strain, v, u, raw 0-255
(``data.apex_encoding: bgr255``). Prints pooled UF1/UAR (and ACC) with the per-dataset breakdown; their
training log reports 0.7209 / 0.7250 for these weights (docs: ../shared/DATASETS.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from microexp.data.annotations import load_clip_table
from microexp.data.apex_flow import ApexFlowSpec
from microexp.data.class_maps import apply_class_map
from microexp.data.dataset import MicroExpressionDataset
from microexp.data.pipeline import ClipPipeline
from microexp.data.transforms import TransformSpec
from microexp.errors import MicroexpError
from microexp.metrics import compute_metrics, per_dataset_metrics
from microexp.models import create_model
from microexp.models.pretrained import read_state_dict

#: what the authors' code fed STSTNet: the 28 px image as OpenCV reads it, no normalisation, no flip
PIPELINE = ClipPipeline(modality="apex_flow", transform=TransformSpec(size=28, flip=False),
                        apex=ApexFlowSpec(encoding="bgr255"))


def predict_with_subject_weights(table: pd.DataFrame, weights: Path) -> pd.DataFrame:
    """Predictions of each subject's clips by that subject's weights; ``table`` is labelled with megc3."""
    rows = []
    subjects = table["clip"].str.split("/").str[1]  # megc_list clip ids: dataset/sub/filename_o
    for subject, clips in table.groupby(subjects, sort=False):
        path = weights / f"{subject}.pth"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no weights for held-out subject {subject!r} ({len(clips)} clip(s))")
        model = create_model("ststnet", num_classes=3, num_frames=1, input_size=28)
        model.load_state_dict(read_state_dict(path), strict=True)  # their key layout, classifier included
        dataset = MicroExpressionDataset(clips, pipeline=PIPELINE)
        with torch.no_grad():
            logits = model.eval()(torch.stack([dataset[i]["video"] for i in range(len(dataset))]))
        for (_, clip), pred in zip(clips.iterrows(), logits.argmax(1).tolist()):
            rows.append({"clip": clip["clip"], "subject": int(clip["subject"]), "dataset": clip["dataset"],
                         "label": int(clip["label"]), "pred": pred})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("label_list", type=Path)
    parser.add_argument("--root", type=Path, default=None, help="folder of the flow images (default: the list's)")
    parser.add_argument("--weights", type=Path, required=True, help="folder of the per-subject .pth files")
    parser.add_argument("--out", type=Path, default=None, help="write the predictions here (CSV)")
    args = parser.parse_args(argv)
    try:
        table = load_clip_table(args.label_list, format="megc_list", root=args.root).resolve(strict=True)
        labelled = apply_class_map(table, "megc3", strict=True).table
        predictions = predict_with_subject_weights(labelled, args.weights)
    except (MicroexpError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pooled = compute_metrics(predictions["label"], predictions["pred"], num_classes=3)
    print(f"{len(predictions)} clips, {predictions['subject'].nunique()} subjects, the authors' per-subject weights")
    print(f"pooled: ACC {pooled.acc:.4f}  UF1 {pooled.uf1:.4f}  UAR {pooled.uar:.4f}")
    per_dataset = per_dataset_metrics(predictions["label"], predictions["pred"], predictions["dataset"],
                                      subjects=predictions["subject"], num_classes=3)
    for name, values in per_dataset.items():
        m = values["pooled"]
        print(f"  {name:8s} {values['clips']:4d} clips: ACC {m['acc']:.4f}  UF1 {m['uf1']:.4f}  UAR {m['uar']:.4f}")
    if args.out is not None:
        predictions.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
