"""``microexp study NAME``: the names, one-line errors, the options handed to the study, the recorded command,
cheap --help, and the ``recipes/dfme_*.py`` scripts that stand for the command."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from microexp import cli
from microexp.cli import study as study_cli
from microexp.studies.options import QUICK_OVERRIDES, StudyOptions

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
STUDY_PACKAGE = ROOT / "microexp" / "studies"


def _args(*argv: str) -> argparse.Namespace:
    return cli.build_parser(["study"]).parse_args(["study", *argv])


def test_the_names_are_the_studies_of_the_library():
    from microexp.studies.catalog import STUDIES

    assert list(study_cli.STUDIES) == list(STUDIES)


@pytest.mark.parametrize("name, hint", [("nope", ""), ("dfme_model", " (did you mean dfme_models?)")])
def test_an_unknown_name_is_one_line_listing_the_valid_ones(capsys, name, hint):
    assert cli.main(["study", name, "--quick"]) == 2
    err = capsys.readouterr().err
    assert err == (f"microexp study: error: unknown study {name!r}{hint}; "
                   "expected one of dfme_models, dfme_sampling, dfme_imbalance, dfme_au, dfme_noise, dfme_leaderboard, "
                   "dfme_transfer\n")


def test_options_reach_the_study_as_the_scripts_gave_them():
    args = _args("dfme_imbalance", "--quick", "--data", "d.csv", "--format", "dfme", "--root", "raw", "--device",
                 "cpu", "--resume", "--set", "a=1", "--set", "b=2", "--seeds", "2", "--recipe", "r.yaml",
                 "--no-progress")
    assert study_cli.study_options(args) == StudyOptions(
        out=Path("runs/studies/dfme_imbalance"), data=Path("d.csv"), format="dfme", root="raw", device="cpu",
        quick=True, resume=True, overrides=("a=1", "b=2"), seeds=2, recipes=("r.yaml",), progress=False,
        command="microexp study dfme_imbalance --quick --resume --data d.csv --format dfme --root raw --device cpu "
                "--seeds 2 --recipe r.yaml --set a=1 --set b=2")
    defaults = study_cli.study_options(_args("dfme_models"))
    assert defaults == StudyOptions(out=Path("runs/studies/dfme_models"), command="microexp study dfme_models")


def test_the_recorded_command_omits_the_default_recipes_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    # what recipes/dfme_sampling.py passes when run from the repository root
    same = _args("dfme_sampling", "--recipes-dir", str(tmp_path / "recipes"), "--out", "o")
    assert study_cli.command_line(same) == "microexp study dfme_sampling --out o"
    other = _args("dfme_sampling", "--recipes-dir", "elsewhere/my recipes")
    assert study_cli.command_line(other) == "microexp study dfme_sampling --recipes-dir 'elsewhere/my recipes'"


def test_quiet_after_the_name_is_kept_as_the_scripts_took_it():
    assert _args("dfme_models", "-q").study_quiet and not _args("dfme_models").study_quiet
    assert cli.build_parser(["study"]).parse_args(["-q", "study", "dfme_models"]).quiet


def test_interrupt_says_how_to_continue(tmp_path, capsys, monkeypatch):
    import microexp.studies.study as study_module

    def interrupted(study, options, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study_module, "run_study", interrupted)
    code = cli.main(["study", "dfme_sampling", "--recipes-dir", str(RECIPES), "--out", str(tmp_path / "o")])
    assert code == cli.INTERRUPTED_EXIT
    assert capsys.readouterr().err.endswith("microexp study dfme_sampling: interrupted; rerun with --resume to continue\n")


def test_help_names_every_study_without_importing_pandas_or_torch():
    code = ("import sys\nfrom microexp.cli import main\ntry:\n    main(['study', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint('HEAVY', [m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
    assert "usage: microexp study NAME [options]" in proc.stdout
    for name in study_cli.STUDIES:
        assert name in proc.stdout
    assert " ".join(QUICK_OVERRIDES) in " ".join(proc.stdout.split())  # argparse wraps the help's lines


@pytest.mark.parametrize("name", sorted(study_cli.STUDIES))
def test_recipe_script_runs_the_command_from_any_folder(tmp_path, name):
    """``python recipes/NAME.py ...`` is ``microexp study NAME ...``, with the recipes next to the script."""
    script = RECIPES / f"{name}.py"
    body = [line for line in script.read_text().splitlines() if line.strip() and not line.startswith(("#", '"""'))]
    assert len(body) <= 6 and any("main([\"study\", " in line for line in body), body
    help_out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)
    assert help_out.returncode == 0 and "usage: microexp study NAME" in help_out.stdout
    # a user error after the recipes were found (they are read from the script's folder, not the working one)
    proc = subprocess.run([sys.executable, str(script), "--data", "missing.csv", "--out", "o"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    expected = ("--data: dfme_noise generates its own synthetic datasets" if name == "dfme_noise"
                else "--data missing.csv: no such file or folder")
    assert proc.stderr.strip().splitlines()[-1].startswith(f"microexp study: error: {expected}")
    assert not (tmp_path / "o").exists()


def test_the_study_library_parses_no_arguments_and_sets_up_no_logging():
    for path in sorted(STUDY_PACKAGE.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for forbidden in ("import argparse", "basicConfig", "sys.argv", ".setLevel("):
            assert forbidden not in text, f"{path.name}: {forbidden}"
