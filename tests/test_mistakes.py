"""Mistakes a user makes at the command line, from an adversarial probe: each ends
with one `error:` line (or, for a closed pipe, quietly), never a traceback, and
never destroys a file. (The run-directory items are in test_runs.py.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import ENV, assert_one_line_error, mt_command, run_mt, start_mt
from safetensors import safe_open
from safetensors.torch import save
from typer.testing import CliRunner

from mt.cli import app
from mt.train import bf16_supported

MT = mt_command()


def invoke(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def in_shell(command: str, **options) -> subprocess.CompletedProcess:
    """A shell command line (for its redirections and pipes), text in and out."""
    return subprocess.run(command, shell=True, env=ENV, capture_output=True, text=True, **options)


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_checkpoint) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "model.safetensors")


@pytest.fixture
def texts(tmp_path, corpus_pairs) -> tuple[Path, Path]:
    src, ref = tmp_path / "src.de", tmp_path / "ref.en"
    src.write_text("".join(de + "\n" for de, _ in corpus_pairs[:5]))
    ref.write_text("".join(en + "\n" for _, en in corpus_pairs[:5]))
    return src, ref


# -- outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", [0, 1])
def test_evaluate_refuses_to_write_its_output_over_an_input(model, texts, which):
    before = texts[which].read_bytes()
    result = invoke(
        "evaluate", "--model", model, "--src", texts[0], "--ref", texts[1], "--output", texts[which], "--device", "cpu"
    )
    assert_one_line_error(result.exit_code, result.stderr, "destroy the input")
    assert texts[which].read_bytes() == before


def test_evaluate_refuses_a_device_a_fifo_and_dash_as_output_and_writes_through_a_symlink(model, texts, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for output in ("/dev/null", fifo, "-"):
        result = invoke(
            "evaluate", "--model", model, "--src", texts[0], "--ref", texts[1], "--output", output, "--device", "cpu"
        )
        assert_one_line_error(result.exit_code, result.stderr, "--output")
    assert Path("/dev/null").is_char_device() and fifo.is_fifo() and not Path("-").exists()
    target, link = tmp_path / "translations.txt", tmp_path / "link.txt"
    target.write_text("old\n")
    link.symlink_to(target)
    result = invoke(
        "evaluate", "--model", model, "--src", texts[0], "--ref", texts[1], "--output", link, "--device", "cpu"
    )
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and len(target.read_text().splitlines()) == 5


# -- options out of range ------------------------------------------------------------------


def test_a_beam_wider_than_the_bound_is_refused_and_the_bound_is_in_the_message(model):
    result = invoke("translate", "--model", model, "--beam", "100000", "Ein Hund.")
    assert_one_line_error(result.exit_code, result.stderr, "beam_size", "<= 100")


@pytest.mark.parametrize(
    "option",
    ["--lr", "--dropout", "--label-smoothing", "--lr-decay", "--max-minutes"],
)
def test_nan_is_refused_for_every_training_number(tmp_path, tokenizers, option):
    tokenizers.save(tmp_path / "tokenizer")
    result = invoke("train", "--output", tmp_path / "run", "--tokenizer", tmp_path / "tokenizer", option, "nan")
    assert_one_line_error(result.exit_code, result.stderr, "finite")
    assert not (tmp_path / "run").exists()


def test_nan_length_penalty_is_refused(model):
    result = invoke("translate", "--model", model, "--length-penalty", "nan", "Ein Hund.")
    assert_one_line_error(result.exit_code, result.stderr, "finite")


# -- tampered checkpoints --------------------------------------------------------------


def tampered(model: Path, tmp_path: Path, **changes) -> Path:
    """`model` with its header's config (or info) changed."""
    with safe_open(str(model), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    config = json.loads(metadata["model_config"])
    info = changes.pop("info", None)
    config.update(changes)
    metadata["model_config"] = json.dumps(config)
    if info is not None:
        metadata["info"] = info
    path = tmp_path / "tampered.safetensors"
    path.write_bytes(save(tensors, metadata=metadata))
    return path


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"hidden_size": 8.0}, "hidden_size must be of type int"),
        ({"pad_id": 99999}, "pad_id"),
        ({"eos_id": 99999}, "eos_id"),
        ({"info": "[1, 2]"}, "not a JSON object"),
        ({"hidden_size": 10_000_000}, "hidden_size"),
        ({"num_layers": 1_000_000_000}, "num_layers"),
        ({"hidden_size": 4096}, "does not fit its model config"),  # in range, but not what the weights are
    ],
)
def test_tampered_checkpoint_metadata_is_a_one_line_error_before_any_allocation(model, tmp_path, changes, fragment):
    path = tampered(model, tmp_path, **changes)
    result = invoke("translate", "--model", path, "Ein Hund.")
    assert_one_line_error(result.exit_code, result.stderr, fragment)


def test_a_fifo_as_model_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    process = run_mt("translate", "--model", fifo, "Ein Hund.")
    assert_one_line_error(process.returncode, process.stderr, "not a regular file")


def test_a_run_directory_as_model_points_to_its_best_checkpoint(model, tmp_path):
    (tmp_path / "best.safetensors").write_bytes(model.read_bytes())
    result = invoke("translate", "--model", tmp_path, "Ein Hund.")
    assert_one_line_error(result.exit_code, result.stderr, "best.safetensors")


# -- standard streams ------------------------------------------------------------------


def test_closed_stdin_and_stdout_give_no_traceback(model):
    for redirect in ("<&-", ">&-"):
        shell = in_shell(f"{' '.join(MT)} translate --model {model} {redirect}", timeout=180)
        assert "Traceback" not in shell.stderr, shell.stderr
        assert shell.returncode != 0 or redirect == "<&-"


def test_translate_closed_stdin_is_a_one_line_error(model):
    shell = in_shell(f"{' '.join(MT)} translate --model {model} <&-", timeout=180)
    assert_one_line_error(shell.returncode, shell.stderr, "standard input is closed")


def test_a_closed_pipe_downstream_is_a_quiet_normal_end(model):
    lines = "".join("Der Hund ist rot .\n" for _ in range(3000))
    shell = in_shell(f"{' '.join(MT)} translate --model {model} --beam 1 | head -1", input=lines, timeout=300)
    assert shell.stderr == "" and len(shell.stdout.splitlines()) == 1


def test_dash_means_standard_input(model):
    dash = run_mt("translate", "--model", model, "--beam", "1", "-", stdin="Der Hund ist rot .\n")
    piped = run_mt("translate", "--model", model, "--beam", "1", stdin="Der Hund ist rot .\n")
    assert dash.returncode == 0 and dash.stdout == piped.stdout and dash.stdout.count("\n") == 1


# -- click's own errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["translate", "--beam", "abc"], "--beam"),
        (["translate", "--no-such-option"], "--no-such-option"),
        (["evaluate", "--src", "/nonexistent/x", "--ref", "/nonexistent/y"], ""),
    ],
)
def test_click_usage_errors_are_one_error_line(arguments, fragment):
    process = run_mt(*arguments)
    assert_one_line_error(process.returncode, process.stderr, fragment)


def test_inspect_log_that_is_not_utf8_is_a_one_line_error(model, tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'\xff\xfe{"step": 1}\n')
    result = invoke("inspect", "--model", model, "--log", log, "--output", tmp_path / "inspect")
    assert_one_line_error(result.exit_code, result.stderr, "not valid UTF-8")


def test_inspect_sources_and_references_of_different_lengths_are_refused(model, texts, tmp_path):
    short = tmp_path / "short.en"
    short.write_text("The dog .\n")
    result = invoke("inspect", "--model", model, "--src", texts[0], "--ref", short, "--output", tmp_path / "inspect")
    assert_one_line_error(result.exit_code, result.stderr, "5 lines", "1")


@pytest.mark.skipif(bf16_supported(torch.device("cpu")), reason="this CPU has bf16 LSTM kernels")
def test_bf16_on_a_cpu_without_bf16_kernels_is_a_one_line_error(tmp_path, tokenizers, corpus_pairs):
    tokenizers.save(tmp_path / "tokenizer")
    prefix = tmp_path / "corpus"
    for index, language in enumerate(("de", "en")):
        (tmp_path / f"corpus.{language}").write_text("".join(pair[index] + "\n" for pair in corpus_pairs))
    result = invoke(
        "train", "--train", prefix, "--valid", prefix, "--tokenizer", tmp_path / "tokenizer",
        "--output", tmp_path / "run", "--bf16", "--device", "cpu", "--max-steps", "1",
    )  # fmt: skip
    assert result.exit_code != 0 and result.stderr.strip().splitlines()[-1].startswith("error: --bf16")


@pytest.mark.parametrize(
    ("options", "compiler", "message"),
    [
        ((), "g++", "this model has no attention"),
        (("--attention", "luong"), "/nonexistent/c++", "no C++ compiler"),
    ],
    ids=["no-attention", "no-compiler"],
)
def test_compile_where_it_cannot_work_is_a_one_line_error(
    tmp_path, tokenizers, corpus_pairs, options, compiler, message
):
    from torch._inductor import config as inductor_config

    tokenizers.save(tmp_path / "tokenizer")
    prefix = tmp_path / "corpus"
    for index, language in enumerate(("de", "en")):
        (tmp_path / f"corpus.{language}").write_text("".join(pair[index] + "\n" for pair in corpus_pairs))
    with inductor_config.patch({"cpp.cxx": (compiler,)}):  # the compilers torch.compile looks for
        result = invoke(
            "train", "--train", prefix, "--valid", prefix, "--tokenizer", tmp_path / "tokenizer",
            "--output", tmp_path / "run", "--compile", "--device", "cpu", "--max-steps", "1", *options,
        )  # fmt: skip
    last = result.stderr.strip().splitlines()[-1]  # after the line on the training data read
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    assert last.startswith("error: --compile") and message in last, last
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_an_unreachable_hub_is_one_line_at_once(tmp_path):
    with socket.socket() as probe:  # a port on 127.0.0.1 that nothing listens on
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = {**ENV, "HF_ENDPOINT": endpoint}
    env.pop("HF_HUB_OFFLINE"), env.pop("HF_DATASETS_OFFLINE")
    process = subprocess.run(
        [*MT, "train-tokenizer", "--train", "hf:someone/nothing", "--output", str(tmp_path / "tok")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert_one_line_error(process.returncode, process.stderr, "cannot reach the Hugging Face Hub", "HF_HUB_OFFLINE=1")


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
