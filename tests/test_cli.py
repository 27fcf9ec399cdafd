"""The `mt` command line, end to end and at its error paths.

A tiny German->English corpus is made from templates inside the test, so the
tests need no downloaded data, no network and no GPU. The trained model is
tiny and trained for a couple of hundred steps: these tests check the
plumbing of the commands (files written, lines in and out, messages), not
translation quality.

Every user error must end the process with a non-zero status and exactly one
line on stderr that starts with "error:", never a Python traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import ENV, assert_one_line_error, run_mt, start_mt
from typer.testing import CliRunner

from mt.cli import app

# --------------------------------------------------------------------------
# Helpers


def _invoke(args: list, input: str | bytes | None = None, env: dict[str, str] | None = None):
    """Run a command in-process; stdout and stderr come back separately."""
    return CliRunner().invoke(app, [str(a) for a in args], input=input, env=env)


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


def _assert_cli_error(result, *fragments: str) -> str:
    # An exception escaping the command would show up here instead of SystemExit.
    assert type(result.exception) is SystemExit, f"unexpected exception {result.exception!r}"
    return assert_one_line_error(result.exit_code, result.stderr, *fragments, stdout=result.stdout)


def _assert_process_error(process: subprocess.CompletedProcess, *fragments: str) -> str:
    stdout = process.stdout.decode("utf-8")
    return assert_one_line_error(process.returncode, process.stderr.decode("utf-8"), *fragments, stdout=stdout)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _train_tiny(corpus, tokenizer_dir: Path, output: Path, *extra, env: dict[str, str] | None = None):
    """A two-step training run: enough to write a finished run directory."""
    return _invoke(
        [
            "train", "--train", corpus.train, "--valid", corpus.valid, "--tokenizer", tokenizer_dir, "--output", output,
            "--embedding-size", 8, "--hidden-size", 8, "--layers", 1, "--batch-tokens", 400,
            "--max-steps", 2, "--device", "cpu", *extra,
        ],
        env=env,
    )  # fmt: skip


# --------------------------------------------------------------------------
# A template corpus: subject + verb + place, German and English side by side.

SUBJECTS = [
    ("ein Hund", "a dog"),
    ("eine Katze", "a cat"),
    ("ein Mann", "a man"),
    ("eine Frau", "a woman"),
    ("ein Kind", "a child"),
    ("ein Junge", "a boy"),
    ("ein Mädchen", "a girl"),
    ("ein alter Mann", "an old man"),
    ("eine junge Frau", "a young woman"),
    ("ein großer Hund", "a big dog"),
    ("ein Arbeiter", "a worker"),
    ("eine Gruppe Kinder", "a group of children"),
    ("ein Radfahrer", "a cyclist"),
    ("ein Musiker", "a musician"),
    ("eine Lehrerin", "a teacher"),
    ("ein Polizist", "a police officer"),
    ("ein Fußballspieler", "a soccer player"),
    ("eine ältere Dame", "an elderly lady"),
    ("ein kleiner Vogel", "a small bird"),
    ("ein Verkäufer", "a salesman"),
]
VERBS = [
    ("läuft", "runs"),
    ("spielt", "plays"),
    ("schläft", "sleeps"),
    ("sitzt", "sits"),
    ("wartet", "waits"),
    ("steht", "stands"),
    ("tanzt", "dances"),
    ("lacht", "laughs"),
    ("singt", "sings"),
    ("isst", "eats"),
    ("arbeitet", "works"),
    ("liest", "reads"),
    ("springt", "jumps"),
    ("malt", "paints"),
    ("telefoniert", "talks on the phone"),
]
PLACES = [
    ("im Park", "in the park"),
    ("auf der Straße", "on the street"),
    ("am Strand", "on the beach"),
    ("im Garten", "in the garden"),
    ("im Schnee", "in the snow"),
    ("vor dem Haus", "in front of the house"),
    ("neben einem Baum", "next to a tree"),
    ("in der Küche", "in the kitchen"),
    ("auf einer Bühne", "on a stage"),
    ("am Fluss", "by the river"),
    ("auf dem Markt", "at the market"),
    ("im Wasser", "in the water"),
    ("auf einer Brücke", "on a bridge"),
    ("hinter dem Zaun", "behind the fence"),
    ("im Restaurant", "in the restaurant"),
]
TIMES = [
    ("", ""),
    ("heute", "today"),
    ("am Morgen", "in the morning"),
    ("im Winter", "in winter"),
    ("oft", "often"),
    ("gerne", "happily"),
    ("am Abend", "in the evening"),
]


def _template_pairs(count: int = 220) -> list[tuple[str, str]]:
    """`count` distinct pairs, the same on every run."""
    rng = random.Random(1234)
    seen, pairs = set(), []
    while len(pairs) < count:
        choice = tuple(rng.randrange(len(words)) for words in (SUBJECTS, VERBS, PLACES, TIMES))
        if choice in seen:
            continue
        seen.add(choice)
        (de_s, en_s), (de_v, en_v), (de_p, en_p), (de_t, en_t) = (
            words[i] for words, i in zip((SUBJECTS, VERBS, PLACES, TIMES), choice)
        )
        de = " ".join(w for w in (de_s, de_v, de_t, de_p) if w) + "."
        en = " ".join(w for w in (en_s, en_v, en_p, en_t) if w) + "."
        pairs.append((de[0].upper() + de[1:], en[0].upper() + en[1:]))
    return pairs


@pytest.fixture(scope="session")
def cli_corpus(tmp_path_factory) -> SimpleNamespace:
    """200 training and 20 validation pairs as PREFIX.de.gz / PREFIX.en.gz."""
    root = tmp_path_factory.mktemp("cli_corpus")
    pairs = _template_pairs()
    train, valid = pairs[:200], pairs[200:220]
    train_prefix = _write_pair(root / "train", [s for s, _ in train], [t for _, t in train])
    valid_prefix = _write_pair(root / "valid", [s for s, _ in valid], [t for _, t in valid])
    return SimpleNamespace(
        root=root,
        train=train_prefix,
        valid=valid_prefix,
        valid_pairs=valid,
        valid_src=Path(f"{valid_prefix}.de.gz"),
        valid_ref=Path(f"{valid_prefix}.en.gz"),
    )


@pytest.fixture(scope="session")
def cli_tokenizer(cli_corpus) -> SimpleNamespace:
    """`mt train-tokenizer` on the template corpus (joint unigram, 150 pieces)."""
    output = cli_corpus.root / "tokenizer"
    result = _invoke(
        [
            "train-tokenizer",
            "--train",
            cli_corpus.train,
            "--src",
            "de",
            "--tgt",
            "en",
            "--vocab-size",
            150,
            "--output",
            output,
        ]
    )
    return SimpleNamespace(result=result, directory=output)


@pytest.fixture(scope="session")
def cli_run(cli_corpus, cli_tokenizer) -> SimpleNamespace:
    """`mt train` with a tiny model for 200 steps on CPU. Read-only for the tests that use it."""
    assert cli_tokenizer.result.exit_code == 0, cli_tokenizer.result.output
    # A realistic, longish run directory: with the pytest base directory the
    # checkpoint paths are wider than an 80-column terminal.
    run = cli_corpus.root / "runs" / "de-en-luong-e32-h64-l1-200-steps"
    result = _invoke(
        [
            "train",
            "--train", cli_corpus.train,
            "--valid", cli_corpus.valid,
            "--src", "de",
            "--tgt", "en",
            "--tokenizer", cli_tokenizer.directory,
            "--output", run,
            "--embedding-size", 32,
            "--hidden-size", 64,
            "--layers", 1,
            "--dropout", 0.1,
            "--attention", "luong",
            "--batch-tokens", 400,
            "--max-steps", 200,
            "--validate-every", 100,
            "--patience", 0,
            "--device", "cpu",
            "--lr", 0.01,
            "--seed", 7,
        ],
        env={"COLUMNS": "80"},  # what rich assumes for a log file or a pipe
    )  # fmt: skip
    return SimpleNamespace(result=result, directory=run, best=run / "best.safetensors", last=run / "last.safetensors")


@pytest.fixture(scope="session")
def cli_model(cli_run) -> Path:
    """The best checkpoint of the tiny run (fails the dependent test if training failed)."""
    assert cli_run.result.exit_code == 0, cli_run.result.output
    assert cli_run.best.is_file()
    return cli_run.best


# --------------------------------------------------------------------------
# 1. End to end: train-tokenizer -> train -> evaluate -> translate


def test_train_tokenizer_writes_both_models_and_says_where(cli_tokenizer):
    result = cli_tokenizer.result
    assert result.exit_code == 0, result.output
    directory = cli_tokenizer.directory
    assert (directory / "source.model").is_file()
    assert (directory / "target.model").is_file()
    info = json.loads((directory / "tokenizer.json").read_text())
    assert info == {"joint": True, "source_vocab": 150, "target_vocab": 150}
    assert result.stdout == ""  # reports go to stderr
    assert str(directory) in result.stderr
    assert "150 / 150 pieces" in result.stderr


def test_train_tokenizer_separate_gives_one_model_per_language(cli_corpus, tmp_path):
    output = tmp_path / "separate"
    result = _invoke(
        [
            "train-tokenizer",
            "--train",
            cli_corpus.train,
            "--vocab-size",
            60,
            "--separate",
            "--model-type",
            "bpe",
            "--output",
            output,
        ]
    )
    assert result.exit_code == 0, result.output
    info = json.loads((output / "tokenizer.json").read_text())
    assert info["joint"] is False
    assert (output / "source.model").read_bytes() != (output / "target.model").read_bytes()


def test_train_writes_best_last_and_log(cli_run):
    result = cli_run.result
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert cli_run.best.is_file()
    assert cli_run.last.is_file()
    log = cli_run.directory / "log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == [100, 200]
    for record in records:
        assert {"validation_loss", "validation_bleu", "learning_rate"} <= set(record)
    assert any(r.get("best") for r in records)
    assert result.stdout == ""  # progress and reports go to stderr


def test_train_output_names_where_the_checkpoints_are(cli_run):
    """The closing lines name the best and last checkpoint files, each path whole on one line."""
    result = cli_run.result
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(str(cli_run.best) in line for line in lines), result.stderr
    assert any(str(cli_run.last) in line for line in lines), result.stderr


def test_train_report_prints_a_run_directory_with_brackets_verbatim(cli_corpus, cli_tokenizer, tmp_path):
    """Square brackets are ordinary characters in a path, not rich markup."""
    assert cli_tokenizer.result.exit_code == 0
    output = tmp_path / "r[exp1]"
    result = _train_tiny(cli_corpus, cli_tokenizer.directory, output, env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    assert (output / "last.safetensors").is_file()
    assert str(output / "best.safetensors") in result.stderr
    assert str(output / "last.safetensors") in result.stderr


def test_train_prints_no_python_warnings(cli_corpus, cli_tokenizer, tmp_path):
    """A Python warning from inside mt is noise on the user's terminal. A fresh
    process, because torch gives some warnings only once per process."""
    assert cli_tokenizer.result.exit_code == 0
    process = run_mt(
        "train", "--train", cli_corpus.train, "--valid", cli_corpus.valid, "--tokenizer", cli_tokenizer.directory,
        "--output", tmp_path / "run", "--embedding-size", 8, "--hidden-size", 8, "--layers", 1,
        "--batch-tokens", 400, "--max-steps", 2, "--device", "cpu", stdin=b"",
    )  # fmt: skip
    stderr = process.stderr.decode("utf-8")
    assert process.returncode == 0, stderr
    assert "Warning" not in stderr, stderr


def test_train_overwrite_starts_a_finished_run_afresh(cli_corpus, cli_tokenizer, tmp_path):
    assert cli_tokenizer.result.exit_code == 0
    output = tmp_path / "run"
    first = _train_tiny(cli_corpus, cli_tokenizer.directory, output)
    assert first.exit_code == 0, first.output
    refused = _train_tiny(cli_corpus, cli_tokenizer.directory, output)
    _assert_cli_error(refused, "finished run", "--overwrite")
    again = _train_tiny(cli_corpus, cli_tokenizer.directory, output, "--overwrite")
    assert again.exit_code == 0, again.output
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2]  # the old log went with the old run


def test_progress_eta_is_capped_by_the_time_budget():
    import time

    from rich.progress import Progress

    from mt.cli import TimeLeftColumn

    progress = Progress(TimeLeftColumn(), get_time=time.monotonic)
    budgeted = progress.add_task("training", total=10**6, deadline=time.monotonic() + 90)
    progress.update(budgeted, completed=1)
    unbounded = progress.add_task("training", total=10**6)
    assert str(TimeLeftColumn().render(progress.tasks[budgeted])) in {"0:01:30", "0:01:29"}
    assert str(TimeLeftColumn().render(progress.tasks[unbounded])) == "-:--:--"


def test_train_refuses_a_finished_run_without_overwrite(cli_corpus, cli_tokenizer, cli_run):
    assert cli_run.result.exit_code == 0, cli_run.result.output
    before = _digest(cli_run.last)
    result = _invoke(
        [
            "train",
            "--train", cli_corpus.train,
            "--valid", cli_corpus.valid,
            "--tokenizer", cli_tokenizer.directory,
            "--output", cli_run.directory,
            "--embedding-size", 32,
            "--hidden-size", 64,
            "--layers", 1,
            "--device", "cpu",
        ]
    )  # fmt: skip
    _assert_cli_error(result, str(cli_run.directory), "finished run", "--overwrite")
    assert _digest(cli_run.last) == before


def test_evaluate_json_prints_one_object_with_scores_and_signatures(cli_corpus, cli_model):
    result = _invoke(
        [
            "evaluate",
            "--model",
            cli_model,
            "--src",
            cli_corpus.valid_src,
            "--ref",
            cli_corpus.valid_ref,
            "--beam",
            2,
            "--json",
            "--device",
            "cpu",
        ]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, lines
    scores = json.loads(lines[0])
    assert isinstance(scores, dict)
    for metric in ("bleu", "bleu_lowercase", "chrf"):
        assert isinstance(scores[metric], (int, float))
        assert 0 <= scores[metric] <= 100
    assert scores["bleu_signature"].startswith("nrefs:1")
    assert "tok:13a" in scores["bleu_signature"]
    assert "case:lc" in scores["bleu_lowercase_signature"]
    assert scores["chrf_signature"].startswith("nrefs:1")
    assert scores["beam"] == 2
    assert scores["model"] == str(cli_model)


def test_evaluate_and_translate_quantized_give_one_line_each_and_no_warnings(cli_corpus, cli_model):
    arguments = ["--model", str(cli_model), "--quantize", "--device", "cpu"]
    process = run_mt(
        "evaluate", "--src", cli_corpus.valid_src, "--ref", cli_corpus.valid_ref, "--json", *arguments, stdin=b""
    )
    assert process.returncode == 0, process.stderr
    assert json.loads(process.stdout)["quantize"] is True
    assert process.stderr.decode() == ""
    process = run_mt("translate", *arguments, stdin=b"ein hund\n\nzwei katzen\n")
    assert process.returncode == 0, process.stderr
    assert len(process.stdout.decode().splitlines()) == 3 and process.stdout.decode().splitlines()[1] == ""
    assert process.stderr.decode() == ""


def test_evaluate_runs_the_default_precision_unless_told_and_reports_it(cli_corpus, cli_model):
    from mt.quantize import int8_by_default

    def precision(*flags: str) -> bool:
        arguments = ["--src", cli_corpus.valid_src, "--ref", cli_corpus.valid_ref, "--json", "--device", "cpu"]
        result = _invoke(["evaluate", "-m", cli_model, *arguments, *flags])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["quantize"]

    assert precision() is int8_by_default(torch.device("cpu"))
    assert precision("--no-quantize") is False
    assert precision("--quantize") is True


def test_evaluate_text_report_has_bleu_chrf_and_ter_lines(cli_corpus, cli_model):
    result = _invoke(
        [
            "evaluate",
            "-m",
            cli_model,
            "--src",
            cli_corpus.valid_src,
            "--ref",
            cli_corpus.valid_ref,
            "--beam",
            1,
            "--device",
            "cpu",
        ]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["BLEU", "BLEU", "chrF", "TER"]


def test_evaluate_output_writes_one_translation_per_source_line(cli_corpus, cli_model, tmp_path):
    output = tmp_path / "out" / "hyp.en"
    result = _invoke(
        [
            "evaluate",
            "--model",
            cli_model,
            "--src",
            cli_corpus.valid_src,
            "--ref",
            cli_corpus.valid_ref,
            "--output",
            output,
            "--json",
            "--device",
            "cpu",
        ]
    )
    assert result.exit_code == 0, result.output
    text = output.read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert len(text.splitlines()) == len(cli_corpus.valid_pairs)
    assert len(json.loads(result.stdout)) > 0


def test_evaluate_output_keeps_empty_source_lines(cli_model, tmp_path):
    src = _write_gz(tmp_path / "test.de.gz", ["Ein Hund läuft im Park.", "", "Eine Katze schläft."])
    ref = _write_gz(tmp_path / "test.en.gz", ["A dog runs in the park.", "", "A cat sleeps."])
    output = tmp_path / "hyp.en"
    result = _invoke(
        ["evaluate", "--model", cli_model, "--src", src, "--ref", ref, "--output", output, "--json", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    lines = output.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 4 and lines[-1] == ""
    assert lines[1] == "" and lines[0] and lines[2]


def test_evaluate_rejects_sources_and_references_of_different_lengths(cli_corpus, cli_model, tmp_path):
    ref = _write_gz(tmp_path / "short.en.gz", ["A dog runs."])
    result = _invoke(["evaluate", "--model", cli_model, "--src", cli_corpus.valid_src, "--ref", ref, "--device", "cpu"])
    _assert_cli_error(result, f"has {len(cli_corpus.valid_pairs)} lines", "has 1")


PIPE_LINES = [
    "Ein Hund läuft im Park.",
    "",
    "Eine Frau schläft am Strand.",
    "   ",
    "Ein Kind spielt im Schnee.",
    "Ein alter Mann wartet auf der Straße.",
]


def test_translate_pipe_gives_one_line_per_input_line_in_order(cli_model):
    stdin = "".join(line + "\n" for line in PIPE_LINES).encode("utf-8")
    process = run_mt("translate", "--model", str(cli_model), "--device", "cpu", "--beam", "2", stdin=stdin)
    assert process.returncode == 0, process.stderr.decode()
    assert b"Traceback" not in process.stderr
    out = process.stdout.decode("utf-8")
    assert out.endswith("\n")
    lines = out.split("\n")[:-1]
    assert len(lines) == len(PIPE_LINES)
    # Empty and blank lines map to empty lines; the others to something.
    for source, translation in zip(PIPE_LINES, lines):
        assert (translation == "") == (source.strip() == ""), (source, translation)

    nonempty = [line for line in lines if line]
    assert len(set(nonempty)) > 1, f"the tiny model gives one translation for all; order is not visible: {nonempty}"

    # Order: the same lines reversed come out reversed.
    reversed_stdin = "".join(line + "\n" for line in reversed(PIPE_LINES)).encode("utf-8")
    process = run_mt("translate", "--model", str(cli_model), "--device", "cpu", "--beam", "2", stdin=reversed_stdin)
    assert process.returncode == 0, process.stderr.decode()
    assert process.stdout.decode("utf-8").split("\n")[:-1] == lines[::-1]


def test_translate_pipe_keeps_a_last_line_without_newline_and_crlf(cli_model):
    stdin = b"Ein Hund l\xc3\xa4uft im Park.\r\n\r\nEine Katze sitzt im Garten."
    process = run_mt("translate", "--model", str(cli_model), "--device", "cpu", stdin=stdin)
    assert process.returncode == 0, process.stderr.decode()
    lines = process.stdout.decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 4, lines
    assert lines[0] != "" and lines[1] == "" and lines[2] != ""


def test_translate_empty_pipe_prints_nothing(cli_model):
    process = run_mt("translate", "--model", str(cli_model), "--device", "cpu", stdin=b"")
    assert process.returncode == 0, process.stderr.decode()
    assert process.stdout == b""


def test_translate_arguments_print_one_line_each(cli_model):
    result = _invoke(
        ["translate", "--model", cli_model, "--device", "cpu", "Ein Hund läuft im Park.", "Eine Katze schläft."]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert all(lines), lines


def test_translate_pipe_of_more_than_256_lines_gives_one_line_each(cli_model):
    """A pipe is translated --buffer-size lines (256) at a time; the chunk border must not show."""
    sources = ["Ein Hund läuft.", "", "Eine Katze sitzt im Garten."] * 100
    stdin = "".join(line + "\n" for line in sources).encode("utf-8")
    result = _invoke(["translate", "--model", cli_model, "--device", "cpu", "--beam", "1"], input=stdin)
    assert result.exit_code == 0, result.output
    lines = result.stdout.split("\n")[:-1]
    assert len(lines) == len(sources)
    assert [line == "" for line in lines] == [source == "" for source in sources]


def test_translate_a_line_longer_than_the_model_reads_is_translated_whole_in_pieces(cli_model):
    """A line longer than the model's source limit is cut into pieces, not truncated:
    its translation is that of its pieces, and nothing warns about dropped words."""
    sources = ["Ein Hund."] * 299 + [", ".join(["ein Hund läuft im Park"] * 60)]  # line 300: > 255 subwords
    stdin = "".join(line + "\n" for line in sources).encode("utf-8")
    result = _invoke(["translate", "--model", cli_model, "--device", "cpu", "--beam", "1"], input=stdin)
    assert result.exit_code == 0, result.output
    outputs = result.stdout.split("\n")[:-1]
    assert len(outputs) == len(sources)
    assert "warning" not in result.stderr
    (one_piece,) = _invoke(
        ["translate", "--model", cli_model, "--device", "cpu", "--beam", "1", "ein Hund läuft im Park,"]
    ).stdout.split("\n")[:-1]
    assert len(outputs[-1]) > 10 * len(one_piece)


def test_translate_into_a_closed_pipe_exits_without_traceback(cli_model):
    """`mt translate < in | head -0`: the reader is gone before the first write."""
    process = start_mt("translate", "--model", cli_model, "--device", "cpu")
    process.stdout.close()  # before the child has even imported torch
    _, stderr = process.communicate("Ein Hund läuft.\n".encode() * 50, timeout=120)
    assert b"Traceback" not in stderr, stderr.decode()


def test_translate_accepts_the_run_directory_holding_model_safetensors(cli_model, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(cli_model.read_bytes())
    result = _invoke(["translate", "--model", tmp_path, "--device", "cpu", "Ein Hund läuft."])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1


def test_python_dash_m_mt_runs_the_same_app():
    process = subprocess.run([sys.executable, "-m", "mt", "version"], capture_output=True, env=ENV, timeout=60)
    assert process.returncode == 0, process.stderr.decode()
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*\n", process.stdout.decode())


def test_average_of_best_and_last_is_a_usable_checkpoint(cli_run, cli_model, tmp_path):
    output = tmp_path / "averaged"
    result = _invoke(["average", cli_run.best, cli_run.last, "--output", output, "--fp16"])
    assert result.exit_code == 0, result.output
    target = output / "model.safetensors"
    assert str(target) in result.stderr
    translated = _invoke(["translate", "--model", target, "--device", "cpu", "Ein Hund läuft."])
    assert translated.exit_code == 0, translated.output
    assert len(translated.stdout.splitlines()) == 1


# --------------------------------------------------------------------------
# 2. User errors: one line on stderr, non-zero exit, no traceback


def test_missing_corpus_file_is_a_one_line_error(tmp_path):
    prefix = tmp_path / "nowhere" / "train"
    result = _invoke(["train-tokenizer", "--train", prefix, "--vocab-size", 50, "--output", tmp_path / "tok"])
    _assert_cli_error(result, "file not found", f"{prefix}.de")


def test_missing_validation_corpus_is_a_one_line_error(cli_corpus, cli_tokenizer, tmp_path):
    assert cli_tokenizer.result.exit_code == 0
    result = _invoke(
        [
            "train",
            "--train",
            cli_corpus.train,
            "--valid",
            tmp_path / "missing",
            "--tokenizer",
            cli_tokenizer.directory,
            "--output",
            tmp_path / "run",
            "--device",
            "cpu",
        ]
    )
    _assert_cli_error(result, "file not found", str(tmp_path / "missing"))


def test_source_and_target_of_different_lengths_name_both_counts(tmp_path):
    prefix = _write_pair(tmp_path / "bad", ["Ein Hund.", "Eine Katze.", "Ein Mann."], ["A dog.", "A cat."])
    result = _invoke(["train-tokenizer", "--train", prefix, "--vocab-size", 50, "--output", tmp_path / "tok"])
    line = _assert_cli_error(result, "has 3 lines", "has 2")
    assert "bad.de" in line and "bad.en" in line


def test_empty_corpus_is_a_one_line_error(tmp_path):
    prefix = _write_pair(tmp_path / "empty", b"", b"")
    result = _invoke(["train-tokenizer", "--train", prefix, "--vocab-size", 50, "--output", tmp_path / "tok"])
    _assert_cli_error(result, "empty")


@pytest.mark.parametrize("compressed", [True, False], ids=["gz", "plain"])
def test_non_utf8_corpus_line_is_named_by_number(tmp_path, compressed):
    source = b"Ein Hund.\nEine Katze.\n" + b"Ein M\xe4nnchen \xff.\n" + b"Ein Kind.\n"
    target = b"A dog.\nA cat.\nA little man.\nA child.\n"
    if compressed:
        prefix = _write_pair(tmp_path / "latin1", source, target)
    else:
        (tmp_path / "latin1.de").write_bytes(source)
        (tmp_path / "latin1.en").write_bytes(target)
        prefix = str(tmp_path / "latin1")
    result = _invoke(["train-tokenizer", "--train", prefix, "--vocab-size", 50, "--output", tmp_path / "tok"])
    _assert_cli_error(result, "line 3", "UTF-8", "latin1.de")


def test_checkpoint_that_does_not_exist_is_a_one_line_error(tmp_path):
    missing = tmp_path / "no-such-run" / "best.safetensors"
    result = _invoke(["translate", "--model", missing, "--device", "cpu", "Ein Hund."])
    _assert_cli_error(result, "checkpoint not found", str(missing))


def test_evaluate_with_missing_checkpoint_is_a_one_line_error(cli_corpus, tmp_path):
    result = _invoke(
        [
            "evaluate",
            "--model",
            tmp_path / "missing.safetensors",
            "--src",
            cli_corpus.valid_src,
            "--ref",
            cli_corpus.valid_ref,
            "--device",
            "cpu",
        ]
    )
    _assert_cli_error(result, "checkpoint not found")


def _safetensors_without_mt_metadata() -> bytes:
    from safetensors.torch import save

    return save({"weight": torch.zeros(2, 2)})


NOT_CHECKPOINTS = {
    "text": lambda: b"this is not a model\njust some text\n",
    "random-bytes": lambda: random.Random(0).randbytes(4096),
    "empty": lambda: b"",
    "bad-header": lambda: struct.pack("<Q", 12) + b"{not json!!}" + b"\x00" * 16,
    "header-length-past-end": lambda: struct.pack("<Q", 1000) + b"{}",
    "foreign-safetensors": _safetensors_without_mt_metadata,
}


@pytest.mark.parametrize("content", NOT_CHECKPOINTS.values(), ids=NOT_CHECKPOINTS.keys())
def test_file_that_is_not_a_checkpoint_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content())
    result = _invoke(["translate", "--model", path, "--device", "cpu", "Ein Hund."])
    _assert_cli_error(result, str(path))


def test_truncated_checkpoint_is_a_one_line_error(cli_model, tmp_path):
    data = cli_model.read_bytes()
    path = tmp_path / "model.safetensors"
    path.write_bytes(data[: len(data) // 2])
    result = _invoke(["translate", "--model", path, "--device", "cpu", "Ein Hund."])
    _assert_cli_error(result, str(path))


def test_translate_beam_zero_names_the_valid_range(tmp_path):
    result = _invoke(["translate", "--beam", "0", "--model", tmp_path / "whatever.safetensors", "Ein Hund."])
    _assert_cli_error(result, ">= 1", "got 0")


def test_train_dropout_out_of_range_names_the_valid_range(cli_corpus, cli_tokenizer, tmp_path):
    assert cli_tokenizer.result.exit_code == 0
    result = _invoke(
        [
            "train",
            "--train",
            cli_corpus.train,
            "--valid",
            cli_corpus.valid,
            "--tokenizer",
            cli_tokenizer.directory,
            "--output",
            tmp_path / "run",
            "--dropout",
            "1.5",
            "--device",
            "cpu",
        ]
    )
    _assert_cli_error(result, "dropout", ">= 0.0 and <= 0.9", "1.5")
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_translate_missing_checkpoint_from_console_script_has_no_traceback(tmp_path):
    """The same check outside CliRunner: the real process, real stderr."""
    missing = tmp_path / "missing.safetensors"
    process = run_mt("translate", "--model", str(missing), "--device", "cpu", stdin=b"Ein Hund.\n")
    _assert_process_error(process, "checkpoint not found", str(missing))


def test_evaluate_empty_source_file_is_a_one_line_error(cli_model, tmp_path):
    src = _write_gz(tmp_path / "empty.de.gz", b"")
    ref = _write_gz(tmp_path / "empty.en.gz", b"")
    result = _invoke(["evaluate", "--model", cli_model, "--src", src, "--ref", ref, "--device", "cpu"])
    _assert_cli_error(result, "empty")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_device_cuda_without_cuda_is_a_one_line_error(cli_model):
    result = _invoke(["translate", "--model", cli_model, "--device", "cuda", "Ein Hund."])
    _assert_cli_error(result, "--device cuda", "no CUDA device")


def test_train_tokenizer_output_that_is_a_file_is_a_one_line_error(cli_corpus, tmp_path):
    output = tmp_path / "tokenizer"
    output.write_text("a file, not a directory\n")
    result = _invoke(["train-tokenizer", "--train", cli_corpus.train, "--vocab-size", 60, "--output", output])
    _assert_cli_error(result, str(output))


def test_train_output_that_is_a_file_is_a_one_line_error(cli_corpus, cli_tokenizer, tmp_path):
    assert cli_tokenizer.result.exit_code == 0
    output = tmp_path / "run"
    output.write_text("a file, not a directory\n")
    result = _train_tiny(cli_corpus, cli_tokenizer.directory, output)
    _assert_cli_error(result, str(output))


def test_evaluate_output_that_is_a_directory_is_a_one_line_error(cli_corpus, cli_model, tmp_path):
    output = tmp_path / "translations"
    output.mkdir()
    result = _invoke(
        [
            "evaluate",
            "--model",
            cli_model,
            "--src",
            cli_corpus.valid_src,
            "--ref",
            cli_corpus.valid_ref,
            "--output",
            output,
            "--beam",
            1,
            "--device",
            "cpu",
        ]
    )
    _assert_cli_error(result, str(output))


# --------------------------------------------------------------------------
# 3. Help


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
    result = _invoke([command, "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert f"Usage: mt {command}" in text
    assert "Example" in text
    assert f"mt {command}" in text.split("Example", 1)[1]


def test_top_level_help_lists_every_command():
    result = _invoke(["--help"])
    assert result.exit_code == 0, result.output
    for command in COMMANDS:
        assert command in result.stdout


# --------------------------------------------------------------------------
# 4. More bad input, each through the CLI


def test_tsv_row_with_wrong_column_count_names_the_line(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("Ein Hund.\tA dog.\nEine Katze.\tA cat.\textra\n", encoding="utf-8")
    result = _invoke(["train-tokenizer", "--train", path, "--vocab-size", 50, "--output", tmp_path / "tok"])
    _assert_cli_error(result, "line 2", "3 tab-separated columns")


def test_dataset_that_does_not_exist_is_a_one_line_error(tmp_path):
    result = _invoke(
        [
            "train-tokenizer",
            "--train",
            "hf:no-such-user/no-such-dataset",
            "--vocab-size",
            50,
            "--output",
            tmp_path / "tok",
        ],
        env=ENV,
    )
    _assert_cli_error(result, "cannot load dataset", "no-such-user/no-such-dataset")


def test_split_that_does_not_exist_in_a_saved_dataset_is_a_one_line_error(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"de": ["Ein Hund."], "en": ["A dog."]})}).save_to_disk(
        tmp_path / "saved"
    )
    result = _invoke(
        [
            "train-tokenizer",
            "--train",
            f"{tmp_path / 'saved'}@nosuchsplit",
            "--vocab-size",
            50,
            "--output",
            tmp_path / "tok",
        ]
    )
    _assert_cli_error(result, "cannot load dataset", "nosuchsplit")


def test_vocabulary_larger_than_the_corpus_supports_says_what_to_do(cli_corpus, tmp_path):
    result = _invoke(
        ["train-tokenizer", "--train", cli_corpus.train, "--vocab-size", 50000, "--output", tmp_path / "tok"]
    )
    _assert_cli_error(result, "vocabulary size 50000", "--vocab-size")
    assert not (tmp_path / "tok").exists()


@pytest.mark.parametrize("option", ["--hidden-size", "--embedding-size", "--layers", "--batch-tokens"])
def test_negative_sizes_name_the_valid_range(cli_corpus, cli_tokenizer, tmp_path, option):
    assert cli_tokenizer.result.exit_code == 0
    result = _invoke(
        [
            "train",
            "--train",
            cli_corpus.train,
            "--valid",
            cli_corpus.valid,
            "--tokenizer",
            cli_tokenizer.directory,
            "--output",
            tmp_path / "run",
            option,
            "-5",
            "--device",
            "cpu",
        ]
    )
    _assert_cli_error(result, ">=", "got -5")


def test_checkpoint_of_another_format_version_is_a_one_line_error(cli_model, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(cli_model), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = {**handle.metadata(), "format_version": "999"}
    path = tmp_path / "future.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    result = _invoke(["translate", "--model", path, "--device", "cpu", "Ein Hund."])
    _assert_cli_error(result, "format version 999")


def test_odd_input_lines_each_get_exactly_one_output_line(cli_model):
    lines = [
        "",
        "   \t  ",
        "Ein Hund 🐕 läuft 🚀🚀",
        "Собака бежит по парку",
        "犬が公園を走る",
        "Ein\x07Hund\x1b[31m rot\x00",
        "Ein Hund läuft. " * 400,
        "\u200b\u200e\ufeff",
    ]
    process = run_mt("translate", "--model", cli_model, "--device", "cpu", stdin="\n".join(lines).encode() + b"\n")
    assert process.returncode == 0, process.stderr.decode()
    out = process.stdout.decode("utf-8").split("\n")
    assert out[-1] == "" and len(out) - 1 == len(lines)
    assert out[0] == "" and out[1] == ""
    stderr = process.stderr.decode()
    assert "Traceback" not in stderr and "warning" not in stderr  # the long line 7 is translated in pieces


def test_checkpoint_records_versions_seed_config_and_data_fingerprint(cli_run):
    from mt.checkpoint import load_checkpoint

    info = load_checkpoint(cli_run.best).info
    assert set(info["versions"]) >= {"mt", "torch", "sentencepiece", "sacrebleu"}
    assert info["seed"] == 7  # cli_run trains with --seed 7
    assert [corpus["fingerprint"][:7] for corpus in info["train_corpora"]] == ["sha256:"]
    assert info["train_config"]["max_steps"] == 200


def test_corrupt_gzip_corpus_is_a_one_line_error(tmp_path):
    prefix = _write_pair(tmp_path / "ok", ["Ein Hund."], ["A dog."])
    Path(f"{prefix}.de.gz").write_bytes(b"\x1f\x8b\x08\x00not really gzip data")
    result = _invoke(["train-tokenizer", "--train", prefix, "--vocab-size", 50, "--output", tmp_path / "tok"])
    _assert_cli_error(result, "cannot read", "ok.de.gz")


def test_checkpoint_whose_tokenizer_does_not_match_its_model_is_a_one_line_error(cli_model, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from mt.tokenizer import train_sentencepiece

    other = train_sentencepiece([f"Satz Nummer {i} über etwas anderes ." for i in range(50)], vocab_size=35)
    with safe_open(str(cli_model), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = handle.metadata()
    tensors["tokenizer.source"] = torch.frombuffer(bytearray(other.model_proto), dtype=torch.uint8)
    path = tmp_path / "mismatch.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    result = _invoke(["translate", "--model", path, "--device", "cpu", "Ein Hund."])
    _assert_cli_error(result, "tokenizers do not match")


def test_train_accumulating_more_batches_than_an_epoch_has_is_a_one_line_error(cli_corpus, cli_tokenizer, tmp_path):
    assert cli_tokenizer.result.exit_code == 0
    result = _train_tiny(cli_corpus, cli_tokenizer.directory, tmp_path / "run", "--accumulate", 1000)
    assert result.exit_code == 1 and "Traceback" not in result.output
    last_line = result.stderr.strip().splitlines()[-1]  # after the reports on the corpus and the model
    assert last_line.startswith("error: ") and "fewer than one update takes (--accumulate 1000)" in last_line
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_train_tokenizer_learns_from_a_sample_of_max_sentences(cli_corpus, tmp_path):
    result = _invoke(
        [
            "train-tokenizer",
            "--train",
            cli_corpus.train,
            "--vocab-size",
            60,
            "--max-sentences",
            150,
            "--output",
            tmp_path / "tok",
        ]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tok" / "source.model").is_file()
    _assert_cli_error(
        _invoke(["train-tokenizer", "--train", cli_corpus.train, "--max-sentences", 100]), "--max-sentences", "> 100"
    )
