"""How fast microexp is on this machine: ``microexp benchmark`` (see :func:`run_benchmark`).

Sections (one module each):

- :mod:`.loading`: T=16 key frames of a 300-frame clip at 128x128 and 480x640 from a lossless packed video with
  decord, PyAV and torchcodec (a), a naive sequential PyAV decode (b), the PNG frame folder (c), the
  preprocessed cache (d), a JPEG frame folder (e, the floor), the mjpeg pack with each reader (f) and with a
  reader kept open (g);
- :mod:`.pipeline`: one short training run of the demo recipe: the fraction of step time spent waiting
  for data once the cache is warm, and the data time of epoch 1 over epoch 2 (the flow cache);
- :mod:`.small_inputs`: one-frame 28x28 training (``frame_tiny``, warm cache): the data-wait fraction with
  per-item loading (0 and 2 workers) and with the clips in memory (:mod:`microexp.data.in_memory`);
- :mod:`.throughput`: training clips/s per model family through microexp's loop and a bare PyTorch loop;
- :mod:`.prediction`: the ``latency`` section: prediction latency per stage for one clip and batch clips/s
  (measured by :mod:`microexp.inference.latency`).

Every input is generated in a temporary folder that is removed afterwards. With CUDA available the
pipeline, throughput and latency sections run on the GPU as well (bf16 autocast, ``channels_last``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from microexp.benchmark.report import QUICK_NOTE, Section, Target, format_report, machine_info

logger = logging.getLogger(__name__)

__all__ = ["SECTIONS", "Settings", "format_report", "run_benchmark", "targets_from"]

SECTIONS = ("loading", "pipeline", "small_inputs", "throughput", "latency")


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run."""

    loading_repeats: int
    pipeline_clips: int
    pipeline_subjects: int
    pipeline_epochs: int
    throughput_steps: int
    throughput_repeats: int
    latency_repeats: int
    pack_preset: str = "medium"
    small_clips: int = 442
    small_epochs: int = 3

    def unmeasurable(self) -> dict[str, str]:
        """Target kinds (``pipeline``, ``throughput``) these sizes cannot measure, with the reason.

        The pipeline targets are steady-state ratios: with fewer than :data:`MIN_PIPELINE_CLIPS` clips or
        :data:`MIN_PIPELINE_EPOCHS` epochs, DataLoader start-up and the first batches dominate both the warm
        data fraction and the cold/warm flow-cache ratio. The throughput ratio needs
        :data:`MIN_THROUGHPUT_STEPS` steps per repeat before the fixed per-repeat costs stop dominating.
        """
        reasons = {}
        if self.pipeline_clips < MIN_PIPELINE_CLIPS or self.pipeline_epochs < MIN_PIPELINE_EPOCHS:
            reasons["pipeline"] = (f"not evaluated: {self.pipeline_clips} clips x {self.pipeline_epochs} epochs are too "
                                   "few for a steady state (needs >= "
                                   f"{MIN_PIPELINE_CLIPS} clips and >= {MIN_PIPELINE_EPOCHS} epochs; run without --quick)")
        if self.throughput_steps < MIN_THROUGHPUT_STEPS:
            reasons["throughput"] = (f"not evaluated: {self.throughput_steps} steps per repeat are too few (needs >= "
                                     f"{MIN_THROUGHPUT_STEPS}; run without --quick)")
        return reasons


#: the smallest sizes at which the pipeline and throughput targets mean what they say
MIN_PIPELINE_CLIPS = 100
MIN_PIPELINE_EPOCHS = 3
MIN_THROUGHPUT_STEPS = 5


FULL = Settings(loading_repeats=5, pipeline_clips=300, pipeline_subjects=30, pipeline_epochs=4, throughput_steps=6,
                throughput_repeats=5, latency_repeats=10)
#: ``--quick``: the same measurements with fewer repeats and a smaller training set (about 2 minutes on 2
#: idle cores); the packed file uses x264's ``ultrafast`` preset to save encoding time (intra-only lossless
#: either way; the preset changes how hard the encoder searches, not what the decoder must do per frame).
QUICK = Settings(loading_repeats=2, pipeline_clips=24, pipeline_subjects=6, pipeline_epochs=2, throughput_steps=2,
                 throughput_repeats=2, latency_repeats=3, pack_preset="ultrafast", small_clips=48, small_epochs=2)


def _devices(device: str) -> list[str]:
    import torch  # here, not at import: `benchmark --help` stays torch-free

    if device == "auto":
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    if device.startswith("cuda") and not torch.cuda.is_available():
        from microexp.errors import ConfigError

        raise ConfigError(f"--device {device}: torch sees no CUDA device; use cpu or auto")
    return ["cpu"] if device == "cpu" else ["cpu", device]


def run_benchmark(
    *,
    quick: bool = False,
    device: str = "auto",
    sections: Sequence[str] = SECTIONS,
    progress: bool | None = None,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Measure every section on this machine; returns the JSON-ready report.

    Args:
        quick: fewer repeats and smaller inputs (:data:`QUICK`).
        device: ``auto`` (CPU, plus CUDA when available), ``cpu``, or ``cuda``/``cuda:N`` (CPU and that GPU).
        sections: a subset of :data:`SECTIONS`.
        progress: a progress bar over the measurements; None = only on a terminal.
        work_dir: where to generate the inputs (default: a temporary folder, removed afterwards).

    Returns:
        ``{"quick", "seconds", "settings", "machine", "sections": {name: {seconds, figures: {name: {median,
        values, unit, repeats}}, ...}}, "targets": [{name, measured, target, op, unit, met}]}``.
    """
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        from microexp.errors import ConfigError

        raise ConfigError(f"unknown benchmark section(s) {unknown}; expected some of {', '.join(SECTIONS)}")
    settings = QUICK if quick else FULL
    devices = _devices(device)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="microexp-bench-", dir=work_dir) as tmp:
        work = Path(tmp)
        jobs = _jobs(settings, devices, sections, work)
        results: dict[str, Section] = {}
        bar = tqdm(jobs, desc="benchmark", unit="part", disable=None if progress is None else not progress)
        for name, job in bar:
            bar.set_postfix_str(name)
            began = time.perf_counter()
            section = job()
            section.seconds = time.perf_counter() - began
            results[section.name] = section
            logger.info("%s done in %.1f s%s", section.name, section.seconds,
                        f" (skipped: {section.skipped})" if section.skipped else "")
    note = "medians over repeats; on a shared machine other processes' load inflates times and spreads repeats"
    report = {
        "quick": quick,
        "smoke_test": quick,
        "seconds": round(time.perf_counter() - start, 1),
        "settings": settings.__dict__,
        "machine": machine_info(devices),
        "note": f"--quick: {QUICK_NOTE}; {note}" if quick else note,
        "sections": {name: section.to_dict() for name, section in results.items()},
    }
    report["targets"] = [t.to_dict() for t in targets_from(results, devices, settings=settings)]
    return report


def _jobs(settings: Settings, devices: list[str], sections: Sequence[str], work: Path) -> list[tuple[str, Any]]:
    from microexp.benchmark.loading import measure_loading
    from microexp.benchmark.pipeline import make_dataset, measure_pipeline
    from microexp.benchmark.prediction import measure_prediction
    from microexp.benchmark.small_inputs import measure_small_inputs
    from microexp.benchmark.throughput import measure_throughput

    jobs: list[tuple[str, Any]] = []
    data = work / "synth"
    annotations = data / "annotations.csv"

    def dataset() -> Path:
        if not annotations.exists():
            make_dataset(data, clips=settings.pipeline_clips, subjects=settings.pipeline_subjects)
        return annotations

    if "loading" in sections:
        (work / "loading").mkdir()
        jobs.append(("loading", lambda: measure_loading(work / "loading", repeats=settings.loading_repeats,
                                                        preset=settings.pack_preset)))
    for device in devices:
        if "pipeline" in sections:
            jobs.append((f"pipeline_{device}", lambda d=device: measure_pipeline(
                work, dataset(), epochs=settings.pipeline_epochs, device=d)))
        if "small_inputs" in sections:
            jobs.append((f"small_inputs_{device}", lambda d=device: measure_small_inputs(
                work / f"small_inputs_{d}", device=d, clips=settings.small_clips, epochs=settings.small_epochs)))
        if "throughput" in sections:
            jobs.append((f"throughput_{device}", lambda d=device: measure_throughput(
                device=d, steps=settings.throughput_steps, repeats=settings.throughput_repeats)))
        if "latency" in sections:
            jobs.append((f"latency_{device}", lambda d=device: measure_prediction(
                work, dataset(), repeats=settings.latency_repeats, device=d)))
    return jobs


def targets_from(results: dict[str, Section], devices: Sequence[str], *,
                 settings: Settings | None = None) -> list[Target]:
    """The issue's targets, one per measured figure they apply to (``measured=None`` when not measured).

    Args:
        settings: the sizes the figures were measured at (default :data:`FULL`); targets those sizes cannot
            measure (:meth:`Settings.unmeasurable`, e.g. ``--quick``) are "not evaluated", never "missed".
    """
    unmeasurable = (settings or FULL).unmeasurable()

    def judged(kind: str, section: str) -> dict[str, Any]:
        reason = unmeasurable.get(kind)
        if reason is None or results.get(section) is None or results[section].skipped:
            return {"note": why(section)}
        return {"note": reason, "evaluated": False}

    def median(section: str, figure: str) -> float | None:
        found = results.get(section)
        item = found.figure(figure) if found is not None else None
        return None if item is None else item.median

    def why(section: str) -> str:
        found = results.get(section)
        if found is None:
            return "section not run"
        return f"skipped: {found.skipped}" if found.skipped else ""

    targets = [
        Target("loading: packed+decord (a) vs naive PyAV (b), 480x640", median("loading", "480x640.packed_decord.speedup_vs_naive"),
               3.0, note=why("loading")),
        Target("loading: cache (d) vs naive PyAV (b), 128x128", median("loading", "128x128.cache.speedup_vs_naive"),
               20.0, note=why("loading")),
        Target("loading: cache (d) vs naive PyAV (b), 480x640", median("loading", "480x640.cache.speedup_vs_naive"),
               20.0, note=why("loading")),
        Target("loading: mjpeg pack (auto: PyAV) vs PNG folder (c), 480x640",
               median("loading", "480x640.mjpeg_pyav.vs_folder"), 1.0, note=why("loading")),
        Target("loading: mjpeg pack (auto: PyAV) vs JPEG folder (e), 480x640",
               median("loading", "480x640.mjpeg_pyav.vs_jpeg"), 0.8, note=why("loading")),
        Target("loading: mjpeg pack (auto: PyAV) vs JPEG folder (e), 128x128",
               median("loading", "128x128.mjpeg_pyav.vs_jpeg"), 0.8, note=why("loading")),
    ]
    from microexp.benchmark.throughput import MODELS

    for device in devices:
        pipeline = f"pipeline_{device}"
        targets += [
            Target(f"pipeline balance ({device}): data wait / step time, warm cache",
                   median(pipeline, "warm.data_fraction"), 0.10, op="<", unit="fraction",
                   **judged("pipeline", pipeline)),
            Target(f"flow cache ({device}): data time, cold-cache pass / warm-cache pass",
                   median(pipeline, "flow_cache.epoch1_over_epoch2"), 10.0, **judged("pipeline", pipeline)),
        ]
        small = f"small_inputs_{device}"
        targets.append(Target(f"small inputs ({device}): data wait / step time, clips in memory",
                              median(small, "in_memory.data_fraction"), 0.10, op="<", unit="fraction",
                              **judged("pipeline", small)))
        throughput = f"throughput_{device}"
        for model in MODELS:
            targets.append(Target(f"training throughput ({device}): microexp / bare loop, {model}",
                                  median(throughput, f"{model}.microexp_over_bare"), 0.9,
                                  **judged("throughput", throughput)))
    return targets
