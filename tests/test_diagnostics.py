"""The lecture's diagnostics produce finite numbers and real PNG files."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from mt.checkpoint import save_checkpoint
from mt.cli import app
from mt.config import ModelConfig
from mt.data import collate
from mt.diagnostics import gate_statistics, gradient_flow, hidden_size_for_budget, reference_twin
from mt.model import Seq2Seq

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_config(tokenizers, **overrides) -> ModelConfig:
    options = dict(embedding_size=16, hidden_size=24, num_layers=2, dropout=0.0)
    options.update(overrides)
    return ModelConfig(
        src_vocab_size=tokenizers.source.vocab_size, tgt_vocab_size=tokenizers.target.vocab_size, **options
    )


def batch_of(tokenizers, corpus_pairs, count=8):
    source = tokenizers.source.encode([s for s, _ in corpus_pairs[-count:]])
    target = tokenizers.target.encode([t for _, t in corpus_pairs[-count:]])
    return collate(source, target, 0, 2, 3)


@pytest.mark.parametrize("attention", ["none", "luong"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_reference_twin_computes_the_same_logits(tokenizers, corpus_pairs, cell, attention):
    torch.manual_seed(0)
    model = Seq2Seq(tiny_config(tokenizers, cell=cell, attention=attention, bidirectional=attention != "none")).eval()
    batch = batch_of(tokenizers, corpus_pairs)
    fused, _ = model(batch.source, batch.source_lengths, batch.target_in)
    reference, _ = reference_twin(model)(batch.source, batch.source_lengths, batch.target_in)
    torch.testing.assert_close(reference, fused, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_gradient_flow_gives_a_finite_norm_for_every_step(tokenizers, corpus_pairs, cell):
    torch.manual_seed(0)
    model = Seq2Seq(tiny_config(tokenizers, cell=cell))
    flow = gradient_flow(model, batch_of(tokenizers, corpus_pairs), max_distance=4)
    assert len(flow.hidden) == 5 and flow.sentences > 0
    assert all(math.isfinite(v) and v > 0 for v in flow.hidden)
    assert (flow.cell is not None) == (cell == "lstm")
    assert math.isfinite(flow.first_to_last_ratio)


def test_gate_statistics_are_shares_and_means_in_zero_one(tokenizers, corpus_pairs):
    torch.manual_seed(0)
    statistics = gate_statistics(Seq2Seq(tiny_config(tokenizers)), batch_of(tokenizers, corpus_pairs))
    assert set(statistics) == {"l0", "l1"}
    for gates in statistics.values():
        assert set(gates) == {"forget", "input", "output"}
        for values in gates.values():
            assert all(0.0 <= v <= 1.0 for v in values.values())


def test_equal_budget_hidden_size_brings_parameter_counts_close(tokenizers):
    lstm = tiny_config(tokenizers, hidden_size=32)
    budget = Seq2Seq(lstm).num_parameters()
    for cell in ("gru", "rnn"):
        config = tiny_config(tokenizers, cell=cell, hidden_size=32)
        hidden = hidden_size_for_budget(config, budget)
        assert hidden > 32  # cheaper cells get more units for the same budget
        assert (
            abs(Seq2Seq(tiny_config(tokenizers, cell=cell, hidden_size=hidden)).num_parameters() - budget)
            < 0.05 * budget
        )


def test_inspect_cli_writes_tables_and_valid_pngs(tokenizers, corpus_pairs, tmp_path):
    paths = []
    for cell, attention in (("rnn", "none"), ("lstm", "luong")):
        torch.manual_seed(0)
        path = tmp_path / f"{cell}.safetensors"
        save_checkpoint(path, Seq2Seq(tiny_config(tokenizers, cell=cell, attention=attention)), tokenizers, {})
        paths.append(path)
    src, ref = tmp_path / "val.de", tmp_path / "val.en"
    src.write_text("".join(s + "\n" for s, _ in corpus_pairs[:10]))
    ref.write_text("".join(t + "\n" for _, t in corpus_pairs[:10]))
    log = tmp_path / "log.jsonl"
    log.write_text(
        "".join(
            json.dumps({"step": s, "elapsed_seconds": 6.0 * s, "validation_loss": 3.0 / s, "validation_bleu": 2.0 * s})
            + "\n"
            for s in (1, 2, 3)
        )
    )
    output = tmp_path / "inspect"
    arguments = [
        "inspect",
        "--model",
        paths[0],
        "--model",
        paths[1],
        "--untrained",
        "--src",
        src,
        "--ref",
        ref,
        "--distance",
        "4",
        "--log",
        log,
        "--output",
        output,
    ]
    result = CliRunner().invoke(app, [str(a) for a in arguments])
    assert result.exit_code == 0, result.output
    assert "first/last step gradient ratio" in result.stdout and "forget" in result.stdout
    for name in ("gradient-flow.png", "learning-curves.png", "attention-lstm.png"):
        assert (output / name).read_bytes()[:8] == PNG_SIGNATURE, name
    report = json.loads((output / "inspect.json").read_text())
    assert set(report["models"]) == {"rnn", "lstm", "rnn, untrained", "lstm, untrained"}
    assert all(math.isfinite(v) for v in report["models"]["rnn"]["gradient_flow"]["hidden"])


def test_inspect_names_same_named_checkpoints_by_their_folders(tokenizers, corpus_pairs, tmp_path):
    src = tmp_path / "val.de"
    src.write_text("".join(s + "\n" for s, _ in corpus_pairs[:4]))
    for cell in ("rnn", "gru"):
        (tmp_path / cell).mkdir()
        save_checkpoint(
            tmp_path / cell / "best.safetensors", Seq2Seq(tiny_config(tokenizers, cell=cell)), tokenizers, {}
        )
    output = tmp_path / "inspect"
    arguments = ["inspect", "-m", tmp_path / "rnn" / "best.safetensors", "-m", tmp_path / "gru" / "best.safetensors"]
    result = CliRunner().invoke(
        app, [str(a) for a in arguments + ["--src", src, "--ref", src, "--distance", "2", "--output", output]]
    )
    assert result.exit_code == 0, result.output
    assert set(json.loads((output / "inspect.json").read_text())["models"]) == {"rnn/best", "gru/best"}


def test_compare_cli_trains_each_cell_and_prints_one_table(tokenizers, corpus_prefix, tmp_path):
    tokenizers.save(tmp_path / "tokenizer")
    arguments = [
        "compare", "--train", corpus_prefix, "--valid", corpus_prefix, "--tokenizer", tmp_path / "tokenizer",
        "--minutes", "0.02", "--embedding-size", "8", "--hidden-size", "12", "--layers", "1",
        "--batch-tokens", "200", "--validate-every", "5", "--output", tmp_path / "compare", "--device", "cpu",
    ]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in arguments])
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table[1:]] == ["rnn", "gru", "lstm"]
    rows = json.loads((tmp_path / "compare" / "compare.json").read_text())
    assert all(row["updates"] > 0 and math.isfinite(row["gradient_first_to_last"]) for row in rows)


def test_training_with_the_reference_cells_runs_through_the_cli(tokenizers, corpus_prefix, tmp_path):
    tokenizers.save(tmp_path / "tokenizer")
    arguments = [
        "train", "--train", corpus_prefix, "--valid", corpus_prefix, "--tokenizer", tmp_path / "tokenizer",
        "--cell-impl", "reference", "--embedding-size", "8", "--hidden-size", "12", "--layers", "1",
        "--batch-tokens", "200", "--max-steps", "3", "--output", tmp_path / "run", "--device", "cpu",
    ]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in arguments])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "best.safetensors").exists()


def test_inspect_rejects_a_log_that_is_not_a_training_log_before_any_work(tmp_path):
    log = tmp_path / "notes.jsonl"
    log.write_text('{"step": 1}\n')
    result = CliRunner().invoke(app, ["inspect", "--log", str(log), "--output", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "line 1 is not a validation record" in result.stderr
    assert not (tmp_path / "out").exists()
