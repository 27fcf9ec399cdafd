"""The lecture made measurable: gradient flow through time, gate statistics,
learning curves and attention maps.

Gradients and gates are read from the reference cells (`mt/cells.py`): a
model's weights are copied into a twin built with `cell_impl="reference"`,
which records every hidden state h_t, cell state C_t and gate activation of
the encoder; backpropagation through time then gives dLoss/dh_t for each step.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mt.cells import Trace
from mt.config import AttentionKind, Cell, CellImpl, ModelConfig, MTError, RunConfig, TrainConfig
from mt.data import Batch, collate
from mt.files import iter_lines, read_lines
from mt.model import Seq2Seq
from mt.tokenizer import TokenizerPair


def reference_twin(model: Seq2Seq) -> Seq2Seq:
    """The same model (same weights) built on the reference cells, in eval mode."""
    config = dataclasses.replace(model.config, cell_impl=CellImpl.reference)
    twin = Seq2Seq(config).to(next(model.parameters()).device)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


@dataclass(frozen=True)
class GradientFlow:
    """Mean norms of dLoss/dh_t (and dLoss/dC_t) of the encoder's top layer,
    indexed by distance from the last step it read (0 = the step nearest the decoder)."""

    hidden: list[float]
    cell: list[float] | None
    sentences: int

    @property
    def first_to_last_ratio(self) -> float:
        """|dL/dh| at the first source step read over that at the last one, on
        sentences long enough to have both (how much of the gradient survives)."""
        return self.hidden[-1] / self.hidden[0] if self.hidden and self.hidden[0] else float("nan")


def gradient_flow(model: Seq2Seq, batch: Batch, max_distance: int = 30) -> GradientFlow:
    """Backpropagate the teacher-forced loss of `batch` through time and
    measure the gradient reaching each encoder step.

    Only sentences with at least `max_distance + 1` source steps are used, so
    every distance averages over the same sentences (falls back to the
    longest available distance when the batch has no such sentence)."""
    twin = reference_twin(model)
    encoder_rnn = twin.encoder.rnn
    encoder_rnn.trace = Trace()
    logits, _ = twin(batch.source, batch.source_lengths, batch.target_in)
    key = f"l{twin.config.num_layers - 1}"  # top layer, the direction that reads the (reversed) source
    states = encoder_rnn.trace.hidden[key]
    cells = encoder_rnn.trace.cell.get(key)
    for tensor in [*states, *(cells or [])]:
        tensor.retain_grad()
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), batch.target_out.reshape(-1), ignore_index=twin.config.pad_id
    )
    loss.backward()
    encoder_rnn.trace = None

    lengths = batch.source_lengths.tolist()
    distance = min(max_distance, max(lengths) - 1)
    rows = [b for b, n in enumerate(lengths) if n > distance]

    def by_distance(tensors: list[torch.Tensor]) -> list[float]:
        means = []
        for d in range(distance + 1):
            norms = [float(tensors[lengths[b] - 1 - d].grad[b].norm()) for b in rows]
            means.append(sum(norms) / len(norms))
        return means

    return GradientFlow(by_distance(states), by_distance(cells) if cells else None, len(rows))


@torch.no_grad()
def gate_statistics(
    model: Seq2Seq, batch: Batch, low: float = 0.1, high: float = 0.9
) -> dict[str, dict[str, dict[str, float]]]:
    """Per encoder layer and gate: mean activation and the share saturated
    near 0 (< low) and near 1 (> high), over the real (unpadded) positions."""
    twin = reference_twin(model)
    twin.encoder.rnn.trace = Trace()
    twin.encode(batch.source, batch.source_lengths)
    trace = twin.encoder.rnn.trace
    twin.encoder.rnn.trace = None
    steps = batch.source.size(1)
    alive = (torch.arange(steps)[None, :] < batch.source_lengths.cpu()[:, None]).T  # (S, B)
    statistics: dict[str, dict[str, dict[str, float]]] = {}
    for layer, gates in trace.gates.items():
        statistics[layer] = {}
        for name, values in gates.items():
            stacked = torch.stack(values).cpu()  # (S, B, H)
            real = stacked[alive]  # (N, H)
            statistics[layer][name] = {
                "mean": float(real.mean()),
                "near_0": float((real < low).float().mean()),
                "near_1": float((real > high).float().mean()),
            }
    return statistics


def pair_batch(
    config: ModelConfig, tokenizers: TokenizerPair, sources: Sequence[str], references: Sequence[str]
) -> Batch:
    """One teacher-forcing batch of the non-empty sentence pairs."""
    pairs = [(s, t) for s, t in zip(tokenizers.source.encode(sources), tokenizers.target.encode(references)) if s and t]
    if not pairs:
        raise MTError("no sentence pairs to inspect")
    return collate([s for s, _ in pairs], [t for _, t in pairs], config.pad_id, config.bos_id, config.eos_id)


@dataclass(frozen=True)
class Inspection:
    """What `mt inspect` measures of one model on a set of sentence pairs."""

    flow: GradientFlow
    gates: dict[str, dict[str, dict[str, float]]] | None  # LSTMs only
    alignment: tuple[list[str], list[str], torch.Tensor] | None  # attention models only: pieces and weights (T, S)


def inspect_model(
    model: Seq2Seq,
    tokenizers: TokenizerPair,
    sources: Sequence[str],
    references: Sequence[str],
    max_distance: int,
    sentence: str | None = None,
) -> Inspection:
    """Gradient flow and gate statistics on the pairs, and the attention the
    model gives its beam-5 translation of `sentence` (default: the first source)."""
    from mt.config import DecodeConfig
    from mt.translator import Translator

    config = model.config
    batch = pair_batch(config, tokenizers, sources, references)
    flow = gradient_flow(model, batch, max_distance=max_distance)
    gates = gate_statistics(model, batch) if config.cell == Cell.lstm else None
    alignment = None
    if config.attention != AttentionKind.none:
        translator = Translator(model, tokenizers)
        text = sentence or sources[0]
        alignment = translator.alignment(text, translator.translate([text], DecodeConfig(beam_size=5))[0])
    return Inspection(flow, gates, alignment)


def short_names(paths: Sequence[Path]) -> list[str]:
    """Short names for files: the file or folder name, with its parent
    folder when two would otherwise read the same (runs/x/best, runs/y/best)."""
    names = [p.stem if p.suffix else p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.resolve().parent.name}/{name}" for p, name in zip(paths, names)]
    return names


def inspect_runs(
    models: Sequence[Path],
    src: Path | None,
    ref: Path | None,
    sentences: int,
    distance: int,
    logs: Sequence[Path],
    sentence: str | None,
    untrained: bool,
    output: Path,
    echo: Callable[[str], None] = print,
) -> dict:
    """`mt inspect`: for each model (and, with `untrained`, its freshly initialised twin)
    the gradient flow, gate statistics and attention heatmap on the first `sentences`
    pairs of `src`/`ref` (default: Multi30k val in the model's languages), told to `echo`
    line by line; the learning curves of the runs' `logs`. Writes the plots and
    inspect.json into `output`; returns inspect.json's record."""
    from mt.checkpoint import load_checkpoint

    if sentences < 1 or distance < 1:
        raise MTError(f"--sentences and --distance must be >= 1, got {sentences} and {distance}")
    runs = {label: read_log(path) for path, label in zip(logs, short_names(logs))}
    checkpoints = []
    for path, label in zip(models, short_names(models)):
        checkpoint = load_checkpoint(path)
        checkpoints.append((label, checkpoint))
        if untrained:
            torch.manual_seed(1)
            fresh = dataclasses.replace(checkpoint, model=Seq2Seq(checkpoint.model.config).eval())
            checkpoints.append((f"{label}, untrained", fresh))
    output.mkdir(parents=True, exist_ok=True)
    report: dict = {"models": {}}
    flows = {}
    for label, checkpoint in checkpoints:
        info = checkpoint.info
        source_path = src or Path(f"data/multi30k/val.{info.get('source_language', 'de')}.gz")
        reference_path = ref or Path(f"data/multi30k/val.{info.get('target_language', 'en')}.gz")
        sources, references = read_lines(source_path), read_lines(reference_path)
        if len(sources) != len(references):
            raise MTError(f"{source_path} has {len(sources)} lines but {reference_path} has {len(references)}")
        found = inspect_model(
            checkpoint.model, checkpoint.tokenizers, sources[:sentences], references[:sentences], distance, sentence
        )
        flows[f"{label} ({checkpoint.model.config.cell})"] = found.flow
        report["models"][label] = _tell_inspection(label, checkpoint.model.config, found, output, echo)
    plot_gradient_flow(flows, output / "gradient-flow.png")
    echo(f"gradient flow plot: {output / 'gradient-flow.png'}")
    if runs:
        plot_learning_curves(runs, output / "learning-curves.png")
        echo(f"learning curves: {output / 'learning-curves.png'}")
    (output / "inspect.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _tell_inspection(
    label: str, config: ModelConfig, found: Inspection, output: Path, echo: Callable[[str], None]
) -> dict:
    """Tell one model's inspection line by line (and plot its attention); returns its inspect.json record."""
    flow = found.flow
    echo(
        f"{label}: {config.cell}, attention {config.attention}; "
        f"|dL/dh_t| by steps before the last one read ({flow.sentences} sentences)"
    )
    for d in range(0, len(flow.hidden), max(1, len(flow.hidden) // 8)):
        cell = f"   |dL/dC| {flow.cell[d]:.3e}" if flow.cell else ""
        echo(f"  {d:>3}  |dL/dh| {flow.hidden[d]:.3e}{cell}")
    echo(f"  first/last step gradient ratio: {flow.first_to_last_ratio:.3e}")
    if found.gates:
        echo("  encoder gates: mean (share < 0.1 / share > 0.9)")
        for layer, values in found.gates.items():
            summary = "  ".join(f"{g} {v['mean']:.2f} ({v['near_0']:.0%}/{v['near_1']:.0%})" for g, v in values.items())
            echo(f"    {layer}: {summary}")
    if found.alignment:
        heatmap = output / ("attention-" + re.sub(r"[^\w.-]+", "-", label) + ".png")
        plot_attention(*found.alignment, heatmap)
        echo(f"  attention heatmap: {heatmap}")
    return {
        "cell": config.cell,
        "attention": config.attention,
        "gradient_flow": dataclasses.asdict(flow),
        "first_to_last": flow.first_to_last_ratio,
        "gates": found.gates,
    }


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_gradient_flow(flows: dict[str, GradientFlow], path: Path) -> None:
    """One curve of |dL/dh_t| per model, against distance from the last step read."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    for label, flow in flows.items():
        axis.plot(range(len(flow.hidden)), flow.hidden, marker="o", markersize=3, label=f"{label} |dL/dh|")
        if flow.cell:
            axis.plot(range(len(flow.cell)), flow.cell, linestyle="--", label=f"{label} |dL/dC|")
    axis.set_yscale("log")
    axis.set_xlabel("source steps before the last one read (distance in time)")
    axis.set_ylabel("gradient norm (log scale)")
    axis.set_title("Backpropagation through time: gradient reaching each encoder step")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def read_log(path: Path) -> list[dict]:
    """The validation records of a run's log.jsonl (one JSON object per line)."""
    records = []
    for number, line in enumerate(iter_lines(Path(path)), start=1):  # one-line errors for unreadable, non-UTF-8 files
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not (
            isinstance(record, dict)
            and {"step", "elapsed_seconds", "validation_loss", "validation_bleu"} <= record.keys()
        ):
            raise MTError(f"{path}: line {number} is not a validation record of mt train's log.jsonl")
        records.append(record)
    if not records:
        raise MTError(f"{path}: no validation records; pass the log.jsonl that mt train wrote")
    return records


def plot_learning_curves(runs: dict[str, Sequence[dict]], path: Path) -> None:
    """Validation loss and BLEU against updates and against wall-clock minutes,
    one curve per run."""
    plt = _pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(9, 6), sharey="row")
    for name, records in runs.items():
        steps = [r["step"] for r in records]
        minutes = [r["elapsed_seconds"] / 60 for r in records]
        for column, x in enumerate((steps, minutes)):
            axes[0][column].plot(x, [r["validation_loss"] for r in records], marker="o", markersize=3, label=name)
            axes[1][column].plot(x, [r["validation_bleu"] for r in records], marker="o", markersize=3, label=name)
    axes[1][0].set_xlabel("updates")
    axes[1][1].set_xlabel("minutes")
    axes[0][0].set_ylabel("validation loss")
    axes[1][0].set_ylabel("validation BLEU")
    axes[1][1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_attention(source: list[str], target: list[str], weights: torch.Tensor, path: Path) -> None:
    """A source-by-target heatmap of attention weights (T, S)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(0.45 * len(source) + 2, 0.4 * len(target) + 1.5))
    axis.imshow(weights.numpy(), cmap="Greys", vmin=0, vmax=1, aspect="auto")
    axis.set_xticks(range(len(source)), source, rotation=60, ha="right", fontsize=8)
    axis.set_yticks(range(len(target)), target, fontsize=8)
    axis.set_xlabel("source")
    axis.set_ylabel("translation")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def hidden_size_for_budget(config: ModelConfig, budget: int) -> int:
    """The even hidden size that brings a model of `config` closest to `budget` parameters."""

    def size(hidden: int) -> int:
        return Seq2Seq(dataclasses.replace(config, hidden_size=hidden)).num_parameters()

    return min(range(2, 4 * config.hidden_size + 2, 2), key=lambda h: abs(size(h) - budget))


def compare_cells(
    run: RunConfig,
    model: Mapping[str, Any],
    train_config: TrainConfig,
    device: torch.device,
    log: Callable[[str], None],
    reporter,
    cells: Sequence[Cell] = (Cell.rnn, Cell.gru, Cell.lstm),
) -> list[dict]:
    """Train one model per cell type with `mt.train.train` (`model`: ModelConfig fields
    but the vocabulary sizes), each with about the parameter count of the LSTM model
    and the same `train_config` (use `max_minutes` for equal wall time), each in its
    own directory under `run.run_dir`; measure each one. Returns one row per cell."""
    import time

    from mt.checkpoint import load_checkpoint
    from mt.config import DecodeConfig
    from mt.data import load_corpus
    from mt.train import model_to_train, train
    from mt.translator import Translator

    if train_config.max_minutes <= 0:  # the cells compete for equal wall time
        raise MTError(f"--minutes must be > 0, got {train_config.max_minutes}")
    tokenizers = TokenizerPair.load(run.tokenizer_dir)
    config = model_to_train(model, (), tokenizers, None)
    budget = Seq2Seq(dataclasses.replace(config, cell=Cell.lstm)).num_parameters()
    first = load_corpus(run.valid[0], run.src, run.tgt)  # speed and gradients on the first set
    sources, references = first["source"], first["target"]
    rows = []
    for cell in cells:
        hidden_size = hidden_size_for_budget(dataclasses.replace(config, cell=cell), budget)
        cell_run = dataclasses.replace(run, output=run.run_dir / cell, overwrite=True)
        cell_model = {**model, "cell": cell, "hidden_size": hidden_size}
        result = train(cell_run, cell_model, (), train_config, device, log, reporter)
        best = load_checkpoint(result.best, device)
        translator = Translator(best.model, best.tokenizers, device)
        started = time.perf_counter()
        translator.translate(sources, DecodeConfig(beam_size=1))
        seconds = time.perf_counter() - started
        batch = pair_batch(config, tokenizers, sources[:64], references[:64]).to(device)
        flow = gradient_flow(best.model, batch, max_distance=15)
        rows.append(
            {
                "cell": cell,
                "hidden_size": hidden_size,
                "parameters": best.model.num_parameters(),
                "tokens_per_second": round(result.state.train_tokens / max(result.state.train_seconds, 1e-9)),
                "updates": result.state.step,
                "validation_bleu": result.best_bleu,
                "sentences_per_second": round(len(sources) / seconds, 1),
                "gradient_first_to_last": flow.first_to_last_ratio,
                "gradient_flow": flow.hidden,
            }
        )
    return rows
