"""How a user reaches `mt`: `python -m mt` is the same app as the console script,
and every command has --help with an example."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from helpers import ENV, invoke


@pytest.mark.slow
def test_python_dash_m_mt_runs_the_same_app():
    process = subprocess.run([sys.executable, "-m", "mt", "version"], capture_output=True, env=ENV, timeout=60)
    assert process.returncode == 0, process.stderr.decode()
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*\n", process.stdout.decode())


COMMANDS = [
    "train-tokenizer",
    "train",
    "evaluate",
    "translate",
    "average",
    "prepare-data",
    "inspect",
    "compare",
    "serve",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_works_for_every_command_and_shows_an_example(command):
    result = invoke([command, "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert f"Usage: mt {command}" in text
    assert "Example" in text
    assert f"mt {command}" in text.split("Example", 1)[1]


def test_top_level_help_lists_every_command():
    result = invoke(["--help"])
    assert result.exit_code == 0, result.output
    for command in COMMANDS:
        assert command in result.stdout
