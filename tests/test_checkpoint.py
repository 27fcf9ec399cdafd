"""Checkpoints: round trips, fp16 storage, refusing broken or hostile files,
averaging (also through `mt average`); and the BLEU wrapper."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from helpers import invoke
from safetensors import safe_open
from safetensors.torch import save_file

from mt import files as files_module
from mt.checkpoint import FILENAME, average_checkpoints, load_checkpoint, save_checkpoint
from mt.config import DecodeConfig, ModelConfig, MTError
from mt.evaluate import score
from mt.model import Seq2Seq
from mt.tokenizer import TokenizerPair, train_sentencepiece
from mt.translator import Translator

INFO = {"source_language": "de", "target_language": "en"}


def tiny_model(vocab_size: int, seed: int = 0, **overrides) -> Seq2Seq:
    options = {"embedding_size": 16, "hidden_size": 24, "num_layers": 1, "dropout": 0.0, **overrides}
    torch.manual_seed(seed)
    return Seq2Seq(ModelConfig(src_vocab_size=vocab_size, tgt_vocab_size=vocab_size, **options)).eval()


@pytest.fixture
def model(tokenizers) -> Seq2Seq:
    return tiny_model(tokenizers.source.vocab_size, attention="bahdanau", bidirectional=True)


@pytest.fixture
def saved(tmp_path, model, tokenizers):
    path = tmp_path / "run" / FILENAME
    save_checkpoint(path, model, tokenizers, INFO)
    return path


def assert_same_weights(first: Seq2Seq, second: Seq2Seq) -> None:
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    for name in first_state:
        assert torch.equal(first_state[name], second_state[name]), name


def rewrite(source, destination, metadata_changes=None, drop=()):
    """Copy a checkpoint file with changed header metadata or without some tensors."""
    with safe_open(str(source), framework="pt") as handle:
        metadata = {**handle.metadata(), **(metadata_changes or {})}
        tensors = {name: handle.get_tensor(name) for name in handle.keys() if name not in drop}
    save_file(tensors, str(destination), metadata=metadata)


# -- round trips ---------------------------------------------------------------


def test_round_trip_gives_identical_weights_and_translations(saved, model, tokenizers, corpus_pairs):
    checkpoint = load_checkpoint(saved)
    assert checkpoint.model.config == model.config
    assert checkpoint.info == INFO
    assert not checkpoint.model.training
    assert_same_weights(checkpoint.model, model)
    assert checkpoint.tokenizers.source.model_proto == tokenizers.source.model_proto

    lines = [de for de, _ in corpus_pairs[::12]]
    for decode in (DecodeConfig(beam_size=1, max_length_offset=3), DecodeConfig(beam_size=3, max_length_offset=3)):
        expected = Translator(model, tokenizers).translate(lines, decode)
        assert Translator(checkpoint.model, checkpoint.tokenizers).translate(lines, decode) == expected


def test_checkpoint_directory_names_its_model_file(saved, model):
    assert_same_weights(load_checkpoint(saved.parent).model, model)


@pytest.mark.parametrize(
    "options",
    [
        {"cell": "gru", "attention": "luong", "tie_embeddings": False},
        {"cell": "rnn", "share_embeddings": True},
        {"cell": "lstm", "share_embeddings": True, "bidirectional": True, "num_layers": 2},
    ],
    ids=["gru-untied", "rnn-shared", "lstm-shared-bi"],
)
def test_round_trip_keeps_every_architecture(tmp_path, tokenizers, options):
    model = tiny_model(tokenizers.source.vocab_size, seed=3, **options)
    save_checkpoint(tmp_path / FILENAME, model, tokenizers, INFO)
    loaded = load_checkpoint(tmp_path).model
    assert loaded.config == model.config
    assert_same_weights(loaded, model)
    if options.get("share_embeddings"):
        assert loaded.encoder.embedding is loaded.decoder.embedding


def test_fp16_checkpoint_loads_as_fp32_close_to_the_original(tmp_path, model, tokenizers):
    path = tmp_path / FILENAME
    save_checkpoint(path, model, tokenizers, INFO, dtype=torch.float16)
    with safe_open(str(path), framework="pt") as handle:
        assert handle.get_tensor("decoder.readout.weight").dtype == torch.float16

    loaded = load_checkpoint(path).model
    original = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.allclose(tensor, original[name], rtol=1e-3, atol=1e-4), name


def test_joint_tokenizer_is_stored_once(saved, tokenizers):
    with safe_open(str(saved), framework="pt") as handle:
        names = set(handle.keys())
    assert "tokenizer.source" in names and "tokenizer.target" not in names
    loaded = load_checkpoint(saved).tokenizers
    assert loaded.joint
    assert loaded.target.model_proto == tokenizers.target.model_proto


def test_separate_tokenizers_are_both_stored(tmp_path, tokenizers, corpus_pairs):
    target = train_sentencepiece([en for _, en in corpus_pairs], vocab_size=50)
    pair = TokenizerPair(tokenizers.source, target)
    torch.manual_seed(0)
    config = ModelConfig(
        src_vocab_size=tokenizers.source.vocab_size,
        tgt_vocab_size=50,
        embedding_size=8,
        hidden_size=12,
        num_layers=1,
        dropout=0.0,
    )
    save_checkpoint(tmp_path / FILENAME, Seq2Seq(config), pair, INFO)
    loaded = load_checkpoint(tmp_path).tokenizers
    assert not loaded.joint
    assert loaded.source.model_proto == tokenizers.source.model_proto
    assert loaded.target.model_proto == target.model_proto


def test_trainer_state_is_loaded_only_when_asked(tmp_path, model, tokenizers):
    extra = {"trainer.rng.cpu": torch.get_rng_state(), "trainer.optimizer.0.step": torch.tensor(7.0)}
    save_checkpoint(tmp_path / FILENAME, model, tokenizers, INFO, extra=extra)
    assert load_checkpoint(tmp_path).extra == {}
    loaded = load_checkpoint(tmp_path, with_extra=True).extra
    assert loaded.keys() == extra.keys()
    assert all(torch.equal(loaded[name], extra[name]) for name in extra)


def test_saving_replaces_an_existing_checkpoint_and_leaves_no_temporary_files(tmp_path, tokenizers):
    path = tmp_path / FILENAME
    vocab = tokenizers.source.vocab_size
    save_checkpoint(path, tiny_model(vocab, seed=1), tokenizers, INFO)
    second = tiny_model(vocab, seed=2)
    save_checkpoint(path, second, tokenizers, INFO)
    assert_same_weights(load_checkpoint(path).model, second)
    assert [p.name for p in tmp_path.iterdir()] == [FILENAME]


def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tokenizers, make_model, tmp_path, monkeypatch):
    model = make_model(src_vocab_size=tokenizers.source.vocab_size, tgt_vocab_size=tokenizers.target.vocab_size)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, tokenizers, {"version": "old"})
    before = path.read_bytes()

    def crash(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(files_module.os, "replace", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, model, tokenizers, {"version": "new"})
    assert path.read_bytes() == before
    assert load_checkpoint(path).info == {"version": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temporary left behind


# -- refusing what is not a checkpoint --------------------------------------------


def test_missing_checkpoint_is_an_error(tmp_path):
    with pytest.raises(MTError, match="not found"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    with pytest.raises(MTError, match="not found"):
        load_checkpoint(tmp_path)  # a directory without model.safetensors


@pytest.mark.parametrize("keep", [0.5, 0.99, 100, 4], ids=["half", "most", "into-header", "first-bytes"])
def test_truncated_checkpoint_is_an_error(tmp_path, saved, keep):
    data = saved.read_bytes()
    size = int(len(data) * keep) if isinstance(keep, float) else keep
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(data[:size])
    with pytest.raises(MTError, match="broken.safetensors"):
        load_checkpoint(broken)


@pytest.mark.parametrize(
    "content",
    [b"", b"this is a text file, not a model\n" * 20, bytes(range(256)) * 8],
    ids=["empty", "text", "binary"],
)
def test_plain_file_is_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "notes.safetensors"
    path.write_bytes(content)
    with pytest.raises(MTError):
        load_checkpoint(path)


def test_safetensors_file_of_another_program_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(MTError, match="not an mt checkpoint"):
        load_checkpoint(path)


def test_other_format_version_is_an_error(tmp_path, saved):
    path = tmp_path / "future.safetensors"
    rewrite(saved, path, {"format_version": "2"})
    with pytest.raises(MTError, match="version 2"):
        load_checkpoint(path)


def test_checkpoint_without_tokenizer_is_an_error(tmp_path, saved):
    path = tmp_path / "partial.safetensors"
    rewrite(saved, path, drop={"tokenizer.source"})
    with pytest.raises(MTError, match="missing"):
        load_checkpoint(path)


def test_weights_that_do_not_match_the_config_are_an_error(tmp_path, saved, model):
    path = tmp_path / "mismatch.safetensors"
    config = {**model.config.to_dict(), "hidden_size": 32}
    rewrite(saved, path, {"model_config": json.dumps(config)})
    with pytest.raises(MTError, match="shape|match"):
        load_checkpoint(path)


def test_checkpoint_with_an_invalid_config_is_an_error(tmp_path, saved, model):
    path = tmp_path / "bad-config.safetensors"
    rewrite(saved, path, {"model_config": json.dumps({**model.config.to_dict(), "cell": "transformer"})})
    with pytest.raises(MTError, match="cell"):
        load_checkpoint(path)


@pytest.mark.parametrize("config", ["null", "5", "[]", '"lstm"'])
def test_checkpoint_whose_config_is_not_a_json_object_is_an_error(tmp_path, saved, config):
    path = tmp_path / "odd-config.safetensors"
    rewrite(saved, path, {"model_config": config})
    with pytest.raises(MTError):
        load_checkpoint(path)


class WritesMarkerWhenUnpickled:
    """Unpickling this calls open(marker, "w"): code run by merely loading a file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_disguised_as_checkpoint_is_refused_without_running_it(tmp_path, writer):
    marker = tmp_path / "pwned"
    payload = {"model": WritesMarkerWhenUnpickled(str(marker))}
    # Make sure the payload really does run code when unpickled.
    pickle.loads(pickle.dumps(payload))
    assert marker.exists()
    marker.unlink()

    directory = tmp_path / "evil"
    directory.mkdir()
    if writer == "pickle":
        (directory / FILENAME).write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, directory / FILENAME)

    with pytest.raises(MTError):
        load_checkpoint(directory)
    assert not marker.exists()


def test_a_checkpoint_whose_tokenizer_does_not_match_the_model_is_rejected(tokenizers, make_model, tmp_path):
    model = make_model(src_vocab_size=tokenizers.source.vocab_size + 5, tgt_vocab_size=tokenizers.target.vocab_size)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, tokenizers, {})
    with pytest.raises(MTError, match="tokenizers do not match"):
        load_checkpoint(path)


# -- averaging -------------------------------------------------------------------


def test_average_of_two_checkpoints_is_the_mean_of_their_weights(tmp_path, tokenizers):
    vocab = tokenizers.source.vocab_size
    first, second = tiny_model(vocab, seed=1, attention="luong"), tiny_model(vocab, seed=2, attention="luong")
    paths = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    save_checkpoint(paths[0], first, tokenizers, {"step": 1})
    save_checkpoint(paths[1], second, tokenizers, {"step": 2})

    averaged = average_checkpoints(paths)

    first_state, second_state = first.state_dict(), second.state_dict()
    for name, tensor in averaged.model.state_dict().items():
        assert torch.allclose(tensor, (first_state[name] + second_state[name]) / 2, atol=1e-7), name
    assert averaged.info["step"] == 1
    assert averaged.info["averaged"] == [str(p) for p in paths]


def test_average_of_one_checkpoint_is_itself(saved, model):
    assert_same_weights(average_checkpoints([saved]).model, model)


def test_checkpoints_of_different_models_cannot_be_averaged(tmp_path, tokenizers):
    paths = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    vocab = tokenizers.source.vocab_size
    save_checkpoint(paths[0], tiny_model(vocab, cell="lstm"), tokenizers, INFO)
    save_checkpoint(paths[1], tiny_model(vocab, cell="gru"), tokenizers, INFO)
    with pytest.raises(MTError, match="another model config"):
        average_checkpoints(paths)


@pytest.mark.slow
def test_average_of_best_and_last_is_a_usable_checkpoint(cli_run, cli_model, tmp_path):
    output = tmp_path / "averaged"
    result = invoke(["average", cli_run.best, cli_run.last, "--output", output, "--fp16"])
    assert result.exit_code == 0, result.output
    target = output / "model.safetensors"
    assert str(target) in result.stderr
    translated = invoke(["translate", "--model", target, "--device", "cpu", "Ein Hund läuft."])
    assert translated.exit_code == 0, translated.output
    assert len(translated.stdout.splitlines()) == 1


# -- translating and scoring -----------------------------------------------------------------------


def test_identical_hypotheses_and_references_score_bleu_100(corpus_pairs):
    references = [en for _, en in corpus_pairs[:20]]
    result = score(references, references)
    assert result["bleu"] == 100.0
    assert result["bleu_lowercase"] == 100.0
    assert result["chrf"] == 100.0
    assert "nrefs:1" in result["bleu_signature"]


def test_unrelated_hypotheses_score_lower(corpus_pairs):
    references = [en for _, en in corpus_pairs[:20]]
    hypotheses = [en for _, en in corpus_pairs[40:60]]
    assert score(hypotheses, references)["bleu"] < 100.0
    assert score([h.upper() for h in references], references)["bleu_lowercase"] == 100.0


def test_translator_keeps_line_order_and_maps_empty_lines_to_empty(model, tokenizers, corpus_pairs):
    decode = DecodeConfig(beam_size=2, max_length_offset=3)
    translator = Translator(model, tokenizers, batch_tokens=30)  # several batches
    lines = [corpus_pairs[0][0], "", corpus_pairs[50][0], "   ", corpus_pairs[80][0], corpus_pairs[7][0]]
    translations = translator.translate(lines, decode)
    assert len(translations) == len(lines)
    assert translations[1] == translations[3] == ""
    for line, translation in zip(lines, translations):
        if line.strip():
            assert translator.translate([line], decode) == [translation]
