"""The training loop: teacher forcing, Adam with gradient-norm clipping,
validation by BLEU, checkpoints that survive interruption.

A run lives in one output directory (`mt.run.RunDirectory`: what it holds,
who may use it, what --overwrite deletes).

Re-running the same command on the same directory resumes from `last`: the
model, the optimizer, the learning rate, the random state and the position
in the data, so that a resumed CPU run ends with the same weights as an
uninterrupted one.

An update is `workers * accumulate` consecutive batches of the epoch's
shuffled list: under torchrun each worker takes `accumulate` of them
(mt.distributed), and the loss is normalised by the update's target tokens
over all of them, so N workers compute the same update as one process that
accumulates N times as many batches. The position in the data counts
batches, so a run can resume with another number of workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mt import distributed, runtime
from mt.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from mt.config import AttentionKind, DecodeConfig, ModelConfig, MTError, RunConfig, TrainConfig
from mt.data import TokenizedCorpus, collate, make_batches, training_data
from mt.evaluate import score
from mt.files import write_atomic
from mt.loss import label_smoothed_loss, output_loss
from mt.model import Seq2Seq
from mt.run import RunDirectory, load_optimizer, optimizer_tensors, provenance
from mt.tokenizer import TokenizerPair
from mt.translator import Translator
from mt.widen import inherit_weights


@dataclass
class TrainerState:
    """Everything besides weights and optimizer moments that a resumed run needs."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # index of the next batch of `epoch` (in batches, not updates)
    learning_rate: float = 0.0
    best_bleu: float = -1.0
    validations_without_gain: int = 0
    validations_since_decay: int = 0
    skipped_steps: int = 0
    elapsed_seconds: float = 0.0  # wall time of the run so far, validation included
    train_seconds: float = 0.0  # time spent in training steps
    train_tokens: int = 0  # source + target tokens trained on, by all workers
    clipped_steps: int = 0  # updates whose gradient norm exceeded clip_norm (exploding gradients)
    gradient_norm_sum: float = 0.0  # since the last validation, for its mean
    gradient_norm_count: int = 0
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class TrainResult:
    best: Path
    last: Path
    best_bleu: float
    state: TrainerState


def check_compilable(model_config: ModelConfig) -> None:
    """Refuse `--compile` for a model without attention: it has no step loop to compile."""
    if model_config.attention == AttentionKind.none:
        raise MTError("--compile compiles the attention decoder's step loop; this model has no attention")


# TrainConfig fields a resumed run may change: the budget, the schedule of validations and
# checkpoints, and how the update is computed (workers x accumulate batches, bf16, compile).
RESUMABLE_CHANGES = {
    "max_epochs", "max_steps", "max_minutes", "patience", "validate_every", "validation_beam",
    "keep_checkpoints", "accumulate", "bf16", "compile",
}  # fmt: skip


class Interrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after saving `last` (a bare KeyboardInterrupt
    is a second Ctrl-C, or one before the training loop: nothing was saved)."""


class _StopOnSignal:
    """Turns Ctrl-C (SIGINT) and SIGTERM (how schedulers and torchrun ask a
    process to end) into `trainer.signal_received`: the trainer finishes its
    step, saves `last` and stops. A second Ctrl-C stops a single process at
    once; under torchrun, which passes each Ctrl-C on to the workers a second
    time, every signal asks for the orderly stop (the launcher kills a worker
    that takes too long)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}

    def _handle(self, signum, frame) -> None:
        if self.trainer.signal_received and signum == signal.SIGINT and self.trainer.workers.world_size == 1:
            raise KeyboardInterrupt
        self.trainer.signal_received = True

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


class Reporter:
    """What the trainer tells the outside world as it goes. This base class tells
    nothing; `mt.console.TrainingProgress` draws a progress bar and prints validations."""

    def started(self, total_steps: int, state: TrainerState, deadline: float | None) -> None:
        """Training starts (or resumes at `state.step`); `deadline`: time.monotonic() when the time budget ends."""

    def updated(self, state: TrainerState, loss_average: float) -> None:
        """An update was made (`state.step` counts it); `loss_average`: a running mean of the loss."""

    def validated(self, record: dict[str, Any]) -> None:
        """A validation finished; `record` is what log.jsonl gets."""


class Trainer:
    """Trains one model on one (possibly mixed) corpus and keeps its run directory.

    `model` is the Seq2Seq module; `network` is what the training steps call:
    the module itself, or its DistributedDataParallel wrapper under torchrun.
    `info` is the run's provenance, stored in every checkpoint.
    """

    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        tokenizers: TokenizerPair,
        corpus: TokenizedCorpus,
        validation: Mapping[str, tuple[Sequence[str], Sequence[str]]],
        output: Path,
        device: torch.device,
        info: dict[str, Any],
    ):
        self.model_config = model_config
        self.config = train_config
        self.tokenizers = tokenizers
        self.corpus = corpus
        self.validation = dict(validation)  # set name -> (sources, references)
        if not self.validation:
            raise MTError("training needs at least one validation set")
        self.output = Path(output)
        self.device = device
        self.info = info
        self.reporter = Reporter()
        self.workers = distributed.current()

        if train_config.compile:
            check_compilable(model_config)
        runtime.for_training(device, bf16=train_config.bf16, compile=train_config.compile)
        torch.manual_seed(train_config.seed)
        self.model = Seq2Seq(model_config).to(device)
        if train_config.compile:
            self.model.decoder.compile_step()
        # The module the training steps run: DDP averages the workers' gradients in backward.
        self.network = self.model
        if self.workers.world_size > 1:
            device_ids = [device.index] if device.type == "cuda" else None
            self.network = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        # One fused kernel for all parameters: 10 ms an update against 32 for torch's default
        # (foreach) Adam on 15 M parameters (Intel Xeon, 2 cores).
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train_config.learning_rate, fused=True)
        self.state = TrainerState(learning_rate=train_config.learning_rate)
        self._seed_worker()
        self.translator = Translator(self.model, tokenizers, device)
        self.validation_decode = DecodeConfig(beam_size=train_config.validation_beam)
        # Ctrl-C or SIGTERM sets `signal_received`; the workers then agree on `stop_requested`
        # (save `last` and stop) at the end of an update. A signal that arrives while they
        # agree stays received and is agreed on at the next update, never lost.
        self.signal_received = False
        self.stop_requested = False

    @property
    def last_path(self) -> Path:
        return RunDirectory(self.output).last

    @property
    def best_path(self) -> Path:
        return self.output / "best.safetensors"

    # -- checkpoints -------------------------------------------------------

    def _info(self) -> dict[str, Any]:
        return {
            **self.info,
            "train_config": self.config.to_dict(),
            "step": self.state.step,
            "epoch": self.state.epoch,
            "best_validation_bleu": self.state.best_bleu,
        }

    def _seed_worker(self) -> None:
        """Give each worker but the first its own random stream (dropout masks);
        the first keeps the stream a single-process run would have."""
        if self.workers.rank:
            torch.manual_seed(hash((self.config.seed, self.workers.rank, self.state.step)))

    def save_last(self) -> None:
        """Write `last` (the first worker only: the replicas are identical)."""
        if not self.workers.is_main:
            return
        moments, groups = optimizer_tensors(self.optimizer)
        extra = {**moments, "trainer.rng.cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            extra["trainer.rng.cuda"] = torch.cuda.get_rng_state()
        info = {**self._info(), "trainer_state": self.state.__dict__, "optimizer_groups": groups}
        save_checkpoint(self.last_path, self.model, self.tokenizers, info, extra)

    def resume(self) -> list[str]:
        """Continue from `last`. Refuses another architecture, tokenizer, training or
        validation corpora, --init-from model (its record would be wrong), or recipe; the
        budget and schedule (`RESUMABLE_CHANGES`) may change. Returns those changes, as
        "name old -> new"."""
        checkpoint = load_checkpoint(self.last_path, self.device, with_extra=True)
        advice = "resume with the options and files it started with, or pass --overwrite to start afresh"
        if checkpoint.model.config != self.model_config:
            raise MTError(f"{self.last_path} was trained with another model config; {advice}")
        mine = (self.tokenizers.source.model_proto, self.tokenizers.target.model_proto)
        if (checkpoint.tokenizers.source.model_proto, checkpoint.tokenizers.target.model_proto) != mine:
            raise MTError(f"{self.last_path} was trained with another tokenizer; {advice}")
        for key, what in (
            ("train_corpora", "training corpora (or their files changed)"),
            ("valid_corpora", "validation sets"),
        ):
            if key in checkpoint.info and key in self.info and checkpoint.info[key] != self.info[key]:
                raise MTError(f"{self.last_path} was trained on other {what}; {advice}")
        if "init_from" in checkpoint.info:  # a fine-tuning run's parent, compared by content
            started, now = checkpoint.info["init_from"], self.info.get("init_from")
            if (started or {}).get("sha256") != (now or {}).get("sha256"):
                was = f"fine-tuned from {started['path']}" if started else "trained without --init-from"
                raise MTError(f"{self.last_path} was {was}: another --init-from than now; {advice}")
        recorded, current = checkpoint.info.get("train_config", {}), self.config.to_dict()
        changed = sorted(key for key in current if key in recorded and recorded[key] != current[key])
        refused = [key for key in changed if key not in RESUMABLE_CHANGES]
        if refused:
            differences = ", ".join(f"{key} {recorded[key]} (now {current[key]})" for key in refused)
            raise MTError(f"{self.last_path} was trained with {differences}; {advice}")
        # `RunDirectory.check` has made sure that the budget leaves something to train.
        state = dataclasses.replace(TrainerState(**checkpoint.info["trainer_state"]), finished=False)
        self.model.load_state_dict(checkpoint.model.state_dict())
        load_optimizer(self.optimizer, checkpoint.extra, checkpoint.info["optimizer_groups"])
        self.state = state
        torch.set_rng_state(checkpoint.extra["trainer.rng.cpu"])
        if "trainer.rng.cuda" in checkpoint.extra and torch.cuda.is_available():
            torch.cuda.set_rng_state(checkpoint.extra["trainer.rng.cuda"])
        self._seed_worker()
        if self.workers.is_main:  # validations logged after `last` was saved are done again: log them once
            write_atomic(self.output / "log.jsonl", "".join(json.dumps(r) + "\n" for r in state.history).encode())
        return [f"{key} {recorded[key]} -> {current[key]}" for key in changed]

    # -- validation --------------------------------------------------------

    @torch.inference_mode()
    def validation_loss(self, sources: Sequence[str], references: Sequence[str]) -> float:
        """Mean cross-entropy per target token (no label smoothing) of one validation set."""
        self.model.eval()
        encoded_src = self.tokenizers.source.encode(sources)
        encoded_tgt = self.tokenizers.target.encode(references)
        model_config = self.model_config
        pairs = [(s[: model_config.max_source_length - 1], t) for s, t in zip(encoded_src, encoded_tgt) if s and t]
        total, tokens = 0.0, 0
        for batch_indices in make_batches([len(s) + len(t) for s, t in pairs], self.config.batch_tokens):
            chosen = [pairs[i] for i in batch_indices.tolist()]
            batch = collate(
                [s for s, _ in chosen],
                [t for _, t in chosen],
                model_config.pad_id,
                model_config.bos_id,
                model_config.eos_id,
            )
            count = batch.target_tokens
            batch = batch.to(self.device)
            logits, _ = self.model(batch.source, batch.source_lengths, batch.target_in)
            total += float(label_smoothed_loss(logits, batch.target_out, 0.0, model_config.pad_id)) * count
            tokens += count
        self.model.train()
        return total / max(tokens, 1)

    def validate(self) -> dict[str, Any]:
        """Validation loss and BLEU of every set, and their means: the mean BLEU
        selects the best checkpoint and drives the learning-rate decay."""
        per_set = {}
        for name, (sources, references) in self.validation.items():
            hypotheses = self.translator.translate(sources, self.validation_decode)
            per_set[name] = {
                "loss": round(self.validation_loss(sources, references), 4),
                "bleu": score(hypotheses, references)["bleu"],
            }
        bleu = round(sum(s["bleu"] for s in per_set.values()) / len(per_set), 2)
        state = self.state
        record = {
            "step": state.step,
            # Counted from 1 as the progress line counts: the epoch the validation falls in (at an
            # epoch's end, after `epoch` was advanced, the one just finished).
            "epoch": state.epoch + (state.batch_in_epoch > 0),
            "validation_loss": round(sum(s["loss"] for s in per_set.values()) / len(per_set), 4),
            "validation_bleu": bleu,
            "learning_rate": state.learning_rate,
            "elapsed_seconds": round(state.elapsed_seconds, 1),
            "tokens_per_second": round(state.train_tokens / max(state.train_seconds, 1e-9)),
            "mean_gradient_norm": round(state.gradient_norm_sum / max(state.gradient_norm_count, 1), 4),
            "clipped_steps": state.clipped_steps,
            "skipped_steps": state.skipped_steps,
        }
        if len(per_set) > 1:
            record["validation_sets"] = per_set
        if self.config.keep_checkpoints:
            self._save_numbered()
        if bleu > state.best_bleu:
            state.best_bleu = bleu
            state.validations_without_gain = state.validations_since_decay = 0
            save_checkpoint(self.best_path, self.model, self.tokenizers, self._info())
            record["best"] = True
        else:
            state.validations_without_gain += 1
            state.validations_since_decay += 1
            if state.validations_since_decay > self.config.lr_patience:  # reduce on plateau
                state.learning_rate *= self.config.lr_decay
                state.validations_since_decay = 0
        state.gradient_norm_sum, state.gradient_norm_count = 0.0, 0
        state.history.append(record)
        with open(self.output / "log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        return record

    def _save_numbered(self) -> None:
        """Keep the newest `keep_checkpoints` validation checkpoints (for `mt average`)."""
        save_checkpoint(
            self.output / f"step-{self.state.step:07d}.safetensors", self.model, self.tokenizers, self._info()
        )
        for old in sorted(self.output.glob("step-*.safetensors"))[: -self.config.keep_checkpoints]:
            old.unlink()

    # -- the loop ----------------------------------------------------------

    def _set_learning_rate(self) -> None:
        warmup = self.config.warmup_steps
        scale = min(1.0, (self.state.step + 1) / warmup) if warmup else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = self.state.learning_rate * scale

    def _exchange_gradients(self, now: bool):
        """DDP averages the gradients in backward; within an update that happens
        once, in the last batch's backward (no_sync for the ones before)."""
        return contextlib.nullcontext() if now or self.network is self.model else self.network.no_sync()

    def train_step(self, batches: Sequence[torch.Tensor]) -> tuple[float, int, float] | None:
        """One update on this worker's batches (each a tensor of corpus indices),
        together with the other workers' batches: (mean loss per target token,
        tokens, gradient norm before clipping) over all of them, or None when
        the update was skipped as non-finite (all workers agree: they see the
        same averaged gradient)."""
        model_config = self.model_config
        micro_batches = [
            collate(*self.corpus.ids(indices), model_config.pad_id, model_config.bos_id, model_config.eos_id)
            for indices in batches
        ]
        counts = torch.tensor(
            [[b.target_tokens, b.num_tokens] for b in micro_batches], dtype=torch.float64, device=self.device
        )
        target_tokens, tokens = distributed.sum_over_workers(counts.sum(dim=0)).tolist()
        self._set_learning_rate()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for number, batch in enumerate(micro_batches):
            batch = batch.to(self.device)
            # DDP averages gradients over workers: scale each batch's summed loss so
            # that the average is the mean over the update's target tokens.
            weight = batch.target_tokens * self.workers.world_size / target_tokens
            last = number == len(micro_batches) - 1
            # The autocast region must close every step: it caches the bf16 copies of the
            # weights, and a region spanning updates would keep computing with stale ones.
            with (
                self._exchange_gradients(last),
                torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16),
            ):
                features, _ = self.network(batch.source, batch.source_lengths, batch.target_in, features=True)
                smoothing = self.config.label_smoothing
                batch_loss = (
                    output_loss(self.model.decoder, features, batch.target_out, smoothing, model_config.pad_id) * weight
                )
            with self._exchange_gradients(last):
                batch_loss.backward()
            loss_sum += batch_loss.detach()
        loss = distributed.sum_over_workers(loss_sum).item() / self.workers.world_size
        # Gradient-norm clipping: the remedy for exploding gradients (Pascanu et al. 2013).
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_norm).item()
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        return loss, int(tokens), grad_norm

    def run(self, reporter: Reporter | None = None) -> TrainResult:
        """Train until the epoch, step or time budget is spent or early stopping
        says stop; raises `Interrupted` after saving `last` on Ctrl-C or SIGTERM."""
        self.reporter = reporter or Reporter()
        self.output.mkdir(parents=True, exist_ok=True)
        cfg, state = self.config, self.state
        per_update = self.workers.world_size * cfg.accumulate  # batches
        batches_per_epoch = len(make_batches(self.corpus.lengths, cfg.batch_tokens))
        if batches_per_epoch < per_update:
            workers = f" x {self.workers.world_size} workers" if self.workers.world_size > 1 else ""
            raise MTError(
                f"the corpus makes {batches_per_epoch} batches of --batch-tokens {cfg.batch_tokens}, fewer than one update "
                f"takes (--accumulate {cfg.accumulate}{workers}); lower --batch-tokens or --accumulate"
            )
        total_steps = cfg.max_steps or cfg.max_epochs * (batches_per_epoch // per_update)
        deadline = time.monotonic() + 60 * cfg.max_minutes - state.elapsed_seconds if cfg.max_minutes else None
        self.reporter.started(total_steps, state, deadline)
        self.model.train()
        self._run_start, self._elapsed_before = time.perf_counter(), state.elapsed_seconds
        self._consecutive_bad, self._loss_average = 0, None
        stop = False
        with _StopOnSignal(self):
            while state.epoch < cfg.max_epochs and not stop:
                stop = self._train_epoch(per_update)
        if not state.history or state.history[-1]["step"] != state.step:
            self._validate_and_report()
        state.finished = True
        self.save_last()
        return TrainResult(self.best_path, self.last_path, state.best_bleu, state)

    def _train_epoch(self, per_update: int) -> bool:
        """Train on what is left of the current epoch; True when training should stop."""
        cfg, state = self.config, self.state
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + state.epoch)
        batches = make_batches(self.corpus.lengths, cfg.batch_tokens, generator)
        stop = False
        # Batches left over after the last whole update of an epoch wait for the next shuffle.
        while state.batch_in_epoch + per_update <= len(batches) and not stop:
            mine = state.batch_in_epoch + self.workers.rank * cfg.accumulate
            stop = self._update(batches[mine : mine + cfg.accumulate], per_update)
            stop = self._agree_to_stop() or stop
        if self.stop_requested:
            self.save_last()
            raise Interrupted
        if state.batch_in_epoch + per_update > len(batches):
            state.epoch += 1
            state.batch_in_epoch = 0
            if not cfg.validate_every:
                stop = self._validate_and_report() or stop
        return stop

    def _update(self, batches: Sequence[torch.Tensor], per_update: int) -> bool:
        """One update and its bookkeeping; True when the validation it triggers says stop."""
        cfg, state = self.config, self.state
        started = time.perf_counter()
        result = self.train_step(batches)
        state.train_seconds += time.perf_counter() - started
        state.batch_in_epoch += per_update
        if result is None:
            state.skipped_steps += 1
            self._consecutive_bad += 1
            if self._consecutive_bad >= cfg.max_bad_steps:
                raise MTError(
                    f"training diverged: {self._consecutive_bad} steps in a row had a non-finite loss or "
                    "gradient; lower --lr or --clip-norm"
                )
            return False
        self._consecutive_bad = 0
        loss, tokens, grad_norm = result
        state.step += 1
        state.elapsed_seconds = self._elapsed_before + time.perf_counter() - self._run_start
        state.gradient_norm_sum += grad_norm
        state.gradient_norm_count += 1
        state.clipped_steps += grad_norm > cfg.clip_norm
        state.train_tokens += tokens
        self._loss_average = loss if self._loss_average is None else 0.98 * self._loss_average + 0.02 * loss
        self.reporter.updated(state, self._loss_average)
        return bool(cfg.validate_every and state.step % cfg.validate_every == 0) and self._validate_and_report()

    def _agree_to_stop(self) -> bool:
        """Whether to stop now: on Ctrl-C or at the end of the step or time budget
        of any worker (their clocks differ), so that all stop at the same update."""
        cfg = self.config
        out_of_budget = bool(cfg.max_steps and self.state.step >= cfg.max_steps) or bool(
            cfg.max_minutes and self.state.elapsed_seconds >= 60 * cfg.max_minutes
        )
        flags = torch.tensor([self.signal_received, out_of_budget], dtype=torch.int32, device=self.device)
        interrupted, out_of_budget = distributed.sum_over_workers(flags).tolist()
        self.stop_requested = bool(interrupted)
        return bool(interrupted or out_of_budget)

    def _validate_and_report(self) -> bool:
        """Validate on the first worker (save `last`, report) and share its verdict
        with the others; True when early stopping says stop."""
        if self.workers.is_main:
            record = self.validate()
            self.save_last()
            self.reporter.validated(record)
        # Best BLEU, learning rate, patience and history, as the first worker has them.
        vars(self.state).update(distributed.from_main(vars(self.state)))
        patience = self.config.patience
        return bool(patience) and self.state.validations_without_gain >= patience


# ModelConfig fields that make the architecture, and the `mt train` option that sets each.
ARCHITECTURE = {
    "embedding_size": "--embedding-size",
    "hidden_size": "--hidden-size",
    "num_layers": "--layers",
    "cell": "--cell",
    "attention": "--attention",
    "bidirectional": "--bidirectional",
    "reverse_source": "--reverse-source",
    "tie_embeddings": "--tie-embeddings",
    "share_embeddings": "--share-embeddings",
}


def model_to_train(
    model: Mapping[str, Any], chosen: Collection[str], tokenizers: TokenizerPair, parent: Checkpoint | None
) -> ModelConfig:
    """The config of the model to train: `model` (ModelConfig fields but the vocabulary
    sizes) with `tokenizers`' vocabulary, or, fine-tuning, the `parent` checkpoint's
    architecture with this run's dropout and cell implementation, and a hidden size the
    user `chosen` (the parent is widened: `mt.widen`); another architecture field
    `chosen` with another value than the parent's is an error."""
    if parent is None:
        sizes = {"src_vocab_size": tokenizers.source.vocab_size, "tgt_vocab_size": tokenizers.target.vocab_size}
        return ModelConfig(**sizes, **model)
    theirs = parent.model.config
    for name, option in ARCHITECTURE.items():
        if name in chosen and name != "hidden_size" and model[name] != getattr(theirs, name):
            raise MTError(
                f"{option} {model[name]} conflicts with --init-from, whose model has {getattr(theirs, name)}; "
                "leave the option out"
            )
    hidden_size = model["hidden_size"] if "hidden_size" in chosen else theirs.hidden_size
    if hidden_size < theirs.hidden_size:
        raise MTError(
            f"--hidden-size {hidden_size} is smaller than the --init-from model's {theirs.hidden_size}: "
            "a model can be widened, not narrowed"
        )
    return dataclasses.replace(theirs, hidden_size=hidden_size, dropout=model["dropout"], cell_impl=model["cell_impl"])


def train(
    run: RunConfig,
    model: Mapping[str, Any],
    chosen: Collection[str],
    config: TrainConfig,
    device: torch.device,
    log: Callable[[str], None],
    reporter: Reporter,
) -> TrainResult:
    """`mt train`: build a run from its configs and train it. Reads the tokenizer (or the
    --init-from model), the corpora and the validation sets, resumes the run directory's
    interrupted run (or, with `run.overwrite`, clears it), and trains. Under torchrun only
    the first worker logs, reports and writes. See `model_to_train` for `model` and `chosen`.
    Raises `Interrupted` (after saving `last`) on Ctrl-C or SIGTERM."""
    parent = load_checkpoint(run.init_from) if run.init_from is not None else None
    tokenizers = parent.tokenizers if parent else TokenizerPair.load(run.tokenizer_dir)
    model_config = model_to_train(model, chosen, tokenizers, parent)
    if config.compile:
        check_compilable(model_config)
    runtime.for_training(device, bf16=config.bf16, compile=config.compile)  # refuses them here, before any work
    directory = RunDirectory(run.run_dir)
    resume = directory.check(run.overwrite, config)
    device = distributed.start(device)
    finished = False
    try:
        workers = distributed.current()
        if not workers.is_main:  # the others would repeat every line
            log, reporter = (lambda line: None), Reporter()
        with directory.lock() if workers.is_main else contextlib.nullcontext():
            with distributed.main_first():  # the first worker tokenizes into the datasets cache
                corpus, validation, corpora = training_data(
                    run.train, run.valid, run.src, run.tgt, tokenizers, config.max_length, log
                )
            if run.overwrite and workers.is_main:
                directory.clear()
            info = provenance(
                run.src, run.tgt, corpora, list(validation), config.seed, workers.world_size, run.init_from, parent
            )
            trainer = Trainer(model_config, config, tokenizers, corpus, validation, directory.path, device, info)
            if parent is not None and not resume:  # a resumed run's weights come from its checkpoint
                inherit_weights(trainer.model, parent.model)
                if model_config.hidden_size != parent.model.config.hidden_size:
                    log(
                        f"widened {run.init_from} from {parent.model.config.hidden_size} to "
                        f"{model_config.hidden_size} hidden units; it starts translating as that model does"
                    )
            if resume:
                changes = trainer.resume()
                log(f"resuming {directory.path} at step {trainer.state.step} (epoch {trainer.state.epoch + 1})")
                for change in changes:
                    log(f"  changed since the last run: {change}")
            where = f"{workers.world_size} workers on {device.type}" if workers.world_size > 1 else str(device)
            log(f"model: {trainer.model.num_parameters():,} parameters on {where}")
            try:
                result = trainer.run(reporter)
            except Interrupted:
                log(
                    f"interrupted at step {trainer.state.step}; saved {trainer.last_path}. Resume with the same command."
                )
                raise
        log(f"best validation BLEU {result.best_bleu:.2f}: {result.best}")
        log(f"last checkpoint: {result.last}")
        finished = True
        return result
    finally:
        distributed.stop(finished)
