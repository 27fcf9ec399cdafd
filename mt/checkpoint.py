"""Checkpoints: one safetensors file that holds everything needed to translate.

Tensors: the model's weights, the SentencePiece models (as uint8 tensors
`tokenizer.source` / `tokenizer.target`; a joint one only as the first) and, in a run's `last` checkpoint,
the trainer's state (`trainer.*`). The safetensors header's string metadata
holds the format name and version, the model config and a JSON record of
how the model was made. Loading never unpickles anything, so a model file
cannot run code.

A checkpoint path may name the file or a directory holding `model.safetensors`.
Writes are atomic: a temporary file in the same directory, fsync, rename.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch.overrides import TorchFunctionMode

from mt.config import ModelConfig, MTError
from mt.files import write_atomic
from mt.model import Seq2Seq
from mt.tokenizer import Tokenizer, TokenizerPair

FORMAT = "mt-checkpoint"
FORMAT_VERSION = 1
FILENAME = "model.safetensors"


@dataclass
class Checkpoint:
    model: Seq2Seq
    tokenizers: TokenizerPair
    info: dict[str, Any]  # languages, versions, training record
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # trainer state, if any


def resolve(path: Path) -> Path:
    """The checkpoint file a user-given path names."""
    path = Path(path)
    if path.is_dir():
        if not (path / FILENAME).exists() and (path / "best.safetensors").exists():
            raise MTError(
                f"{path} is a training run, not a model; use {path / 'best.safetensors'} (or average its checkpoints)"
            )
        path = path / FILENAME
    if not path.exists():
        raise MTError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise MTError(f"{path} is not a regular file (a FIFO or device?); give a checkpoint file")
    return path


def unique_weights(model: Seq2Seq) -> dict[str, torch.Tensor]:
    """The model's state dict with each tied tensor kept once (under its first name)."""
    seen: set[int] = set()
    weights = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            weights[name] = tensor
    return weights


def save_checkpoint(
    path: Path,
    model: Seq2Seq,
    tokenizers: TokenizerPair,
    info: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Write a checkpoint file (and its directory); `dtype` (e.g. torch.float16) shrinks the stored weights."""
    tensors = {
        name: (t.to(dtype) if dtype is not None and t.is_floating_point() else t).detach().cpu().contiguous()
        for name, t in unique_weights(model).items()
    }
    sides = (
        (("source", tokenizers.source),)
        if tokenizers.joint
        else (("source", tokenizers.source), ("target", tokenizers.target))
    )
    for side, tokenizer in sides:  # a joint tokenizer is stored once
        tensors[f"tokenizer.{side}"] = torch.frombuffer(bytearray(tokenizer.model_proto), dtype=torch.uint8)
    tensors.update({name: t.detach().cpu().contiguous() for name, t in (extra or {}).items()})
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model_config": json.dumps(model.config.to_dict()),
        "info": json.dumps(info),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(Path(path), save(tensors, metadata=metadata))


@contextmanager
def _opened(path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    """The open safetensors file and its string metadata, checked to be an mt checkpoint."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise MTError(f"{path} is not an mt checkpoint")
            if metadata.get("format_version") != str(FORMAT_VERSION):
                raise MTError(
                    f"{path} has checkpoint format version {metadata.get('format_version')}; "
                    f"this mt reads version {FORMAT_VERSION}"
                )
            yield handle, metadata
    except (SafetensorError, OSError, ValueError) as error:
        raise MTError(f"{path} is not a readable checkpoint (truncated or corrupt?): {error}") from None


def _header(path: Path, metadata: dict[str, str]) -> tuple[ModelConfig, dict[str, Any]]:
    """The model config (validated by type and range) and the provenance record."""
    try:
        config = ModelConfig.from_dict(json.loads(metadata["model_config"]))
        info = json.loads(metadata.get("info", "{}"))
    except (KeyError, json.JSONDecodeError) as error:
        raise MTError(f"{path} is missing part of a checkpoint: {error}") from None
    except MTError as error:
        raise MTError(f"{path}: {error}") from None
    if not isinstance(info, dict):
        raise MTError(f"{path}: its info record is not a JSON object")
    _check_info(path, info)
    return config, info


def _check_info(path: Path, info: dict[str, Any]) -> None:
    """The fields of the info record that loading and translating read: the languages
    (the sentence splitter's, the server's directions) and the length limit of the pieces
    a long sentence is cut into (`train_config.max_length`)."""
    for key in ("source_language", "target_language"):
        value = info.get(key)
        if value is not None and not (isinstance(value, str) and 0 < len(value) <= 32):
            raise MTError(f"{path}: its {key} must be a language code, got {value!r}")
    train_config = info.get("train_config", {})
    if not isinstance(train_config, dict):
        raise MTError(f"{path}: its train_config is not a JSON object")
    max_length = train_config.get("max_length", 1)
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise MTError(f"{path}: its train_config.max_length must be a whole number >= 1, got {max_length!r}")


def read_info(path: Path) -> dict[str, Any]:
    """A checkpoint's provenance record, read from its header alone (no weights)."""
    path = resolve(path)
    with _opened(path) as (_, metadata):
        return _header(path, metadata)[1]


class _NoNormalInit(TorchFunctionMode):
    """Within the block, `normal_` (nn.Embedding's initialiser) returns its tensor
    untouched. On the meta device it would run torch's Python reference, whose first
    call imports torch._dynamo: 1.6-2 s of every cold start, for a tensor without values."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.nn.init.normal_, torch.Tensor.normal_):
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def load_checkpoint(path: Path, device: torch.device | str = "cpu", with_extra: bool = False) -> Checkpoint:
    """Load a checkpoint for inference (fp32 weights) or, `with_extra`, to resume training.

    The header is checked against the weights' shapes before the model is built,
    so a tampered config cannot make the loader allocate more than the file holds."""
    path = resolve(path)
    with _opened(path) as (handle, metadata):
        config, info = _header(path, metadata)
        # Shapes only, no memory.
        with torch.device("meta"), _NoNormalInit():
            expected_shapes = {name: tuple(t.shape) for name, t in Seq2Seq(config).state_dict().items()}
        for name in handle.keys():
            if not name.startswith(("tokenizer.", "trainer.")):
                shape = tuple(handle.get_slice(name).get_shape())
                if expected_shapes.get(name) != shape:
                    raise MTError(f"{path}: weight {name} of shape {shape} does not fit its model config")
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    try:
        source = Tokenizer(tensors.pop("tokenizer.source").numpy().tobytes())
        target = (
            Tokenizer(tensors.pop("tokenizer.target").numpy().tobytes()) if "tokenizer.target" in tensors else source
        )
        tokenizers = TokenizerPair(source, target)
    except KeyError as error:
        raise MTError(f"{path} is missing part of a checkpoint: {error}") from None
    if (tokenizers.source.vocab_size, tokenizers.target.vocab_size) != (config.src_vocab_size, config.tgt_vocab_size):
        raise MTError(f"{path}: its tokenizers do not match the model's vocabulary sizes")
    extra = {name: tensors.pop(name) for name in [n for n in tensors if n.startswith("trainer.")]}
    model = Seq2Seq(config)
    expected = unique_weights(model)
    if set(tensors) != set(expected):
        raise MTError(f"{path}: its weights do not match its model config")
    for name, tensor in tensors.items():
        expected[name].data.copy_(tensor.float() if tensor.is_floating_point() else tensor)
    model.to(device).eval()
    return Checkpoint(model, tokenizers, info, extra if with_extra else {})


def average_checkpoints(paths: list[Path]) -> Checkpoint:
    """The element-wise mean of the weights of several checkpoints of one model
    (e.g. the last few of a run), with the first one's tokenizers and record."""
    checkpoints = [load_checkpoint(path) for path in paths]
    first = checkpoints[0]
    for path, other in zip(paths[1:], checkpoints[1:]):
        if other.model.config != first.model.config:
            raise MTError(
                f"{path} has another model config than {paths[0]}; only checkpoints of one model can be averaged"
            )
    weights = [unique_weights(c.model) for c in checkpoints]
    with torch.no_grad():
        for name, tensor in weights[0].items():
            if tensor.is_floating_point():
                tensor.copy_(torch.stack([w[name] for w in weights]).mean(dim=0))
    if len(paths) > 1:
        first.info = {**first.info, "averaged": [str(p) for p in paths]}
    return first


def save_average(paths: list[Path], output: Path, fp16: bool) -> Path:
    """`mt average`: write the average of the checkpoints at `paths` (a model, without
    any trainer state) to `output`, a file or a directory; returns the file written."""
    target = output / FILENAME if output.is_dir() or not output.suffix else output
    for path in paths:
        if target.exists() and os.path.samefile(target, resolve(path)):
            raise MTError(f"--output {output} is the checkpoint {path}; writing it would destroy an input")
    averaged = average_checkpoints(paths)
    info = {key: value for key, value in averaged.info.items() if key not in ("trainer_state", "optimizer_groups")}
    save_checkpoint(target, averaged.model, averaged.tokenizers, info, dtype=torch.float16 if fp16 else None)
    return target


def check_directions(paths: list[Path], source_language: str | None, target_language: str | None) -> None:
    """Before any translating: every checkpoint at `paths` exists and translates from
    `source_language` into `target_language` where both it and the caller know them."""
    for path in paths:
        info = read_info(path)
        for side, theirs, mine in (
            ("from", info.get("source_language"), source_language),
            ("into", info.get("target_language"), target_language),
        ):
            if theirs and mine and theirs != mine:
                raise MTError(
                    f"{path} translates {side} {theirs!r}, but the files are in {mine!r} (by their names); "
                    "give the model of that direction"
                )
