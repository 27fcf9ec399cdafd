"""Where a training update of the attention recipe spends its time (torch.profiler, CPU).

Builds mt's trainer for the de-en attention recipe (Bahdanau attention,
bidirectional encoder, H 448, batches of 4,096 tokens of Multi30k), runs 3
warm-up updates, then profiles `--updates` more and prints milliseconds per
update for each part: the forward pass of the encoder, of the decoder's step
loop (its LSTM and attention inside it) and of the output layer with the loss
(which, since the chunked loss, also computes that layer's gradients), the
backward pass by the part that made each node, the optimizer and the data.

    python bench/profile_training.py --updates 10 [--bf16] [--compile]

With `--no-profile` it only times the updates (no profiler, no table): fixed work, the same
batches in every run, to compare two settings or two commits run alternately.

With `--compile` (`mt train --compile`) the decoder's LSTM and attention run inside
the compiled step: the profiler sees the step, not its parts, so their rows are empty.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from benchmark import ATTENTION_RECIPE  # noqa: E402  (the recipe make bench measures)


def _scoped(owner, name: str, label: str) -> None:
    """Run `owner.name` inside a profiler scope called `label`."""
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        with record_function(label):
            return original(*args, **kwargs)

    setattr(owner, name, wrapped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer-model", default="checkpoints/de-en")
    parser.add_argument("--train", default="data/multi30k/train")
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, as mt train --bf16")
    parser.add_argument("--compile", action="store_true", help="the decoder's step compiled, as mt train --compile")
    parser.add_argument("--no-profile", action="store_true", help="time the updates only")
    args = parser.parse_args()

    import datasets

    from mt import train
    from mt.checkpoint import load_checkpoint
    from mt.config import ModelConfig, TrainConfig
    from mt.data import load_corpus, make_batches, tokenize_corpus

    datasets.disable_progress_bars()
    tokenizers = load_checkpoint(ROOT / args.tokenizer_model).tokenizers
    config = TrainConfig(bf16=args.bf16, compile=args.compile)
    corpus = tokenize_corpus(load_corpus(str(ROOT / args.train), "de", "en"), tokenizers, config.max_length)
    vocabulary = (tokenizers.source.vocab_size, tokenizers.target.vocab_size)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = train.Trainer(
            ModelConfig(*vocabulary, **ATTENTION_RECIPE), config, tokenizers, corpus, {"none": ([], [])},
            Path(scratch), torch.device("cpu"), {},
        )  # fmt: skip
    trainer.model.train()
    if not args.no_profile:
        _scope_parts(trainer)
    batches = make_batches(corpus.lengths, config.batch_tokens, torch.Generator().manual_seed(1))
    for indices in batches[:3]:  # warm-up (with --compile, the compilation)
        trainer.train_step([indices])
    measured = batches[3 : 3 + args.updates]
    profiler = None if args.no_profile else profile(activities=[ProfilerActivity.CPU])
    started = time.perf_counter()
    with profiler or contextlib.nullcontext():
        for indices in measured:
            trainer.train_step([indices])
    _print_speed(corpus, measured, time.perf_counter() - started)
    if profiler is None:
        return

    scope, by_creator = _attribute(profiler.events())
    per_update = len(measured) * 1000  # microseconds -> milliseconds per update
    print("| part | forward ms | backward ms |\n|---|---|---|")
    for name in PARTS:
        if name != "backward":
            print(f"| {name} | {scope[name] / per_update:.0f} | {by_creator[name] / per_update:.0f} |")
    print(f"| (backward, all) | | {scope['backward'] / per_update:.0f} |")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40))


def _scope_parts(trainer) -> None:
    """Profiler scopes around each part of an update (PARTS)."""
    from mt import train

    model = trainer.model
    _scoped(model.encoder, "forward", "encoder")
    _scoped(model.decoder, "forward", "decoder loop")
    _scoped(model.decoder.rnn, "forward", "decoder loop: LSTM")
    _scoped(model.decoder.attention, "forward", "decoder loop: attention")
    _scoped(train, "output_loss", "output layer + loss")
    _scoped(train, "collate", "data")
    _scoped(trainer.optimizer, "step", "optimizer")
    _scoped(torch.nn.utils, "clip_grad_norm_", "optimizer")
    backward = torch.Tensor.backward

    def scoped_backward(tensor, *a, **k):
        with record_function("backward"):
            return backward(tensor, *a, **k)

    torch.Tensor.backward = scoped_backward


def _print_speed(corpus, measured: list, seconds: float) -> None:
    sources, targets = corpus.ids(torch.cat(list(measured)))
    tokens = sum(len(ids) + 1 for ids in sources) + sum(len(ids) + 1 for ids in targets)
    print(
        f"{len(measured)} updates, {seconds / len(measured) * 1000:.0f} ms per update, {tokens / seconds:,.0f} tokens/s"
    )


def _attribute(events) -> tuple[dict[str, float], dict[str, float]]:
    """The profile's microseconds per part (PARTS): forward, inclusive of what each part
    calls; and backward, by the part whose forward operation made each autograd node."""
    scope = collections.defaultdict(float)  # label -> microseconds, inclusive
    creator = {}  # autograd sequence number -> the scope whose forward op made the node
    for event in events:
        if event.name in PARTS:
            scope[event.name] += event.cpu_time_total
            continue
        parents, parent = [], event.cpu_parent
        while parent is not None:
            if parent.name in PARTS:
                parents.append(parent.name)
            parent = parent.cpu_parent
        if event.sequence_nr is not None and event.sequence_nr >= 0 and parents and "backward" not in parents:
            creator.setdefault(event.sequence_nr, parents[0])
    by_creator = collections.defaultdict(float)
    for event in events:
        if event.name.startswith("autograd::engine::evaluate_function"):
            by_creator[creator.get(event.sequence_nr, "other")] += event.cpu_time_total
    return scope, by_creator


PARTS = (
    "encoder",
    "decoder loop",
    "decoder loop: LSTM",
    "decoder loop: attention",
    "output layer + loss",
    "optimizer",
    "data",
    "backward",
)

if __name__ == "__main__":
    main()
