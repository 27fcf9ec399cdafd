"""Mistakes a user makes at the command line: each ends with one `error:` line
(click's own usage errors too), never a traceback, and never destroys a file.

Corpora and datasets, what is given as --model, options out of range, inputs and
outputs, devices and compilers. The run directory's rules (resume, overwrite, one
process at a time, --init-from) are in test_train_command.py, closed standard streams
in test_translate_command.py.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import (
    ENV,
    _assert_cli_error,
    _train_tiny,
    _write_gz,
    _write_lines,
    _write_pair,
    assert_one_line_error,
    invoke,
    mt_command,
    run_mt,
)
from safetensors import safe_open
from safetensors.torch import save

from mt.runtime import bf16_supported

MT = mt_command()


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_checkpoint) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "model.safetensors")


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory, tiny_checkpoint) -> Path:
    """The same without attention."""
    return tiny_checkpoint(tmp_path_factory.mktemp("plain-model") / "model.safetensors", attention="none")


@pytest.fixture
def texts(tmp_path, corpus_pairs) -> tuple[Path, Path]:
    src, ref = tmp_path / "src.de", tmp_path / "ref.en"
    src.write_text("".join(de + "\n" for de, _ in corpus_pairs[:5]))
    ref.write_text("".join(en + "\n" for _, en in corpus_pairs[:5]))
    return src, ref


def _assert_process_error(process: subprocess.CompletedProcess, *fragments: str) -> str:
    stdout = process.stdout.decode("utf-8")
    return assert_one_line_error(process.returncode, process.stderr.decode("utf-8"), *fragments, stdout=stdout)


# -- corpora and datasets ------------------------------------------------------------------


def test_missing_corpus_file_is_a_one_line_error(tmp_path):
    prefix = tmp_path / "nowhere" / "train"
    result = invoke(["train-tokenizer", "--train", prefix, "--vocab-size", 50, "--output", tmp_path / "tok"])
    _assert_cli_error(result, "file not found", f"{prefix}.de")


def test_missing_validation_corpus_is_a_one_line_error(cli_corpus, cli_tokenizer, tmp_path):
    assert cli_tokenizer.result.exit_code == 0
    result = invoke(
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
    result = invoke(["train-tokenizer", "--train", prefix, "--vocab-size", 50, "--output", tmp_path / "tok"])
    line = _assert_cli_error(result, "has 3 lines", "has 2")
    assert "bad.de" in line and "bad.en" in line


def test_empty_corpus_is_a_one_line_error(tmp_path):
    prefix = _write_pair(tmp_path / "empty", b"", b"")
    result = invoke(["train-tokenizer", "--train", prefix, "--vocab-size", 50, "--output", tmp_path / "tok"])
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
    result = invoke(["train-tokenizer", "--train", prefix, "--vocab-size", 50, "--output", tmp_path / "tok"])
    _assert_cli_error(result, "line 3", "UTF-8", "latin1.de")


def test_corrupt_gzip_corpus_is_a_one_line_error(tmp_path):
    prefix = _write_pair(tmp_path / "ok", ["Ein Hund."], ["A dog."])
    Path(f"{prefix}.de.gz").write_bytes(b"\x1f\x8b\x08\x00not really gzip data")
    result = invoke(["train-tokenizer", "--train", prefix, "--vocab-size", 50, "--output", tmp_path / "tok"])
    _assert_cli_error(result, "cannot read", "ok.de.gz")


def test_tsv_row_with_wrong_column_count_names_the_line(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("Ein Hund.\tA dog.\nEine Katze.\tA cat.\textra\n", encoding="utf-8")
    result = invoke(["train-tokenizer", "--train", path, "--vocab-size", 50, "--output", tmp_path / "tok"])
    _assert_cli_error(result, "line 2", "3 tab-separated columns")


def test_dataset_that_does_not_exist_is_a_one_line_error(tmp_path):
    result = invoke(
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
    result = invoke(
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


@pytest.mark.slow
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


def test_vocabulary_larger_than_the_corpus_supports_says_what_to_do(cli_corpus, tmp_path):
    result = invoke(
        ["train-tokenizer", "--train", cli_corpus.train, "--vocab-size", 50000, "--output", tmp_path / "tok"]
    )
    _assert_cli_error(result, "vocabulary size 50000", "--vocab-size")
    assert not (tmp_path / "tok").exists()


def test_train_accumulating_more_batches_than_an_epoch_has_is_a_one_line_error(cli_corpus, cli_tokenizer, tmp_path):
    assert cli_tokenizer.result.exit_code == 0
    result = _train_tiny(cli_corpus, cli_tokenizer.directory, tmp_path / "run", "--accumulate", 1000)
    assert result.exit_code == 1 and "Traceback" not in result.output
    last_line = result.stderr.strip().splitlines()[-1]  # after the reports on the corpus and the model
    assert last_line.startswith("error: ") and "fewer than one update takes (--accumulate 1000)" in last_line
    assert not (tmp_path / "run" / "last.safetensors").exists()


# -- what is given as --model --------------------------------------------------------------


def test_checkpoint_that_does_not_exist_is_a_one_line_error(tmp_path):
    missing = tmp_path / "no-such-run" / "best.safetensors"
    result = invoke(["translate", "--model", missing, "--device", "cpu", "Ein Hund."])
    _assert_cli_error(result, "checkpoint not found", str(missing))


def test_evaluate_with_missing_checkpoint_is_a_one_line_error(cli_corpus, tmp_path):
    result = invoke(
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


@pytest.mark.slow
def test_translate_missing_checkpoint_from_console_script_has_no_traceback(tmp_path):
    """The same check outside CliRunner: the real process, real stderr."""
    missing = tmp_path / "missing.safetensors"
    process = run_mt("translate", "--model", str(missing), "--device", "cpu", stdin=b"Ein Hund.\n")
    _assert_process_error(process, "checkpoint not found", str(missing))


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
    result = invoke(["translate", "--model", path, "--device", "cpu", "Ein Hund."])
    _assert_cli_error(result, str(path))


@pytest.mark.slow
def test_truncated_checkpoint_is_a_one_line_error(cli_model, tmp_path):
    data = cli_model.read_bytes()
    path = tmp_path / "model.safetensors"
    path.write_bytes(data[: len(data) // 2])
    result = invoke(["translate", "--model", path, "--device", "cpu", "Ein Hund."])
    _assert_cli_error(result, str(path))


@pytest.mark.slow
def test_checkpoint_of_another_format_version_is_a_one_line_error(cli_model, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(cli_model), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = {**handle.metadata(), "format_version": "999"}
    path = tmp_path / "future.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    result = invoke(["translate", "--model", path, "--device", "cpu", "Ein Hund."])
    _assert_cli_error(result, "format version 999")


@pytest.mark.slow
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
    result = invoke(["translate", "--model", path, "--device", "cpu", "Ein Hund."])
    _assert_cli_error(result, "tokenizers do not match")


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
    result = invoke(["translate", "--model", path, "Ein Hund."])
    assert_one_line_error(result.exit_code, result.stderr, fragment)


@pytest.mark.slow
def test_a_fifo_as_model_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    process = run_mt("translate", "--model", fifo, "Ein Hund.")
    assert_one_line_error(process.returncode, process.stderr, "not a regular file")


def test_a_run_directory_as_model_points_to_its_best_checkpoint(model, tmp_path):
    (tmp_path / "best.safetensors").write_bytes(model.read_bytes())
    result = invoke(["translate", "--model", tmp_path, "Ein Hund."])
    assert_one_line_error(result.exit_code, result.stderr, "best.safetensors")


# -- options out of range ------------------------------------------------------------------


def test_translate_beam_zero_names_the_valid_range(tmp_path):
    result = invoke(["translate", "--beam", "0", "--model", tmp_path / "whatever.safetensors", "Ein Hund."])
    _assert_cli_error(result, ">= 1", "got 0")


def test_a_beam_wider_than_the_bound_is_refused_and_the_bound_is_in_the_message(model):
    result = invoke(["translate", "--model", model, "--beam", "100000", "Ein Hund."])
    assert_one_line_error(result.exit_code, result.stderr, "beam_size", "<= 100")


def test_nan_length_penalty_is_refused(model):
    result = invoke(["translate", "--model", model, "--length-penalty", "nan", "Ein Hund."])
    assert_one_line_error(result.exit_code, result.stderr, "finite")


def test_train_dropout_out_of_range_names_the_valid_range(cli_corpus, cli_tokenizer, tmp_path):
    assert cli_tokenizer.result.exit_code == 0
    result = invoke(
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


@pytest.mark.parametrize("option", ["--hidden-size", "--embedding-size", "--layers", "--batch-tokens"])
def test_negative_sizes_name_the_valid_range(cli_corpus, cli_tokenizer, tmp_path, option):
    assert cli_tokenizer.result.exit_code == 0
    result = invoke(
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


@pytest.mark.parametrize(
    "option",
    ["--lr", "--dropout", "--label-smoothing", "--lr-decay", "--max-minutes"],
)
def test_nan_is_refused_for_every_training_number(tmp_path, tokenizers, option):
    tokenizers.save(tmp_path / "tokenizer")
    result = invoke(["train", "--output", tmp_path / "run", "--tokenizer", tmp_path / "tokenizer", option, "nan"])
    assert_one_line_error(result.exit_code, result.stderr, "finite")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
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


@pytest.mark.slow
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


# -- inputs and outputs --------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_rejects_sources_and_references_of_different_lengths(cli_corpus, cli_model, tmp_path):
    ref = _write_gz(tmp_path / "short.en.gz", ["A dog runs."])
    result = invoke(["evaluate", "--model", cli_model, "--src", cli_corpus.valid_src, "--ref", ref, "--device", "cpu"])
    _assert_cli_error(result, f"has {len(cli_corpus.valid_pairs)} lines", "has 1")


@pytest.mark.slow
def test_evaluate_empty_source_file_is_a_one_line_error(cli_model, tmp_path):
    src = _write_gz(tmp_path / "empty.de.gz", b"")
    ref = _write_gz(tmp_path / "empty.en.gz", b"")
    result = invoke(["evaluate", "--model", cli_model, "--src", src, "--ref", ref, "--device", "cpu"])
    _assert_cli_error(result, "empty")


def test_inspect_sources_and_references_of_different_lengths_are_refused(model, texts, tmp_path):
    short = tmp_path / "short.en"
    short.write_text("The dog .\n")
    result = invoke(["inspect", "--model", model, "--src", texts[0], "--ref", short, "--output", tmp_path / "inspect"])
    assert_one_line_error(result.exit_code, result.stderr, "5 lines", "1")


def test_inspect_log_that_is_not_utf8_is_a_one_line_error(model, tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'\xff\xfe{"step": 1}\n')
    result = invoke(["inspect", "--model", model, "--log", log, "--output", tmp_path / "inspect"])
    assert_one_line_error(result.exit_code, result.stderr, "not valid UTF-8")


@pytest.mark.parametrize("which", [0, 1])
def test_evaluate_refuses_to_write_its_output_over_an_input(model, texts, which):
    before = texts[which].read_bytes()
    result = invoke(
        [
            "evaluate",
            "--model",
            model,
            "--src",
            texts[0],
            "--ref",
            texts[1],
            "--output",
            texts[which],
            "--device",
            "cpu",
        ]
    )
    assert_one_line_error(result.exit_code, result.stderr, "destroy the input")
    assert texts[which].read_bytes() == before


@pytest.mark.slow
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


def test_evaluate_refuses_a_device_a_fifo_and_dash_as_output_and_writes_through_a_symlink(model, texts, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for output in ("/dev/null", fifo, "-"):
        result = invoke(
            ["evaluate", "--model", model, "--src", texts[0], "--ref", texts[1], "--output", output, "--device", "cpu"]
        )
        assert_one_line_error(result.exit_code, result.stderr, "--output")
    assert Path("/dev/null").is_char_device() and fifo.is_fifo() and not Path("-").exists()
    target, link = tmp_path / "translations.txt", tmp_path / "link.txt"
    target.write_text("old\n")
    link.symlink_to(target)
    result = invoke(
        ["evaluate", "--model", model, "--src", texts[0], "--ref", texts[1], "--output", link, "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and len(target.read_text().splitlines()) == 5


@pytest.mark.slow
def test_evaluate_output_that_is_a_directory_is_a_one_line_error(cli_corpus, cli_model, tmp_path):
    output = tmp_path / "translations"
    output.mkdir()
    result = invoke(
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


@pytest.mark.slow
def test_evaluate_output_of_several_models_is_refused(test_set, tmp_path):
    src, ref = test_set
    process = run_mt("evaluate", "--src", src, "--ref", ref, "-m", "a", "-m", "b", "--output", tmp_path / "out")
    assert_one_line_error(process.returncode, process.stderr, "--output", "one model")


def test_train_tokenizer_output_that_is_a_file_is_a_one_line_error(cli_corpus, tmp_path):
    output = tmp_path / "tokenizer"
    output.write_text("a file, not a directory\n")
    result = invoke(["train-tokenizer", "--train", cli_corpus.train, "--vocab-size", 60, "--output", output])
    _assert_cli_error(result, str(output))


def test_train_output_that_is_a_file_is_a_one_line_error(cli_corpus, cli_tokenizer, tmp_path):
    assert cli_tokenizer.result.exit_code == 0
    output = tmp_path / "run"
    output.write_text("a file, not a directory\n")
    result = _train_tiny(cli_corpus, cli_tokenizer.directory, output)
    _assert_cli_error(result, str(output))


# -- devices and compilers -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_device_cuda_without_cuda_is_a_one_line_error(cli_model):
    result = invoke(["translate", "--model", cli_model, "--device", "cuda", "Ein Hund."])
    _assert_cli_error(result, "--device cuda", "no CUDA device")


@pytest.mark.skipif(bf16_supported(torch.device("cpu")), reason="this CPU has bf16 LSTM kernels")
def test_bf16_on_a_cpu_without_bf16_kernels_is_a_one_line_error(tmp_path, tokenizers, corpus_pairs):
    tokenizers.save(tmp_path / "tokenizer")
    prefix = tmp_path / "corpus"
    for index, language in enumerate(("de", "en")):
        (tmp_path / f"corpus.{language}").write_text("".join(pair[index] + "\n" for pair in corpus_pairs))
    result = invoke(["train", "--train", prefix, "--valid", prefix, "--tokenizer", tmp_path / "tokenizer", "--output", tmp_path / "run", "--bf16", "--device", "cpu", "--max-steps", "1"])  # fmt: skip
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
        result = invoke(["train", "--train", prefix, "--valid", prefix, "--tokenizer", tmp_path / "tokenizer", "--output", tmp_path / "run", "--compile", "--device", "cpu", "--max-steps", "1", *options])  # fmt: skip
    last = result.stderr.strip().splitlines()[-1]  # after the line on the training data read
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    assert last.startswith("error: --compile") and message in last, last
    assert not (tmp_path / "run" / "last.safetensors").exists()


# -- what the third adversarial probe found: files, models and streams ---------------------


@pytest.mark.parametrize("alias", ["same", "symlink", "hardlink"])
def test_average_refuses_an_output_that_is_one_of_its_inputs(model, tmp_path, alias):
    first = tmp_path / "a.safetensors"
    first.write_bytes(model.read_bytes())
    output = {"same": first, "symlink": tmp_path / "link.safetensors", "hardlink": tmp_path / "hard.safetensors"}[alias]
    if alias == "symlink":
        output.symlink_to(first)
    elif alias == "hardlink":
        os.link(first, output)
    before = first.read_bytes()
    result = invoke(["average", model, first, "--output", output, "--fp16"])
    assert_one_line_error(result.exit_code, result.stderr, "would destroy an input")
    assert first.read_bytes() == before


def test_an_ensemble_of_two_directions_is_refused(tmp_path, tiny_checkpoint):
    de_en = tiny_checkpoint(tmp_path / "de-en.safetensors", source="de", target="en")
    en_de = tiny_checkpoint(tmp_path / "en-de.safetensors", source="en", target="de", seed=1)
    result = invoke(["translate", "-m", de_en, "-m", en_de, "--device", "cpu", "Ein Hund."])
    assert_one_line_error(result.exit_code, result.stderr, "en->de", "de->en", "one direction", stdout=result.stdout)


def test_evaluate_refuses_a_model_whose_direction_is_not_the_files(tmp_path, tiny_checkpoint, corpus_pairs):
    en_de = tiny_checkpoint(tmp_path / "en-de.safetensors", source="en", target="de")
    src = _write_lines(tmp_path / "test.de", [de for de, _ in corpus_pairs[:3]])
    ref = _write_lines(tmp_path / "test.en", [en for _, en in corpus_pairs[:3]])
    result = invoke(["evaluate", "-m", en_de, "--src", src, "--ref", ref, "--device", "cpu"])
    assert_one_line_error(result.exit_code, result.stderr, "translates from 'en'", "'de'", stdout=result.stdout)


def test_evaluate_checks_every_model_before_translating(model, texts, tmp_path, monkeypatch):
    from mt.translator import Translator

    translated = []
    monkeypatch.setattr(Translator, "translate", lambda self, *args, **kwargs: translated.append(1) or [])
    src, ref = texts
    missing = tmp_path / "missing.safetensors"
    result = invoke(["evaluate", "-m", model, "-m", missing, "--src", src, "--ref", ref, "--device", "cpu"])
    assert_one_line_error(result.exit_code, result.stderr, "checkpoint not found", str(missing), stdout=result.stdout)
    assert not translated


def test_an_undecodable_argument_is_a_one_line_error(model):
    process = subprocess.run(
        [*MT, "translate", "-m", str(model), "--device", "cpu", b"Hallo \xff Welt."],
        capture_output=True, env=ENV, timeout=120,
    )  # fmt: skip
    _assert_process_error(process, "argument 1 is not valid UTF-8")


def test_a_line_longer_than_the_limit_stops_with_an_error_naming_it(model):
    stdin = "Der Hund ist rot .\n" + "x" * 5000  # a last line without a line end, as from a stuck producer
    process = run_mt("translate", "-m", model, "--device", "cpu", "--max-line-bytes", "1000", stdin=stdin)
    assert process.returncode == 1 and "Traceback" not in process.stderr
    assert process.stderr.strip().splitlines()[-1] == (
        "error: standard input: line 2 is longer than 1,000 bytes (a stream without line ends?)"
    )
    assert len(process.stdout.splitlines()) == 1  # the line before it was translated


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("train_config", {"max_length": "abc"}, "max_length must be a whole number"),
        ("train_config", {"max_length": -5}, "max_length must be a whole number"),
        ("train_config", [1, 2], "train_config is not a JSON object"),
        ("source_language", 5, "source_language must be a language code"),
        ("target_language", "", "target_language must be a language code"),
    ],
)
def test_tampered_metadata_that_loading_reads_is_a_one_line_error(
    tmp_path, tiny_model, tokenizers, field, value, fragment
):
    from mt.checkpoint import save_checkpoint

    path = tmp_path / "tampered.safetensors"
    save_checkpoint(path, tiny_model(), tokenizers, {"source_language": "de", "target_language": "en", field: value})
    result = invoke(["translate", "-m", path, "--device", "cpu", "Ein Hund."])
    assert_one_line_error(result.exit_code, result.stderr, str(path), fragment, stdout=result.stdout)


@pytest.mark.parametrize("where", ["missing directory", "under a file"])
def test_an_output_whose_directory_is_missing_or_a_file_is_refused(model, tmp_path, where):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    output = tmp_path / "nowhere" / "out.txt" if where == "missing directory" else blocker / "out.txt"
    result = invoke(["translate", "-m", model, "--device", "cpu", "-o", output, "Ein Hund."])
    fragment = "does not exist" if where == "missing directory" else "is not a directory"
    assert_one_line_error(result.exit_code, result.stderr, fragment, stdout=result.stdout)
    assert not (tmp_path / "nowhere").exists()


def test_compile_of_a_parent_without_attention_is_refused_before_reading_the_corpus(plain_model, tmp_path):
    missing = tmp_path / "nowhere" / "train"  # read only after every option was checked
    result = invoke(["train", "--init-from", plain_model, "--compile", "--train", missing, "--valid", missing, "--output", tmp_path / "run", "--device", "cpu"])  # fmt: skip
    assert_one_line_error(result.exit_code, result.stderr, "--compile", "no attention")
