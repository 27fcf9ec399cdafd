"""Files: atomic writes keep a file's mode, line readers stop at an over-long line,
and the shipped models are found wherever pip put them."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from mt.config import MTError
from mt.files import atomic_file, decode_lines, shipped_models_in, write_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_rewritten_file_keeps_its_mode(tmp_path):
    path = tmp_path / "private.txt"
    path.write_text("old\n")
    path.chmod(0o600)
    write_atomic(path, b"new\n")
    assert path.read_bytes() == b"new\n" and _mode(path) == 0o600


def test_a_new_file_gets_the_mode_the_umask_allows(tmp_path):
    previous = os.umask(0o077)
    try:
        write_atomic(tmp_path / "new.txt", b"text\n")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "new.txt") == 0o600


def test_an_atomic_file_needs_its_directory(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_file(tmp_path / "missing" / "out.txt") as out:
        out.write(b"text\n")
    assert not (tmp_path / "missing").exists()


def test_a_line_longer_than_the_limit_is_an_error_naming_it():
    stream = io.BytesIO(b"short\n" + b"x" * 50 + b"\nnext\n")
    lines = decode_lines(stream, "input", max_bytes=20)
    assert next(lines) == "short"
    with pytest.raises(MTError, match="input: line 2 is longer than 20 bytes"):
        next(lines)


def test_a_line_of_exactly_the_limit_is_read():
    assert list(decode_lines(io.BytesIO(b"x" * 20 + b"\n" + b"y" * 20), "input", max_bytes=20)) == ["x" * 20, "y" * 20]


def test_shipped_models_are_found_under_the_first_data_directory_that_has_them(tmp_path):
    prefix, user = tmp_path / "venv", tmp_path / "home" / ".local"
    (user / "share" / "mt" / "checkpoints").mkdir(parents=True)  # pip install --user
    assert shipped_models_in(tmp_path / "no-source-tree", [prefix, user]) == user / "share" / "mt" / "checkpoints"
    (prefix / "share" / "mt" / "checkpoints").mkdir(parents=True)
    assert shipped_models_in(tmp_path / "no-source-tree", [prefix, user]) == prefix / "share" / "mt" / "checkpoints"
    (tmp_path / "checkpoints").mkdir()  # a source tree wins
    assert shipped_models_in(tmp_path / "checkpoints", [prefix, user]) == tmp_path / "checkpoints"
