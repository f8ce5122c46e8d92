"""CLI plumbing: lazy start-up (no torch for --help or inspect), the command table, exit codes, one-line errors."""

import argparse
import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from microexp import cli
from microexp.fileio import output_error


def _modules_after(tmp_path, argv):
    """Run ``microexp.cli.main(argv)`` in a fresh interpreter; its exit code and which heavy modules it imported."""
    script = textwrap.dedent(f"""
        import json, sys
        from microexp.cli import main
        try:
            code = main({argv!r})
        except SystemExit as exc:  # --help exits through argparse
            code = exc.code
        heavy = [m for m in ("torch", "torchvision", "matplotlib", "sklearn", "optuna") if m in sys.modules]
        print("RESULT", json.dumps({{"code": code, "heavy": heavy}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), proc


def test_top_level_help_lists_every_command_without_importing_torch(tmp_path):
    result, proc = _modules_after(tmp_path, ["--help"])
    assert result == {"code": 0, "heavy": []}
    for name, command in cli.COMMANDS.items():
        assert name in proc.stdout
    assert "exit codes:" in proc.stdout and "130" in proc.stdout


@pytest.mark.parametrize("argv", [["inspect", "--help"], ["-q", "inspect", "--help"]])
def test_inspect_help_does_not_import_torch(tmp_path, argv):
    result, proc = _modules_after(tmp_path, argv)
    assert result == {"code": 0, "heavy": []}
    assert "usage: microexp inspect" in proc.stdout


def test_inspect_run_does_not_import_torch(tmp_path):
    for clip in ("c1", "c2"):
        folder = tmp_path / "clips" / clip
        folder.mkdir(parents=True)
        for n in range(1, 11):
            cv2.imwrite(str(folder / f"{n:05d}.png"), np.full((16, 16, 3), 10 * n, np.uint8))
    (tmp_path / "annotations.csv").write_text(
        "subject,clip,path,onset,apex,offset,fps,emotion,aus\n"
        "1,c1,clips/c1,1,5,10,200,happiness,6+12\n"
        "2,c2,clips/c2,2,6,9,200,surprise,1+2\n"
    )
    result, proc = _modules_after(tmp_path, ["inspect", "annotations.csv"])
    assert result["code"] in (0, 1), proc.stderr  # ran (1: it found errors), not a usage or user error
    assert result["heavy"] == []
    assert "2 clips from 2 subjects" in proc.stdout


@pytest.mark.slow
def test_static_help_matches_each_command_module():
    """The one-line help listed without importing a command equals the help its module registers."""
    parser = cli.build_parser()  # every command built for real
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    registered = {action.dest: action.help for action in subparsers._choices_actions}
    assert registered == {name: command.help for name, command in cli.COMMANDS.items()}


def test_only_the_chosen_command_is_built():
    parser = cli.build_parser(["models"])
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    built = {name for name, sub in subparsers.choices.items() if sub.get_default("_run") is not None}
    assert built == {"models"}


@pytest.mark.parametrize("argv,expected", [
    (["models"], "models"),
    (["-v", "-q", "train", "recipe.yaml"], "train"),
    (["-vv", "inspect", "--help"], "inspect"),
    (["--help"], None),
    ([], None),
    (["nope", "inspect"], None),
])
def test_chosen_command(argv, expected):
    assert cli.chosen_command(argv) == expected


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["nope"])
    assert exc.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_models_runs_through_main(capsys):
    assert cli.main(["-q", "models", "tsm_tiny", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["tsm_tiny"]


def test_output_error_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    """``OutputError`` (a MicroexpError and an OSError) is printed as its one-line message."""
    import microexp.cli.models as models_cli

    def fail(args):
        raise output_error(tmp_path / "metrics.json", OSError(28, "No space left on device"),
                           kept="the previous metrics.json is kept")

    monkeypatch.setattr(models_cli, "run", fail)
    assert cli.main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"microexp models: error: cannot write {tmp_path / 'metrics.json'}: ")
    assert "previous metrics.json is kept" in err


def test_os_error_keeps_file_name_and_reason(capsys, monkeypatch):
    import microexp.cli.models as models_cli

    def fail(args):
        raise FileNotFoundError(2, "No such file or directory", "clips/a.mp4")

    monkeypatch.setattr(models_cli, "run", fail)
    assert cli.main(["models"]) == 2
    assert capsys.readouterr().err == "microexp models: error: clips/a.mp4: No such file or directory\n"


def test_bug_keeps_its_traceback(monkeypatch):
    import microexp.cli.models as models_cli

    def fail(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(models_cli, "run", fail)
    with pytest.raises(ZeroDivisionError):
        cli.main(["models"])


def test_interrupt_exits_130(capsys, monkeypatch):
    import microexp.cli.models as models_cli

    def fail(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(models_cli, "run", fail)
    assert cli.main(["models"]) == 130
    assert capsys.readouterr().err == "microexp models: interrupted\n"


@pytest.mark.parametrize("name", ["tsm_tiny", "r3d_tiny", "mvit_tiny", "swin3d_tiny"])
def test_models_counts_parameters_on_meta_like_a_real_build(name):
    """``microexp models`` counts on the meta device: the same counts as a real build, nothing allocated."""
    import microexp.models.tv_video  # noqa: F401  registers mvit_tiny, swin3d_tiny
    from microexp.cli.models import build_on_meta
    from microexp.models import count_params, create_model

    meta = build_on_meta(name, num_classes=7)
    real = create_model(name, num_classes=7)
    assert count_params(meta) == count_params(real) > 0
    assert count_params(meta, trainable=False) == count_params(real, trainable=False)
    assert {t.device.type for t in [*meta.parameters(), *meta.buffers()]} == {"meta"}


def test_models_json_reports_meta_counts(capsys):
    from microexp.models import count_params, create_model

    assert cli.main(["models", "mvit_tiny", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["params"] == count_params(create_model("mvit_tiny", num_classes=7))


@pytest.mark.parametrize("module", ["microexp", "microexp.data", "microexp.engine", "microexp.inference.spotting"])
def test_packages_import_lazily(module):
    """Importing a package (or a torch-free module inside one) does not import torch through ``__init__``."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_lazy_inference_names_resolve():
    import microexp.inference as inference
    from microexp.inference.predictor import ClipPredictor

    assert inference.ClipPredictor is ClipPredictor
    assert set(inference.__all__) <= set(dir(inference))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        inference.nope  # noqa: B018


class _CorruptClips:
    """A dataset whose clips fail to decode, as a truncated mp4 does inside a DataLoader worker."""

    def __len__(self):
        return 2

    def __getitem__(self, index):
        from microexp.errors import VideoReadError

        raise VideoReadError(f"clips/c{index}.mp4: corrupt video (moov atom not found)")


def test_worker_error_is_the_single_process_line(capsys, monkeypatch):
    """A user error raised in a DataLoader worker is printed as the line the single-process path gives."""
    import torch.utils.data

    import microexp.cli.models as models_cli

    def load(args):
        next(iter(torch.utils.data.DataLoader(_CorruptClips(), num_workers=1, batch_size=None)))

    monkeypatch.setattr(models_cli, "run", load)
    assert cli.main(["models"]) == 2
    assert capsys.readouterr().err == "microexp models: error: clips/c0.mp4: corrupt video (moov atom not found)\n"


def test_cache_command_is_registered(tmp_path, capsys):
    assert cli.main(["cache", "info", str(tmp_path)]) == 0
    assert str(tmp_path) in capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(set(cli.COMMANDS) - {"inspect"}))
def test_every_command_help_does_not_import_torch(tmp_path, command):
    """Each command's --help is cheap: its heavy imports wait until it runs."""
    result, proc = _modules_after(tmp_path, [command, "--help"])
    assert result == {"code": 0, "heavy": []}, proc.stderr
    assert f"usage: microexp {command}" in proc.stdout
