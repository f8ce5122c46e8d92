"""A synthetic stand-in for the MEGC 2019 composite: 442 clips of 68 subjects as CASME II, SAMM and SMIC.

    python recipes/megc_composite_synth.py runs/megc_synth [--clips 442 --subjects 68 --workers 2]

1. ``microexp synth OUT/frames`` (the DFME-style generator: 7 emotions, 200/300/500 fps);
2. ``OUT/frames/composite.csv``: subjects split 24 / 28 / 16 into casme2 / samm / smic (the composite's
   subject counts) and each emotion written as its MEGC class (happiness -> positive, surprise ->
   surprise, the other five -> negative), i.e. rows already labelled as the public composite lists are;
3. ``microexp flow --apex`` -> ``OUT/flows/annotations.csv`` (8-bit flow images) and
   ``annotations_npy.csv`` (``.npy``), what the apex-flow recipes then train on::

       microexp train --config recipes/ststnet_apex-flow_megc-composite_loso.yaml --out runs/megc_synth/ststnet \\
           --set data.annotations=runs/megc_synth/flows/annotations.csv

What it tests is the toolkit end to end on data shaped like the composite (clip and subject counts, class
skew, three source datasets), **not** how the models rank on real micro-expressions: the generator's
datasets differ only in name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from microexp.cli import main as microexp

#: the composite's subjects per dataset (CASME II 24, SAMM 28, SMIC 16 after the MEGC class map)
SUBJECTS = (("casme2", 24), ("samm", 28), ("smic", 16))
MEGC_CLASS = {"happiness": "positive", "surprise": "surprise", "anger": "negative", "contempt": "negative",
              "disgust": "negative", "fear": "negative", "sadness": "negative"}


def composite_table(table: pd.DataFrame, subjects: int) -> pd.DataFrame:
    """The synthetic table with a dataset per subject (in the composite's proportions) and MEGC classes."""
    ids = sorted(table["subject"].unique())
    total = sum(n for _, n in SUBJECTS)
    bounds, start = {}, 0
    for i, (name, n) in enumerate(SUBJECTS):
        count = len(ids) - start if i == len(SUBJECTS) - 1 else round(n * len(ids) / total)
        bounds.update({s: name for s in ids[start:start + count]})
        start += count
    out = table.copy()
    out["dataset"] = out["subject"].map(bounds)
    out["emotion"] = out["emotion"].map(MEGC_CLASS)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder (frames/, flows/)")
    parser.add_argument("--clips", type=int, default=442)
    parser.add_argument("--subjects", type=int, default=68)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--method", default="tvl1", help="apex flow estimator (default: tvl1, as the papers)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    frames = args.out / "frames"
    if not (frames / "annotations.csv").exists():
        code = microexp(["synth", str(frames), "--clips", str(args.clips), "--subjects", str(args.subjects),
                         "--seed", str(args.seed), "--workers", str(args.workers), "--no-progress"])
        if code:
            return code
    table = pd.read_csv(frames / "annotations.csv")
    composite = composite_table(table, args.subjects)
    composite.to_csv(frames / "composite.csv", index=False)
    counts = composite.groupby("dataset")["subject"].agg(["nunique", "size"])
    print("composite:", ", ".join(f"{d} {r['nunique']} subjects / {r['size']} clips" for d, r in counts.iterrows()))
    return microexp(["flow", str(frames / "composite.csv"), "--apex", "--out", str(args.out / "flows"),
                     "--method", args.method, "--workers", str(args.workers), "--no-progress"])


if __name__ == "__main__":
    sys.exit(main())
