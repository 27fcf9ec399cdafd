"""Training: `mt train-tokenizer`, `mt train` and the Trainer behind them.

What a run writes and reports; several corpora; the run directory's rules (resume,
overwrite, one process at a time); fine-tuning with --init-from; interruption (the
Trainer stopped, and real `mt train` processes stopped by Ctrl-C, SIGTERM and kill -9,
then resumed); non-finite steps; bit-for-bit repeats; bf16 and --compile. Other
mistakes a user makes with these commands are in test_mistakes.py.
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY_MODEL, _assert_cli_error, _train_tiny, invoke, run_mt, start_mt

from mt.checkpoint import load_checkpoint, save_checkpoint
from mt.config import ModelConfig, MTError, TrainConfig
from mt.data import CorpusSpec, TokenizedCorpus, make_batches
from mt.model import Seq2Seq
from mt.run import RunDirectory
from mt.runtime import bf16_supported, compiler_found, for_inference
from mt.train import Interrupted, Trainer

TINY = ["--embedding-size", "8", "--hidden-size", "8", "--layers", "1", "--batch-tokens", "400", "--device", "cpu"]


ATTENTION = dict(attention="bahdanau", num_layers=2, bidirectional=True)  # dropout inside the decoder's step


needs_compiler = pytest.mark.skipif(not compiler_found(), reason="torch.compile finds no C++ compiler (g++)")


def assert_error_is_the_last_line(result, *fragments: str) -> None:
    """One `error:` line, the last on stderr (after what training had reported), no traceback."""
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def write_corpus(prefix: Path, pairs: list[tuple[str, str]]) -> str:
    for index, language in enumerate(("de", "en")):
        with gzip.open(f"{prefix}.{language}.gz", "wt", encoding="utf-8") as out:
            out.writelines(pair[index] + "\n" for pair in pairs)
    return str(prefix)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, corpus_pairs, tokenizers):
    root = tmp_path_factory.mktemp("runs")
    tokenizers.save(root / "tokenizer")
    return {
        "root": root,
        "tokenizer": root / "tokenizer",
        "big": write_corpus(root / "big", corpus_pairs[:60]),
        "small": write_corpus(root / "small", corpus_pairs[60:72]),
        "valid_a": write_corpus(root / "valid-a", corpus_pairs[72:78]),
        "valid_b": write_corpus(root / "valid-b", corpus_pairs[78:84]),
    }


def corpora(setup) -> list:
    """The two training corpora (the small one taken 3 times) and the two validation sets."""
    return [
        "--train",
        setup["big"],
        "--train",
        f"{setup['small']}:3",
        "--valid",
        setup["valid_a"],
        "--valid",
        setup["valid_b"],
    ]


def train(setup, output: Path, *extra):
    return invoke(["train", *corpora(setup), "--tokenizer", setup["tokenizer"], "--output", output, *TINY, *extra])


def edit_trainer_state(last: Path, **changes) -> None:
    """Change the trainer state saved in `last`, as if the run had left it so
    (`finished=False`: interrupted, as Ctrl-C leaves it)."""
    checkpoint = load_checkpoint(last, with_extra=True)
    state = {**checkpoint.info["trainer_state"], **changes}
    save_checkpoint(
        last, checkpoint.model, checkpoint.tokenizers, {**checkpoint.info, "trainer_state": state}, checkpoint.extra
    )


def make_trainer(tokenizers, corpus_pairs, output: Path, model: dict | None = None, **train_options) -> Trainer:
    sources = tokenizers.source.encode([s for s, _ in corpus_pairs])
    targets = tokenizers.target.encode([t for _, t in corpus_pairs])
    model_config = ModelConfig(
        src_vocab_size=tokenizers.source.vocab_size,
        tgt_vocab_size=tokenizers.target.vocab_size,
        **{**TINY_MODEL, **(model or {})},
    )
    options = dict(batch_tokens=200, max_steps=12, validate_every=4, seed=3, patience=0)
    options.update(train_options)
    validation = {"valid": ([s for s, _ in corpus_pairs[:6]], [t for _, t in corpus_pairs[:6]])}
    return Trainer(
        model_config,
        TrainConfig(**options),
        tokenizers,
        TokenizedCorpus.from_ids(sources, targets),
        validation,
        output,
        torch.device("cpu"),
        {},
    )


def weights(model: Seq2Seq) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# -- mt train-tokenizer --------------------------------------------------------------------


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
    result = invoke(
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


def test_train_tokenizer_learns_from_a_sample_of_max_sentences(cli_corpus, tmp_path):
    result = invoke(
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
        invoke(["train-tokenizer", "--train", cli_corpus.train, "--max-sentences", 100]), "--max-sentences", "> 100"
    )


def test_tokenizer_trains_on_several_corpora(setup, tmp_path):
    result = invoke(
        [
            "train-tokenizer",
            "--train",
            setup["big"],
            "--train",
            f"{setup['small']}:2",
            "--vocab-size",
            60,
            "--output",
            tmp_path / "tok",
        ]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tok" / "source.model").is_file()


# -- what a run writes and reports ---------------------------------------------------------


@pytest.mark.slow
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


@pytest.mark.slow
def test_train_output_names_where_the_checkpoints_are(cli_run):
    """The closing lines name the best and last checkpoint files, each path whole on one line."""
    result = cli_run.result
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(str(cli_run.best) in line for line in lines), result.stderr
    assert any(str(cli_run.last) in line for line in lines), result.stderr


@pytest.mark.slow
def test_checkpoint_records_versions_seed_config_and_data_fingerprint(cli_run):
    from mt.checkpoint import load_checkpoint

    info = load_checkpoint(cli_run.best).info
    assert set(info["versions"]) >= {"mt", "torch", "sentencepiece", "sacrebleu"}
    assert info["seed"] == 7  # cli_run trains with --seed 7
    assert [corpus["fingerprint"][:7] for corpus in info["train_corpora"]] == ["sha256:"]
    assert info["train_config"]["max_steps"] == 200


def test_train_report_prints_a_run_directory_with_brackets_verbatim(cli_corpus, cli_tokenizer, tmp_path):
    """Square brackets are ordinary characters in a path, not rich markup."""
    assert cli_tokenizer.result.exit_code == 0
    output = tmp_path / "r[exp1]"
    result = _train_tiny(cli_corpus, cli_tokenizer.directory, output, env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    assert (output / "last.safetensors").is_file()
    assert str(output / "best.safetensors") in result.stderr
    assert str(output / "last.safetensors") in result.stderr


@pytest.mark.slow
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


def test_progress_eta_is_capped_by_the_time_budget():
    import time

    from rich.progress import Progress

    from mt.console import TimeLeftColumn

    progress = Progress(TimeLeftColumn(), get_time=time.monotonic)
    budgeted = progress.add_task("training", total=10**6, deadline=time.monotonic() + 90)
    progress.update(budgeted, completed=1)
    unbounded = progress.add_task("training", total=10**6)
    assert str(TimeLeftColumn().render(progress.tasks[budgeted])) in {"0:01:30", "0:01:29"}
    assert str(TimeLeftColumn().render(progress.tasks[unbounded])) == "-:--:--"


# -- several corpora -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec", "factor"),
    [
        ("data/x", "data/x", 1),
        ("data/x:3", "data/x", 3),
        ("hf:user/name@train", "hf:user/name@train", 1),
        ("hf:a/b:2", "hf:a/b", 2),
    ],
)
def test_corpus_spec_reads_an_upsampling_factor_after_the_last_colon(text, spec, factor):
    assert CorpusSpec.parse(text) == CorpusSpec(spec, factor)


def test_corpus_spec_refuses_a_factor_of_zero():
    with pytest.raises(Exception, match="factor"):
        CorpusSpec.parse("data/x:0")


def test_mixed_corpus_holds_each_corpus_as_often_as_its_factor():
    a = TokenizedCorpus.from_ids([[5, 6]], [[7]])
    b = TokenizedCorpus.from_ids([[8], [9, 9, 9]], [[10], [11]])
    mixed = TokenizedCorpus.mix([(a, 1), (b, 3)])
    assert len(mixed) == 1 + 2 * 3
    sources, _ = mixed.ids(torch.arange(len(mixed)))
    assert sources == [[5, 6], [8], [9, 9, 9], [8], [9, 9, 9], [8], [9, 9, 9]]
    assert mixed.lengths.tolist() == [3, 2, 4, 2, 4, 2, 4]


def test_training_on_several_corpora_reports_and_logs_every_validation_set(setup, tmp_path):
    result = train(setup, tmp_path / "run", "--max-steps", "2", "--validate-every", "1")
    assert result.exit_code == 0, result.output
    assert "taken 3 times per epoch" in result.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        sets = record["validation_sets"]
        assert list(sets) == [setup["valid_a"], setup["valid_b"]]
        assert record["validation_bleu"] == pytest.approx(sum(s["bleu"] for s in sets.values()) / 2, abs=0.01)
    info = load_checkpoint(tmp_path / "run" / "last.safetensors").info
    assert [(c["corpus"], c["factor"]) for c in info["train_corpora"]] == [(setup["big"], 1), (setup["small"], 3)]
    assert info["valid_corpora"] == [setup["valid_a"], setup["valid_b"]]


def test_an_interrupted_run_on_several_corpora_resumes(setup, tmp_path):
    run = tmp_path / "run"
    assert train(setup, run, "--max-steps", "2").exit_code == 0
    edit_trainer_state(run / "last.safetensors", finished=False)
    resumed = train(setup, run, "--max-steps", "4")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.stderr and "max_steps 2 -> 4" in resumed.stderr
    assert load_checkpoint(run / "last.safetensors").info["trainer_state"]["step"] == 4


# -- the run directory: overwrite, one process at a time, resume ---------------------------


def test_train_overwrite_starts_a_finished_run_afresh(cli_corpus, cli_tokenizer, tmp_path):
    assert cli_tokenizer.result.exit_code == 0
    output = tmp_path / "run"
    first = _train_tiny(cli_corpus, cli_tokenizer.directory, output)
    assert first.exit_code == 0, first.output
    refused = _train_tiny(cli_corpus, cli_tokenizer.directory, output)
    _assert_cli_error(refused, "nothing to train", "--overwrite")
    again = _train_tiny(cli_corpus, cli_tokenizer.directory, output, "--overwrite")
    assert again.exit_code == 0, again.output
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2]  # the old log went with the old run


def test_overwrite_with_a_missing_corpus_keeps_the_old_run(setup, tmp_path):
    run = tmp_path / "run"
    assert train(setup, run, "--max-steps", "1").exit_code == 0
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    result = invoke(
        [
            "train",
            "--train",
            tmp_path / "typo",
            "--valid",
            setup["valid_a"],
            "--tokenizer",
            setup["tokenizer"],
            "--output",
            run,
            *TINY,
            "--overwrite",
        ]
    )
    assert_error_is_the_last_line(result, "typo")
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


@pytest.mark.parametrize("output", ["new/run", "empty"])
def test_a_start_that_fails_before_training_leaves_nothing_behind(setup, tmp_path, output):
    (tmp_path / "empty").mkdir()
    result = invoke(
        ["train", "--train", tmp_path / "typo", "--valid", setup["valid_a"], "--tokenizer", setup["tokenizer"]]
        + ["--output", tmp_path / output, *TINY]
    )
    assert_error_is_the_last_line(result, "typo")
    assert list(tmp_path.rglob("*")) == [tmp_path / "empty"]


def test_overwrite_deletes_only_the_runs_own_files(setup, tmp_path):
    run = tmp_path / "run"
    assert train(setup, run, "--max-steps", "1", "--keep-checkpoints", "2", "--validate-every", "1").exit_code == 0
    (run / "model.safetensors").write_bytes(b"someone else's model")
    (run / "notes.txt").write_text("mine")
    assert train(setup, run, "--max-steps", "1", "--overwrite").exit_code == 0
    assert (run / "model.safetensors").read_bytes() == b"someone else's model"
    assert (run / "notes.txt").read_text() == "mine"


def test_a_second_training_process_on_the_same_run_is_refused(setup, tmp_path):
    run = tmp_path / "run"
    with RunDirectory(run).lock():  # as a running `mt train` holds it
        result = train(setup, run, "--max-steps", "1")
    assert_error_is_the_last_line(result, "another mt train", str(run))
    assert train(setup, run, "--max-steps", "1").exit_code == 0  # the lock went with its holder


def test_resuming_with_fewer_epochs_than_done_is_refused(setup, tmp_path):
    run = tmp_path / "run"
    assert train(setup, run, "--max-steps", "2").exit_code == 0
    edit_trainer_state(run / "last.safetensors", finished=False, epoch=3)
    assert_error_is_the_last_line(train(setup, run, "--epochs", "2"), "3 whole epochs", "--epochs 2", "larger budget")


def test_a_finished_run_trains_on_when_given_a_larger_budget(setup, tmp_path):
    run = tmp_path / "run"
    assert train(setup, run, "--max-steps", "2").exit_code == 0
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    refused = train(setup, run, "--max-steps", "2")
    assert_error_is_the_last_line(refused, str(run), "2 updates", "--max-steps 2", "larger budget", "--overwrite")
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before
    resumed = train(setup, run, "--max-steps", "4")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.stderr and "max_steps 2 -> 4" in resumed.stderr
    state = load_checkpoint(run / "last.safetensors").info["trainer_state"]
    assert state["step"] == 4 and state["finished"]
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [2, 4]


@pytest.mark.parametrize(
    ("stopped", "spent", "more", "fragments"),
    [
        (
            {"elapsed_seconds": 90.0},
            ["--max-minutes", "1"],
            ["--max-minutes", "10"],
            ["1.5 minutes", "--max-minutes 1"],
        ),
        ({"validations_without_gain": 2}, ["--patience", "2"], ["--patience", "0"], ["stopped early", "--patience 2"]),
    ],
)
def test_a_run_out_of_time_or_patience_trains_on_when_given_more(setup, tmp_path, stopped, spent, more, fragments):
    run = tmp_path / "run"
    assert train(setup, run, "--max-steps", "2").exit_code == 0
    edit_trainer_state(run / "last.safetensors", **stopped)  # as a run that stopped on it leaves it
    assert_error_is_the_last_line(train(setup, run, "--max-steps", "3", *spent), *fragments, "larger budget")
    resumed = train(setup, run, "--max-steps", "3", *more)
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(run / "last.safetensors").info["trainer_state"]["step"] == 3


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (["--lr", "0.01"], "learning_rate 0.001 (now 0.01)"),
        (["--label-smoothing", "0.2"], "label_smoothing"),
    ],
)
def test_resuming_with_another_recipe_is_refused(setup, tmp_path, change, fragment):
    run = tmp_path / "run"
    assert train(setup, run, "--max-steps", "2").exit_code == 0
    assert_error_is_the_last_line(train(setup, run, "--max-steps", "3", *change), fragment, "--overwrite")


def test_resuming_with_another_corpus_or_tokenizer_is_refused(setup, tmp_path, tokenizers, corpus_pairs):
    run = tmp_path / "run"
    assert train(setup, run, "--max-steps", "2").exit_code == 0
    other_corpus = invoke(["train", "--train", setup["big"], "--valid", setup["valid_a"], "--valid", setup["valid_b"], "--tokenizer", setup["tokenizer"], "--output", run, *TINY, "--max-steps", "3"])  # fmt: skip
    assert_error_is_the_last_line(other_corpus, "other training corpora")
    from mt.tokenizer import TokenizerPair, train_sentencepiece

    texts = [text for pair in corpus_pairs for text in pair]
    other = train_sentencepiece(
        texts, vocab_size=tokenizers.source.vocab_size, model_type="bpe"
    )  # same size, other pieces
    assert other.model_proto != tokenizers.source.model_proto
    TokenizerPair(other, other).save(tmp_path / "other-tokenizer")
    result = invoke(
        [
            "train",
            *corpora(setup),
            "--tokenizer",
            tmp_path / "other-tokenizer",
            "--output",
            run,
            *TINY,
            "--max-steps",
            "3",
        ]
    )
    assert_error_is_the_last_line(result, "another tokenizer")


def test_a_last_checkpoint_without_trainer_state_is_a_one_line_error(setup, tmp_path):
    run = tmp_path / "run"
    assert train(setup, run, "--max-steps", "1").exit_code == 0
    (run / "last.safetensors").write_bytes((run / "best.safetensors").read_bytes())  # "rolled back" by hand
    assert_error_is_the_last_line(train(setup, run, "--max-steps", "2"), "no trainer state", "--overwrite")


def test_resume_removes_a_killed_writes_leftovers_and_logs_each_validation_once(setup, tmp_path):
    run = tmp_path / "run"
    assert train(setup, run, "--max-steps", "2", "--validate-every", "1").exit_code == 0
    edit_trainer_state(run / "last.safetensors", finished=False)
    with open(run / "log.jsonl", "a") as log:  # a validation logged after `last` was saved, then a kill
        log.write(json.dumps({"step": 3}) + "\n")
    (run / ".last.safetensors.abc123.tmp").write_bytes(b"half a checkpoint")
    assert train(setup, run, "--max-steps", "3", "--validate-every", "1").exit_code == 0
    assert not list(run.glob("*.tmp"))
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


# -- interruption: the Trainer stopped, and `mt train` stopped by a signal, then resumed ----


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tokenizers, corpus_pairs, tmp_path):
    straight = make_trainer(tokenizers, corpus_pairs, tmp_path / "straight")
    straight.run()

    interrupted = make_trainer(tokenizers, corpus_pairs, tmp_path / "interrupted")
    step = interrupted.train_step

    def stop_after_six(batch):  # what Ctrl-C does, at a step that is not a validation step
        result = step(batch)
        if interrupted.state.step == 5:
            interrupted.signal_received = True
        return result

    interrupted.train_step = stop_after_six
    with pytest.raises(Interrupted):
        interrupted.run()
    assert load_checkpoint(interrupted.last_path, with_extra=True).info["trainer_state"]["step"] == 6

    resumed = make_trainer(tokenizers, corpus_pairs, tmp_path / "interrupted")
    resumed.resume()
    assert resumed.state.step == 6
    resumed.run()
    assert_same_weights(weights(straight.model), weights(resumed.model))
    assert resumed.state.best_bleu == straight.state.best_bleu


STEPS = 100  # the whole run; it is signalled once its first checkpoint (step 5) is written


def start_training(corpus_prefix: str, tokenizer_dir: Path, output: Path) -> subprocess.Popen:
    return start_mt(
        "train", "--train", corpus_prefix, "--valid", corpus_prefix, "--src", "de", "--tgt", "en",
        "--tokenizer", tokenizer_dir, "--output", output, "--device", "cpu",
        "--embedding-size", 16, "--hidden-size", 24, "--layers", 1, "--batch-tokens", 120,
        "--max-steps", STEPS, "--epochs", 1000, "--validate-every", 5, "--patience", 0,
        stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "training wrote no checkpoint in time"
        time.sleep(0.1)


@pytest.fixture
def tokenizer_dir(tokenizers, tmp_path) -> Path:
    tokenizers.save(tmp_path / "tokenizer")
    return tmp_path / "tokenizer"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "sigterm", "kill-9"])
def test_training_killed_mid_run_resumes_from_its_last_checkpoint(corpus_prefix, tokenizer_dir, tmp_path, sig):
    output = tmp_path / "run"
    process = start_training(corpus_prefix, tokenizer_dir, output)
    wait_for(output / "last.safetensors", process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    if sig != signal.SIGKILL:  # an orderly stop: the step finishes and `last` is saved
        assert process.returncode == 130
        assert "Resume with the same command" in stderr
        assert "Traceback" not in stderr
    else:
        assert process.returncode == -signal.SIGKILL
    interrupted_at = load_checkpoint(output / "last.safetensors", with_extra=True).info["trainer_state"]["step"]
    assert 0 < interrupted_at < STEPS

    resumed = start_training(corpus_prefix, tokenizer_dir, output)
    _, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr
    assert f"resuming {output} at step {interrupted_at}" in " ".join(stderr.split())
    state = load_checkpoint(output / "last.safetensors", with_extra=True).info["trainer_state"]
    assert state["finished"] and state["step"] == STEPS


# -- fine-tuning ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parent(setup):
    run = setup["root"] / "parent"
    result = train(setup, run, "--max-steps", "2", "--attention", "luong", "--hidden-size", "12")
    assert result.exit_code == 0, result.output
    return run / "best.safetensors"


def test_init_from_starts_with_the_parents_weights_and_tokenizer(setup, parent, tmp_path):
    result = invoke(["train", "--init-from", parent, "--train", setup["small"], "--valid", setup["valid_a"], "--output", tmp_path / "child", "--device", "cpu", "--max-steps", "1", "--lr", "1e-12", "--validate-every", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    before, after = load_checkpoint(parent), load_checkpoint(tmp_path / "child" / "last.safetensors")
    assert after.model.config == before.model.config
    assert after.tokenizers.source.model_proto == before.tokenizers.source.model_proto
    for name, tensor in before.model.state_dict().items():  # one step at lr 1e-12: the parent's weights
        assert torch.allclose(after.model.state_dict()[name], tensor, atol=1e-6), name
    record = after.info["init_from"]
    assert record["path"] == str(parent) and len(record["sha256"]) == 64 and record["step"] == 2


def test_init_from_with_a_larger_hidden_size_widens_the_parent(setup, parent, tmp_path):
    widen = ["train", "--init-from", parent, "--hidden-size", "16", "--train", setup["small"], "--valid", setup["valid_a"], "--output", tmp_path / "child", "--device", "cpu", "--lr", "1e-12", "--validate-every", "1"]  # fmt: skip
    result = invoke([*widen, "--max-steps", "1"])
    assert result.exit_code == 0, result.output
    assert f"widened {parent} from 12 to 16 hidden units" in " ".join(result.stderr.split())
    before, after = load_checkpoint(parent), load_checkpoint(tmp_path / "child" / "last.safetensors")
    assert after.model.config.hidden_size == 16 and before.model.config.hidden_size == 12
    source = torch.tensor([before.tokenizers.source.encode(["ein Hund läuft"])[0] + [3]])
    target_in = torch.tensor([[2, *before.tokenizers.target.encode(["a dog runs"])[0]]])
    lengths = torch.tensor([source.size(1)])
    # One step at lr 1e-12: the widened model still computes what its parent did.
    assert torch.allclose(
        after.model(source, lengths, target_in)[0], before.model(source, lengths, target_in)[0], atol=1e-4
    )
    resumed = invoke([*widen, "--max-steps", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.stderr and "widened" not in resumed.stderr  # it goes on from its own weights


def fine_tune(setup, parent: Path, output: Path) -> list:
    """`mt train --init-from PARENT` on the small corpus, without options of its own yet."""
    return [
        "train",
        "--init-from",
        parent,
        "--train",
        setup["small"],
        "--valid",
        setup["valid_a"],
        "--output",
        output,
        "--device",
        "cpu",
    ]


def test_init_from_refuses_architecture_options_that_disagree(setup, parent, tmp_path):
    base = fine_tune(setup, parent, tmp_path / "child")
    assert_error_is_the_last_line(invoke([*base, "--hidden-size", "8"]), "--hidden-size 8", "12", "narrowed")
    assert_error_is_the_last_line(invoke([*base, "--attention", "bahdanau"]), "--attention bahdanau")
    assert_error_is_the_last_line(invoke([*base, "--tokenizer", setup["tokenizer"]]), "--tokenizer", "--init-from")
    assert (
        invoke([*base, "--hidden-size", "12", "--dropout", "0.5", "--max-steps", "1"]).exit_code == 0
    )  # agreeing, or not architecture


def test_a_fine_tuning_run_resumes(setup, parent, tmp_path):
    base = fine_tune(setup, parent, tmp_path / "child")
    assert invoke([*base, "--max-steps", "1"]).exit_code == 0
    resumed = invoke([*base, "--max-steps", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.stderr
    assert load_checkpoint(tmp_path / "child" / "last.safetensors").info["trainer_state"]["step"] == 2


def test_a_fine_tuning_run_resumes_only_from_the_parent_it_started_from(setup, parent, tmp_path):
    base = fine_tune(setup, parent, tmp_path / "child")
    assert invoke([*base, "--max-steps", "1"]).exit_code == 0
    moved = tmp_path / "moved.safetensors"
    moved.write_bytes(parent.read_bytes())
    replaced = tmp_path / "replaced.safetensors"  # another model of the parent's kind (its own child)
    replaced.write_bytes((tmp_path / "child" / "best.safetensors").read_bytes())
    child = ["--train", setup["small"], "--valid", setup["valid_a"], "--output", tmp_path / "child", "--device", "cpu"]
    refused = invoke(["train", "--init-from", replaced, *child, "--max-steps", "2"])
    assert_error_is_the_last_line(refused, f"fine-tuned from {parent}", "another --init-from", "--overwrite")
    resumed = invoke(["train", "--init-from", moved, *child, "--max-steps", "2"])  # the same model, by content
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(tmp_path / "child" / "last.safetensors").info["init_from"]["path"] == str(moved)


# -- repeatability and bad steps -----------------------------------------------------------


def test_same_seed_gives_bit_identical_weights(tokenizers, corpus_pairs, tmp_path):
    first = make_trainer(tokenizers, corpus_pairs, tmp_path / "a")
    first.run()
    second = make_trainer(tokenizers, corpus_pairs, tmp_path / "b")
    second.run()
    assert_same_weights(weights(first.model), weights(second.model))


def test_validations_name_the_epoch_as_the_progress_line_counts_it(tokenizers, corpus_pairs, tmp_path):
    """Epochs count from 1, mid-epoch and at an epoch's end alike, in log.jsonl and on screen."""
    probe = make_trainer(tokenizers, corpus_pairs, tmp_path / "probe")
    per_epoch = len(make_batches(probe.corpus.lengths, probe.config.batch_tokens))
    for validate_every, expected in [(1, [1] * per_epoch + [2]), (0, [1, 2])]:
        run = tmp_path / f"every-{validate_every}"
        trainer = make_trainer(
            tokenizers, corpus_pairs, run, validate_every=validate_every, max_steps=per_epoch + 1, max_epochs=2
        )
        trainer.run()
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in records] == expected


def test_non_finite_steps_are_skipped_and_counted(tokenizers, corpus_pairs, tmp_path):
    trainer = make_trainer(tokenizers, corpus_pairs, tmp_path / "run", max_steps=6, validate_every=0, max_epochs=1)
    forward = trainer.model.forward
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        logits, attention = forward(*args, **kwargs)
        return (logits * float("nan"), attention) if calls["n"] in (2, 3) else (logits, attention)

    trainer.model.forward = poisoned
    trainer.run()
    assert trainer.state.skipped_steps == 2
    assert all(torch.isfinite(t).all() for t in trainer.model.state_dict().values())


def test_training_stops_with_a_clear_error_when_every_step_is_non_finite(tokenizers, corpus_pairs, tmp_path):
    trainer = make_trainer(tokenizers, corpus_pairs, tmp_path / "run", max_bad_steps=3)
    forward = trainer.model.forward
    trainer.model.forward = lambda *a, **k: (forward(*a, **k)[0] * float("nan"), None)
    with pytest.raises(MTError, match="diverged"):
        trainer.run()


# -- bf16 and --compile --------------------------------------------------------------------
# --compile builds C++ kernels (Inductor): 20-60 s a test on 2 cores, so those tests are slow.


def test_bf16_support_is_asked_of_the_training_lstm_whatever_ran_before():
    """Translation turns oneDNN off (`for_inference`), and torch's own LSTM runs bf16 on any CPU;
    training turns oneDNN back on, so the answer must not depend on what this process did before."""
    cpu, before = torch.device("cpu"), torch.backends.mkldnn.enabled
    try:
        torch.backends.mkldnn.enabled = True
        with_onednn = bf16_supported(cpu)
        for_inference()
        assert bf16_supported(cpu) == with_onednn
        assert not torch.backends.mkldnn.enabled  # the question changed nothing
    finally:
        torch.backends.mkldnn.enabled = before


@pytest.mark.skipif(
    not bf16_supported(torch.device("cpu")), reason="this CPU has no bf16 LSTM kernels (AVX512-BF16 or AMX)"
)
@pytest.mark.parametrize(
    "compiled", [False, pytest.param(True, marks=[needs_compiler, pytest.mark.slow])], ids=["eager", "compiled"]
)
def test_bf16_training_computes_in_bf16_keeps_fp32_weights_and_learns(tokenizers, corpus_pairs, tmp_path, compiled):
    trainer = make_trainer(
        tokenizers,
        corpus_pairs,
        tmp_path / "run",
        model=ATTENTION if compiled else None,
        bf16=True,
        compile=compiled,
        label_smoothing=0.0,
        learning_rate=0.01,
    )
    seen = []
    trainer.model.decoder.readout.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    batch = torch.arange(8)
    losses = [trainer.train_step([batch])[0] for _ in range(15)]
    assert set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert losses[-1] < 0.75 * losses[0], losses  # stale bf16 weights would repeat the first loss


@pytest.mark.slow
@needs_compiler
def test_the_compiled_decoder_step_trains_as_the_eager_one(tokenizers, corpus_pairs, tmp_path):
    """`--compile` changes how the attention decoder's step runs, not what it computes: the
    same losses and gradients (fp32, to float tolerance). Without dropout: the compiled
    LSTM draws its masks another way (`Decoder.compile_step`)."""
    model = {**ATTENTION, "dropout": 0.0}
    eager = make_trainer(tokenizers, corpus_pairs, tmp_path / "eager", model=model)
    compiled = make_trainer(tokenizers, corpus_pairs, tmp_path / "compiled", model=model, compile=True)
    compiled_step, calls = compiled.model.decoder.compiled_step, []
    compiled.model.decoder.compiled_step = lambda *args: calls.append(1) or compiled_step(*args)
    for update, batch in enumerate([torch.arange(8), torch.arange(8, 20), torch.arange(4, 10)]):
        expected, got = eager.train_step([batch]), compiled.train_step([batch])
        assert got[0] == pytest.approx(expected[0], rel=1e-5), update
        if update == 0:  # the same weights went in: the same gradients come out
            for (name, a), b in zip(eager.model.named_parameters(), compiled.model.parameters()):
                torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert calls  # the training steps went through the compiled step


@pytest.mark.slow
@needs_compiler
def test_compiled_training_with_dropout_repeats_bit_for_bit(tokenizers, corpus_pairs, tmp_path):
    first = make_trainer(tokenizers, corpus_pairs, tmp_path / "a", model=ATTENTION, compile=True, max_steps=3)
    first.run()
    second = make_trainer(tokenizers, corpus_pairs, tmp_path / "b", model=ATTENTION, compile=True, max_steps=3)
    second.run()
    assert_same_weights(weights(first.model), weights(second.model))
