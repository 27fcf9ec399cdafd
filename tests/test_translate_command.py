"""`mt translate`: from arguments, pipes and files, in every output format.

One line out per line in, in order, whatever a line holds (nothing, CRLF, no final
newline, more than the model reads, any Unicode); streaming to a coprocess; standard
streams closed or a terminal (the prompt, Ctrl-C); `--input/--output` (progress, atomic
output, Ctrl-C); `--format jsonl`, `--n-best` and `--alignment`. The models are tiny
(`cli_model`, trained for 200 steps, or untrained): these tests check the contract of
the output, not its quality. Mistakes are in test_mistakes.py.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import (
    ENV,
    TINY_MODEL,
    _text,
    _write_lines,
    assert_one_line_error,
    invoke,
    mt_command,
    run_mt,
    start_mt,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mt.config import DecodeConfig, MTError
from mt.streams import chunks
from mt.translator import Translator

STARTUP_SECONDS = 120  # a busy 2-core machine imports torch slowly


MT = mt_command()


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_checkpoint) -> Path:
    """A tiny untrained de->en model with attention."""
    path = tmp_path_factory.mktemp("pipeline-model") / "model.safetensors"
    return tiny_checkpoint(path, embedding_size=16, hidden_size=24, attention="luong")


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


# -- arguments and pipes: one line out per line in, in order -------------------------------


@pytest.mark.slow
def test_translate_arguments_print_one_line_each(cli_model):
    result = invoke(
        ["translate", "--model", cli_model, "--device", "cpu", "Ein Hund läuft im Park.", "Eine Katze schläft."]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert all(lines), lines


PIPE_LINES = [
    "Ein Hund läuft im Park.",
    "",
    "Eine Frau schläft am Strand.",
    "   ",
    "Ein Kind spielt im Schnee.",
    "Ein alter Mann wartet auf der Straße.",
]


@pytest.mark.slow
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


@pytest.mark.slow
def test_translate_pipe_keeps_a_last_line_without_newline_and_crlf(cli_model):
    stdin = b"Ein Hund l\xc3\xa4uft im Park.\r\n\r\nEine Katze sitzt im Garten."
    process = run_mt("translate", "--model", str(cli_model), "--device", "cpu", stdin=stdin)
    assert process.returncode == 0, process.stderr.decode()
    lines = process.stdout.decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 4, lines
    assert lines[0] != "" and lines[1] == "" and lines[2] != ""


@pytest.mark.slow
def test_translate_empty_pipe_prints_nothing(cli_model):
    process = run_mt("translate", "--model", str(cli_model), "--device", "cpu", stdin=b"")
    assert process.returncode == 0, process.stderr.decode()
    assert process.stdout == b""


@pytest.mark.slow
def test_translate_pipe_of_more_than_256_lines_gives_one_line_each(cli_model):
    """A pipe is translated --buffer-size lines (256) at a time; the chunk border must not show."""
    sources = ["Ein Hund läuft.", "", "Eine Katze sitzt im Garten."] * 100
    stdin = "".join(line + "\n" for line in sources).encode("utf-8")
    result = invoke(["translate", "--model", cli_model, "--device", "cpu", "--beam", "1"], input=stdin)
    assert result.exit_code == 0, result.output
    lines = result.stdout.split("\n")[:-1]
    assert len(lines) == len(sources)
    assert [line == "" for line in lines] == [source == "" for source in sources]


@pytest.mark.slow
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


@pytest.mark.slow
def test_translate_a_line_longer_than_the_model_reads_is_translated_whole_in_pieces(cli_model):
    """A line longer than the model's source limit is cut into pieces, not truncated:
    its translation is that of its pieces, and nothing warns about dropped words."""
    sources = ["Ein Hund."] * 299 + [", ".join(["ein Hund läuft im Park"] * 60)]  # line 300: > 255 subwords
    stdin = "".join(line + "\n" for line in sources).encode("utf-8")
    result = invoke(["translate", "--model", cli_model, "--device", "cpu", "--beam", "1"], input=stdin)
    assert result.exit_code == 0, result.output
    outputs = result.stdout.split("\n")[:-1]
    assert len(outputs) == len(sources)
    assert "warning" not in result.stderr
    (one_piece,) = invoke(
        ["translate", "--model", cli_model, "--device", "cpu", "--beam", "1", "ein Hund läuft im Park,"]
    ).stdout.split("\n")[:-1]
    assert len(outputs[-1]) > 10 * len(one_piece)


@pytest.mark.slow
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


@pytest.fixture(scope="module")
def tiny_translator(tiny_model, tokenizers):
    return Translator(tiny_model(attention="luong", max_source_length=12, **TINY_MODEL), tokenizers)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.text(max_size=60), max_size=6), beam=st.integers(1, 3))
def test_any_unicode_input_gives_one_single_line_output_per_input(tiny_translator, lines, beam):
    outputs = tiny_translator.translate(lines, DecodeConfig(beam_size=beam, max_length_offset=3))
    assert len(outputs) == len(lines)
    assert all(isinstance(text, str) for text in outputs)
    for line, output in zip(lines, outputs):
        if not line.strip():
            assert output == ""


@pytest.mark.slow
def test_dash_means_standard_input(model):
    dash = run_mt("translate", "--model", model, "--beam", "1", "-", stdin="Der Hund ist rot .\n")
    piped = run_mt("translate", "--model", model, "--beam", "1", stdin="Der Hund ist rot .\n")
    assert dash.returncode == 0 and dash.stdout == piped.stdout and dash.stdout.count("\n") == 1


# -- streaming -----------------------------------------------------------------------------


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_line_that_is_not_utf8_stops_the_pipe_after_the_lines_before_it(model):
    stdin = b"Ein Hund.\n\n" + b"Ein M\xe4dchen.\n" + b"Eine Katze.\n"
    process = run_mt("translate", "-m", model, "--buffer-size", "1", stdin=stdin)
    assert_one_line_error(process.returncode, process.stderr.decode(), "standard input", "line 3", "UTF-8")
    assert process.stdout.decode().count("\n") == 2


# -- closed standard streams, and a terminal -----------------------------------------------


def in_shell(command: str, **options) -> subprocess.CompletedProcess:
    """A shell command line (for its redirections and pipes), text in and out."""
    return subprocess.run(command, shell=True, env=ENV, capture_output=True, text=True, **options)


@pytest.mark.slow
def test_translate_into_a_closed_pipe_exits_without_traceback(cli_model):
    """`mt translate < in | head -0`: the reader is gone before the first write."""
    process = start_mt("translate", "--model", cli_model, "--device", "cpu")
    process.stdout.close()  # before the child has even imported torch
    _, stderr = process.communicate("Ein Hund läuft.\n".encode() * 50, timeout=120)
    assert b"Traceback" not in stderr, stderr.decode()


@pytest.mark.slow
def test_a_closed_pipe_downstream_is_a_quiet_normal_end(model):
    lines = "".join("Der Hund ist rot .\n" for _ in range(3000))
    shell = in_shell(f"{' '.join(MT)} translate --model {model} --beam 1 | head -1", input=lines, timeout=300)
    assert shell.stderr == "" and len(shell.stdout.splitlines()) == 1


@pytest.mark.slow
def test_closed_stdin_and_stdout_give_no_traceback(model):
    for redirect in ("<&-", ">&-"):
        shell = in_shell(f"{' '.join(MT)} translate --model {model} {redirect}", timeout=180)
        assert "Traceback" not in shell.stderr, shell.stderr
        assert shell.returncode != 0 or redirect == "<&-"


@pytest.mark.slow
def test_translate_closed_stdin_is_a_one_line_error(model):
    shell = in_shell(f"{' '.join(MT)} translate --model {model} <&-", timeout=180)
    assert_one_line_error(shell.returncode, shell.stderr, "standard input is closed")


@pytest.mark.slow
def test_the_prompt_goes_to_stderr_and_ctrl_c_exits_130(model):
    import pty
    import signal

    controller, terminal = pty.openpty()  # stdin a terminal: the interactive prompt
    process = start_mt("translate", "--model", model, "--beam", "1", stdin=terminal)
    os.write(controller, b"Der Hund ist rot .\n")
    line = process.stdout.readline()  # waits for the translation, no fixed sleep
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    rest, stderr = process.communicate(timeout=30)
    os.close(controller), os.close(terminal)
    assert b"> " not in line + rest  # only translations on stdout
    assert b"> " in stderr and b"Traceback" not in stderr


# -- files ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_input_and_output_files_translate_line_by_line_and_report_progress(model, corpus_pairs, tmp_path):
    source = _write_lines(tmp_path / "in.de.gz", _sentences(corpus_pairs, 2500))
    target = tmp_path / "out" / "in.en"
    target.parent.mkdir()  # an output's directory must exist (test_mistakes.py)
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


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_leaves_no_output_file_and_an_old_one_untouched(model, corpus_pairs, tmp_path, stop, status):
    source = _write_lines(tmp_path / "in.de", _sentences(corpus_pairs, 200_000))
    target = tmp_path / "out.en"
    target.write_text("the previous translation\n")
    process = start_mt("translate", "-m", model, "--beam", "1", "--buffer-size", "100", "-i", source, "-o", target)
    try:
        first = process.stderr.readline().decode()  # the first progress line: translating is under way
        assert first.startswith("translated 1,000/200,000"), first
        process.send_signal(stop)
        assert process.wait(timeout=STARTUP_SECONDS) == status
    finally:
        process.kill()
        process.wait()
    rest = process.stderr.read().decode()
    assert "Traceback" not in rest and f"{target} was not written" in rest
    assert target.read_text() == "the previous translation\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.de", "out.en"]  # no temporary file left


# -- machine-readable output ---------------------------------------------------------------


@pytest.mark.slow
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


@pytest.mark.slow
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


# -- the model -----------------------------------------------------------------------------


@pytest.mark.slow
def test_translate_accepts_the_run_directory_holding_model_safetensors(cli_model, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(cli_model.read_bytes())
    result = invoke(["translate", "--model", tmp_path, "--device", "cpu", "Ein Hund läuft."])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1


def test_jsonl_escapes_every_character_a_reader_takes_for_a_line_end():
    from mt.config import OutputFormat
    from mt.streams import Formatter
    from mt.translator import Candidate

    source = "a\u2028b\u2029c\x85d\x1ce\x0bf\x0cg\rh"  # each ends a line for str.splitlines()
    line = Formatter(None, OutputFormat.jsonl)(0, source, [Candidate("x\u2028y", -1.0)])
    assert len(line.splitlines()) == 1 and line.endswith("\n")
    assert json.loads(line) == {"source": source, "translation": "x y", "score": -1.0}


def test_n_best_translations_are_distinct_strings_best_first(tiny_translator, tokenizers, monkeypatch):
    """Two subword paths can decode to one text (here one with a trailing padding piece,
    which decodes to nothing): the text counts once, at its best place."""
    from mt import translator as translator_module
    from mt.search import Hypothesis

    dog, cat = (tokenizers.target.encode([word])[0] for word in ("Hund", "Katze"))
    pad = tiny_translator.model.config.pad_id
    found = [Hypothesis(dog, -1.0), Hypothesis([*dog, pad], -2.0), Hypothesis(cat, -3.0), Hypothesis(dog, -4.0)]
    monkeypatch.setattr(translator_module, "search", lambda model, source, *args: [found] * source.size(0))
    (candidates,) = tiny_translator.translate_n_best(["Ein Hund."], DecodeConfig(beam_size=4), n_best=3)
    assert [(c.text, c.score) for c in candidates] == [("Hund", -1.0), ("Katze", -3.0)]
