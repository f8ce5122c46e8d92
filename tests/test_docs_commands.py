"""Every `microexp ...` command in a code block of the README and docs/ parses with the real CLI parser."""

import re
import shlex
from pathlib import Path

import pytest

from microexp.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "recipes" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands(path: Path) -> list[str]:
    commands = []
    blocks = re.findall(r"```([a-z]*)\n(.*?)```", path.read_text(encoding="utf-8"), re.S)
    for block in (text for language, text in blocks if language in ("", "bash")):  # not the yaml or python ones
        for line in block.replace("\\\n", " ").split("\n"):
            line = line.split(" # ")[0].strip().replace("$CKPT", "model.pt")
            if line.startswith("microexp "):
                commands.append(line)
    return commands


CASES = [(p, c) for p in DOCS for c in _commands(p)]


def test_the_docs_show_commands():
    assert len(CASES) > 30


@pytest.mark.parametrize("path, command", CASES, ids=[f"{p.name}:{c[:60]}" for p, c in CASES])
def test_documented_command_parses(path, command, capsys):
    try:
        build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit as exc:  # --help exits 0
        if exc.code in (0, None):
            return
        pytest.fail(f"{path.name}: {command!r} does not parse: {capsys.readouterr().err.strip().splitlines()[-1]}")
