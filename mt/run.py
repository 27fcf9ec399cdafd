"""A training run's directory: what it holds, who may use it, what --overwrite
deletes; and what a checkpoint records of the run besides the weights (how the
model was made, the optimizer's state).

    best.safetensors   the checkpoint with the highest validation BLEU (the mean over the validation sets)
    last.safetensors   the latest checkpoint, with the trainer's state for resuming
    step-*.safetensors the last validation checkpoints (--keep-checkpoints)
    log.jsonl          one JSON record per validation
    lock               held by the one process training the run
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from mt.checkpoint import read_info, resolve
from mt.config import MTError, TrainConfig


class RunDirectory:
    """A training run's directory and the rules for reusing it.

    The run owns `best.safetensors`, `last.safetensors`, `step-*.safetensors`,
    `log.jsonl` and `lock`: --overwrite deletes only those, and only after
    every input was read. One process at a time: `lock()` holds an exclusive
    flock on RUN/lock, which the kernel releases when the process ends, so a
    killed run leaves no stale lock.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.last = self.path / "last.safetensors"

    def check(self, overwrite: bool, config: TrainConfig) -> bool:
        """Whether to resume. Reads only the header of `last`, so that a refusal comes
        before the corpora are read: refuses a file as the directory, a `last` without
        trainer state and a run whose budget in `config` is spent already. A finished
        run resumes when `config` gives it a larger budget."""
        if self.path.exists() and not self.path.is_dir():
            raise MTError(f"--output {self.path} is a file; the run needs a directory")
        if overwrite or not self.last.exists():
            return False
        state = read_info(self.last).get("trainer_state")
        if not isinstance(state, dict):
            raise MTError(
                f"{self.last} holds no trainer state (a copy of a best or averaged checkpoint?); "
                "pass --overwrite to start afresh, or move it away"
            )
        spent = budget_spent(state, config)
        if spent:
            raise MTError(f"{self.path} has {spent}; give a larger budget, or pass --overwrite to start afresh")
        return True

    @contextlib.contextmanager
    def lock(self):
        """Hold the run's lock; another process holding it is an error. Removes the
        temporary files of writes that a killed process left behind. A run that fails
        before it writes anything (a corpus not found) takes away the lock file and
        directory it made, so that a mistake leaves nothing behind."""
        made = [path for path in (*reversed(self.path.parents), self.path, self.path / "lock") if not path.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                owner = handle.read().strip() or "?"
                raise MTError(
                    f"another mt train (process {owner}) is using {self.path}; wait for it, or choose another --output"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            for leftover in self.path.glob(".*.safetensors.*.tmp"):
                leftover.unlink(missing_ok=True)
            try:
                yield
            except BaseException:
                # Still held here, so no other process can have begun to write in the directory.
                if [path.name for path in self.path.iterdir()] == ["lock"]:
                    with contextlib.suppress(OSError):  # a directory made meanwhile by someone else stays
                        for path in reversed(made):  # the lock file, the directory, the parents it needed
                            if path.is_dir():
                                path.rmdir()
                            else:
                                path.unlink()
                raise

    def clear(self) -> None:
        """Delete the run's own files (--overwrite), nothing else."""
        for path in [
            self.path / "best.safetensors",
            self.last,
            self.path / "log.jsonl",
            *self.path.glob("step-*.safetensors"),
        ]:
            path.unlink(missing_ok=True)


def budget_spent(state: dict[str, Any], config: TrainConfig) -> str | None:
    """How a run in trainer `state` has used up `config`'s budget already (steps,
    epochs, minutes, or patience: it stopped early), or None when there is training left."""
    step, epoch = state.get("step", 0), state.get("epoch", 0)
    if epoch >= config.max_epochs or (config.max_steps and step >= config.max_steps):
        steps = f" --max-steps {config.max_steps}" if config.max_steps else ""
        return f"trained {step} updates ({epoch} whole epochs) already: --epochs {config.max_epochs}{steps} leaves nothing to train"
    minutes = state.get("elapsed_seconds", 0.0) / 60
    if config.max_minutes and minutes >= config.max_minutes:
        return (
            f"trained for {minutes:.1f} minutes already: --max-minutes {config.max_minutes:g} leaves nothing to train"
        )
    without_gain = state.get("validations_without_gain", 0)
    if config.patience and without_gain >= config.patience:
        return (
            f"stopped early after {without_gain} validations without a better BLEU: --patience {config.patience} "
            "leaves nothing to train (0 turns early stopping off)"
        )
    return None


def provenance(
    source_language: str,
    target_language: str,
    train_corpora: list[dict[str, Any]],
    valid_corpora: list[str],
    seed: int,
    workers: int,
    init_from: Path | None = None,
    parent: Any = None,
) -> dict[str, Any]:
    """How a model was made, stored in each of its checkpoints: languages, corpora
    (spec, upsampling factor, fingerprint), the parent of a fine-tuned model, the
    command line and the versions of what trained it."""
    import sacrebleu
    import sentencepiece

    from mt import __version__

    parent_record = None
    if init_from is not None:
        path = resolve(init_from)
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        keys = ("source_language", "target_language", "train_corpora", "step", "command")
        parent_record = {
            "path": str(path),
            "sha256": digest,
            **{key: parent.info[key] for key in keys if key in parent.info},
        }
    return {
        "source_language": source_language,
        "target_language": target_language,
        "train_corpora": train_corpora,
        "valid_corpora": valid_corpora,
        "init_from": parent_record,
        "seed": seed,
        "workers": workers,
        "command": " ".join(["mt", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("mt", "__main__.py") else None,
        "versions": {
            "mt": __version__,
            "torch": torch.__version__,
            "sentencepiece": sentencepiece.__version__,
            "sacrebleu": sacrebleu.__version__,
            "python": platform.python_version(),
        },
    }


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Adam's moments as named tensors (for safetensors) and its param groups as JSON-able dicts."""
    state = optimizer.state_dict()
    tensors = {
        f"trainer.optimizer.{index}.{name}": value
        for index, slots in state["state"].items()
        for name, value in slots.items()
    }
    return tensors, state["param_groups"]


def load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]
) -> None:
    """Put back into `optimizer` what `optimizer_tensors` took out of one."""
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("trainer.optimizer."):
            index, name = key.removeprefix("trainer.optimizer.").split(".", 1)
            slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": groups})
