"""The benchmark harness runs end to end on a tiny slice; its numbers are
checked for shape and sanity, never for speed."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mt.runtime import bf16_supported, compiler_found

pytestmark = pytest.mark.slow  # runs the benchmarks, some phases in processes of their own

BENCHMARK = Path(__file__).resolve().parent.parent / "bench" / "benchmark.py"


def _numbers(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


@pytest.fixture(scope="module")
def benchmark():
    """bench/benchmark.py as a module."""
    spec = importlib.util.spec_from_file_location("benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_on_a_tiny_slice_and_reports_every_measurement(
    benchmark, tiny_checkpoint, corpus_prefix, tmp_path, monkeypatch
):
    """The whole driver, with each phase run in this process (a phase in a process
    of its own is the next test): every measurement is reported and tabled."""
    monkeypatch.setattr(
        benchmark, "run_phase", lambda name, options: {**benchmark.PHASES[name](options), "peak_rss_mb": 1.0}
    )
    model = tiny_checkpoint(tmp_path / "tiny.safetensors", hidden_size=16, attention="luong")
    arguments = [
        "--model", model, "--tokenizer-model", model, "--train", corpus_prefix,
        "--test-src", f"{corpus_prefix}.de.gz", "--test-ref", f"{corpus_prefix}.en.gz",
        "--sentences", 6, "--latency-sentences", 2, "--train-seconds", 0.5, "--batch-tokens", 64, "--peak-seconds", 0.2, "--cold-runs", 1,
        "--output", tmp_path / "bench.json",
    ]  # fmt: skip
    result = CliRunner().invoke(benchmark.app, list(map(str, arguments)))
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "bench.json").read_text())
    for key in (
        "matmul_peak",
        "training",
        "textbook_training",
        "attention_training",
        "attention_training_previous",
        "greedy",
        "beam5",
        "greedy_int8",
        "beam5_int8",
        "textbook_translation",
        "cold_start_seconds",
    ):
        assert key in results, key
    assert results["sentences"] == 6
    # bf16 training is measured where the CPU has bf16 kernels, and only there.
    assert ("attention_training_bf16" in results) == bf16_supported(torch.device("cpu"))
    # and compiled where torch.compile also finds a C++ compiler.
    assert ("attention_training_bf16_compile" in results) == (bf16_supported(torch.device("cpu")) and compiler_found())
    assert all(math.isfinite(number) and number >= 0 for number in _numbers(results))
    assert results["training"]["updates"] >= 1 and results["cold_start_seconds"] > 0
    assert "| training speed-up over the textbook loop |" in result.stdout
    # the CPU it ran on, in the results and in every row of the table
    facts = results["machine"]
    assert facts["cpu"] and facts["aten_capability"] and facts["onednn_isa"] and facts["quantized_engine"]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows and all(row.endswith(f" {facts['kind']} |") for row in rows)


def test_a_phase_runs_in_a_process_of_its_own_and_reports_its_peak_memory(benchmark):
    result = benchmark.run_phase("matmul_peak", {"seconds": 0.05})
    assert result["fp32_gflops"] > 0 and result["bf16_gflops"] > 0
    assert result["peak_rss_mb"] > 0


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
