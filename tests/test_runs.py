"""Training runs through the CLI: several corpora, the run directory's rules
(resume, overwrite, one process at a time) and fine-tuning with --init-from."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mt.checkpoint import load_checkpoint, save_checkpoint
from mt.cli import app
from mt.data import CorpusSpec, TokenizedCorpus
from mt.train import RunDirectory

TINY = ["--embedding-size", "8", "--hidden-size", "8", "--layers", "1", "--batch-tokens", "400", "--device", "cpu"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


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
    return invoke("train", *corpora(setup), "--tokenizer", setup["tokenizer"], "--output", output, *TINY, *extra)


def unfinish(last: Path, **state_changes) -> None:
    """Make a finished run look interrupted (as Ctrl-C leaves it)."""
    checkpoint = load_checkpoint(last, with_extra=True)
    state = {**checkpoint.info["trainer_state"], "finished": False, **state_changes}
    save_checkpoint(
        last, checkpoint.model, checkpoint.tokenizers, {**checkpoint.info, "trainer_state": state}, checkpoint.extra
    )


# -- several corpora ---------------------------------------------------------------------


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


def test_tokenizer_trains_on_several_corpora(setup, tmp_path):
    result = invoke(
        "train-tokenizer",
        "--train",
        setup["big"],
        "--train",
        f"{setup['small']}:2",
        "--vocab-size",
        60,
        "--output",
        tmp_path / "tok",
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tok" / "source.model").is_file()


def test_an_interrupted_run_on_several_corpora_resumes(setup, tmp_path):
    run = tmp_path / "run"
    assert train(setup, run, "--max-steps", "2").exit_code == 0
    unfinish(run / "last.safetensors")
    resumed = train(setup, run, "--max-steps", "4")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.stderr and "max_steps 2 -> 4" in resumed.stderr
    assert load_checkpoint(run / "last.safetensors").info["trainer_state"]["step"] == 4


# -- the run directory ---------------------------------------------------------------------


def test_overwrite_with_a_missing_corpus_keeps_the_old_run(setup, tmp_path):
    run = tmp_path / "run"
    assert train(setup, run, "--max-steps", "1").exit_code == 0
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    result = invoke(
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
    )
    assert_error_is_the_last_line(result, "typo")
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


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
    unfinish(run / "last.safetensors", epoch=3)
    assert_error_is_the_last_line(train(setup, run, "--epochs", "2"), "3 epochs", "--epochs 2", "larger budget")


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
    unfinish(run / "last.safetensors")
    assert_error_is_the_last_line(train(setup, run, "--max-steps", "3", *change), fragment, "--overwrite")


def test_resuming_with_another_corpus_or_tokenizer_is_refused(setup, tmp_path, tokenizers, corpus_pairs):
    run = tmp_path / "run"
    assert train(setup, run, "--max-steps", "2").exit_code == 0
    unfinish(run / "last.safetensors")
    other_corpus = invoke(
        "train", "--train", setup["big"], "--valid", setup["valid_a"], "--valid", setup["valid_b"],
        "--tokenizer", setup["tokenizer"], "--output", run, *TINY, "--max-steps", "3",
    )  # fmt: skip
    assert_error_is_the_last_line(other_corpus, "other training corpora")
    from mt.tokenizer import TokenizerPair, train_sentencepiece

    texts = [text for pair in corpus_pairs for text in pair]
    other = train_sentencepiece(
        texts, vocab_size=tokenizers.source.vocab_size, model_type="bpe"
    )  # same size, other pieces
    assert other.model_proto != tokenizers.source.model_proto
    TokenizerPair(other, other).save(tmp_path / "other-tokenizer")
    result = invoke(
        "train",
        *corpora(setup),
        "--tokenizer",
        tmp_path / "other-tokenizer",
        "--output",
        run,
        *TINY,
        "--max-steps",
        "3",
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
    unfinish(run / "last.safetensors")
    with open(run / "log.jsonl", "a") as log:  # a validation logged after `last` was saved, then a kill
        log.write(json.dumps({"step": 3}) + "\n")
    (run / ".last.safetensors.abc123.tmp").write_bytes(b"half a checkpoint")
    assert train(setup, run, "--max-steps", "3", "--validate-every", "1").exit_code == 0
    assert not list(run.glob("*.tmp"))
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


# -- fine-tuning ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parent(setup):
    run = setup["root"] / "parent"
    result = train(setup, run, "--max-steps", "2", "--attention", "luong", "--hidden-size", "12")
    assert result.exit_code == 0, result.output
    return run / "best.safetensors"


def test_init_from_starts_with_the_parents_weights_and_tokenizer(setup, parent, tmp_path):
    result = invoke(
        "train", "--init-from", parent, "--train", setup["small"], "--valid", setup["valid_a"], "--output", tmp_path / "child",
        "--device", "cpu", "--max-steps", "1", "--lr", "1e-12", "--validate-every", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    before, after = load_checkpoint(parent), load_checkpoint(tmp_path / "child" / "last.safetensors")
    assert after.model.config == before.model.config
    assert after.tokenizers.source.model_proto == before.tokenizers.source.model_proto
    for name, tensor in before.model.state_dict().items():  # one step at lr 1e-12: the parent's weights
        assert torch.allclose(after.model.state_dict()[name], tensor, atol=1e-6), name
    record = after.info["init_from"]
    assert record["path"] == str(parent) and len(record["sha256"]) == 64 and record["step"] == 2


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
    assert_error_is_the_last_line(invoke(*base, "--hidden-size", "16"), "--hidden-size 16", "12")
    assert_error_is_the_last_line(invoke(*base, "--attention", "bahdanau"), "--attention bahdanau")
    assert_error_is_the_last_line(invoke(*base, "--tokenizer", setup["tokenizer"]), "--tokenizer", "--init-from")
    assert (
        invoke(*base, "--hidden-size", "12", "--dropout", "0.5", "--max-steps", "1").exit_code == 0
    )  # agreeing, or not architecture


def test_a_fine_tuning_run_resumes(setup, parent, tmp_path):
    base = fine_tune(setup, parent, tmp_path / "child")
    assert invoke(*base, "--max-steps", "1").exit_code == 0
    unfinish(tmp_path / "child" / "last.safetensors")
    resumed = invoke(*base, "--max-steps", "2")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.stderr
    assert load_checkpoint(tmp_path / "child" / "last.safetensors").info["trainer_state"]["step"] == 2
