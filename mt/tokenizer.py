"""SentencePiece subword tokenizers: training, loading, encoding, decoding.

A tokenizer lives as the serialized SentencePiece model (bytes), so that it
can travel inside a checkpoint. Ids follow one fixed layout for every model:
pad 0, unk 1, bos 2, eos 3.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from mt.config import MTError, SubwordModel

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


# SentencePiece's call for a list of texts sets up worker threads: about 60 us
# before the first text, against 4 us for one short sentence on its own. Lists
# shorter than this are encoded and decoded text by text.
BATCH_CALL_MIN = 32


class Tokenizer:
    """One SentencePiece model, loaded from its serialized bytes."""

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_proto)
        except Exception as error:  # sentencepiece raises bare RuntimeError / OSError
            raise MTError(f"not a SentencePiece model: {error}") from None
        if (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id()) != (
            PAD_ID,
            UNK_ID,
            BOS_ID,
            EOS_ID,
        ):
            raise MTError("SentencePiece model has other special ids than pad=0 unk=1 bos=2 eos=3; train it with mt")

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        try:
            return cls(Path(path).read_bytes())
        except OSError as error:
            raise MTError(f"cannot read tokenizer {path}: {error.strerror}") from None

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Subword ids of each text, without bos/eos."""
        texts = list(texts)
        if len(texts) < BATCH_CALL_MIN:
            return [self._sp.encode(text, out_type=int) for text in texts]
        return self._sp.encode(texts, out_type=int)

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        ids = [list(x) for x in ids]
        if len(ids) < BATCH_CALL_MIN:
            return [self._sp.decode(one) for one in ids]
        return self._sp.decode(ids)

    def pieces(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)


@dataclass(frozen=True)
class TokenizerPair:
    """The source and target tokenizers of one language pair (the same model when joint)."""

    source: Tokenizer
    target: Tokenizer

    @property
    def joint(self) -> bool:
        return self.source.model_proto == self.target.model_proto

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "source.model").write_bytes(self.source.model_proto)
        (directory / "target.model").write_bytes(self.target.model_proto)
        info = {"joint": self.joint, "source_vocab": self.source.vocab_size, "target_vocab": self.target.vocab_size}
        (directory / "tokenizer.json").write_text(json.dumps(info, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> TokenizerPair:
        directory = Path(directory)
        if not (directory / "source.model").is_file():
            raise MTError(
                f"no tokenizer in {directory} (expected source.model and target.model); run mt train-tokenizer"
            )
        return cls(Tokenizer.load(directory / "source.model"), Tokenizer.load(directory / "target.model"))


def train_sentencepiece(
    sentences: Iterable[str],
    *,
    vocab_size: int,
    model_type: SubwordModel | str = SubwordModel.unigram,
    character_coverage: float = 1.0,
    input_sentence_size: int = 2_000_000,
    seed: int = 1,
) -> Tokenizer:
    """Train one SentencePiece model on `sentences` and return it.

    Large corpora are sampled (`input_sentence_size`, shuffled) rather than
    read whole.
    """
    model_type = SubwordModel.parse("model type", model_type)
    spm.set_random_generator_seed(seed)
    proto = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=(s for s in sentences if s.strip()),
            model_writer=proto,
            vocab_size=vocab_size,
            model_type=model_type.value,
            character_coverage=character_coverage,
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            minloglevel=2,
        )
    except RuntimeError as error:
        message = str(error)
        too_high = re.search(r"Vocabulary size too high.*<= (\d+)", message)
        if too_high:
            raise MTError(
                f"vocabulary size {vocab_size} is larger than this corpus supports ({too_high.group(1)} at most); "
                "pass a smaller --vocab-size or a larger corpus"
            ) from None
        too_low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
        if too_low:
            raise MTError(
                f"vocabulary size {vocab_size} is smaller than the {too_low.group(1)} distinct characters of this corpus; "
                f"pass --vocab-size {too_low.group(1)} or more"
            ) from None
        raise MTError(f"SentencePiece training failed: {message.splitlines()[0] if message else error!r}") from None
    return Tokenizer(proto.getvalue())
