"""Tests of microexp.splits: subject-independent folds, inner validation, leakage checks, JSON I/O."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from microexp.errors import ConfigError
from microexp.splits import (
    Fold,
    LeakageError,
    check_folds,
    fixed_split,
    kfold_subject_splits,
    leave_one_dataset_out,
    load_folds,
    loso_splits,
    save_folds,
)

N_SUBJECTS = 23
N_CLASSES = 7


def toy_table(seed: int = 0, n_subjects: int = N_SUBJECTS) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip subject ids (non-contiguous, 1..8 clips each) and imbalanced 7-class labels."""
    rng = np.random.default_rng(seed)
    probs = np.array([0.4, 0.2, 0.12, 0.1, 0.08, 0.06, 0.04])
    subjects, labels = [], []
    for s in range(n_subjects):
        n = int(rng.integers(1, 9))
        subjects += [100 + 3 * s] * n
        labels += rng.choice(N_CLASSES, size=n, p=probs).tolist()
    return np.array(subjects), np.array(labels)


def assert_valid_folds(folds: list[Fold], subjects: np.ndarray, *, full: bool = True) -> None:
    uniq = set(np.unique(subjects).tolist())
    tested: list[int] = []
    for f in folds:
        tr, va, te = set(f.train_subjects), set(f.val_subjects), set(f.test_subjects)
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert tr and te
        assert tr | va | te == uniq  # every subject has exactly one role in every fold
        assert list(f.train_subjects) == sorted(f.train_subjects)
        tested += list(te)
    if full:
        assert sorted(tested) == sorted(uniq)


@pytest.fixture(autouse=True)
def _quiet_stratified_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        yield


@pytest.mark.parametrize("stratify", [False, True])
@pytest.mark.parametrize("val_fraction", [0.0, 0.2])
def test_kfold_invariants(stratify: bool, val_fraction: float) -> None:
    subjects, labels = toy_table()
    folds = kfold_subject_splits(subjects, labels, k=5, seed=3, stratify=stratify, val_fraction=val_fraction)
    assert [f.fold for f in folds] == list(range(5))
    assert_valid_folds(folds, subjects)
    for f in folds:
        n_nontest = N_SUBJECTS - len(f.test_subjects)
        assert len(f.val_subjects) == (round(0.2 * n_nontest) if val_fraction else 0)


def test_kfold_seeded_determinism_and_seed_matters() -> None:
    subjects, labels = toy_table()
    for stratify in (False, True):
        a = kfold_subject_splits(subjects, labels, k=5, seed=1, stratify=stratify, val_fraction=0.2)
        b = kfold_subject_splits(subjects, labels, k=5, seed=1, stratify=stratify, val_fraction=0.2)
        c = kfold_subject_splits(subjects, labels, k=5, seed=2, stratify=stratify, val_fraction=0.2)
        assert a == b
        assert [f.test_subjects for f in a] != [f.test_subjects for f in c]


def _mean_fold_deviation(folds: list[Fold], subjects: np.ndarray, labels: np.ndarray) -> float:
    overall = np.bincount(labels, minlength=N_CLASSES) / len(labels)
    devs = []
    for f in folds:
        lab = labels[np.isin(subjects, f.test_subjects)]
        devs.append(np.abs(np.bincount(lab, minlength=N_CLASSES) / len(lab) - overall).sum())
    return float(np.mean(devs))


def test_stratified_folds_have_closer_class_proportions() -> None:
    # imbalanced: 60 subjects, each with several clips; compare mean L1 gap to the overall proportions
    strat, plain = [], []
    for seed in range(5):
        subjects, labels = toy_table(seed, n_subjects=60)
        strat.append(_mean_fold_deviation(
            kfold_subject_splits(subjects, labels, k=5, seed=seed, stratify=True), subjects, labels))
        plain.append(_mean_fold_deviation(
            kfold_subject_splits(subjects, labels, k=5, seed=seed, stratify=False), subjects, labels))
    assert np.mean(strat) < 0.8 * np.mean(plain)


def test_val_split_is_stratified_when_labels_given() -> None:
    # two kinds of subject: 12 only-class-0, 12 only-class-1; a stratified val of 4 takes two of each
    subjects = np.repeat(np.arange(24), 3)
    labels = np.repeat(np.arange(24) % 2, 3)
    # (a random draw of 4 from 11 + 11 is 2/2 only 41% of the time)
    vals = set()
    for seed in range(10):
        fold = fixed_split(subjects, [22, 23], labels=labels, n_val_subjects=4, seed=seed)
        assert sorted(s % 2 for s in fold.val_subjects) == [0, 0, 1, 1]
        assert fold == fixed_split(subjects, [22, 23], labels=labels, n_val_subjects=4, seed=seed)
        vals.add(fold.val_subjects)
    assert len(vals) > 1  # still seeded, not a fixed pick


def test_kfold_too_few_subjects() -> None:
    subjects, labels = toy_table()
    with pytest.raises(ConfigError, match=r"k=30 .* 23"):
        kfold_subject_splits(subjects, labels, k=30)
    with pytest.raises(ConfigError, match="stratify"):
        kfold_subject_splits(subjects, None, k=5, stratify=True)
    with pytest.raises(ConfigError, match="val_fraction"):
        kfold_subject_splits(subjects, labels, k=5, val_fraction=0.5)
    with pytest.raises(ConfigError, match="integer"):
        kfold_subject_splits(np.array(["sub01", "sub02"]), k=2)


def test_loso_invariants() -> None:
    subjects, labels = toy_table()
    folds = loso_splits(subjects, labels=labels, val_fraction=0.1, seed=0)
    assert len(folds) == N_SUBJECTS
    assert [f.test_subjects[0] for f in folds] == sorted(np.unique(subjects).tolist())
    assert all(len(f.test_subjects) == 1 for f in folds)
    assert all(len(f.val_subjects) == 2 for f in folds)  # round(0.1 * 22)
    assert_valid_folds(folds, subjects)
    with pytest.raises(ConfigError, match="at least 2 subjects"):
        loso_splits([1, 1, 1])


def test_fixed_split() -> None:
    subjects, labels = toy_table()
    fold = fixed_split(subjects, [100, 103, 106], labels=labels, val_fraction=0.25, seed=0)
    assert fold.fold == 0 and fold.test_subjects == (100, 103, 106)
    assert len(fold.val_subjects) == 5  # round(0.25 * 20)
    assert_valid_folds([fold], subjects, full=False)
    with pytest.raises(ConfigError, match=r"\[7, 999\]"):
        fixed_split(subjects, [100, 999, 7])
    with pytest.raises(ConfigError, match="none is left"):
        fixed_split([1, 2], [1, 2])


def test_leave_one_dataset_out() -> None:
    subjects, labels = toy_table()
    names = np.array(["samm", "casme2", "smic"])
    datasets = names[(subjects - 100) // 3 % 3]
    folds = leave_one_dataset_out(datasets, subjects, labels=labels, val_fraction=0.2, seed=0)
    assert len(folds) == 3
    assert_valid_folds(folds, subjects)
    for f, name in zip(folds, sorted(names)):  # folds in sorted dataset order
        assert set(f.test_subjects) == set(subjects[datasets == name].tolist())
    with pytest.raises(ConfigError, match="subject 5 occurs in datasets"):
        leave_one_dataset_out(["a", "b", "b"], [5, 5, 6])


def test_check_folds_catches_leaks() -> None:
    subjects = np.array([1, 1, 2, 3, 4])
    good = [Fold(0, (3, 4), (), (1, 2)), Fold(1, (1, 2), (), (3, 4))]
    check_folds(good, subjects, protocol="kfold")
    leaking = [Fold(0, (2, 3, 4), (), (1, 2)), Fold(1, (1, 2), (), (3, 4))]
    with pytest.raises(LeakageError, match=r"subject 2 is in both train and test of fold 0"):
        check_folds(leaking, subjects, protocol="kfold")
    with pytest.raises(ValueError, match="val and test"):  # LeakageError is a ValueError
        check_folds([Fold(0, (3,), (1,), (1, 2))], subjects, protocol="fixed")
    never = [Fold(0, (3, 4), (), (1, 2)), Fold(1, (1, 2), (), (3,))]
    with pytest.raises(LeakageError, match=r"\[4\] are never tested"):
        check_folds(never, subjects, protocol="kfold")
    check_folds(never, subjects, protocol="fixed")  # a fixed split need not test everyone
    twice = [Fold(0, (3, 4), (), (1, 2)), Fold(1, (1,), (), (2, 3, 4))]
    with pytest.raises(LeakageError, match=r"subject 2 is tested in folds \[0, 1\]"):
        check_folds(twice, subjects, protocol="loso")
    with pytest.raises(LeakageError, match="no test subjects"):
        check_folds([Fold(0, (1, 2, 3, 4), (), ())], subjects, protocol="fixed")
    with pytest.raises(LeakageError, match="not in the clip table"):
        check_folds([Fold(0, (1, 2, 3, 4), (), (9,))], subjects, protocol="fixed")
    with pytest.raises(ValueError, match="unknown protocol"):
        check_folds(good, subjects, protocol="holdout")


def test_save_load_round_trip(tmp_path: Path) -> None:
    subjects, labels = toy_table()
    folds = kfold_subject_splits(subjects, labels, k=4, seed=0, stratify=True, val_fraction=0.2)
    path = save_folds(folds, tmp_path / "cv" / "folds.json")
    data = json.loads(path.read_text())
    assert set(data[0]) == {"fold", "train_subjects", "val_subjects", "test_subjects"}
    assert load_folds(path) == folds
    assert Fold.from_dict(folds[0].to_dict()) == folds[0]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{", "not valid JSON"),
        ('{"fold": 0}', "expected a JSON list"),
        ('[{"fold": 0, "train_subjects": [1], "val_subjects": []}]', r"fold \[0\].*missing key.*test_subjects"),
        ('[{"fold": 0, "train_subjects": [1], "val_subjects": [], "test_subjects": [2], "x": 1}]', "unknown key"),
        ('[{"fold": 0, "train_subjects": ["a"], "val_subjects": [], "test_subjects": [2]}]', "train_subjects"),
        ('[{"fold": 0, "train_subjects": [1, 2], "val_subjects": [], "test_subjects": [2]}]', "subject 2 is in both"),
    ],
)
def test_load_folds_errors_name_file_and_key(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "folds.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        load_folds(path)
    assert "folds.json" in str(info.value)


def test_load_folds_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_folds(tmp_path / "nope.json")
