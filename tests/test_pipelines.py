"""`mt translate` in pipelines and on files, and `mt evaluate`'s confidence.

Streaming stdin (a coprocess gets each translation at once; a long pipe keeps
one line out per line in), `--input/--output` (progress, atomic output, the
same-file refusal, Ctrl-C), `--format jsonl` and `--n-best` lines, and the
confidence intervals and paired test of `mt evaluate`. The translating tests
run real processes on tiny untrained models: they check the contract of the
output, not its quality; the evaluation tests use the shipped models.
"""

from __future__ import annotations

import gzip
import json
import os
import select
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_mt, start_mt

from mt.config import MTError
from mt.streams import chunks

STARTUP_SECONDS = 120  # a busy 2-core machine imports torch slowly


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_checkpoint) -> Path:
    """A tiny untrained de->en model with attention."""
    path = tmp_path_factory.mktemp("pipeline-model") / "model.safetensors"
    return tiny_checkpoint(path, embedding_size=16, hidden_size=24, attention="luong")


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory, tiny_checkpoint) -> Path:
    """The same without attention."""
    return tiny_checkpoint(tmp_path_factory.mktemp("plain-model") / "model.safetensors", attention="none")


def _sentences(corpus_pairs, count: int) -> list[str]:
    """`count` German lines: the corpus over and over, a blank line every 7th, a long one every 500th."""
    lines = []
    for index in range(count):
        if index % 7 == 3:
            lines.append("" if index % 2 else "   ")
        elif index % 500 == 250:
            lines.append(", ".join(de.rstrip(" .") for de, _ in corpus_pairs[:40]) + ".")  # > the model's limit
        else:
            lines.append(corpus_pairs[index % len(corpus_pairs)][0])
    return lines


def _text(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


# -- streaming ------------------------------------------------------------------------


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    """One line of the process's stdout, waiting at most `timeout` seconds (polling, never blocking)."""
    data, deadline = b"", time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no line within {timeout} s; got {data!r} so far"
        readable, _, _ = select.select([process.stdout], [], [], left)
        if readable:
            byte = os.read(process.stdout.fileno(), 1)
            assert byte, f"stdout closed; got {data!r}; stderr: {process.stderr.read().decode()}"
            data += byte
    return data.decode("utf-8")[:-1]


def test_a_coprocess_gets_each_translation_while_its_stdin_stays_open(model, corpus_pairs):
    expected = run_mt("translate", "-m", model, "--beam", "2", *[de for de, _ in corpus_pairs[:2]]).stdout.splitlines()
    process = start_mt("translate", "-m", model, "--beam", "2")
    try:
        for (german, _), translation in zip(corpus_pairs[:2], expected):
            process.stdin.write(german.encode() + b"\n")
            process.stdin.flush()
            assert _read_line(process, STARTUP_SECONDS) == translation
            assert process.poll() is None  # still waiting for more, stdin open
        process.stdin.close()
        assert process.wait(timeout=STARTUP_SECONDS) == 0
        assert process.stdout.read() == b""
    finally:
        process.kill()
        process.wait()


def test_a_10000_line_pipe_with_blank_and_long_lines_keeps_one_line_per_line_in_order(model, corpus_pairs):
    lines = _sentences(corpus_pairs, 10_000)
    common = ("translate", "-m", model, "--beam", "1", "--buffer-size", "300")
    text = run_mt(*common, stdin=_text(lines), timeout=600)
    assert text.returncode == 0, text.stderr
    assert text.stderr == ""
    outputs = text.stdout.split("\n")
    assert outputs.pop() == "" and len(outputs) == len(lines)
    assert all(output == "" for line, output in zip(lines, outputs) if not line.strip())
    assert any(outputs)
    records = run_mt(*common, "--format", "jsonl", stdin=_text(lines), timeout=600)
    assert records.returncode == 0, records.stderr
    assert [json.loads(record)["source"] for record in records.stdout.splitlines()] == lines


def test_chunks_are_full_from_a_steady_source_and_end_early_when_it_pauses():
    assert [len(chunk) for chunk in chunks(map(str, range(10)), 4, pause=None)] == [4, 4, 2]
    resumed = threading.Event()

    def pausing():
        yield from ("a", "b", "c")
        resumed.wait()  # the source is silent until the consumer has what came
        yield "d"

    stream = chunks(pausing(), 100, pause=0.01)
    assert next(stream) == ["a", "b", "c"]
    resumed.set()
    assert list(stream) == [["d"]]


def test_a_read_error_comes_after_the_lines_before_it():
    def broken():
        yield from ("a", "b")
        raise MTError("standard input: line 3 is not valid UTF-8")

    stream = chunks(broken(), 100, pause=None)
    assert next(stream) == ["a", "b"]
    with pytest.raises(MTError, match="line 3"):
        next(stream)


def test_a_line_that_is_not_utf8_stops_the_pipe_after_the_lines_before_it(model):
    stdin = b"Ein Hund.\n\n" + b"Ein M\xe4dchen.\n" + b"Eine Katze.\n"
    process = run_mt("translate", "-m", model, "--buffer-size", "1", stdin=stdin)
    assert_one_line_error(process.returncode, process.stderr.decode(), "standard input", "line 3", "UTF-8")
    assert process.stdout.decode().count("\n") == 2


# -- files ------------------------------------------------------------------------------


def _write_lines(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") if path.suffix == ".gz" else open(path, "w") as out:
        out.write(_text(lines))
    return path


def test_input_and_output_files_translate_line_by_line_and_report_progress(model, corpus_pairs, tmp_path):
    source = _write_lines(tmp_path / "in.de.gz", _sentences(corpus_pairs, 2500))
    target = tmp_path / "out" / "in.en"
    common = ("translate", "-m", model, "--beam", "1", "--buffer-size", "500", "-i", source)
    written = run_mt(*common, "-o", target)
    assert written.returncode == 0, written.stderr
    assert written.stdout == ""
    progress = written.stderr.splitlines()  # stderr is not a terminal: a line every 1,000 lines and at the end
    assert [line.split(" lines")[0] for line in progress] == [
        f"translated {done}/2,500" for done in ("1,000", "2,000", "2,500")
    ]
    assert all(line.endswith("lines/s)") for line in progress)
    assert target.read_text() == run_mt(*common, "-o", "-").stdout
    assert target.read_text().count("\n") == 2500
    assert sorted(path.name for path in target.parent.iterdir()) == ["in.en"]  # no temporary file left


@pytest.mark.parametrize("alias", ["same", "symlink"])
def test_an_output_that_is_the_input_is_refused_and_the_input_kept(model, tmp_path, alias):
    source = _write_lines(tmp_path / "in.de", ["Ein Hund."])
    output = source
    if alias == "symlink":
        output = tmp_path / "link.de"
        output.symlink_to(source)
    process = run_mt("translate", "-m", model, "--input", source, "--output", output)
    assert_one_line_error(process.returncode, process.stderr, "--input", "destroy")
    assert source.read_text() == "Ein Hund.\n"


def test_ctrl_c_leaves_no_output_file_and_an_old_one_untouched(model, corpus_pairs, tmp_path):
    source = _write_lines(tmp_path / "in.de", _sentences(corpus_pairs, 200_000))
    target = tmp_path / "out.en"
    target.write_text("the previous translation\n")
    process = start_mt("translate", "-m", model, "--beam", "1", "--buffer-size", "100", "-i", source, "-o", target)
    try:
        first = process.stderr.readline().decode()  # the first progress line: translating is under way
        assert first.startswith("translated 1,000/200,000"), first
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=STARTUP_SECONDS) == 130
    finally:
        process.kill()
        process.wait()
    rest = process.stderr.read().decode()
    assert "Traceback" not in rest and f"{target} was not written" in rest
    assert target.read_text() == "the previous translation\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.de", "out.en"]


# -- machine-readable output -------------------------------------------------------------


def test_jsonl_has_source_translation_score_n_best_and_alignment_for_every_line(model, corpus_pairs, tmp_path):
    lines = [corpus_pairs[0][0], "", f"{corpus_pairs[1][0]} {corpus_pairs[2][0]}"]
    source = _write_lines(tmp_path / "in.de", lines)
    common = ("translate", "-m", model, "--beam", "3", "-i", source)
    process = run_mt(*common, "--format", "jsonl", "--n-best", "3", "--alignment")
    assert process.returncode == 0, process.stderr
    records = [json.loads(line) for line in process.stdout.splitlines()]
    assert [record["source"] for record in records] == lines
    assert [record["translation"] for record in records] == run_mt(*common).stdout.split("\n")[:-1]
    for record in records:
        assert set(record) == {"source", "translation", "score", "n_best", "alignment"}
        best = record["n_best"]
        assert 1 <= len(best) <= 3 and best[0] == {"translation": record["translation"], "score": record["score"]}
        assert [c["score"] for c in best] == sorted((c["score"] for c in best), reverse=True)
    empty = {"translation": "", "score": 0.0}
    assert records[1] == {"source": "", **empty, "n_best": [empty], "alignment": None}
    alignment = records[0]["alignment"]
    assert alignment["source"][-1] == "</s>" and alignment["target"][-1] == "</s>"
    assert len(alignment["weights"]) == len(alignment["target"])
    for row in alignment["weights"]:
        assert len(row) == len(alignment["source"]) and sum(row) == pytest.approx(1, abs=1e-3)
    plain = run_mt(*common, "--format", "jsonl")
    assert all(set(json.loads(line)) == {"source", "translation", "score"} for line in plain.stdout.splitlines())


def test_n_best_in_a_pipe_gives_moses_lines_best_first(model, corpus_pairs):
    lines = [de for de, _ in corpus_pairs[:4]]
    common = ("translate", "-m", model, "--beam", "4", "--buffer-size", "10")
    best = run_mt(*common, stdin=_text(lines)).stdout.split("\n")[:-1]
    process = run_mt(*common, "--n-best", "4", stdin=_text(lines))
    assert process.returncode == 0, process.stderr
    fields = [line.split(" ||| ") for line in process.stdout.splitlines()]
    assert all(len(field) == 3 for field in fields)
    numbers = [int(number) for number, _, _ in fields]
    assert numbers == sorted(numbers) and set(numbers) == set(range(len(lines)))
    for index, translation in enumerate(best):
        candidates = [(text, float(score)) for number, text, score in fields if int(number) == index]
        assert 1 <= len(candidates) <= 4 and candidates[0][0] == translation
        assert [s for _, s in candidates] == sorted((s for _, s in candidates), reverse=True)


@pytest.mark.parametrize(
    ("arguments", "fragments"),
    [
        (["--alignment"], ["--alignment", "--format jsonl"]),
        (["--format", "jsonl", "--alignment"], ["no attention"]),
        (["--buffer-size", "0"], ["--buffer-size", ">= 1"]),
        (["--input", "missing.de"], ["--input", "not found"]),
        (["--format", "xml"], ["--format"]),
        (["--input", "-", "Ein Hund."], ["arguments or with --input"]),
    ],
)
def test_pipeline_mistakes_are_one_line_errors(plain_model, arguments, fragments, tmp_path):
    process = run_mt("translate", "-m", plain_model, *arguments, stdin="Ein Hund.\n")
    assert_one_line_error(process.returncode, process.stderr, *fragments)
    assert process.stdout == ""


# -- evaluation ------------------------------------------------------------------------

GERMAN = [
    "Ein Hund läuft durch den Park.",
    "Zwei Männer spielen Fußball auf einer Wiese.",
    "Eine Frau liest ein Buch im Zug.",
    "Das kleine Mädchen isst ein Eis.",
    "Ich habe heute keine Zeit.",
    "Kannst du mir bitte helfen?",
    "Wir fahren morgen nach Berlin.",
    "Er trinkt jeden Morgen Kaffee.",
]
ENGLISH = [
    "A dog runs through the park.",
    "Two men are playing soccer on a meadow.",
    "A woman is reading a book on the train.",
    "The little girl is eating an ice cream.",
    "I don't have time today.",
    "Can you please help me?",
    "We are going to Berlin tomorrow.",
    "He drinks coffee every morning.",
]


@pytest.fixture(scope="module")
def test_set(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("test-set")
    return _write_lines(directory / "test.de", GERMAN), _write_lines(directory / "test.en", ENGLISH)


def _evaluate(*arguments, test_set) -> dict:
    src, ref = test_set
    process = run_mt("evaluate", "--src", src, "--ref", ref, "--beam", "1", "--json", *arguments)
    assert process.returncode == 0, process.stderr
    return json.loads(process.stdout)


def test_evaluate_compares_two_shipped_models_with_a_paired_test_and_intervals(test_set):
    from mt.checkpoint import SHIPPED_MODELS

    first, second = SHIPPED_MODELS / "de-en", SHIPPED_MODELS / "de-en-base"
    compared = _evaluate("-m", first, "-m", second, test_set=test_set)
    assert compared["paired_test"] == "bs" and compared["baseline"] == str(first)
    baseline, other = compared["systems"]
    for system, path in ((baseline, first), (other, second)):
        assert system["model"] == str(path)
        alone = _evaluate("-m", path, test_set=test_set)
        assert {name: system[name] for name in ("bleu", "chrf", "ter")} == {
            n: alone[n] for n in ("bleu", "chrf", "ter")
        }
        for name in ("bleu", "chrf", "ter"):
            interval = system[f"{name}_confidence"]
            assert interval["ci"] > 0 and abs(interval["mean"] - system[name]) < interval["ci"] + 1
    assert all("p_value" not in baseline[f"{name}_confidence"] for name in ("bleu", "chrf", "ter"))
    assert all(0 < other[f"{name}_confidence"]["p_value"] <= 1 for name in ("bleu", "chrf", "ter"))
    assert "bs:1000" in compared["confidence_signatures"]["bleu"]


def test_evaluate_confidence_of_one_model_and_an_ensemble_of_two(test_set):
    from mt.checkpoint import SHIPPED_MODELS

    single = _evaluate("-m", SHIPPED_MODELS / "de-en", "--confidence", test_set=test_set)
    assert {"bleu_confidence", "chrf_confidence", "ter_confidence", "ter", "ter_signature"} <= set(single)
    assert "p_value" not in single["bleu_confidence"]
    paths = [SHIPPED_MODELS / "de-en", SHIPPED_MODELS / "de-en"]
    ensemble = _evaluate("-m", paths[0], "-m", paths[1], "--ensemble", test_set=test_set)
    assert ensemble["ensemble"] == [str(p) for p in paths] and ensemble["bleu"] == single["bleu"]


def test_evaluate_output_of_several_models_is_refused(test_set, tmp_path):
    src, ref = test_set
    process = run_mt("evaluate", "--src", src, "--ref", ref, "-m", "a", "-m", "b", "--output", tmp_path / "out")
    assert_one_line_error(process.returncode, process.stderr, "--output", "one model")
