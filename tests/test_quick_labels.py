"""`--quick` runs say they are smoke tests: study summaries, tables and records, and the benchmark, whose
targets its small sizes cannot measure are "not evaluated" rather than "missed"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from microexp.benchmark import FULL, QUICK, targets_from
from microexp.benchmark.report import Figure, Section, Target, format_report
from microexp.studies.study import Report, Study, StudyOptions, run_study


def _table_report(results, out: Path) -> Report:
    """A study report as the DFME studies write one: a Markdown table file and its text."""
    markdown = "| model | UF1 |\n| --- | ---: |\n| tiny | 0.500 |\n"
    (out / "table.md").write_text(markdown, encoding="utf-8")
    return Report(markdown=markdown, files=[out / "table.md"])


@pytest.mark.parametrize("quick", [True, False])
def test_study_outputs_say_whether_they_are_a_smoke_test(tmp_path, quick):
    data = tmp_path / "annotations.csv"
    data.write_text("subject,clip\n", encoding="utf-8")
    study = Study(name="probe", title="A probe study", cells=[], report=_table_report)
    out = tmp_path / "out"
    report = run_study(study, StudyOptions(out=out, data=data, quick=quick, command="python probe.py"))
    summary = (out / "summary.md").read_text(encoding="utf-8")
    table = (out / "table.md").read_text(encoding="utf-8")
    record = json.loads((out / "study.json").read_text(encoding="utf-8"))
    assert record["smoke_test"] is quick and record["quick"] is quick
    labelled = [summary.splitlines()[0].endswith("(smoke test)"), "Smoke test (`--quick`" in summary,
                table.startswith("> **Smoke test"), report.markdown.startswith("> **Smoke test")]
    assert labelled == [quick] * 4
    assert "| tiny | 0.500 |" in table  # the table itself is kept


def _pipeline_and_throughput() -> dict[str, Section]:
    from microexp.benchmark.throughput import MODELS

    pipeline = Section("pipeline_cpu", figures=[Figure("warm.data_fraction", (0.5,), "fraction"),
                                                Figure("flow_cache.epoch1_over_epoch2", (2.0,), "x")])
    throughput = Section("throughput_cpu", figures=[Figure(f"{m}.microexp_over_bare", (0.5,), "x") for m in MODELS])
    loading = Section("loading", figures=[Figure("480x640.packed_decord.speedup_vs_naive", (1.0,), "x")])
    return {"pipeline_cpu": pipeline, "throughput_cpu": throughput, "loading": loading}


def test_quick_sizes_leave_pipeline_and_throughput_targets_not_evaluated():
    results = _pipeline_and_throughput()
    quick = {t.name: t for t in targets_from(results, ["cpu"], settings=QUICK)}
    full = {t.name: t for t in targets_from(results, ["cpu"], settings=FULL)}
    for name, target in quick.items():
        if name.startswith(("pipeline", "flow cache", "training throughput")):
            assert target.status == "not evaluated" and target.met is None and "not evaluated" in target.note
            assert target.measured is not None  # still reported
            assert full[name].status == "missed"  # the same figures at full size are judged
    decord = "loading: packed+decord (a) vs naive PyAV (b), 480x640"
    assert quick[decord].status == full[decord].status == "missed"  # same inputs in --quick: judged


def test_quick_report_text_says_smoke_test_and_not_evaluated():
    targets = [Target("pipeline balance (cpu)", 0.5, 0.1, op="<", note="not evaluated: too few", evaluated=False),
               Target("loading", 1.0, 3.0)]
    report = {"quick": True, "seconds": 1.0, "sections": {},
              "machine": {"usable_cpus": 1, "cpu_count": 1, "load_average_1min": 0.0, "torch": "x", "devices": ["cpu"]},
              "targets": [t.to_dict() for t in targets]}
    text = format_report(report)
    assert "smoke test" in text.splitlines()[0]
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert "not evaluated" in lines["pipeline"] and "MISSED" not in lines["pipeline"]
    assert "MISSED" in lines["loading"]
    assert "smoke test" not in format_report({**report, "quick": False}).splitlines()[0]


@pytest.fixture()
def read_only_dir(tmpfs):
    return tmpfs("ro", size="64k", read_only=True)  # root ignores file permissions: a read-only mount


def test_study_tables_and_plots_into_a_read_only_folder_are_one_line_output_errors(read_only_dir):
    import pandas as pd

    from microexp.fileio import OutputError
    from microexp.studies.tables import bar_chart, write_table

    with pytest.raises(OutputError, match="read-only file system") as info:
        write_table(pd.DataFrame({"a": [1]}), "| a |\n", read_only_dir, "t")
    assert str(read_only_dir / "t.csv") in str(info.value)
    with pytest.raises(OutputError, match="t.png: read-only file system"):
        bar_chart(read_only_dir / "t.png", ["x"], {"UF1": ([0.5], None)}, ylabel="s", title="t")


def test_study_record_is_strict_json(tmp_path):
    data = tmp_path / "annotations.csv"
    data.write_text("subject,clip\n", encoding="utf-8")
    study = Study(name="probe", title="A probe study", cells=[], report=_table_report)
    run_study(study, StudyOptions(out=tmp_path / "out", data=data, command="python probe.py"))
    text = (tmp_path / "out" / "study.json").read_text(encoding="utf-8")
    json.loads(text, parse_constant=lambda token: pytest.fail(f"non-standard JSON token {token}"))
    assert not list((tmp_path / "out").glob(".*.tmp*"))


def test_benchmark_out_on_a_read_only_path_is_one_line(read_only_dir, capsys):
    from microexp.cli import main

    code = main(["benchmark", "--sections", "latency", "--device", "cpu", "--no-progress", "--quick",
                 "--out", str(read_only_dir / "bench.json")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bench.json" in err[0] and "read-only file system" in err[0]
