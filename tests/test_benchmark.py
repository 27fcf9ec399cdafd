"""The benchmark harness runs end to end on a tiny slice; its numbers are
checked for shape and sanity, never for speed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parent.parent / "bench" / "benchmark.py"


def _numbers(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_benchmark_runs_on_a_tiny_slice_and_reports_every_measurement(tiny_checkpoint, corpus_prefix, tmp_path):
    model = tiny_checkpoint(tmp_path / "tiny.safetensors", hidden_size=16, attention="luong")
    arguments = [
        "--model", model, "--tokenizer-model", model, "--train", corpus_prefix,
        "--test-src", f"{corpus_prefix}.de.gz", "--test-ref", f"{corpus_prefix}.en.gz",
        "--sentences", 6, "--latency-sentences", 2, "--train-seconds", 0.5, "--batch-tokens", 64, "--peak-seconds", 0.2, "--cold-runs", 1,
        "--output", tmp_path / "bench.json",
    ]  # fmt: skip
    process = subprocess.run(
        [sys.executable, str(BENCHMARK), *map(str, arguments)], capture_output=True, text=True, timeout=600
    )
    assert process.returncode == 0, process.stderr
    results = json.loads((tmp_path / "bench.json").read_text())
    for key in (
        "matmul_peak",
        "training",
        "textbook_training",
        "greedy",
        "beam5",
        "greedy_int8",
        "beam5_int8",
        "textbook_translation",
        "cold_start_seconds",
    ):
        assert key in results, key
    assert results["sentences"] == 6
    assert all(math.isfinite(number) and number >= 0 for number in _numbers(results))
    assert results["training"]["updates"] >= 1 and results["greedy"]["peak_rss_mb"] > 0
    assert "| training speed-up over the textbook loop |" in process.stdout


def test_benchmark_refuses_missing_inputs_with_one_line(tmp_path):
    process = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--model",
            str(tmp_path / "missing"),
            "--output",
            str(tmp_path / "bench.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert process.returncode != 0
    assert process.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing'} does not exist (run `make data` for Multi30k)"
    ]
    assert not (tmp_path / "bench.json").exists()


CORPUS_MEMORY = BENCHMARK.parent / "corpus_memory.py"


def test_corpus_memory_benchmark_runs_the_commands_on_a_small_corpus(tmp_path):
    arguments = [
        "--pairs",
        "1000",
        "--steps",
        "2",
        "--max-sentences",
        "800",
        "--output",
        str(tmp_path / "memory.json"),
    ]
    process = subprocess.run(
        [sys.executable, str(CORPUS_MEMORY), *arguments], capture_output=True, text=True, timeout=600
    )
    assert process.returncode == 0, process.stderr
    (row,) = json.loads((tmp_path / "memory.json").read_text())["rows"]
    assert row["pairs"] == 1000 and row["updates"] == 2
    for command in ("train_tokenizer", "train"):
        assert 0 < row[command]["peak_anonymous_mb"] <= row[command]["peak_rss_mb"], row[command]
