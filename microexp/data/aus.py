"""Action Unit (AU) strings: parse the codes written in official sheets into one normal form.

Sheets write AUs as ``'4+7'``, ``'R12'``, ``'4+L10'``, ``'12L'``, ``'15A'``, ``'AU1+AU2'``, and CAS(ME)^3
also separates with ``','`` or the full-width ``'，'``. The normal form is the AU numbers, ascending and
without duplicates, joined by ``'+'`` (``'1+2+12'``); laterality (``L``/``R``, before or after the number)
and intensity (``A``..``E``) marks are dropped unless ``keep_laterality=True``, which writes the side as a
prefix (``'12L'`` -> ``'L12'``). Blank cells, ``'/'`` and ``'-'`` mean "no AUs".

FACS action descriptors (``AD31``, ``AD38``, ``AD39``) and movement codes (``M57``, ``M58``), which the
DFME challenge sheets write in the AU cell, are real annotations but not AUs: :func:`parse_aus` skips
them (never an error) and :func:`parse_action_descriptors` returns them (``'AD31+M57'``), ascending by
number, without duplicates.

For AU learning, :class:`AUVocabulary` (:func:`build_au_vocabulary`) turns normalised AU strings into
multi-hot targets over the AUs seen often enough in a fold's *training* clips, and :func:`au_cooccurrence`
estimates the conditional probabilities ``P(AU j | AU i)`` an AU-relation graph is built from; both take
the training rows only, so a test clip can never shape them.

Pure functions, no I/O.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "AU_SEPARATORS",
    "AUVocabulary",
    "au_cooccurrence",
    "au_positive_weights",
    "build_au_vocabulary",
    "format_aus",
    "invalid_au_tokens",
    "is_action_descriptor",
    "normalise_action_descriptors",
    "normalise_aus",
    "parse_action_descriptor",
    "parse_action_descriptors",
    "parse_au_token",
    "parse_aus",
]

#: Characters that separate AUs in a cell: '+', ',' and their full-width forms, and ';'.
AU_SEPARATORS = "+,，＋;"

_SPLIT = re.compile("[" + re.escape(AU_SEPARATORS) + "]")
_EMPTY_TOKENS = {"", "/", "-", "none", "nan", "n/a", "na"}
# optional side, optional 'AU', number, then intensity and/or side in either order.
_TOKEN = re.compile(
    r"^(?P<pre>[LR])?\s*(?:AU)?\s*(?P<num>\d+)\s*(?P<post>[A-E]?[LR]?|[LR][A-E]?)$",
    re.IGNORECASE,
)
# a FACS action descriptor (AD) or movement code (M): prefix and number, optional side/intensity marks.
_DESCRIPTOR = re.compile(r"^(?P<pre>AD|M)\s*(?P<num>\d+)\s*(?:[A-E]?[LR]?|[LR][A-E]?)$", re.IGNORECASE)


def parse_au_token(token: str, *, keep_laterality: bool = False) -> str | None:
    """Normalise one AU code.

    Args:
        token: one code, e.g. ``'R12'``, ``'12L'``, ``'15A'``, ``'AU4'``, ``'(4)'``.
        keep_laterality: keep the side as a prefix (``'L12'``); otherwise return the number only.

    Returns:
        ``'12'`` (or ``'R12'``), or ``None`` for an empty token (``''``, ``'/'``, ``'-'``).

    Raises:
        ValueError: the token is not an AU code.
    """
    text = token.strip().strip("()[]").strip()
    if text.lower() in _EMPTY_TOKENS:
        return None
    match = _TOKEN.match(text)
    if match is None:
        raise ValueError(f"not an AU code: {token!r} (expected e.g. '12', 'R12', '12L', '15A')")
    number = str(int(match["num"]))
    side = (match["pre"] or "") + "".join(c for c in (match["post"] or "") if c.upper() in "LR")
    if not keep_laterality or not side:
        return number
    if len(side) > 1:
        raise ValueError(f"not an AU code: {token!r} (two laterality marks)")
    return side.upper() + number


def _tokens(value: object) -> list[str]:
    """Split a cell into raw tokens; numbers (12, 12.0) become one token."""
    if value is None:
        return []
    if isinstance(value, bool):
        return [str(value)]
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return []
        return [str(int(value))] if float(value).is_integer() else [str(value)]
    return [t for t in _SPLIT.split(str(value)) if t.strip()]


def _sort_key(code: str) -> tuple[int, str]:
    return int(code.lstrip("LR")), code[0] if code[0] in "LR" else ""


def parse_aus(value: object, *, keep_laterality: bool = False, strict: bool = True) -> list[str]:
    """Parse an AU cell into sorted, de-duplicated codes.

    Args:
        value: the cell: a string like ``'4+R12，L14'``, a number (``12``), or blank (``None``, NaN, ``''``, ``'/'``).
        keep_laterality: keep sides as prefixes (``['4', 'L14', 'R12']``); otherwise numbers only.
        strict: raise on a token that is not an AU code; with ``strict=False`` such tokens are skipped
            (see :func:`invalid_au_tokens` to list them).

    Returns:
        The codes ascending by AU number, e.g. ``['1', '2', '12']``.

    Raises:
        ValueError: (``strict=True``) a token is not an AU code; the message names it.
    """
    codes = set()
    for token in _tokens(value):
        try:
            code = parse_au_token(token, keep_laterality=keep_laterality)
        except ValueError:
            if is_action_descriptor(token):
                continue
            if strict:
                raise
            continue
        if code is not None:
            codes.add(code)
    return sorted(codes, key=_sort_key)


def invalid_au_tokens(value: object) -> list[str]:
    """The tokens of an AU cell that are neither AU codes nor action descriptors (``[]`` when fine)."""
    bad = []
    for token in _tokens(value):
        try:
            parse_au_token(token, keep_laterality=True)
        except ValueError:
            if not is_action_descriptor(token):
                bad.append(token.strip())
    return bad


def parse_action_descriptor(token: str) -> str | None:
    """Normalise one FACS action descriptor or movement code: ``'ad31'`` -> ``'AD31'``, ``'M057'`` -> ``'M57'``.

    Returns:
        The code, or ``None`` when ``token`` is not one (AU numbers like ``'12'`` included).
    """
    match = _DESCRIPTOR.match(token.strip().strip("()[]").strip())
    if match is None:
        return None
    return match["pre"].upper() + str(int(match["num"]))


def is_action_descriptor(token: str) -> bool:
    """Whether ``token`` is a FACS action descriptor (``AD31``) or movement code (``M57``)."""
    return parse_action_descriptor(token) is not None


def parse_action_descriptors(value: object) -> list[str]:
    """The action descriptors and movement codes of an AU cell, ascending by number, without duplicates.

    ``'4+AD38+M57+AD31'`` -> ``['AD31', 'AD38', 'M57']``; AU codes and other tokens are skipped.
    """
    codes = {code for code in (parse_action_descriptor(t) for t in _tokens(value)) if code is not None}
    return sorted(codes, key=lambda c: (int(c.lstrip("ADM")), c))


def normalise_action_descriptors(value: object) -> str:
    """An AU cell's action descriptors in normal form, e.g. ``'4+M57+AD31'`` -> ``'AD31+M57'``."""
    return format_aus(parse_action_descriptors(value))


def format_aus(codes: list[str] | tuple[str, ...]) -> str:
    """Join AU codes with ``'+'`` (``''`` when there are none)."""
    return "+".join(codes)


def normalise_aus(value: object, *, keep_laterality: bool = False, strict: bool = True) -> str:
    """Parse an AU cell and write it in normal form, e.g. ``'R12+4+L10'`` -> ``'4+10+12'``."""
    return format_aus(parse_aus(value, keep_laterality=keep_laterality, strict=strict))


# --------------------------------------------------------------------------- AU targets


@dataclass(frozen=True)
class AUVocabulary:
    """The AUs a model learns, in target order, with how often each occurs among the training clips.

    ``codes`` are normalised AU numbers (``'1'``, ``'12'``), ascending; ``counts[i]`` is the number of
    training clips carrying ``codes[i]``; ``min_count`` is the threshold the vocabulary was cut at and
    ``dropped`` the rarer AUs left out (with their counts), for the run's log.
    """

    codes: tuple[str, ...]
    counts: tuple[int, ...]
    clips: int
    min_count: int
    dropped: tuple[tuple[str, int], ...] = ()

    @property
    def names(self) -> list[str]:
        """``['AU1', 'AU12', ...]``: the column names of tables and reports."""
        return [f"AU{code}" for code in self.codes]

    def __len__(self) -> int:
        return len(self.codes)

    def encode(self, aus: Iterable[object]) -> np.ndarray:
        """Multi-hot targets ``(N, A)`` float32 of AU cells (strings as in the clip table; other AUs ignored)."""
        index = {code: i for i, code in enumerate(self.codes)}
        cells = list(aus)
        targets = np.zeros((len(cells), len(self.codes)), dtype=np.float32)
        for row, cell in enumerate(cells):
            for code in parse_aus(cell, strict=False):
                if code in index:
                    targets[row, index[code]] = 1.0
        return targets


def build_au_vocabulary(aus: Iterable[object], *, min_count: int = 1) -> AUVocabulary:
    """The AUs carried by at least ``min_count`` of the given clips (pass the training clips only).

    Args:
        aus: the AU cells of the training clips (laterality is ignored: ``'L12'`` counts as ``'12'``).
        min_count: AUs seen fewer times are dropped (too rare to learn or to score).

    Raises:
        ValueError: ``min_count`` is not an integer >= 1.
    """
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count={min_count!r}: expected an integer >= 1")
    counts: Counter[str] = Counter()
    clips = 0
    for cell in aus:
        clips += 1
        counts.update(parse_aus(cell, strict=False))
    ordered = sorted(counts, key=_sort_key)
    kept = [c for c in ordered if counts[c] >= min_count]
    return AUVocabulary(codes=tuple(kept), counts=tuple(counts[c] for c in kept), clips=clips, min_count=min_count,
                        dropped=tuple((c, counts[c]) for c in ordered if counts[c] < min_count))


def au_cooccurrence(targets: np.ndarray) -> np.ndarray:
    """Conditional co-occurrence ``P[i, j] = P(AU j | AU i) = n_ij / n_i`` of multi-hot targets ``(N, A)``.

    The diagonal is 1 for every AU that occurs; a row of an AU that never occurs is all zero.
    Pass the training clips' targets only.
    """
    t = np.asarray(targets, dtype=np.float64)
    if t.ndim != 2:
        raise ValueError(f"targets: expected an (N, A) array, got shape {t.shape}")
    joint = t.T @ t  # n_ij
    occurrences = np.diag(joint).copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        conditional = np.where(occurrences[:, None] > 0, joint / occurrences[:, None], 0.0)
    return conditional.astype(np.float32)


def au_positive_weights(targets: np.ndarray, *, max_weight: float = 50.0) -> np.ndarray:
    """BCE positive weights ``negatives / positives`` per AU (at most ``max_weight``; 1 for an AU never seen)."""
    t = np.asarray(targets, dtype=np.float64)
    positives = t.sum(axis=0)
    negatives = len(t) - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(positives > 0, negatives / positives, 1.0)
    return np.clip(weights, 1e-3, max_weight).astype(np.float32)
