"""What a study is asked to do: :class:`StudyOptions` and the defaults they fall back on.

Kept apart from :mod:`.study` (which runs a study and imports pandas and the engine) so that the
``microexp study`` parser can show these defaults in its ``--help`` without importing anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_DATA", "DEFAULT_SYNTH", "QUICK_OVERRIDES", "SMOKE_TEST", "StudyOptions"]

#: The synthetic benchmark of ``make demo``; generated with the same settings when missing.
DEFAULT_DATA = Path("runs/demo/data/annotations.csv")
DEFAULT_SYNTH = {"clips": 300, "subjects": 30, "seed": 0}
#: ``--quick``: a CPU-sized run (2 folds, 2 epochs, 32 px frames) that checks the study end to end.
#: the transformer recipes warm up for 3 epochs, more than a quick run trains: one warm-up epoch
QUICK_OVERRIDES: tuple[str, ...] = ("cv.folds=2", "train.epochs=2", "train.warmup_epochs=1", "data.size=32")
#: What a ``--quick`` study says at the top of its summary, tables and printed output.
SMOKE_TEST = (f"**Smoke test (`--quick`: {' '.join(QUICK_OVERRIDES)}, fewer cells or seeds)**: it checks that the "
              "study runs end to end; its numbers are not results and are not comparable with the full study's.")


@dataclass(frozen=True)
class StudyOptions:
    """The options every study shares (see ``microexp study --help``).

    ``command`` is the command line recorded in ``study.json`` and ``summary.md``.
    """

    out: Path
    data: Path | None = None
    format: str = "auto"
    root: str | None = None
    device: str | None = None
    quick: bool = False
    resume: bool = False
    overrides: tuple[str, ...] = ()
    seeds: int | None = None
    recipes: tuple[str, ...] = ()
    progress: bool | None = None
    command: str = ""
    #: a shard: only these folds of every cell (``--folds``); None runs every fold
    folds: tuple[int, ...] | None = None
    #: only the cells whose names match one of these shell-style patterns (``--cells``); empty: every cell
    cells: tuple[str, ...] = ()
    #: dfme_leaderboard: only the registered models matching one of these shell-style patterns (``--models``)
    models: tuple[str, ...] = ()
    #: dfme_leaderboard: the frame sizes of the resolution axis (``--sizes``); empty: the study's default
    sizes: tuple[int, ...] = ()
    #: dfme_leaderboard: only the registry's CPU-friendly models (``--cpu-friendly``)
    cpu_friendly: bool = False
