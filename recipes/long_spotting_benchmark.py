#!/usr/bin/env python
"""Long-video spotting on synthetic long recordings, scored as MEGC does (IoU >= 0.5; F1, and STRS with a model).

    python recipes/long_spotting_benchmark.py [--seed 21] [--checkpoint runs/demo/run/final/model.pt] \
        [--quick] [--out runs/long_spotting]

Writes long recordings of each configuration (preset x frame rate x face size; `microexp synth --long`) under
OUT/data, spots them with `microexp spot`'s streaming spotter at its default settings, and writes OUT/results.csv and
OUT/summary.md (the table of recipes/README.md). With --checkpoint each spotted interval is also classified and the
analysis UF1 and STRS are reported (the demo's model: `make demo`, trained on 128 px medium clips of other subjects).
--quick: one short configuration, to try the script.
"""

import argparse
import time
from pathlib import Path

from microexp.benchmark.long_spotting import LongConfig, format_long_table, long_spotting_benchmark
from microexp.fileio import write_text

CONFIGS = [
    LongConfig("easy", 100, 128, 4, 60.0),
    LongConfig("medium", 100, 128, 4, 60.0),
    LongConfig("hard", 100, 128, 4, 60.0),
    LongConfig("medium", 30, 128, 4, 120.0),
    LongConfig("medium", 200, 128, 2, 60.0),
    LongConfig("medium", 100, 64, 4, 60.0),
]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=21, help="generator seed (default: 21)")
    parser.add_argument("--checkpoint", default=None, help="a model.pt to classify the spotted intervals with")
    parser.add_argument("--quick", action="store_true", help="one 20 s recording of the medium preset")
    parser.add_argument("--out", type=Path, default=Path("runs/long_spotting"))
    args = parser.parse_args()
    configs = [LongConfig("medium", 100, 128, 1, 20.0)] if args.quick else CONFIGS
    start = time.perf_counter()
    table = long_spotting_benchmark(args.out / "data", configs, seed=args.seed, checkpoint=args.checkpoint)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "results.csv", table.to_csv(index=False))
    text = format_long_table(table)
    write_text(args.out / "summary.md", f"{text}\n\nWall time: {time.perf_counter() - start:.0f} s\n")
    print(text)
