"""Figures, targets and the machine record of a benchmark run, and their JSON and text forms.

A :class:`Figure` is one measured quantity with every repeat kept and its median reported; a
:class:`Target` compares one figure (or ratio of figures) with the goal set in the benchmark issue.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QUICK_NOTE", "Figure", "Target", "machine_info", "time_calls", "format_report"]

#: What a ``--quick`` report says about itself (text output and JSON ``note``).
QUICK_NOTE = ("a smoke test of the benchmark with fewer repeats and smaller inputs; its figures are rough, and "
              "targets its sizes cannot measure are 'not evaluated' (run without --quick to measure them)")


@dataclass(frozen=True)
class Figure:
    """One measured quantity: every repeat's value, summarised by the median.

    Args:
        name: dotted path, e.g. ``loading.480x640.packed_decord.seconds``.
        values: one value per repeat.
        unit: ``s``, ``clips/s``, ``fraction``, ``x``.
    """

    name: str
    values: tuple[float, ...]
    unit: str

    @property
    def median(self) -> float:
        return float(statistics.median(self.values)) if self.values else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"median": _round(self.median), "values": [_round(v) for v in self.values], "unit": self.unit,
                "repeats": len(self.values)}


@dataclass(frozen=True)
class Target:
    """A goal: ``measured >= target`` (``op='>='``) or ``measured < target`` (``op='<'``).

    ``measured`` is None when the figure could not be measured (``met`` is then None and ``note`` says why).
    ``evaluated=False``: the figure was measured but the run's sizes cannot measure what the target means
    (``benchmark --quick``): ``met`` is None, the status "not evaluated", and ``note`` says why.
    """

    name: str
    measured: float | None
    target: float
    op: str = ">="
    unit: str = "x"
    note: str = ""
    evaluated: bool = True

    def __post_init__(self) -> None:
        if self.op not in (">=", "<"):
            raise ValueError(f"Target.op: expected '>=' or '<', got {self.op!r}")

    @property
    def met(self) -> bool | None:
        if not self.evaluated or self.measured is None or self.measured != self.measured:  # None or NaN
            return None
        return self.measured >= self.target if self.op == ">=" else self.measured < self.target

    @property
    def status(self) -> str:
        """``met``, ``missed``, ``not evaluated`` (measured, but not at a size that can tell) or ``not measured``."""
        if self.measured is None or self.measured != self.measured:
            return "not measured"
        if not self.evaluated:
            return "not evaluated"
        return "met" if self.met else "missed"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "measured": None if self.measured is None else _round(self.measured),
                "target": self.target, "op": self.op, "unit": self.unit, "met": self.met, "status": self.status,
                **({"note": self.note} if self.note else {})}


def _round(value: float) -> float:
    if value != value or value in (float("inf"), float("-inf")):
        return value
    return float(f"{value:.4g}")


def time_calls(functions: dict[str, Callable[[], Any]], *, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of each function, ``repeats`` times, interleaved round-robin.

    Interleaving spreads the noise of a shared machine over all functions instead of penalising the one
    that happened to run during someone else's burst. ``warmup`` untimed rounds come first.
    """
    times: dict[str, list[float]] = {name: [] for name in functions}
    for round_index in range(warmup + repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                times[name].append(elapsed)
    return times


def machine_info(devices: Sequence[str]) -> dict[str, Any]:
    """Cores, load, platform and versions of the libraries that decide the speeds."""
    import torch

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "devices": list(devices),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for module in ("decord", "av", "cv2", "numpy"):
        try:
            info[module] = __import__(module).__version__
        except Exception:  # not installed, or no version attribute
            info[module] = None
    return info


@dataclass
class Section:
    """A benchmark section's result: figures, extra plain-typed details, or why it was skipped."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seconds": round(self.seconds, 1)}
        if self.skipped is not None:
            out["skipped"] = self.skipped
        out["figures"] = {f.name: f.to_dict() for f in self.figures}
        out.update(self.details)
        return out

    def figure(self, name: str) -> Figure | None:
        return next((f for f in self.figures if f.name == name), None)


def format_report(report: dict[str, Any]) -> str:
    """A human-readable summary of :func:`microexp.benchmark.run_benchmark`'s JSON."""
    m = report["machine"]
    kind = "quick: a smoke test, not a measurement" if report["quick"] else "full"
    lines = [f"microexp benchmark ({kind}), {report['seconds']:.0f} s: "
             f"{m['usable_cpus']} usable CPU(s) of {m['cpu_count']}, load {m['load_average_1min']}, torch {m['torch']}, "
             f"devices {', '.join(m['devices'])}"]
    if report["quick"]:
        lines.append(f"--quick: {QUICK_NOTE}")
    for name, section in report["sections"].items():
        lines.append(f"\n[{name}]" + (f" skipped: {section['skipped']}" if section.get("skipped") else ""))
        for figure_name, figure in section.get("figures", {}).items():
            lines.append(f"  {figure_name:<58} {figure['median']:>10.4g} {figure['unit']}")
    lines.append("\ntargets:")
    for target in report["targets"]:
        met = target.get("status") or {True: "met", False: "missed", None: "not measured"}[target["met"]]
        met = "MISSED" if met == "missed" else met
        measured = "–" if target["measured"] is None else f"{target['measured']:.3g}"
        lines.append(f"  {target['name']:<48} {measured:>8} {target['op']} {target['target']:<6g} {met}"
                     + (f"  ({target['note']})" if target.get("note") else ""))
    return "\n".join(lines)
