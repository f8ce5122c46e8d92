"""Subject-independent evaluation splits and leakage checks.

Every builder returns a list of :class:`Fold` objects holding *subject ids* (not clip indices) in three
roles: ``train``, ``val`` (an inner validation split carved from the training subjects only, for early
stopping / model selection) and ``test``. Every builder calls :func:`check_folds` before returning, so a
fold list that leaks a subject across roles never leaves this module.

Protocols:

* ``kfold`` -- DFME-style subject-independent k-fold (:func:`kfold_subject_splits`).
* ``loso``  -- leave-one-subject-out, the MEGC protocol (:func:`loso_splits`).
* ``lodo``  -- leave-one-dataset-out for composite tables (:func:`leave_one_dataset_out`).
* ``fixed`` -- a single fold from a given test subject list (:func:`fixed_split`); also the check of
  :func:`cross_dataset_split` (train on some datasets of a composite table, test on others).

Subject ids are integers. In a composite table (several datasets) the caller must make them unique
across datasets (e.g. ``dataset_index * 10_000 + subject``); :func:`leave_one_dataset_out` checks it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut, StratifiedGroupKFold

from microexp.errors import ConfigError, MicroexpError
from microexp.fileio import write_text

__all__ = [
    "PROTOCOLS",
    "Fold",
    "LeakageError",
    "check_folds",
    "cross_dataset_split",
    "fixed_split",
    "format_fold_selection",
    "fold_differences",
    "kfold_subject_splits",
    "leave_one_dataset_out",
    "parse_fold_selection",
    "load_folds",
    "loso_splits",
    "save_folds",
]

PROTOCOLS = ("kfold", "loso", "lodo", "fixed")
_FOLD_KEYS = ("fold", "train_subjects", "val_subjects", "test_subjects")
_ROLES = ("train", "val", "test")


class LeakageError(MicroexpError, ValueError):
    """A fold list puts a subject in two roles, or does not test every subject exactly once."""


def _subject_tuple(values: Iterable[Any], *, key: str) -> tuple[int, ...]:
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ConfigError(f"{key}: subject ids must be integers, got {v!r}")
        out.append(int(v))
    if len(set(out)) != len(out):
        dupes = sorted({s for s in out if out.count(s) > 1})
        raise ConfigError(f"{key}: duplicate subject ids {dupes}")
    return tuple(sorted(out))


@dataclass(frozen=True)
class Fold:
    """One evaluation fold as three disjoint, sorted tuples of subject ids.

    Attributes:
        fold: Fold number (0-based).
        train_subjects: Subjects whose clips train the model.
        val_subjects: Inner validation subjects (a subset of the non-test subjects, disjoint from train);
            empty when no inner validation is used.
        test_subjects: Held-out subjects, evaluated once.
    """

    fold: int
    train_subjects: tuple[int, ...]
    val_subjects: tuple[int, ...] = ()
    test_subjects: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.fold, (bool, np.bool_)) or not isinstance(self.fold, (int, np.integer)):
            raise ConfigError(f"fold: must be an integer, got {self.fold!r}")
        object.__setattr__(self, "fold", int(self.fold))
        for key in _FOLD_KEYS[1:]:
            value = getattr(self, key)
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise ConfigError(f"{key}: must be a list of subject ids, got {value!r}")
            object.__setattr__(self, key, _subject_tuple(value, key=key))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: ``{fold, train_subjects, val_subjects, test_subjects}`` (lists)."""
        return {
            "fold": self.fold,
            "train_subjects": list(self.train_subjects),
            "val_subjects": list(self.val_subjects),
            "test_subjects": list(self.test_subjects),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Fold:
        """Inverse of :meth:`to_dict`; raises ConfigError naming a missing or unknown key."""
        if not isinstance(data, dict):
            raise ConfigError(f"a fold must be an object with keys {list(_FOLD_KEYS)}, got {data!r}")
        missing = [k for k in _FOLD_KEYS if k not in data]
        unknown = sorted(set(data) - set(_FOLD_KEYS))
        if missing:
            raise ConfigError(f"fold is missing key(s) {missing}; expected {list(_FOLD_KEYS)}")
        if unknown:
            raise ConfigError(f"fold has unknown key(s) {unknown}; expected {list(_FOLD_KEYS)}")
        return cls(**{k: data[k] for k in _FOLD_KEYS})

    def roles(self) -> dict[str, tuple[int, ...]]:
        """Mapping ``{'train': ..., 'val': ..., 'test': ...}``."""
        return {"train": self.train_subjects, "val": self.val_subjects, "test": self.test_subjects}


# ----------------------------------------------------------------------------- input validation


def _as_subjects(subjects: Any) -> np.ndarray:
    arr = np.asarray(subjects)
    if arr.ndim != 1 or arr.size == 0:
        raise ConfigError(f"subjects must be a non-empty 1-D array of per-clip subject ids, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(
            f"subjects must be integer ids (normalise e.g. 'sub0001' -> 1 first), got dtype {arr.dtype}"
        )
    return arr.astype(np.int64)


def _as_labels(labels: Any, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ConfigError(f"labels must be 1-D with one entry per clip ({n}), got shape {arr.shape}")
    return arr


def _check_val_args(val_fraction: float, n_val_subjects: int | None) -> None:
    if not 0.0 <= float(val_fraction) < 0.5:
        raise ConfigError(f"val_fraction must be in [0, 0.5), got {val_fraction}")
    if n_val_subjects is not None:
        if val_fraction:
            raise ConfigError("give either val_fraction or n_val_subjects, not both")
        if isinstance(n_val_subjects, bool) or not isinstance(n_val_subjects, (int, np.integer)) or n_val_subjects < 0:
            raise ConfigError(f"n_val_subjects must be a non-negative integer, got {n_val_subjects!r}")


# ----------------------------------------------------------------------------- inner validation


def _carve_val(
    train_subjects: np.ndarray,
    subjects: np.ndarray,
    labels: np.ndarray | None,
    *,
    val_fraction: float,
    n_val_subjects: int | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Split training subjects into (train, val); val is seeded and class-stratified when labels are given.

    Stratification is greedy: subjects are visited in a seeded random order and the one whose clips
    bring the validation class proportions closest (L1) to the training pool's proportions is added
    next, until the requested number of validation subjects is reached.
    """
    train_subjects = np.sort(train_subjects)
    n_pool = len(train_subjects)
    if n_val_subjects is not None:
        n_val = int(n_val_subjects)
    elif val_fraction > 0:
        n_val = max(1, int(round(val_fraction * n_pool)))
    else:
        n_val = 0
    if n_val == 0:
        return train_subjects, np.empty(0, dtype=np.int64)
    if n_val >= n_pool:
        raise ConfigError(
            f"cannot carve {n_val} validation subject(s) from {n_pool} training subject(s); "
            "at least one must remain for training"
        )
    order = rng.permutation(train_subjects)
    if labels is None:
        val = order[:n_val]
    else:
        classes, label_idx = np.unique(labels, return_inverse=True)
        in_pool = np.isin(subjects, train_subjects)
        counts = {
            int(s): np.bincount(label_idx[in_pool & (subjects == s)], minlength=len(classes)) for s in order
        }
        target = np.bincount(label_idx[in_pool], minlength=len(classes)).astype(float)
        target /= target.sum()
        chosen: list[int] = []
        acc = np.zeros(len(classes), dtype=float)
        remaining = [int(s) for s in order]
        for _ in range(n_val):
            costs = [np.abs((acc + counts[s]) / (acc + counts[s]).sum() - target).sum() for s in remaining]
            best = remaining.pop(int(np.argmin(costs)))  # argmin takes the first: ties follow the seeded order
            chosen.append(best)
            acc += counts[best]
        val = np.array(chosen, dtype=np.int64)
    return np.setdiff1d(train_subjects, val), np.sort(val)


def _make_fold(
    fold: int,
    train: np.ndarray,
    test: np.ndarray,
    subjects: np.ndarray,
    labels: np.ndarray | None,
    *,
    val_fraction: float,
    n_val_subjects: int | None,
    seed: int,
) -> Fold:
    rng = np.random.default_rng([int(seed), int(fold)])
    train, val = _carve_val(
        train, subjects, labels, val_fraction=val_fraction, n_val_subjects=n_val_subjects, rng=rng
    )
    return Fold(fold=fold, train_subjects=train.tolist(), val_subjects=val.tolist(), test_subjects=test.tolist())


# ----------------------------------------------------------------------------- builders


def kfold_subject_splits(
    subjects: Sequence[int] | np.ndarray,
    labels: Sequence[Any] | np.ndarray | None = None,
    *,
    k: int = 10,
    seed: int = 0,
    stratify: bool = False,
    val_fraction: float = 0.0,
    n_val_subjects: int | None = None,
) -> list[Fold]:
    """Subject-independent k-fold (the DFME protocol): every subject is tested in exactly one fold.

    Args:
        subjects: Per-clip integer subject ids, shape ``(N,)``.
        labels: Per-clip class labels, shape ``(N,)``; required when ``stratify`` is True, and used to
            stratify the inner validation split when given.
        k: Number of folds (2 <= k <= number of subjects).
        seed: Seed of the subject shuffle and of the inner validation splits.
        stratify: Balance class proportions across folds with subjects kept whole
            (``StratifiedGroupKFold``); otherwise ``GroupKFold`` with shuffling (balances clip counts).
        val_fraction: Fraction of each fold's training subjects held out for validation, in [0, 0.5).
        n_val_subjects: Exact number of validation subjects per fold (instead of ``val_fraction``).

    Returns:
        ``k`` folds ordered by fold number.
    """
    subj = _as_subjects(subjects)
    lab = _as_labels(labels, len(subj))
    _check_val_args(val_fraction, n_val_subjects)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ConfigError(f"k must be an integer >= 2, got {k!r}")
    n_subjects = len(np.unique(subj))
    if n_subjects < k:
        raise ConfigError(f"k={k} folds need at least {k} subjects, but the table has {n_subjects}")
    if stratify and lab is None:
        raise ConfigError("stratify=True needs per-clip labels")
    if stratify:
        splitter: Any = StratifiedGroupKFold(n_splits=int(k), shuffle=True, random_state=int(seed))
        split_iter = splitter.split(np.zeros(len(subj)), lab, groups=subj)
    else:
        splitter = GroupKFold(n_splits=int(k), shuffle=True, random_state=int(seed))
        split_iter = splitter.split(np.zeros(len(subj)), groups=subj)
    folds = [
        _make_fold(
            i, np.unique(subj[tr]), np.unique(subj[te]), subj, lab,
            val_fraction=val_fraction, n_val_subjects=n_val_subjects, seed=seed,
        )
        for i, (tr, te) in enumerate(split_iter)
    ]
    check_folds(folds, subj, protocol="kfold")
    return folds


def loso_splits(
    subjects: Sequence[int] | np.ndarray,
    *,
    labels: Sequence[Any] | np.ndarray | None = None,
    val_fraction: float = 0.0,
    n_val_subjects: int | None = None,
    seed: int = 0,
) -> list[Fold]:
    """Leave-one-subject-out (the MEGC protocol): fold ``i`` tests the ``i``-th subject in sorted order.

    Args:
        subjects: Per-clip integer subject ids, shape ``(N,)`` (at least 2 distinct subjects).
        labels: Optional per-clip labels, used only to stratify the inner validation split.
        val_fraction: Fraction of each fold's training subjects held out for validation, in [0, 0.5).
        n_val_subjects: Exact number of validation subjects per fold (instead of ``val_fraction``).
        seed: Seed of the inner validation splits.

    Returns:
        One fold per subject.
    """
    subj = _as_subjects(subjects)
    lab = _as_labels(labels, len(subj))
    _check_val_args(val_fraction, n_val_subjects)
    n_subjects = len(np.unique(subj))
    if n_subjects < 2:
        raise ConfigError(f"leave-one-subject-out needs at least 2 subjects, but the table has {n_subjects}")
    uniq = np.unique(subj)
    folds = [
        _make_fold(
            i, uniq[tr], uniq[te], subj, lab,
            val_fraction=val_fraction, n_val_subjects=n_val_subjects, seed=seed,
        )
        for i, (tr, te) in enumerate(LeaveOneGroupOut().split(uniq, groups=uniq))
    ]
    check_folds(folds, subj, protocol="loso")
    return folds


def fixed_split(
    subjects: Sequence[int] | np.ndarray,
    test_subjects: Iterable[int],
    *,
    labels: Sequence[Any] | np.ndarray | None = None,
    val_fraction: float = 0.0,
    n_val_subjects: int | None = None,
    seed: int = 0,
) -> Fold:
    """A single fold (number 0) testing the given subjects and training on all others.

    Args:
        subjects: Per-clip integer subject ids, shape ``(N,)``.
        test_subjects: Subject ids to hold out; each must occur in ``subjects``.
        labels: Optional per-clip labels, used only to stratify the inner validation split.
        val_fraction: Fraction of the training subjects held out for validation, in [0, 0.5).
        n_val_subjects: Exact number of validation subjects (instead of ``val_fraction``).
        seed: Seed of the inner validation split.

    Returns:
        The fold.
    """
    subj = _as_subjects(subjects)
    lab = _as_labels(labels, len(subj))
    _check_val_args(val_fraction, n_val_subjects)
    test = np.array(_subject_tuple(test_subjects, key="test_subjects"), dtype=np.int64)
    uniq = np.unique(subj)
    unknown = np.setdiff1d(test, uniq)
    if unknown.size:
        raise ConfigError(f"test_subjects {unknown.tolist()} do not occur in the clip table")
    if test.size == 0:
        raise ConfigError("test_subjects is empty")
    train = np.setdiff1d(uniq, test)
    if train.size == 0:
        raise ConfigError(f"test_subjects cover all {len(uniq)} subjects; none is left for training")
    fold = _make_fold(
        0, train, test, subj, lab, val_fraction=val_fraction, n_val_subjects=n_val_subjects, seed=seed
    )
    check_folds([fold], subj, protocol="fixed")
    return fold


def leave_one_dataset_out(
    datasets: Sequence[str] | np.ndarray,
    subjects: Sequence[int] | np.ndarray,
    *,
    labels: Sequence[Any] | np.ndarray | None = None,
    val_fraction: float = 0.0,
    n_val_subjects: int | None = None,
    seed: int = 0,
) -> list[Fold]:
    """Leave-one-dataset-out over a composite table: fold ``i`` tests every subject of the ``i``-th
    dataset in sorted name order and trains on the others.

    Subject ids must be unique across datasets (the caller makes them so, e.g. by an offset per
    dataset); a subject id found in two datasets raises ConfigError.

    Args:
        datasets: Per-clip dataset names, shape ``(N,)`` (at least 2 distinct).
        subjects: Per-clip integer subject ids, shape ``(N,)``.
        labels: Optional per-clip labels, used only to stratify the inner validation split.
        val_fraction: Fraction of each fold's training subjects held out for validation, in [0, 0.5).
        n_val_subjects: Exact number of validation subjects per fold (instead of ``val_fraction``).
        seed: Seed of the inner validation splits.

    Returns:
        One fold per dataset, in ``sorted(set(datasets))`` order.
    """
    subj = _as_subjects(subjects)
    lab = _as_labels(labels, len(subj))
    _check_val_args(val_fraction, n_val_subjects)
    ds = _dataset_names(datasets, subj)
    names = np.unique(ds)
    if len(names) < 2:
        raise ConfigError(f"leave-one-dataset-out needs at least 2 datasets, got {names.tolist()}")
    folds = []
    for i, name in enumerate(names):
        test = np.unique(subj[ds == name])
        train = np.unique(subj[ds != name])
        folds.append(
            _make_fold(i, train, test, subj, lab, val_fraction=val_fraction, n_val_subjects=n_val_subjects, seed=seed)
        )
    check_folds(folds, subj, protocol="lodo")
    return folds


def cross_dataset_split(
    datasets: Sequence[str] | np.ndarray,
    subjects: Sequence[int] | np.ndarray,
    *,
    train: Sequence[str],
    test: Sequence[str],
    labels: Sequence[Any] | np.ndarray | None = None,
    val_fraction: float = 0.0,
    n_val_subjects: int | None = None,
    seed: int = 0,
) -> Fold:
    """One fold of a composite table that trains on the subjects of datasets ``train`` and tests on those of
    ``test`` (e.g. DFME -> CASME II); subjects of other datasets take no role.

    Args:
        datasets: Per-clip dataset names, shape ``(N,)``.
        subjects: Per-clip integer subject ids, unique across datasets.
        train, test: Disjoint, non-empty lists of dataset names found in ``datasets``.
        labels, val_fraction, n_val_subjects, seed: the inner validation split, carved from the training
            subjects as in :func:`leave_one_dataset_out`.

    Raises:
        ConfigError: a name is not in ``datasets``, the lists overlap or one is empty, or a subject id occurs
            in two datasets.
    """
    subj = _as_subjects(subjects)
    lab = _as_labels(labels, len(subj))
    _check_val_args(val_fraction, n_val_subjects)
    ds = _dataset_names(datasets, subj)
    present = sorted(set(ds.tolist()))
    for role, names in (("train", train), ("test", test)):
        if not names:
            raise ConfigError(f"cross-dataset split: no {role} dataset given")
        missing = sorted(set(names) - set(present))
        if missing:
            raise ConfigError(f"cross-dataset split: {role} dataset(s) {', '.join(missing)} not in the table; it has "
                              f"{', '.join(present)}")
    both = sorted(set(train) & set(test))
    if both:
        raise ConfigError(f"cross-dataset split: dataset(s) {', '.join(both)} are both trained and tested on")
    train_subjects = np.unique(subj[np.isin(ds, list(train))])
    test_subjects = np.unique(subj[np.isin(ds, list(test))])
    fold = _make_fold(0, train_subjects, test_subjects, subj, lab, val_fraction=val_fraction,
                      n_val_subjects=n_val_subjects, seed=seed)
    check_folds([fold], subj, protocol="fixed")
    return fold


def _dataset_names(datasets: Sequence[str] | np.ndarray, subj: np.ndarray) -> np.ndarray:
    """Per-clip dataset names as a 1-D string array; refuses a subject id found in two datasets."""
    ds = np.asarray(datasets).astype(str)
    if ds.ndim != 1 or ds.shape[0] != len(subj):
        raise ConfigError(f"datasets must be 1-D with one entry per clip ({len(subj)}), got shape {ds.shape}")
    for s in np.unique(subj):
        owners = np.unique(ds[subj == s])
        if len(owners) > 1:
            raise ConfigError(
                f"subject {int(s)} occurs in datasets {owners.tolist()}; make subject ids unique across "
                "datasets (e.g. add a per-dataset offset, as a composite data.annotations list does)"
            )
    return ds


# ----------------------------------------------------------------------------- checks and I/O


def check_folds(
    folds: Sequence[Fold], subjects: Sequence[int] | np.ndarray | None, *, protocol: str
) -> None:
    """Raise :class:`LeakageError` if the folds leak or (for full protocols) miss subjects.

    Checks, for every protocol: fold numbers are unique; no fold has an empty train or test role; no
    subject has two roles (train/val/test) within one fold; every subject of every fold occurs in
    ``subjects`` (skipped when ``subjects`` is None). For ``'kfold'``, ``'loso'`` and ``'lodo'`` it also
    checks that every subject of ``subjects`` (hence every clip) is tested in exactly one fold.

    Args:
        folds: The folds to check.
        subjects: Per-clip (or unique) subject ids of the table, or None to check folds on their own.
        protocol: One of ``'kfold'``, ``'loso'``, ``'lodo'``, ``'fixed'``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {list(PROTOCOLS)}")
    if not folds:
        raise LeakageError("the fold list is empty")
    seen_numbers: set[int] = set()
    for f in folds:
        if f.fold in seen_numbers:
            raise LeakageError(f"fold number {f.fold} appears twice")
        seen_numbers.add(f.fold)
        if not f.train_subjects or not f.test_subjects:
            empty = "train" if not f.train_subjects else "test"
            raise LeakageError(f"fold {f.fold} has no {empty} subjects")
        roles = f.roles()
        for i, a in enumerate(_ROLES):
            for b in _ROLES[i + 1 :]:
                both = sorted(set(roles[a]) & set(roles[b]))
                if both:
                    raise LeakageError(f"subject {both[0]} is in both {a} and {b} of fold {f.fold}"
                                       + (f" (and {len(both) - 1} more)" if len(both) > 1 else ""))
    if subjects is None:
        return
    uniq = set(np.unique(_as_subjects(subjects)).tolist())
    for f in folds:
        for role, members in f.roles().items():
            extra = sorted(set(members) - uniq)
            if extra:
                raise LeakageError(f"fold {f.fold} {role} has subject(s) {extra} not in the clip table")
    if protocol == "fixed":
        return
    tested_in: dict[int, list[int]] = {}
    for f in folds:
        for s in f.test_subjects:
            tested_in.setdefault(s, []).append(f.fold)
    twice = {s: fs for s, fs in tested_in.items() if len(fs) > 1}
    if twice:
        s, fs = min(twice.items())
        raise LeakageError(f"subject {s} is tested in folds {fs}; under {protocol!r} each subject is tested once")
    never = sorted(uniq - set(tested_in))
    if never:
        raise LeakageError(
            f"subject(s) {never[:10]}{' ...' if len(never) > 10 else ''} are never tested; under "
            f"{protocol!r} every subject is tested in exactly one fold"
        )


def save_folds(folds: Sequence[Fold], path: str | Path) -> Path:
    """Write folds as a JSON list of ``{fold, train_subjects, val_subjects, test_subjects}`` objects.

    Args:
        folds: The folds (checked for role overlap first).
        path: Destination file, written atomically; parent folders are created.

    Returns:
        The written path.
    """
    check_folds(folds, None, protocol="fixed")
    return write_text(path, json.dumps([f.to_dict() for f in folds], indent=1) + "\n")


def load_folds(path: str | Path) -> list[Fold]:
    """Read folds written by :func:`save_folds`, validating keys and checking role overlap.

    Args:
        path: JSON file.

    Returns:
        The folds, in file order.

    Raises:
        FileNotFoundError: The file does not exist.
        ConfigError: The JSON is malformed; the message names the file, fold index and key.
        LeakageError: A fold puts a subject in two roles.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fold file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a JSON list of fold objects, got {type(data).__name__}")
    folds = []
    for i, item in enumerate(data):
        try:
            folds.append(Fold.from_dict(item))
        except ConfigError as exc:
            raise ConfigError(f"{path}: fold [{i}]: {exc}") from exc
    try:
        check_folds(folds, None, protocol="fixed")
    except LeakageError as exc:
        raise LeakageError(f"{path}: {exc}") from exc
    return folds


def fold_differences(folds: Sequence[Fold], reference: Sequence[Fold]) -> str | None:
    """None when two fold lists are the same (numbers and subjects in every role), else what differs, as a
    phrase ("fold(s) [0, 3] have other subjects", "3 folds against 5")."""
    mine, theirs = [f.to_dict() for f in folds], [f.to_dict() for f in reference]
    if mine == theirs:
        return None
    if len(mine) != len(theirs):
        return f"{len(mine)} folds against {len(theirs)}"
    return f"fold(s) {[a['fold'] for a, b in zip(mine, theirs) if a != b]} have other subjects"


def parse_fold_selection(text: str) -> list[int]:
    """``"0,3-5"`` -> ``[0, 3, 4, 5]``: the folds a shard runs (sorted, each once).

    Raises:
        ConfigError: a part that is neither ``N`` nor ``A-B`` with ``A <= B``.
    """
    folds: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        first, dash, last = part.partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            low = high = -1
        if low < 0 or high < low:
            raise ConfigError(f"--folds {text}: {part!r} is not a fold number or a range A-B (expected e.g. 0,3-5)")
        folds.update(range(low, high + 1))
    return sorted(folds)


def format_fold_selection(folds: Iterable[int]) -> str:
    """``[0, 3, 4, 5]`` -> ``"0,3-5"`` (the inverse of :func:`parse_fold_selection`)."""
    numbers = sorted(set(int(f) for f in folds))
    parts: list[str] = []
    start = previous = None
    for number in numbers + [None]:
        if number is not None and previous is not None and number == previous + 1:
            previous = number
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = number
    return ",".join(parts)
