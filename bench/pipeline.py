"""`mt translate` in pipelines: the streaming path's throughput and memory.

1. Throughput: a model (the shipped de-en by default) translates the first
   `--lines` lines of a test set at beam 5 from a pipe, once with the default
   `--buffer-size` and once with a buffer that holds all of them (the whole
   input as one chunk: what `mt translate` did before it streamed), alternated
   `--repeats` times; whole processes, startup included. Reports the medians
   and their ratio.
2. Memory: a tiny untrained model (the shipped tokenizer, embeddings and
   hidden size 16, a large bias on end-of-sentence so that every translation
   ends at once: the run measures the pipeline, not the model) translates text
   from a pipe that this script writes as it goes (test-set lines over and
   over), greedy, for each size in `--megabytes`. Reports the peak resident
   memory of the `mt` process (getrusage of that child): flat across sizes
   means bounded.

    python bench/pipeline.py --output runs/bench/pipeline.json
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MT = [sys.executable, "-m", "mt"]


def _run(arguments: list[str], feed) -> tuple[float, int, int]:
    """Run `mt ARGUMENTS`, `feed(stdin)` on a thread; returns (seconds, peak RSS in MB, lines out)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [*MT, *arguments], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    writer = threading.Thread(target=lambda: (feed(process.stdin), process.stdin.close()))
    writer.start()
    lines = sum(block.count(b"\n") for block in iter(lambda: process.stdout.read(1 << 16), b""))
    writer.join()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"mt {' '.join(arguments)} failed with {process.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss // 1024, lines


def throughput(model: str, lines: list[str], buffer_size: int, repeats: int) -> dict:
    data = "".join(line + "\n" for line in lines).encode()
    seconds: dict[str, list[float]] = {"streaming": [], "whole": []}
    for _ in range(repeats):
        for name, size in (("streaming", buffer_size), ("whole", len(lines) + 1)):
            elapsed, _, out = _run(
                ["translate", "-m", model, "--beam", "5", "--buffer-size", str(size)], lambda s: s.write(data)
            )
            assert out == len(lines)
            seconds[name].append(round(elapsed, 2))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "lines": len(lines),
        "buffer_size": buffer_size,
        "seconds": seconds,
        "lines_per_second": {name: round(len(lines) / value, 1) for name, value in medians.items()},
        "streaming_over_whole": round(medians["whole"] / medians["streaming"], 3),
    }


def tiny_model(directory: Path, tokenizer_model: str) -> Path:
    import torch

    from mt.checkpoint import load_checkpoint, save_checkpoint
    from mt.config import ModelConfig
    from mt.model import Seq2Seq

    tokenizers = load_checkpoint(Path(tokenizer_model)).tokenizers
    torch.manual_seed(0)
    config = ModelConfig(
        tokenizers.source.vocab_size, tokenizers.target.vocab_size, embedding_size=16, hidden_size=16, num_layers=1
    )
    model = Seq2Seq(config)
    with torch.no_grad():
        model.decoder.output_bias[config.eos_id] = 100.0  # the (tied) output layer's bias
    path = directory / "tiny.safetensors"
    save_checkpoint(path, model, tokenizers, {"source_language": "de"})
    return path


def memory(model: Path, lines: list[str], megabytes: list[float]) -> list[dict]:
    block = "".join(line + "\n" for line in lines).encode()
    results = []
    for size in megabytes:
        total = int(size * 1e6)

        def feed(stdin, total=total):
            written = 0
            for _ in itertools.count():
                if written >= total:
                    return
                stdin.write(block)
                written += len(block)

        elapsed, peak, out = _run(["translate", "-m", str(model), "--beam", "1"], feed)
        sent = -(-total // len(block)) * len(lines)
        assert out == sent, (out, sent)
        results.append(
            {
                "megabytes": round(-(-total // len(block)) * len(block) / 1e6, 1),
                "lines": out,
                "seconds": round(elapsed, 1),
                "peak_rss_mb": peak,
            }
        )
        print(f"  {results[-1]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="checkpoints/de-en")
    parser.add_argument("--test-src", default="data/multi30k/test_2016_flickr.de.gz")
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--buffer-size", type=int, default=256, help="the streaming side (mt's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--megabytes", type=float, nargs="*", default=[2, 20, 200])
    parser.add_argument("--output", type=Path, default=Path("runs/bench/pipeline.json"))
    args = parser.parse_args()

    with gzip.open(ROOT / args.test_src, "rt", encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle][: args.lines]
    report = {"command": " ".join(sys.argv), "cpu_threads": os.cpu_count()}
    if args.repeats:
        print(f"throughput: {args.lines} lines, beam 5, buffer {args.buffer_size} vs whole", flush=True)
        report["throughput"] = throughput(args.model, lines, args.buffer_size, args.repeats)
        print(f"  {report['throughput']}", flush=True)
    if args.megabytes:
        print(f"memory: a pipe of {args.megabytes} MB, tiny model, greedy", flush=True)
        with tempfile.TemporaryDirectory() as directory:
            report["memory"] = memory(tiny_model(Path(directory), args.model), lines, args.megabytes)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
