"""Data-parallel training: two gloo processes on loopback, as torchrun starts them on a CPU.

N workers taking one batch each must compute the update that one process
computes when it accumulates N batches; the replicas must stay identical;
a run must resume with another number of workers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from mt.checkpoint import load_checkpoint
from mt.config import ModelConfig, TrainConfig
from mt.data import TokenizedCorpus
from mt.tokenizer import Tokenizer, TokenizerPair
from mt.train import Trainer

pytestmark = pytest.mark.slow  # starts worker processes (torch.multiprocessing, torchrun)

MODEL = dict(embedding_size=16, hidden_size=24, num_layers=1, dropout=0.0, attention="luong")
TRAINING = dict(batch_tokens=120, validate_every=3, seed=5, patience=0, label_smoothing=0.1)
STEPS = 6


def make_trainer(job: dict, output: Path, accumulate: int, max_steps: int) -> Trainer:
    tokenizer = Tokenizer(job["proto"])
    tokenizers = TokenizerPair(tokenizer, tokenizer)
    model_config = ModelConfig(src_vocab_size=tokenizer.vocab_size, tgt_vocab_size=tokenizer.vocab_size, **MODEL)
    train_config = TrainConfig(**TRAINING, accumulate=accumulate, max_steps=max_steps)
    corpus = TokenizedCorpus.from_ids(job["source_ids"], job["target_ids"])
    return Trainer(model_config, train_config, tokenizers, corpus, job["validation"], output, torch.device("cpu"), {})


def train_as_worker(
    rank: int, world_size: int, port: int, job: dict, output: Path, max_steps: int, resume: bool
) -> None:
    """One torchrun worker: join the group, train, and leave its replica's weights in OUTPUT/rank-N."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        trainer = make_trainer(job, output, accumulate=1, max_steps=max_steps)
        if resume:
            trainer.resume()
        trainer.run()
        save_file(
            {name: t.contiguous() for name, t in trainer.model.state_dict().items()}, str(output / f"rank-{rank}")
        )
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_two_workers(job: dict, output: Path, max_steps: int, resume: bool = False) -> list[dict[str, torch.Tensor]]:
    mp.spawn(train_as_worker, args=(2, free_port(), job, output, max_steps, resume), nprocs=2)
    return [load_file(str(output / f"rank-{rank}")) for rank in range(2)]


@pytest.fixture(scope="module")
def job(tokenizers, corpus_pairs) -> dict:
    sources, targets = zip(*corpus_pairs)
    return {
        "proto": tokenizers.source.model_proto,
        "source_ids": tokenizers.source.encode(list(sources)),
        "target_ids": tokenizers.target.encode(list(targets)),
        "validation": {"valid": (list(sources[:6]), list(targets[:6]))},
    }


@pytest.fixture(scope="module")
def one_process(job, tmp_path_factory) -> Trainer:
    """The reference: one process accumulating two batches per update."""
    trainer = make_trainer(job, tmp_path_factory.mktemp("one-process"), accumulate=2, max_steps=STEPS)
    trainer.run()
    return trainer


def assert_close(weights: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    expected = model.state_dict()
    assert weights.keys() == expected.keys()
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_two_workers_stay_identical_and_match_one_process_with_the_same_global_batch(job, one_process, tmp_path):
    first, second = run_two_workers(job, tmp_path, max_steps=STEPS)

    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert_close(first, one_process.model)
    # Validation ran once per validation step (on the first worker), not once per worker.
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]
    assert [r["validation_bleu"] for r in records] == [r["validation_bleu"] for r in one_process.state.history]


def test_a_run_resumes_on_another_number_of_workers(job, one_process, tmp_path):
    make_trainer(job, tmp_path, accumulate=2, max_steps=STEPS // 2).run()  # one process, then two workers
    first, _ = run_two_workers(job, tmp_path, max_steps=STEPS, resume=True)
    assert_close(first, one_process.model)


def mt_train(corpus_prefix: str, tokenizer: Path, output: Path, *options: str, workers: int = 2) -> list[str]:
    """The command line of a tiny `mt train`, under torchrun when `workers` > 1."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(workers)] if workers > 1 else []
    return [
        sys.executable, *launcher, "-m", "mt", "train", "--train", corpus_prefix, "--valid", corpus_prefix,
        "--src", "de", "--tgt", "en", "--tokenizer", str(tokenizer), "--output", str(output), "--device", "cpu",
        "--embedding-size", "16", "--hidden-size", "24", "--layers", "1", "--batch-tokens", "120", *options,
    ]  # fmt: skip


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_mt_train_runs_unchanged_under_torchrun(corpus_prefix, tokenizers, tmp_path):
    tokenizers.save(tmp_path / "tokenizer")
    output = tmp_path / "run"
    command = mt_train(corpus_prefix, tmp_path / "tokenizer", output, "--max-steps", "4", "--validate-every", "2")
    finished = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "2 workers on cpu" in finished.stderr
    assert finished.stderr.count("valid BLEU") == 2  # reported by the first worker only
    assert len((output / "log.jsonl").read_text().splitlines()) == 2
    last = load_checkpoint(output / "last.safetensors", with_extra=True).info
    assert last["workers"] == 2 and last["trainer_state"]["step"] == 4 and last["trainer_state"]["finished"]


def test_ctrl_c_under_torchrun_saves_last_and_one_process_resumes(corpus_prefix, tokenizers, tmp_path):
    tokenizers.save(tmp_path / "tokenizer")
    output = tmp_path / "run"
    # No validation: `last` can only come from the orderly stop.
    command = mt_train(
        corpus_prefix,
        tmp_path / "tokenizer",
        output,
        "--epochs",
        "100000",
        "--max-steps",
        "1000000",
        "--validate-every",
        "1000000",
    )
    launcher = subprocess.Popen(
        command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    # Wait for training to be under way (a log gets a progress line every 100 updates), not for a time.
    stderr_lines: list[str] = []
    training = threading.Event()

    def read_stderr() -> None:
        for line in launcher.stderr:
            stderr_lines.append(line)
            if line.startswith("step "):
                training.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert training.wait(timeout=180), "".join(stderr_lines)
    os.killpg(launcher.pid, signal.SIGINT)  # Ctrl-C in a terminal: torchrun and both workers
    launcher.wait(timeout=120)
    reader.join(timeout=120)  # the workers may outlive the launcher by a moment: read to the end
    assert "Resume with the same command" in "".join(stderr_lines)
    state = load_checkpoint(output / "last.safetensors", with_extra=True).info["trainer_state"]
    assert state["step"] > 0 and not state["finished"]

    resume = mt_train(
        corpus_prefix,
        tmp_path / "tokenizer",
        output,
        "--epochs",
        "100000",
        "--max-steps",
        str(state["step"] + 3),
        "--accumulate",
        "2",
        workers=1,
    )
    resumed = subprocess.run(resume, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {output} at step {state['step']}" in " ".join(resumed.stderr.split())
    assert (
        load_checkpoint(output / "last.safetensors", with_extra=True).info["trainer_state"]["step"] == state["step"] + 3
    )


def test_world_size_without_torchrun_is_a_one_line_error(corpus_prefix, tokenizers, tmp_path):
    tokenizers.save(tmp_path / "tokenizer")
    command = mt_train(corpus_prefix, tmp_path / "tokenizer", tmp_path / "run", "--max-steps", "1", workers=1)
    env = {name: value for name, value in ENV.items() if name not in ("RANK", "MASTER_ADDR", "MASTER_PORT")}
    finished = subprocess.run(command, env={**env, "WORLD_SIZE": "2"}, capture_output=True, text=True, timeout=120)
    (line,) = finished.stderr.strip().splitlines()
    assert finished.returncode == 1
    assert line.startswith("error: cannot join the workers") and "torchrun" in line
