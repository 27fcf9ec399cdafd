"""`make bench-memory`: does memory stay flat as the training corpus grows?

Makes a synthetic parallel corpus of each size (a made-up source language
and a word-for-word "translation" of it, reversed), then runs the commands a
user runs, each as a new process with an empty `datasets` cache:

    mt train-tokenizer --max-sentences S ...   (learns from a sample)
    mt train --max-steps N ...                 (Arrow corpus, tokenized with Dataset.map, a few updates)

and records each one's wall time and peak memory: the resident set, and its
two parts: the process's own (anonymous) memory, and file-backed pages, which
include the pages of the memory-mapped Arrow files that were read (page
cache: the kernel drops them when memory runs short).

    python bench/corpus_memory.py                          # 100k and 1M pairs, about 2 minutes on 2 cores
    python bench/corpus_memory.py --pairs 1000 --pairs 10000   # a quick look
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, rich_markup_mode=None)


def write_corpus(prefix: Path, pairs: int, seed: int) -> None:
    """PREFIX.src / PREFIX.tgt: `pairs` sentences of 4-30 words from a 5,000-word vocabulary."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "da", "shi", "gu"]
    words = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(20_000)})[:5000]
    translation = {word: word[::-1].upper() if rng.random() < 0.5 else word[::-1] for word in words}
    with open(f"{prefix}.src", "w") as source, open(f"{prefix}.tgt", "w") as target:
        for _ in range(pairs):
            sentence = rng.choices(words, k=rng.randint(4, 30))
            source.write(" ".join(sentence) + " .\n")
            target.write(" ".join(translation[word] for word in reversed(sentence)) + " .\n")


def measure(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run `command`; its wall time and peak resident memory (MB), and the peaks
    of its two parts, anonymous and file-backed, sampled every 50 ms."""
    started = time.perf_counter()
    errors = tempfile.TemporaryFile()  # not a pipe: nobody reads it while the command runs
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors)
    status_file = Path(f"/proc/{process.pid}/status")
    peaks_kb = {"RssAnon": 0, "RssFile": 0}
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        try:
            fields = dict(line.split(":", 1) for line in status_file.read_text().splitlines())
            for name in peaks_kb:
                peaks_kb[name] = max(peaks_kb[name], int(fields[name].split()[0]))
        except (OSError, KeyError, ValueError):
            pass  # between exit and reaping
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        errors.seek(0)
        raise SystemExit(f"{' '.join(command[2:4])} failed:\n{errors.read().decode(errors='replace')}")
    return {
        "seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "peak_anonymous_mb": peaks_kb["RssAnon"] / 1024,
        "peak_file_backed_mb": peaks_kb["RssFile"] / 1024,
    }


def run_size(pairs: int, steps: int, max_sentences: int, scratch: Path) -> dict:
    prefix = scratch / "train"
    write_corpus(prefix, pairs, seed=1)
    write_corpus(scratch / "valid", 200, seed=2)
    env = {
        **os.environ,
        "HF_DATASETS_CACHE": str(scratch / "datasets-cache"),
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    mt = [sys.executable, "-m", "mt"]
    corpus = ["--src", "src", "--tgt", "tgt"]
    tokenizer = measure(
        [*mt, "train-tokenizer", "--train", str(prefix), *corpus, "--vocab-size", "2000",
         "--max-sentences", str(max_sentences), "--output", str(scratch / "tokenizer")],
        env,
    )  # fmt: skip
    training = measure(
        [*mt, "train", "--train", str(prefix), "--valid", str(scratch / "valid"), *corpus,
         "--tokenizer", str(scratch / "tokenizer"), "--output", str(scratch / "run"), "--device", "cpu",
         "--embedding-size", "64", "--hidden-size", "128", "--layers", "1", "--max-steps", str(steps)],
        env,
    )  # fmt: skip
    log = [json.loads(line) for line in (scratch / "run" / "log.jsonl").read_text().splitlines()]
    return {
        "pairs": pairs,
        "corpus_mb": sum(path.stat().st_size for path in scratch.glob("train.*")) / 2**20,
        "datasets_cache_mb": sum(p.stat().st_size for p in (scratch / "datasets-cache").rglob("*") if p.is_file())
        / 2**20,
        "train_tokenizer": tokenizer,
        "train": training,
        "updates": log[-1]["step"],
    }


def describe(measurement: dict[str, float]) -> str:
    return (
        f"{measurement['seconds']:.0f} s, {measurement['peak_rss_mb']:.0f} MB peak RSS "
        f"({measurement['peak_anonymous_mb']:.0f} MB anonymous, {measurement['peak_file_backed_mb']:.0f} MB file-backed)"
    )


@app.command()
def main(
    pairs: Annotated[list[int], typer.Option(help="Corpus sizes to measure (repeat the option).")] = None,
    steps: Annotated[int, typer.Option(help="Training updates at each size.")] = 20,
    max_sentences: Annotated[int, typer.Option(help="mt train-tokenizer --max-sentences.")] = 200_000,
    output: Annotated[Path, typer.Option(help="Where to write the JSON results.")] = Path(
        "runs/bench/corpus_memory.json"
    ),
):
    """Peak memory of mt train-tokenizer and mt train on synthetic corpora of growing size."""
    if pairs is None:
        pairs = [100000, 1000000]
    rows = []
    for size in pairs:
        with tempfile.TemporaryDirectory(prefix="mt-corpus-memory-") as scratch:
            rows.append(run_size(size, steps, max_sentences, Path(scratch)))
        row = rows[-1]
        print(
            f"{size:>9,} pairs ({row['corpus_mb']:.0f} MB of text, {row['datasets_cache_mb']:.0f} MB of Arrow cache), {row['updates']} updates: "
            f"train-tokenizer {describe(row['train_tokenizer'])}; train {describe(row['train'])}",
            flush=True,
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}, indent=2) + "\n"
    )
    print(f"results: {output}")


if __name__ == "__main__":
    app()
