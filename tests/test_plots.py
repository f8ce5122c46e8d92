"""Run plots: titled with the run, values and support on the recall bars, validation curves, atomic PNGs."""

import errno
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.figure import Figure

from microexp.engine import plots
from microexp.fileio import OutputError
from microexp.metrics import cross_validation_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ["happiness", "disgust", "surprise"]


def _metrics():
    # true: 4 happiness, 3 disgust, 1 surprise; two folds
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 0, 1, 2, 1, 0])
    folds = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    summary = cross_validation_summary(y_true, y_pred, folds, num_classes=3, class_names=CLASSES)
    return {"protocol": "kfold", **summary}


def _log(fold, epochs=3, val=True):
    rows = []
    for epoch in range(epochs):
        row = {"fold": fold, "epoch": epoch, "train_loss": 1.5 - 0.2 * epoch - 0.05 * fold, "train_acc": 0.3 + 0.1 * epoch,
               "lr": 0.001, "seconds": 1.0, "data_seconds": 0.1}
        if val:
            row.update(val_loss=1.6 - 0.1 * epoch, val_acc=0.3, val_uf1=0.2 + 0.1 * epoch + 0.05 * fold, val_uar=0.3)
        rows.append(row)
    return pd.DataFrame(rows)


def _run_dir(tmp_path, *, val=True, folds=2):
    out = tmp_path / "myrun"
    config = {"data": {"num_frames": 8, "sampling": "onset_apex", "size": 112},
              "model": {"name": "tsm_tiny", "kwargs": {}},
              "cv": {"protocol": "kfold", "folds": folds, "val_fraction": 0.25 if val else 0.0}}
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    for fold in range(folds):
        (out / f"fold_{fold:02d}").mkdir()
        _log(fold, val=val).to_csv(out / f"fold_{fold:02d}" / "log.csv", index=False)
    return out


def _texts(fig: Figure):
    texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return [t for t in texts if t]


def test_plot_run_writes_three_titled_pngs(tmp_path):
    out = _run_dir(tmp_path)
    written = plots.plot_run(out, _metrics())
    assert [p.name for p in written] == ["confusion_matrix.png", "per_class_recall.png", "training_curves.png"]
    umask = os.umask(0)
    os.umask(umask)
    for path in written:
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # normal permissions, not the temp file's 0600
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "config.yaml", "confusion_matrix.png", "per_class_recall.png", "training_curves.png"]  # no temp files left


def test_title_names_run_model_input_and_protocol(tmp_path):
    out = _run_dir(tmp_path)
    title = plots.describe_run(out, _metrics())
    assert "myrun" in title and "tsm_tiny" in title
    assert "8 frames onset_apex, 112 px" in title
    assert "kfold, 2 folds, val 25%" in title and "8 test clips" in title
    fig = plots.recall_figure(_metrics(), title=title)
    assert fig.get_suptitle() == title


def test_title_without_config_uses_metrics(tmp_path):
    title = plots.describe_run(tmp_path, _metrics())
    assert "kfold, 2 folds" in title and "8 test clips" in title


def test_recall_bars_show_value_and_support_in_label_order():
    metrics = _metrics()
    fig = plots.recall_figure(metrics)
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["happiness\nn=4", "disgust\nn=3", "surprise\nn=1"]
    heights = [round(bar.get_height(), 3) for bar in ax.patches]
    assert heights == [0.75, 0.667, 0.0]  # 3/4, 2/3, 0/1 from the predictions above
    texts = _texts(fig)
    assert "0.75" in texts and "0.67" in texts and "0.00" in texts


def test_recall_of_a_class_without_test_clips_is_na():
    metrics = _metrics()
    metrics["per_class"]["surprise"]["recall"] = None
    metrics["confusion_matrix"][2] = [0, 0, 0]
    fig = plots.recall_figure(metrics)
    assert "n/a" in _texts(fig)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][2] == "surprise\nn=0"


def test_confusion_rows_show_support():
    fig = plots.confusion_figure(_metrics())
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["happiness (n=4)", "disgust (n=3)",
                                                                     "surprise (n=1)"]


def test_curves_show_validation_when_the_run_has_it(tmp_path):
    logs = plots.read_logs(_run_dir(tmp_path, val=True))
    fig = plots.curves_figure(logs)
    loss_ax, score_ax = fig.axes[:2]
    dashed = [line for line in loss_ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 2 + 1  # val loss per fold + their mean
    np.testing.assert_allclose(dashed[0].get_ydata(), logs[0]["val_loss"])
    val_uf1 = [line for line in score_ax.get_lines() if line.get_label() in ("fold 0", "fold 1")]
    np.testing.assert_allclose(val_uf1[1].get_ydata(), logs[1]["val_uf1"])
    assert "validation UF1" in score_ax.get_title()
    np.testing.assert_array_equal(val_uf1[0].get_xdata(), [1, 2, 3])  # epochs counted from 1


def test_curves_without_validation_show_training_accuracy(tmp_path):
    logs = plots.read_logs(_run_dir(tmp_path, val=False))
    fig = plots.curves_figure(logs)
    loss_ax, score_ax = fig.axes[:2]
    assert not [line for line in loss_ax.get_lines() if line.get_linestyle() == "--"]
    assert score_ax.get_ylabel() == "training accuracy"


def test_unreadable_log_is_skipped_with_a_warning(tmp_path, caplog):
    out = _run_dir(tmp_path)
    (out / "fold_01" / "log.csv").write_bytes(b"")  # a run killed mid-write by an older microexp
    with caplog.at_level(logging.WARNING, logger="microexp.engine.plots"):
        written = plots.plot_run(out, _metrics())
    assert (out / "training_curves.png") in written
    assert "fold_01" in caplog.text and "not plotted" in caplog.text
    assert [int(log["fold"].iloc[0]) for log in plots.read_logs(out)] == [0]


def test_failed_write_keeps_the_previous_plot(tmp_path, monkeypatch):
    """A disk that fills while a PNG is written leaves the previous file and no temporary file."""
    out = _run_dir(tmp_path)
    plots.plot_run(out, _metrics())
    before = (out / "confusion_matrix.png").read_bytes()
    real_savefig = Figure.savefig
    seen = []

    def savefig_then_disk_full(self, fname, *args, **kwargs):
        seen.append(str(fname))
        real_savefig(self, fname, *args, **kwargs)
        with open(fname, "r+b") as handle:
            handle.truncate(100)  # what a full disk leaves
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", savefig_then_disk_full)
    with pytest.raises(OutputError, match="confusion_matrix.png: disk full"):
        plots.plot_run(out, _metrics())
    assert seen[0].endswith(".png") and seen[0] != str(out / "confusion_matrix.png")
    assert (out / "confusion_matrix.png").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_title_names_the_recipe_when_config_records_it(tmp_path):
    out = _run_dir(tmp_path)
    text = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text("# recipe: recipes/tsm-tiny_rgb-8f_synth_5fold.yaml\n" + text)
    title = plots.describe_run(out, _metrics())
    assert title.split(" · ")[1:3] == ["tsm-tiny_rgb-8f_synth_5fold", "tsm_tiny"]


def test_unreadable_config_still_plots(tmp_path, caplog):
    out = _run_dir(tmp_path)
    (out / "config.yaml").write_text("data: [unclosed\n")
    with caplog.at_level(logging.WARNING, logger="microexp.engine.plots"):
        assert len(plots.plot_run(out, _metrics())) == 3
    assert "not read for the plot titles" in caplog.text


def test_plots_leave_the_global_matplotlib_state_alone(tmp_path):
    """Run and study plots draw on ``Figure`` objects: no pyplot import, no backend switch (library code)."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import matplotlib
        import numpy as np
        matplotlib.use("pdf")  # the caller's choice, which plotting must keep
        from microexp.engine import plots
        from microexp.studies.tables import bar_chart, heatmap
        from microexp.metrics import cross_validation_summary
        out = Path({str(tmp_path)!r})
        summary = cross_validation_summary(np.array([0, 1, 1]), np.array([0, 1, 0]), np.array([0, 0, 1]),
                                           num_classes=2, class_names=["a", "b"])
        plots.plot_confusion(out / "confusion.png", {{"protocol": "kfold", **summary}})
        bar_chart(out / "bar.png", ["x", "y"], {{"s": ([0.5, 0.7], [0.1, float("nan")])}}, ylabel="UF1", title="t",
                  chance=0.5)
        heatmap(out / "heat.png", np.array([[0.2, float("nan")]]), ["r"], ["c1", "c2"], title="h")
        print("STATE", matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "STATE pdf False" in proc.stdout, proc.stdout
    for name in ("confusion.png", "bar.png", "heat.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
