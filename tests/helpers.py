"""What several test modules share: the command, an offline one-thread
environment and the check of a user error's one `error:` line for the tests
that run `mt` as a user does; `mt` run in this process (typer's CliRunner) and
the corpus files given to it; tiny models, and weights that use their range."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

from mt.cli import app
from mt.model import Seq2Seq


def mt_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m mt`."""
    script = Path(sys.executable).parent / "mt"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "mt"]


# One thread: the models are tiny, and on a busy machine OpenMP's spinning threads
# make a two-thread run many times slower than a one-thread run.
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "PYTHONIOENCODING": "utf-8",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def run_mt(*args, stdin: bytes | str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """`mt ARGS` in a process of its own with stdin from a pipe (so never a tty); text
    in and out when `stdin` is text or absent, bytes when it is bytes."""
    text = not isinstance(stdin, bytes)
    return subprocess.run(
        [*mt_command(), *map(str, args)],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=text,
        encoding="utf-8" if text else None,
        env=ENV,
        timeout=timeout,
    )


def start_mt(*args, **pipes) -> subprocess.Popen:
    """`mt ARGS` started in the offline environment, its stdin, stdout and stderr
    pipes unless `pipes` says otherwise (e.g. `stdin=terminal`). Ctrl-C (SIGINT) reaches
    it even when the tests themselves run as a background job, which ignores SIGINT."""
    streams = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **pipes}
    return subprocess.Popen(
        [*mt_command(), *map(str, args)],
        env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **streams,
    )


def assert_one_line_error(exit_code: int, stderr: str, *fragments: str, stdout: str | None = None) -> str:
    """A user error: non-zero exit, exactly one `error:` line on stderr holding every
    fragment, no traceback; with `stdout`, also nothing on stdout."""
    assert exit_code != 0, f"expected failure, got exit 0; stderr={stderr!r}"
    assert "Traceback" not in stderr
    assert stdout is None or stdout == "", f"expected nothing on stdout, got {stdout!r}"
    lines = stderr.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one error line, got {lines!r}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def scramble(model: Seq2Seq, seed: int, std: float = 1.0) -> Seq2Seq:
    """Redraw every weight from N(0, std). A freshly initialised tiny model has
    small states and repeats one token forever; a scrambled one's states use
    their range, as a trained model's do, and it wanders and says eos at
    unpredictable steps, so that hypotheses end both by eos and at the limit."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, std, generator=generator)
    return model


# -- `mt` in this process, and the files it reads ------------------------------------------


def invoke(args: list, input: str | bytes | None = None, env: dict[str, str] | None = None):
    """Run a command in-process; stdout and stderr come back separately."""
    return CliRunner().invoke(app, [str(a) for a in args], input=input, env=env)


def _assert_cli_error(result, *fragments: str) -> str:
    # An exception escaping the command would show up here instead of SystemExit.
    assert type(result.exception) is SystemExit, f"unexpected exception {result.exception!r}"
    return assert_one_line_error(result.exit_code, result.stderr, *fragments, stdout=result.stdout)


def _train_tiny(corpus, tokenizer_dir: Path, output: Path, *extra, env: dict[str, str] | None = None):
    """A two-step training run: enough to write a finished run directory."""
    return invoke(
        [
            "train", "--train", corpus.train, "--valid", corpus.valid, "--tokenizer", tokenizer_dir, "--output", output,
            "--embedding-size", 8, "--hidden-size", 8, "--layers", 1, "--batch-tokens", 400,
            "--max-steps", 2, "--device", "cpu", *extra,
        ],
        env=env,
    )  # fmt: skip


def _write_gz(path: Path, lines: list[str] | bytes) -> Path:
    data = lines if isinstance(lines, bytes) else "".join(line + "\n" for line in lines).encode("utf-8")
    with gzip.open(path, "wb") as out:
        out.write(data)
    return path


def _write_pair(prefix: Path, source: list[str] | bytes, target: list[str] | bytes) -> str:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    _write_gz(Path(f"{prefix}.de.gz"), source)
    _write_gz(Path(f"{prefix}.en.gz"), target)
    return str(prefix)


def _text(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _write_lines(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") if path.suffix == ".gz" else open(path, "w") as out:
        out.write(_text(lines))
    return path


# A model small enough to train in a test: the Trainer's and the Translator's tests.
TINY_MODEL = dict(embedding_size=16, hidden_size=24, num_layers=1, dropout=0.2)


def random_targets(lengths: list[int], vocab_size: int, seed: int = 1) -> torch.Tensor:
    """(B, T) decoder inputs: bos then random tokens, right-padded with 0."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        target[row, 0] = 2
        target[row, 1:length] = torch.randint(4, vocab_size, (length - 1,), generator=generator)
    return target
