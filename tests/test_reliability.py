"""Training survives interruption, bad steps and bad input; results repeat bit for bit."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import start_mt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mt import checkpoint as checkpoint_module
from mt.checkpoint import load_checkpoint, save_checkpoint
from mt.config import DecodeConfig, ModelConfig, MTError, TrainConfig
from mt.data import TokenizedCorpus
from mt.model import Seq2Seq
from mt.train import Interrupted, Trainer, bf16_supported, compiler_found
from mt.translator import Translator

TINY = dict(embedding_size=16, hidden_size=24, num_layers=1, dropout=0.2)
ATTENTION = dict(attention="bahdanau", num_layers=2, bidirectional=True)  # dropout inside the decoder's step
needs_compiler = pytest.mark.skipif(not compiler_found(), reason="torch.compile finds no C++ compiler (g++)")


def make_trainer(tokenizers, corpus_pairs, output: Path, model: dict | None = None, **train_options) -> Trainer:
    sources = tokenizers.source.encode([s for s, _ in corpus_pairs])
    targets = tokenizers.target.encode([t for _, t in corpus_pairs])
    model_config = ModelConfig(
        src_vocab_size=tokenizers.source.vocab_size,
        tgt_vocab_size=tokenizers.target.vocab_size,
        **{**TINY, **(model or {})},
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


def test_same_seed_gives_bit_identical_weights(tokenizers, corpus_pairs, tmp_path):
    first = make_trainer(tokenizers, corpus_pairs, tmp_path / "a")
    first.run()
    second = make_trainer(tokenizers, corpus_pairs, tmp_path / "b")
    second.run()
    assert_same_weights(weights(first.model), weights(second.model))


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


def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tokenizers, make_model, tmp_path, monkeypatch):
    model = make_model(src_vocab_size=tokenizers.source.vocab_size, tgt_vocab_size=tokenizers.target.vocab_size)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, tokenizers, {"version": "old"})
    before = path.read_bytes()

    def crash(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(checkpoint_module.os, "replace", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, model, tokenizers, {"version": "new"})
    assert path.read_bytes() == before
    assert load_checkpoint(path).info == {"version": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temporary left behind


def test_a_checkpoint_whose_tokenizer_does_not_match_the_model_is_rejected(tokenizers, make_model, tmp_path):
    model = make_model(src_vocab_size=tokenizers.source.vocab_size + 5, tgt_vocab_size=tokenizers.target.vocab_size)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, tokenizers, {})
    with pytest.raises(MTError, match="tokenizers do not match"):
        load_checkpoint(path)


@pytest.fixture(scope="module")
def tiny_translator(tiny_model, tokenizers):
    return Translator(tiny_model(attention="luong", max_source_length=12, **TINY), tokenizers)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.text(max_size=60), max_size=6), beam=st.integers(1, 3))
def test_any_unicode_input_gives_one_single_line_output_per_input(tiny_translator, lines, beam):
    outputs = tiny_translator.translate(lines, DecodeConfig(beam_size=beam, max_length_offset=3))
    assert len(outputs) == len(lines)
    assert all(isinstance(text, str) for text in outputs)
    for line, output in zip(lines, outputs):
        if not line.strip():
            assert output == ""


# -- real processes: Ctrl-C and kill -9 during `mt train`, then resume ------------------------

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


@pytest.mark.skipif(
    not bf16_supported(torch.device("cpu")), reason="this CPU has no bf16 LSTM kernels (AVX512-BF16 or AMX)"
)
@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=needs_compiler)], ids=["eager", "compiled"])
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


@needs_compiler
def test_compiled_training_with_dropout_repeats_bit_for_bit(tokenizers, corpus_pairs, tmp_path):
    first = make_trainer(tokenizers, corpus_pairs, tmp_path / "a", model=ATTENTION, compile=True, max_steps=3)
    first.run()
    second = make_trainer(tokenizers, corpus_pairs, tmp_path / "b", model=ATTENTION, compile=True, max_steps=3)
    second.run()
    assert_same_weights(weights(first.model), weights(second.model))
