"""Progress of a run: fold k/K, epoch times and the ETA of the whole run, and one way to print durations."""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

__all__ = ["RunProgress", "UnitProgress", "format_seconds"]



class RunProgress:
    """Epochs left in every unit of a run (folds, final model) and the mean epoch time so far -> ETA.

    Epoch lines go to ``log`` (the experiment passes its own logger, which a sweep quietens in its workers).
    """

    def __init__(self, log: logging.Logger = logger) -> None:
        self.log = log
        self.remaining: dict[str, int] = {}
        self.seconds = 0.0
        self.done = 0

    def plan(self, key: str, remaining: int) -> None:
        """An estimate of ``key``'s remaining epochs (corrected when it starts)."""
        self.remaining[key] = max(0, remaining)

    def unit(self, key: str, label: str) -> UnitProgress:
        return UnitProgress(self, key, label)

    def eta_seconds(self) -> float | None:
        if not self.done:
            return None
        return self.seconds / self.done * sum(self.remaining.values())


@dataclass
class UnitProgress:
    """One fold's (or the final model's) view of :class:`RunProgress`; logs each epoch at INFO."""

    run: RunProgress
    key: str
    label: str

    def begin(self, remaining: int) -> None:
        self.run.plan(self.key, remaining)

    def epoch_done(self, epoch: int, epochs: int, seconds: float, summary: str) -> None:
        self.run.seconds += seconds
        self.run.done += 1
        self.run.remaining[self.key] = max(0, self.run.remaining.get(self.key, 1) - 1)
        eta = self.run.eta_seconds()
        self.run.log.info("%s epoch %d/%d: %s (%s; ETA of the run %s)", self.label, epoch + 1, epochs, summary,
                    format_seconds(seconds), format_seconds(eta) if eta is not None else "unknown")


def format_seconds(seconds: float) -> str:
    """``3.2 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
