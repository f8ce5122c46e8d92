"""Pipeline balance and the flow cache, from one short training run of the demo recipe.

The ``make demo`` recipe (``recipes/flow-tiny_flow-8f_synth_5fold.yaml``: the two-stream family's
temporal stream on Farneback flow) trains one fold (one test subject) through :func:`run_fold` on a
small synthetic dataset generated like the demo's (128 px H.264 clips), with the recipe's DataLoader
worker count, a fresh clip and flow cache and a few epochs. The per-epoch ``seconds`` and
``data_seconds`` of ``log.csv`` (from ``train_one_epoch``'s :class:`EpochStats`) give:

* flow cache: the data pipeline alone — one pass over the fold's training DataLoader (same workers, no
  model) with a fresh cache (frames decoded and flow computed, both written to the cache) over a second
  pass (both read from it). The training loop's own epoch-1/epoch-2 data waits are reported too, but
  they understate the cache: in epoch 1 the workers compute while the model trains;
* pipeline balance: ``data_seconds / seconds`` of the epochs after the first (cache warm): the fraction
  of step time the model waited for data.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from microexp.benchmark.report import Figure, Section

logger = logging.getLogger(__name__)

__all__ = ["DEMO_RECIPE", "find_recipe", "measure_pipeline"]

DEMO_RECIPE = "flow-tiny_flow-8f_synth_5fold.yaml"


def find_recipe(name: str = DEMO_RECIPE) -> Path | None:
    """The recipe in ``./recipes`` or in the source checkout next to the package; None when absent."""
    import microexp

    for folder in (Path("recipes"), Path(microexp.__file__).resolve().parents[1] / "recipes"):
        if (folder / name).is_file():
            return folder / name
    return None


def make_dataset(out: Path, *, clips: int, subjects: int) -> Path:
    """A small synthetic benchmark like the demo's (medium preset, 128 px H.264); returns its clip table."""
    from microexp.synth import generate_dataset

    generate_dataset(out, clips=clips, subjects=subjects, size=128, fmt="mp4", seed=0, workers=1, progress=False)
    return out / "annotations.csv"


def measure_pipeline(work: Path, annotations: Path, *, epochs: int, device: str, recipe: Path | None = None) -> Section:
    """Train the demo recipe for ``epochs`` epochs (>= 2) on one split and report data time per epoch.

    Args:
        work: an empty temporary folder (run directory and caches).
        annotations: the clip table to train on.
        epochs: epochs to train; epoch 1 fills the caches, the rest are warm.
        device: ``cpu`` or ``cuda`` (the recipe's mixed precision and channels_last apply on CUDA).
        recipe: the recipe (default: :data:`DEMO_RECIPE` found by :func:`find_recipe`).
    """
    from microexp.config import load_config
    from microexp.engine.experiment import build_folds, load_experiment_data, run_fold
    from microexp.engine.trainer import select_device

    if epochs < 2:
        raise ValueError(f"epochs={epochs}: the pipeline benchmark needs at least 2 epochs")
    recipe = recipe or find_recipe()
    if recipe is None:
        return Section(f"pipeline_{device}", skipped=f"recipe {DEMO_RECIPE} not found in ./recipes or the checkout")
    subjects = pd.read_csv(annotations)["subject"].nunique()
    config = load_config(recipe, [
        f"data.annotations={annotations}", "data.format=auto", f"data.cache_dir={work / f'cache_{device}'}",
        "cv.protocol=kfold", f"cv.folds={subjects}", f"train.epochs={epochs}", f"device={device}",
    ])
    # one fold of leave-one-subject-out k-fold: the recipe's own loader, model, loss and optimizer
    experiment = load_experiment_data(config)
    fold = build_folds(config, experiment.table)[0]
    fold_dir = work / f"run_{device}" / "fold_00"
    run_fold(config, experiment, fold, fold_dir, device=select_device(device), progress=False)
    log = pd.read_csv(fold_dir / "log.csv")
    seconds, data = log["seconds"].tolist(), log["data_seconds"].tolist()
    warm = [d / s for d, s in zip(data[1:], seconds[1:])]
    section = Section(f"pipeline_{device}", details={
        "recipe": recipe.name, "model": config.model.name, "num_workers": config.data.num_workers,
        "batch_size": config.train.batch_size, "num_frames": config.data.num_frames, "size": config.data.size,
        "train_clips": int(experiment.table["subject"].isin(fold.train_subjects).sum()), "epochs": epochs,
        "per_epoch": log[["epoch", "seconds", "data_seconds"]].to_dict("records"),
    })
    cold, warm_pass = _loader_passes(config, experiment, fold, work / f"cache_passes_{device}")
    section.details["loader_pass_seconds"] = {"cold_cache": cold, "warm_cache": warm_pass}
    section.figures += [
        Figure("epoch1.data_seconds", (data[0],), "s"),
        Figure("epoch2.data_seconds", (data[1],), "s"),
        Figure("epoch1_over_epoch2.data_wait", (data[0] / max(data[1], 1e-9),), "x"),
        # the target's figure: the data pipeline alone, one pass over the training loader with a cold
        # cache (decode + flow) versus one with a warm cache; the training loop's waits above hide most
        # of epoch 1's work behind the model's compute
        Figure("flow_cache.epoch1_over_epoch2", (cold / max(warm_pass, 1e-9),), "x"),
        Figure("warm.data_fraction", tuple(warm), "fraction"),
        Figure("warm.epoch_seconds", tuple(seconds[1:]), "s"),
    ]
    logger.info("pipeline on %s: data time epoch 1 %.2f s, epoch 2 %.2f s; warm data fraction %s", device,
                data[0], data[1], ", ".join(f"{w:.3f}" for w in warm))
    return section


def _loader_passes(config: Any, experiment: Any, fold: Any, cache_dir: Path) -> tuple[float, float]:
    """Seconds for two passes over the fold's training loader alone (no model): cold cache, then warm."""
    import dataclasses
    import time

    import torch

    from microexp.engine.experiment import build_dataset
    from microexp.models import get_model_spec
    from microexp.seed import seed_worker

    config = dataclasses.replace(config, data=dataclasses.replace(config.data, cache_dir=str(cache_dir)))
    spec = get_model_spec(config.model.name, num_frames=config.data.num_frames, input_size=config.data.size)
    table = experiment.table[experiment.table["subject"].isin(fold.train_subjects)]
    loader = torch.utils.data.DataLoader(build_dataset(config, table, spec, train=True),
                                         batch_size=config.train.batch_size, num_workers=config.data.num_workers,
                                         worker_init_fn=seed_worker, persistent_workers=config.data.num_workers > 0)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        for _batch in loader:
            pass
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def summary(section: Section) -> dict[str, Any]:
    """The two headline figures of a pipeline section (medians), for targets."""
    ratio, fraction = section.figure("flow_cache.epoch1_over_epoch2"), section.figure("warm.data_fraction")
    return {"flow_cache_ratio": None if ratio is None else ratio.median,
            "data_fraction": None if fraction is None else fraction.median}
