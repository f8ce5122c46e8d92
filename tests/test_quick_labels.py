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
