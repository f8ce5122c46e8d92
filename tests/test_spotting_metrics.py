"""MEGC spotting metrics against hand-computed examples: IoU of inclusive intervals, one-to-one matching at
IoU >= 0.5 in score order, precision/recall/F1 summed over videos, analysis UF1 and STRS; spot-eval's CLI."""

import json

import pytest

from microexp.cli import main
from microexp.spotting_metrics import Interval, interval_iou, match_intervals, spot_then_recognise, spotting_scores


def test_iou_of_inclusive_frame_intervals():
    assert interval_iou(Interval(10, 19), Interval(10, 19)) == 1.0
    assert interval_iou(Interval(10, 19), Interval(15, 24)) == pytest.approx(5 / 15)  # frames 15..19 of 10..24
    assert interval_iou(Interval(10, 19), Interval(20, 29)) == 0.0  # adjacent, no shared frame
    assert interval_iou(Interval(5, 5), Interval(5, 5)) == 1.0  # one frame
    with pytest.raises(ValueError, match="offset before onset"):
        Interval(9, 8)


def test_each_truth_is_matched_once_and_the_higher_score_wins():
    truth = [Interval(100, 139)]
    spotted = [Interval(102, 140, score=0.4), Interval(100, 138, score=0.9)]  # both IoU >= 0.5
    (m,) = match_intervals(spotted, truth)
    assert (m.spotted, m.truth) == (1, 0) and m.iou == pytest.approx(39 / 40)
    # a duplicate detection of the same expression is a false positive
    overall, per_video, _ = spotting_scores({"v": spotted}, {"v": truth})
    assert (overall.tp, overall.fp, overall.fn) == (1, 1, 0)
    assert overall.precision == 0.5 and overall.recall == 1.0 and overall.f1 == pytest.approx(2 / 3)


def test_below_threshold_is_a_miss_and_a_false_positive():
    truth = [Interval(0, 9)]
    spotted = [Interval(5, 14)]  # 5 shared of 15: IoU 1/3
    assert match_intervals(spotted, truth) == []
    assert len(match_intervals(spotted, truth, threshold=0.3)) == 1
    overall, _, _ = spotting_scores({"v": spotted}, {"v": truth})
    assert (overall.tp, overall.fp, overall.fn, overall.f1) == (0, 1, 1, 0.0)


def test_overall_sums_counts_over_videos_before_the_ratios():
    truth = {"a": [Interval(0, 9), Interval(50, 59)], "b": [Interval(0, 9)], "c": [Interval(0, 9)]}
    spotted = {"a": [Interval(0, 9)], "b": [Interval(0, 9), Interval(30, 39)], "d": [Interval(0, 9)]}
    overall, per_video, _ = spotting_scores(spotted, truth)
    # a: 1 TP 0 FP 1 FN; b: 1 TP 1 FP; c: 1 FN (nothing spotted); d: 1 FP (no truth)
    assert (overall.tp, overall.fp, overall.fn) == (2, 2, 2)
    assert overall.precision == 0.5 and overall.recall == 0.5 and overall.f1 == 0.5
    assert per_video["a"].f1 == pytest.approx(2 / 3) and per_video["c"].recall == 0.0 and per_video["d"].precision == 0


def test_strs_is_spotting_f1_times_the_analysis_uf1_of_true_positives():
    truth = {"v": [Interval(0, 9, emotion="negative"), Interval(40, 49, emotion="positive"),
                   Interval(80, 89, emotion="negative"), Interval(120, 129, emotion="surprise")]}
    spotted = {"v": [Interval(0, 9, emotion="negative"), Interval(40, 49, emotion="negative"),
                     Interval(80, 89, emotion="negative"), Interval(200, 209, emotion="positive")]}
    result = spot_then_recognise(spotted, truth)
    # spotting: 3 TP, 1 FP, 1 FN -> F1 0.75; analysis on the 3 TPs: truth (neg, pos, neg), predicted (neg, neg, neg)
    # F1 negative = 2*2 / (2*2 + 1 + 0) = 0.8, F1 positive = 0 -> UF1 0.4; STRS = 0.75 * 0.4 = 0.3
    assert result["spotting"]["f1"] == pytest.approx(0.75)
    assert result["analysis_uf1"] == pytest.approx(0.4) and result["analysed_intervals"] == 3
    assert result["strs"] == pytest.approx(0.3)
    assert spot_then_recognise({"v": []}, truth)["strs"] == 0.0


def _csv(path, rows, header="video,onset,offset,score,emotion"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_spot_eval_cli_prints_and_writes_the_scores(tmp_path, capsys):
    gt = _csv(tmp_path / "gt.csv", ["v1,0,9,,negative", "v1,40,49,,positive", "v2,10,19,,surprise"])
    pred = _csv(tmp_path / "pred.csv", ["v1,0,9,0.9,negative", "v1,41,50,0.8,positive", "v2,60,69,0.5,surprise"])
    assert main(["spot-eval", str(pred), str(gt), "--out", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "overall (summed over videos)" in out and "STRS" in out
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["overall"]["tp"] == 2 and scores["overall"]["fp"] == 1 and scores["overall"]["fn"] == 1
    assert scores["strs"] == pytest.approx(2 / 3 * 1.0)


@pytest.mark.parametrize("rows, header, message", [
    (["v1,5,3,,"], "video,onset,offset,score,emotion", "line 2: interval \\[5, 3\\]: offset before onset"),
    (["v1,a,3,,"], "video,onset,offset,score,emotion", "line 2: onset and offset must be frame numbers"),
    (["v1,1"], "video,onset", "missing column\\(s\\) offset"),
])
def test_spot_eval_bad_rows_are_one_line(tmp_path, capsys, rows, header, message):
    gt = _csv(tmp_path / "gt.csv", ["v1,0,9,,"])
    pred = _csv(tmp_path / "pred.csv", rows, header=header)
    assert main(["spot-eval", str(pred), str(gt)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    import re

    assert re.search(message, err[0]), err[0]
