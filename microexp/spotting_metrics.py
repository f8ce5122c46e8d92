"""Spotting metrics of the MEGC challenges: interval IoU matching, precision/recall/F1, and the
spot-then-recognise score.

Intervals are inclusive frame ranges ``[onset, offset]`` of one video. MEGC (2019 onwards) counts a spotted
interval as a true positive when its temporal IoU with a ground-truth interval of the same video is at least
0.5; each ground-truth interval is matched at most once and each spotted one at most once. Here predictions are
matched in descending score order (ties: earlier onset first), each to the unmatched ground-truth interval it
overlaps most, which is the greedy rule of the challenges' evaluation code. Precision = TP / spotted,
recall = TP / ground truth, F1 their harmonic mean; "overall" sums TP, FP and FN over every video before the
ratios (MEGC's reported figure), and the per-video rows are given beside it.

Spot-then-recognise (MEGC 2023's STR task, after Liong et al.'s MEAN): the true-positive intervals carry a
predicted emotion; the *analysis* F1 is the unweighted mean over classes (UF1) of the per-class F1 of those
predictions against the matched ground-truth emotions, and STRS = spotting F1 x analysis UF1. A spotter that
finds nothing scores 0; a recogniser is judged only on the intervals its spotter found.

Pure functions of plain values: no I/O (``microexp spot-eval`` reads the CSV files).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["IOU_THRESHOLD", "Interval", "Match", "SpottingScores", "interval_iou", "match_intervals",
           "spot_then_recognise", "spotting_scores"]

#: MEGC's true-positive rule
IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class Interval:
    """One interval of a video: inclusive frames, with a score (spotted) and an emotion (when known)."""

    onset: int
    offset: int
    score: float = 1.0
    emotion: str | None = None

    def __post_init__(self) -> None:
        if self.offset < self.onset:
            raise ValueError(f"interval [{self.onset}, {self.offset}]: offset before onset")


@dataclass(frozen=True)
class Match:
    """A true positive: indices into the video's spotted and ground-truth lists, and their IoU."""

    spotted: int
    truth: int
    iou: float


@dataclass(frozen=True)
class SpottingScores:
    """Counts and ratios of one video or of all (``overall``)."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision, "recall": self.recall,
                "f1": self.f1}


def interval_iou(a: Interval, b: Interval) -> float:
    """Temporal IoU of two inclusive frame intervals (frames shared / frames in either)."""
    shared = min(a.offset, b.offset) - max(a.onset, b.onset) + 1
    if shared <= 0:
        return 0.0
    return shared / ((a.offset - a.onset + 1) + (b.offset - b.onset + 1) - shared)


def match_intervals(spotted: Sequence[Interval], truth: Sequence[Interval], *,
                    threshold: float = IOU_THRESHOLD) -> list[Match]:
    """The true positives of one video: one-to-one matches with IoU >= ``threshold`` (module docstring)."""
    order = sorted(range(len(spotted)), key=lambda i: (-spotted[i].score, spotted[i].onset, i))
    free = set(range(len(truth)))
    matches = []
    for i in order:
        best, best_iou = None, 0.0
        for j in sorted(free):
            iou = interval_iou(spotted[i], truth[j])
            if iou > best_iou:
                best, best_iou = j, iou
        if best is not None and best_iou >= threshold:
            free.discard(best)
            matches.append(Match(i, best, best_iou))
    return matches


def spotting_scores(spotted: Mapping[str, Sequence[Interval]], truth: Mapping[str, Sequence[Interval]], *,
                    threshold: float = IOU_THRESHOLD) -> tuple[SpottingScores, dict[str, SpottingScores],
                                                                  dict[str, list[Match]]]:
    """Overall and per-video scores, and each video's matches. A video in only one mapping counts its
    intervals as false positives (spotted) or misses (truth)."""
    per_video, matches = {}, {}
    for video in sorted(set(spotted) | set(truth)):
        s, t = list(spotted.get(video, ())), list(truth.get(video, ()))
        found = match_intervals(s, t, threshold=threshold)
        matches[video] = found
        per_video[video] = SpottingScores(tp=len(found), fp=len(s) - len(found), fn=len(t) - len(found))
    overall = SpottingScores(tp=sum(v.tp for v in per_video.values()), fp=sum(v.fp for v in per_video.values()),
                             fn=sum(v.fn for v in per_video.values()))
    return overall, per_video, matches


def spot_then_recognise(spotted: Mapping[str, Sequence[Interval]], truth: Mapping[str, Sequence[Interval]], *,
                        threshold: float = IOU_THRESHOLD) -> dict[str, Any]:
    """Spotting F1, the analysis UF1 over the true-positive intervals' emotions, and STRS = their product.

    Raises:
        ValueError: a matched interval lacks an emotion (spotted or ground truth).
    """
    overall, _, matches = spotting_scores(spotted, truth, threshold=threshold)
    predicted, actual = [], []
    for video, found in matches.items():
        for m in found:
            p, t = spotted[video][m.spotted].emotion, truth[video][m.truth].emotion
            if not p or not t:
                raise ValueError(f"video {video!r}: a matched interval has no emotion (spotted {p!r}, truth {t!r})")
            predicted.append(p)
            actual.append(t)
    analysis = _unweighted_f1(actual, predicted)
    return {"spotting": overall.to_dict(), "analysis_uf1": analysis, "analysed_intervals": len(actual),
            "strs": overall.f1 * analysis}


def _unweighted_f1(actual: Sequence[str], predicted: Sequence[str]) -> float:
    """Mean over the ground-truth classes of the true positives of each class's F1 (0 with no interval)."""
    if not actual:
        return 0.0
    a, p = np.asarray(actual, dtype=object), np.asarray(predicted, dtype=object)
    scores = []
    for label in sorted(set(actual)):
        tp = int(((a == label) & (p == label)).sum())
        fp = int(((a != label) & (p == label)).sum())
        fn = int(((a == label) & (p != label)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))
