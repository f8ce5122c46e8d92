#!/usr/bin/env python
"""Ensemble vs distilled student on the synthetic benchmark: UF1/UAR and CPU latency side by side.

Three teachers share one set of folds (same table, protocol and seed; inner validation subjects for the
ensemble's weights): the flow stream on Farneback flows, the flow stream on DIS flows, and TSM on RGB. Their
fold-honest ensembles (``microexp ensemble``, uniform and validation-weighted) are compared with a lite
student, the flow stream at 64 px on 4 flows, trained alone and distilled from the three teachers
(``loss.distill_from``: each fold's soft labels from the teachers' same-fold models on its training clips).
Latency: ``microexp.inference.latency`` on one clip (phases given, no face crop), median of 10 runs after a
warm-up, per model; the ensemble's is the sum of its members' (they run one after another on one CPU).

    python recipes/dfme_distill.py [--data runs/demo/data/annotations.csv] [--out runs/studies/dfme_distill]
                                   [--quick] [--set KEY=VALUE ...]

Every step resumes (train and ensemble keep finished folds); the table goes to OUT/summary.md, the numbers to
OUT/distill.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

RECIPES = Path(__file__).resolve().parent
SHARED = ("cv.folds=5", "cv.val_fraction=0.2", "seed=0")  # one set of folds for every run
TEACHERS = {
    "flow_tiny (Farneback)": ("flow-tiny_flow-8f_synth_5fold.yaml", ()),
    "flow_tiny (DIS)": ("flow-tiny_flow-8f_synth_5fold.yaml", ("data.flow_method=dis",)),
    "tsm_tiny (RGB)": ("tsm-tiny_rgb-8f_synth_5fold.yaml", ()),
}
STUDENT = ("flow-tiny_flow-8f_synth_5fold.yaml", ("data.size=64", "data.num_frames=4"))
QUICK = ("cv.folds=2", "cv.val_fraction=0.34", "train.epochs=2", "data.size=32")


def _train(main, recipe: str, out: Path, overrides: list[str]) -> float:
    """Train (or resume) one run; its results table goes to OUT/NAME.log instead of the terminal."""
    start = time.perf_counter()
    args = ["-q", "train", "--config", str(RECIPES / recipe), "--out", str(out), "--no-progress"]
    for item in overrides:
        args += ["--set", item]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.log", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        code = main(args)
    if code != 0:
        raise SystemExit(f"training {out} failed (exit {code}); see {out.parent / (out.name + '.log')}")
    return time.perf_counter() - start


def _latency(run: Path, table: Path) -> float:
    """Median seconds to predict one clip with the run's fold-0 model (phases given, no face crop)."""
    import pandas as pd

    from microexp.inference.latency import measure_latency
    from microexp.inference.predictor import ClipInput

    row = pd.read_csv(table).iloc[0]
    clip = ClipInput(str(table.parent / row["path"]), onset=int(row["onset"]), apex=int(row["apex"]),
                     offset=int(row["offset"]), first_frame=int(row.get("first_frame", 0)), fps=float(row["fps"]))
    return measure_latency(run / "fold_00" / "model.pt", clip, repeats=10, face_crop=False)["total"]["p50"]


def _scores(run: Path) -> dict[str, float]:
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    return {"uf1": metrics["pooled"]["uf1"], "uar": metrics["pooled"]["uar"],
            "uf1_mean": metrics["fold_mean"]["uf1"], "uf1_std": metrics["fold_std"]["uf1"]}


def main(argv: list[str] | None = None) -> int:
    from microexp.cli import main as cli
    from microexp.fileio import write_json, write_text

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/demo/data/annotations.csv", type=Path)
    parser.add_argument("--out", default="runs/studies/dfme_distill", type=Path)
    parser.add_argument("--quick", action="store_true", help="a smoke test (2 folds, 2 epochs, 32 px)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"--data {args.data}: no such file (make demo generates the synthetic benchmark)")
    base = [f"data.annotations={args.data}", *SHARED, *(QUICK if args.quick else ()), *args.overrides]
    rows, runs = [], {}
    for label, (recipe, extra) in TEACHERS.items():
        run = args.out / _slug(label)
        seconds = _train(cli, recipe, run, [*base, *extra])
        runs[label] = run
        rows.append({"model": label, "kind": "teacher", "wall_s": seconds, **_scores(run),
                     "latency_s": _latency(run, args.data)})
    teacher_latency = sum(r["latency_s"] for r in rows)
    for weights in ("uniform", "val"):
        out = args.out / f"ensemble_{weights}"
        start = time.perf_counter()
        with contextlib.redirect_stdout(None):
            code = cli(["-q", "ensemble", *map(str, runs.values()), "--out", str(out), "--weights", weights])
        if code != 0:
            raise SystemExit(f"ensemble {out} failed (exit {code})")
        rows.append({"model": f"ensemble of 3 ({weights} weights)", "kind": "ensemble",
                     "wall_s": time.perf_counter() - start, **_scores(out), "latency_s": teacher_latency})
    recipe, extra = STUDENT
    alone = args.out / "student_alone"
    rows.append({"model": "student flow_tiny 64 px, 4 flows, alone", "kind": "student",
                 "wall_s": _train(cli, recipe, alone, [*base, *extra]), **_scores(alone),
                 "latency_s": _latency(alone, args.data)})
    distilled = args.out / "student_distilled"
    teachers = "[" + ", ".join(str(r) for r in runs.values()) + "]"
    rows.append({"model": "student flow_tiny 64 px, 4 flows, distilled", "kind": "student",
                 "wall_s": _train(cli, recipe, distilled, [*base, *extra, f"loss.distill_from={teachers}"]),
                 **_scores(distilled), "latency_s": _latency(distilled, args.data)})
    lines = ["| model | pooled UF1 | pooled UAR | fold-mean UF1 ± std | latency per clip (CPU) | wall |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['uf1']:.3f} | {r['uar']:.3f} | {r['uf1_mean']:.3f} ± {r['uf1_std']:.3f} "
                     f"| {r['latency_s'] * 1000:.0f} ms | {r['wall_s']:.0f} s |")
    table = "\n".join(lines)
    note = ("**Smoke test (--quick): not results.**\n\n" if args.quick else "")
    command = " ".join(argv if argv is not None else sys.argv[1:])
    write_text(args.out / "summary.md", f"# Ensemble vs distilled student\n\n{note}{table}\n\nCommand: "
                                        f"`python recipes/dfme_distill.py {command}`\n")
    write_json(args.out / "distill.json", rows)
    print(note + table)
    return 0


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_").replace("__", "_")


if __name__ == "__main__":
    raise SystemExit(main())
