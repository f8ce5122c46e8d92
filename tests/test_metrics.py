"""Tests of microexp.metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from microexp.metrics import ClassificationMetrics, compute_metrics, cross_validation_summary

# 3 classes, 10 samples. Confusion (rows = true): [[2,1,1],[1,2,0],[0,1,2]]
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]


def test_hand_computed_three_class_example() -> None:
    m = compute_metrics(Y_TRUE, Y_PRED, num_classes=3)
    assert isinstance(m, ClassificationMetrics)
    assert m.confusion == ((2, 1, 1), (1, 2, 0), (0, 1, 2))
    assert m.acc == pytest.approx(6 / 10)
    # recall = TP / N_c: 2/4, 2/3, 2/3
    assert m.per_class_recall == pytest.approx((2 / 4, 2 / 3, 2 / 3))
    assert m.uar == pytest.approx((2 / 4 + 2 / 3 + 2 / 3) / 3)
    # F1 = 2TP/(2TP+FP+FN): c0 TP2 FP1 FN2 -> 4/7; c1 TP2 FP2 FN1 -> 4/7; c2 TP2 FP1 FN1 -> 4/6
    assert m.per_class_f1 == pytest.approx((4 / 7, 4 / 7, 4 / 6))
    assert m.uf1 == pytest.approx(38 / 63)
    assert m.num_samples == 10


def test_to_dict_is_json_and_nan_becomes_none() -> None:
    m = compute_metrics([0, 0], [0, 1], num_classes=3)
    d = m.to_dict()
    json.dumps(d)
    assert d["per_class_recall"] == [0.5, None, None]
    assert d["per_class_f1"][2] is None
    assert d["confusion"] == [[1, 1, 0], [0, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_sklearn_when_all_classes_present(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = np.concatenate([np.arange(5), rng.integers(0, 5, 60)])
    y_pred = np.where(rng.random(65) < 0.5, y_true, rng.integers(0, 5, 65))
    m = compute_metrics(y_true, y_pred, num_classes=5)
    assert m.uar == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m.uf1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m.acc == pytest.approx(np.mean(y_true == y_pred))


def test_absent_class_convention() -> None:
    # class 2 predicted but never true; class 3 neither true nor predicted
    y_true, y_pred = [0, 0, 1], [0, 2, 1]
    m = compute_metrics(y_true, y_pred, num_classes=4)
    # UAR over classes in y_true (0, 1): (1/2 + 1) / 2
    assert m.uar == pytest.approx(0.75)
    assert np.isnan(m.per_class_recall[2]) and np.isnan(m.per_class_recall[3])
    # UF1 over classes in y_true or y_pred (0, 1, 2): c0 2/(2+0+1), c1 1, c2 0/(0+1+0) = 0
    assert m.per_class_f1[:3] == pytest.approx((2 / 3, 1.0, 0.0))
    assert np.isnan(m.per_class_f1[3])
    assert m.uf1 == pytest.approx((2 / 3 + 1 + 0) / 3)
    # the same convention as scikit-learn's defaults (labels inferred from the data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert m.uar == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m.uf1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    # num_classes larger than the classes seen does not change UF1/UAR
    m3 = compute_metrics(y_true, y_pred, num_classes=3)
    assert (m3.uf1, m3.uar) == pytest.approx((m.uf1, m.uar))


@pytest.mark.parametrize(
    ("y_true", "y_pred", "num_classes", "match"),
    [
        ([0, 1], [0], 2, "differ in length"),
        ([0, 3], [0, 1], 3, "outside"),
        ([0, -1], [0, 1], 3, "outside"),
        ([], [], 3, "zero samples"),
        ([0.5, 1], [0, 1], 3, "integer"),
        ([0, 1], [0, 1], 0, "num_classes"),
    ],
)
def test_bad_inputs(y_true, y_pred, num_classes, match) -> None:
    with pytest.raises(ValueError, match=match):
        compute_metrics(y_true, y_pred, num_classes=num_classes)


def test_pooled_differs_from_fold_mean() -> None:
    # fold 0: true [0,0] pred [0,0]          -> acc 1, UF1 1 (class 0 only), UAR 1
    # fold 1: true [1,1,0,0] pred [1,0,0,0]   -> acc 3/4, UAR (1 + 1/2)/2, UF1 (4/5 + 2/3)/2
    # pooled: true [0,0,1,1,0,0] pred [0,0,1,0,0,0] -> acc 5/6, UAR 3/4, UF1 (8/9 + 2/3)/2
    y_true = [0, 0, 1, 1, 0, 0]
    y_pred = [0, 0, 1, 0, 0, 0]
    folds = [0, 0, 1, 1, 1, 1]
    s = cross_validation_summary(y_true, y_pred, folds, num_classes=2, class_names=["neg", "pos"])
    assert s["pooled"] == pytest.approx({"acc": 5 / 6, "uf1": 7 / 9, "uar": 0.75})
    f1_fold1 = (4 / 5 + 2 / 3) / 2
    assert s["fold_mean"] == pytest.approx({"acc": 0.875, "uf1": (1 + f1_fold1) / 2, "uar": 0.875})
    # population std (ddof=0) of two values a, b is |a - b| / 2
    assert s["fold_std"] == pytest.approx({"acc": 0.125, "uf1": (1 - f1_fold1) / 2, "uar": 0.125})
    assert s["pooled"]["uf1"] != pytest.approx(s["fold_mean"]["uf1"])
    assert [r["fold"] for r in s["per_fold"]] == [0, 1]
    assert [r["num_samples"] for r in s["per_fold"]] == [2, 4]
    assert s["per_class"]["neg"] == pytest.approx({"recall": 1.0, "f1": 8 / 9})
    assert s["per_class"]["pos"] == pytest.approx({"recall": 0.5, "f1": 2 / 3})
    assert s["confusion_matrix"] == [[4, 0], [1, 1]]
    assert s["classes"] == ["neg", "pos"]
    assert s["num_folds"] == 2 and s["num_samples"] == 6
    assert "concatenated" in s["definitions"]["pooled"]
    json.dumps(s)


def test_summary_validates_inputs() -> None:
    with pytest.raises(ValueError, match="class_names"):
        cross_validation_summary([0], [0], [0], num_classes=2, class_names=["a"])
    with pytest.raises(ValueError, match="equal length"):
        cross_validation_summary([0, 1], [0, 1], [0], num_classes=2)
