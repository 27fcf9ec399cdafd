"""`make bench`: how fast mt trains and translates on this machine, and at what quality.

Every measurement runs in a fresh Python process (this script with --phase),
so that its peak resident memory is its own and one measurement's caches
do not help the next. Prints a Markdown table and writes the numbers,
with a description of the machine, as JSON.

    python bench/benchmark.py                       # Multi30k de->en, about 7 minutes on 2 cores
    python bench/benchmark.py --train-seconds 20 --sentences 200   # a quicker look
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any
from unittest import mock

import typer

from mt.config import TrainConfig

app = typer.Typer(add_completion=False, rich_markup_mode=None)
PHASES = {}


def phase(function):
    PHASES[function.__name__] = function
    return function


# -- measurements, each run in its own process --------------------------------


@phase
def matmul_peak(options: dict) -> dict:
    """GFLOP/s of a large square matrix product, fp32 and bf16: the ceiling for training.

    The size doubles from 256 to 2048 while one product takes under a tenth of
    `seconds`: a CPU without bf16 instructions (bf16 emulated, one 2048 product
    can take minutes) is measured on a size it finishes."""
    import torch

    result = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for size in (256, 512, 1024, 2048):
            a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
            started = time.perf_counter()
            a @ b  # also the warm-up of the size that is measured
            if time.perf_counter() - started > options["seconds"] / 10:
                break
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < options["seconds"]:
            a @ b
            runs += 1
        result[f"{name}_gflops"] = 2 * size**3 * runs / (time.perf_counter() - started) / 1e9
    return result


def training_flops_per_token(config) -> tuple[float, float]:
    """Multiply-adds x 2 x 3 (forward, and backward at twice the forward) per
    source token and per target token of the final-state model; padding not counted."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[config.cell]
    hidden, embedding = config.hidden_size, config.embedding_size
    stack = sum(gates * hidden * ((embedding if layer == 0 else hidden) + hidden) for layer in range(config.num_layers))
    readout = (
        hidden * embedding + embedding * config.tgt_vocab_size
        if config.tie_embeddings
        else hidden * config.tgt_vocab_size
    )
    return 6.0 * stack, 6.0 * (stack + readout)


# The attention model of the de-en recipe (README): what the CPU speed work measures.
ATTENTION_RECIPE = {"attention": "bahdanau", "bidirectional": True, "hidden_size": 448}


@phase
def training(options: dict) -> dict:
    """Updates for `seconds` of the default model config, or of the attention recipe
    (`"recipe": "attention"`: Bahdanau attention, bidirectional encoder, H 448):
    mt's trainer (length-bucketed batches), the same with the previous loss
    (`"loop": "mt_previous_loss"`: the full (B*T, V) logits, then F.cross_entropy),
    or the textbook loop (shuffled batches of a fixed number of sentences);
    `"bf16": true` trains mt's loop under bf16 autocast (`mt train --bf16`), `"compile": true`
    with the decoder's step compiled (`mt train --compile`; its compilation is in the warm-up update)."""
    import datasets

    from mt import train
    from mt.checkpoint import load_checkpoint
    from mt.config import ModelConfig
    from mt.data import load_corpus, tokenize_corpus
    from mt.loss import label_smoothed_loss

    datasets.disable_progress_bars()
    tokenizers = load_checkpoint(options["tokenizer_model"]).tokenizers
    train_config = TrainConfig(
        batch_tokens=options["batch_tokens"], bf16=options.get("bf16", False), compile=options.get("compile", False)
    )
    corpus = tokenize_corpus(
        load_corpus(options["train"], options["src"], options["tgt"]), tokenizers, train_config.max_length
    )
    recipe = ATTENTION_RECIPE if options.get("recipe") == "attention" else {}
    config = ModelConfig(
        src_vocab_size=tokenizers.source.vocab_size, tgt_vocab_size=tokenizers.target.vocab_size, **recipe
    )
    previous_loss = contextlib.nullcontext()
    if options["loop"] == "mt_previous_loss":  # the loss of mt before the chunked output layer
        previous_loss = mock.patch.object(
            train,
            "output_loss",
            lambda decoder, features, target, smoothing, pad_id: label_smoothed_loss(
                decoder.logits(features), target, smoothing, pad_id
            ),
        )
    with previous_loss:
        return _measure_training(options, config, train_config, tokenizers, corpus)


def _measure_training(options: dict, config, train_config: TrainConfig, tokenizers, corpus) -> dict:
    """The timed updates of `training`."""
    import torch
    import torch.nn.functional as F

    from mt.data import collate, make_batches
    from mt.train import Trainer

    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(
            config, train_config, tokenizers, corpus, {"none": ([], [])}, Path(scratch), torch.device("cpu"), {}
        )
    model = trainer.model.train()
    bucketed = make_batches(corpus.lengths, train_config.batch_tokens, torch.Generator().manual_seed(1))
    sentences_per_batch = round(len(corpus) / len(bucketed))

    if options["loop"] in ("mt", "mt_previous_loss"):
        batches = bucketed

        def step(indices: torch.Tensor) -> None:
            trainer.train_step([indices])
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=train_config.learning_rate)

        def step(indices: torch.Tensor) -> None:
            batch = collate(*corpus.ids(indices), config.pad_id, config.bos_id, config.eos_id)
            logits, _ = model(batch.source, batch.source_lengths, batch.target_in)
            loss = F.cross_entropy(logits.flatten(0, 1), batch.target_out.flatten(), ignore_index=config.pad_id)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.clip_norm)
            optimizer.step()

        batches = torch.randperm(len(corpus), generator=torch.Generator().manual_seed(1)).split(sentences_per_batch)

    # Token counts per pair, read once: not inside the timed loop.
    sources, targets = corpus.ids(torch.arange(len(corpus)))
    source_length = torch.tensor([len(ids) + 1 for ids in sources])  # + eos
    target_length = torch.tensor([len(ids) + 1 for ids in targets])  # + bos or eos
    step(batches[0])  # warm-up: allocator, thread pool, torch.compile
    source_tokens = target_tokens = padded = updates = 0
    started = time.perf_counter()
    for indices in itertools.cycle(batches[1:] or batches):
        step(indices)
        source_lengths, target_lengths = source_length[indices], target_length[indices]
        source_tokens, target_tokens = (
            source_tokens + int(source_lengths.sum()),
            target_tokens + int(target_lengths.sum()),
        )
        padded += int(source_lengths.max() + target_lengths.max()) * len(indices)
        updates += 1
        if time.perf_counter() - started >= options["seconds"]:
            break
    seconds = time.perf_counter() - started
    per_source, per_target = training_flops_per_token(config)
    return {
        "parameters": model.num_parameters(),
        "sentences_per_batch": sentences_per_batch,
        "updates": updates,
        "tokens_per_second": (source_tokens + target_tokens) / seconds,
        "padding_share": 1 - (source_tokens + target_tokens) / padded,
        "gflops": (per_source * source_tokens + per_target * target_tokens) / seconds / 1e9,
    }


def _test_set(options: dict) -> tuple[list[str], list[str]]:
    from mt.files import read_lines

    count = options["sentences"]
    return read_lines(Path(options["test_src"]))[:count], read_lines(Path(options["test_ref"]))[:count]


@phase
def translation(options: dict) -> dict:
    """mt's batched translation of the test set, as `mt evaluate` does it."""
    from mt.checkpoint import load_checkpoint
    from mt.config import DecodeConfig
    from mt.evaluate import score
    from mt.quantize import quantize_int8
    from mt.runtime import for_inference
    from mt.translator import Translator

    for_inference()  # as mt evaluate
    sources, references = _test_set(options)
    checkpoint = load_checkpoint(options["model"])
    model = quantize_int8(checkpoint.model) if options["quantize"] else checkpoint.model
    translator = Translator(model, checkpoint.tokenizers)
    decode = DecodeConfig(beam_size=options["beam"])
    translator.translate(sources[:1], decode)  # warm-up
    started = time.perf_counter()
    hypotheses = translator.translate(sources, decode)
    seconds = time.perf_counter() - started
    latencies = []
    for sentence in sources[: options["latency_sentences"]]:  # one at a time, as typed interactively
        started = time.perf_counter()
        translator.translate([sentence], decode)
        latencies.append(time.perf_counter() - started)
    return {
        "seconds": seconds,
        "sentences_per_second": len(sources) / seconds,
        "bleu": score(hypotheses, references)["bleu"],
        "latency_ms_median": 1000 * statistics.median(latencies),
        "latency_ms_p90": 1000 * sorted(latencies)[int(0.9 * (len(latencies) - 1))],
    }


@phase
def textbook_translation(options: dict) -> dict:
    """The textbook decoder: one sentence at a time, greedy, under torch.no_grad."""
    import torch

    from mt.checkpoint import load_checkpoint
    from mt.config import DecodeConfig
    from mt.evaluate import score
    from mt.search import max_output_lengths

    sources, references = _test_set(options)
    checkpoint = load_checkpoint(options["model"])
    model, tokenizers, config = checkpoint.model.eval(), checkpoint.tokenizers, checkpoint.model.config
    hypotheses = []
    started = time.perf_counter()
    with torch.no_grad():
        for sentence in sources:
            ids = tokenizers.source.encode([sentence])[0][: config.max_source_length - 1] + [config.eos_id]
            source, lengths = torch.tensor([ids]), torch.tensor([len(ids)])
            encoded, state = model.encode(source, lengths)
            token, output = torch.tensor([config.bos_id]), []
            for _ in range(max_output_lengths(lengths, DecodeConfig())[0]):
                log_probs, state, _ = model.decode_step(token, state, encoded)
                token = log_probs.argmax(-1)
                if token.item() == config.eos_id:
                    break
                output.append(token.item())
            hypotheses.append(tokenizers.target.decode([output])[0])
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "sentences_per_second": len(sources) / seconds,
        "bleu": score(hypotheses, references)["bleu"],
    }


# -- the driver ---------------------------------------------------------------


def run_phase(name: str, options: dict) -> dict:
    """Run one measurement in a fresh process; add its peak resident memory."""
    with tempfile.NamedTemporaryFile(suffix=".json") as result_file:
        command = [
            sys.executable,
            __file__,
            "--phase",
            name,
            "--phase-options",
            json.dumps(options),
            "--output",
            result_file.name,
        ]
        process = subprocess.Popen(command)
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"benchmark phase {name} failed (exit {os.waitstatus_to_exitcode(status)})")
        result = json.loads(Path(result_file.name).read_text())
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    return result


def cold_start(model: str, sentence: str, runs: int) -> float:
    """Median wall time of `mt translate SENTENCE` as a new process."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "mt", "translate", "--model", model, sentence], check=True, capture_output=True
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# CPU flags that decide which kernels run: AVX2/AVX-512 for fp32, VNNI for int8, AVX512-BF16 and AMX for bf16.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def machine() -> dict:
    """The CPU (model and the flags that choose kernels), torch's ATen capability, oneDNN's
    ISA (from its verbose log, in a process of its own) and the int8 engine; `kind` names
    the CPU in one line for each row of the table."""
    import torch

    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    kernels = [flag for flag in KERNEL_FLAGS if flag in flags]
    amx = "AMX" if "amx_bf16" in kernels else "no AMX"
    return {
        "cpu": cpu,
        "kind": f"{cpu} ({', '.join(f for f in kernels if not f.startswith('amx')) or 'no AVX2'}; {amx})",
        "flags": kernels,
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_isa": onednn_isa(),
        "quantized_engine": torch.backends.quantized.engine,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def onednn_isa() -> str:
    """The instruction set oneDNN says it runs on, from the first line of its verbose log."""
    code = "import torch; torch.backends.mkldnn.enabled = True; torch.nn.LSTM(4, 4)(torch.zeros(2, 1, 4))"
    found = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "ONEDNN_VERBOSE": "1"}, capture_output=True, text=True
    )
    return next((line.split("isa:", 1)[1] for line in found.stdout.splitlines() if "isa:" in line), "unknown")


def table(results: dict) -> str:
    peak, train, naive = results["matmul_peak"], results["training"], results["textbook_training"]
    rows = [
        "| measurement | value |",
        "|---|---|",
        f"| matrix-product peak, fp32 / bf16 | {peak['fp32_gflops']:.0f} / {peak['bf16_gflops']:.0f} GFLOP/s |",
        f"| training, mt (bucketed), default config ({train['parameters']:,} parameters) | {train['tokens_per_second']:,.0f} tokens/s, {train['gflops']:.0f} GFLOP/s ({train['gflops'] / peak['fp32_gflops']:.0%} of fp32 peak), padding {train['padding_share']:.0%} |",
        f"| training, textbook loop ({naive['sentences_per_batch']} shuffled sentences per batch) | {naive['tokens_per_second']:,.0f} tokens/s, {naive['gflops']:.0f} GFLOP/s, padding {naive['padding_share']:.0%} |",
        f"| training speed-up over the textbook loop | {train['tokens_per_second'] / naive['tokens_per_second']:.2f}x |",
        f"| training peak memory (mt / textbook) | {train['peak_rss_mb']:.0f} / {naive['peak_rss_mb']:.0f} MB |",
    ]
    attention, previous = results["attention_training"], results["attention_training_previous"]
    rows += [
        f"| training, attention recipe ({attention['parameters']:,} parameters), mt / previous loss | {attention['tokens_per_second']:,.0f} / {previous['tokens_per_second']:,.0f} tokens/s ({attention['tokens_per_second'] / previous['tokens_per_second']:.2f}x), peak {attention['peak_rss_mb']:.0f} / {previous['peak_rss_mb']:.0f} MB |",
    ]
    if bf16 := results.get("attention_training_bf16"):
        rows.append(
            f"| training, attention recipe, mt --bf16 | {bf16['tokens_per_second']:,.0f} tokens/s ({bf16['tokens_per_second'] / previous['tokens_per_second']:.2f}x the previous loss in fp32), peak {bf16['peak_rss_mb']:.0f} MB |"
        )
    if compiled := results.get("attention_training_bf16_compile"):
        rows.append(
            f"| training, attention recipe, mt --bf16 --compile | {compiled['tokens_per_second']:,.0f} tokens/s ({compiled['tokens_per_second'] / previous['tokens_per_second']:.2f}x the previous loss in fp32, {compiled['tokens_per_second'] / bf16['tokens_per_second']:.2f}x --bf16), peak {compiled['peak_rss_mb']:.0f} MB |"
        )
    for key, label in (
        ("greedy", "greedy"),
        ("beam5", "beam 5"),
        ("greedy_int8", "greedy, int8"),
        ("beam5_int8", "beam 5, int8"),
    ):
        r = results[key]
        rows.append(
            f"| translate {results['sentences']} sentences, {label} | {r['seconds']:.2f} s, {r['sentences_per_second']:.0f} sentences/s, BLEU {r['bleu']:.2f}, "
            f"{r['peak_rss_mb']:.0f} MB peak; one sentence at a time: {r['latency_ms_median']:.0f} ms median, {r['latency_ms_p90']:.0f} ms p90 |"
        )
    textbook = results["textbook_translation"]
    rows += [
        f"| translate, textbook loop (one sentence at a time, greedy) | {textbook['seconds']:.2f} s, {textbook['sentences_per_second']:.0f} sentences/s, BLEU {textbook['bleu']:.2f} |",
        f"| speed-up over the textbook decoder, greedy / beam 5 | {results['greedy']['sentences_per_second'] / textbook['sentences_per_second']:.1f}x / {results['beam5']['sentences_per_second'] / textbook['sentences_per_second']:.1f}x |",
        f"| int8 speed-up, greedy / beam 5 | {results['greedy']['seconds'] / results['greedy_int8']['seconds']:.2f}x / {results['beam5']['seconds'] / results['beam5_int8']['seconds']:.2f}x |",
        f'| cold `mt translate "..."` (new process, median of {results["cold_runs"]}) | {results["cold_start_seconds"]:.2f} s |',
    ]
    header, rule, *measured = rows
    kind = results["machine"]["kind"]
    return "\n".join([f"{header} CPU |", f"{rule}---|", *(f"{row} {kind} |" for row in measured)])


@app.command()
def main(
    model: Annotated[str, typer.Option(help="Model to translate with.")] = "checkpoints/de-en",
    tokenizer_model: Annotated[
        str, typer.Option(help="Checkpoint whose tokenizers the training measurement uses.")
    ] = "checkpoints/de-en-base",
    train: Annotated[str, typer.Option(help="Training corpus (as for mt train).")] = "data/multi30k/train",
    src: str = "de",
    tgt: str = "en",
    test_src: Annotated[str, typer.Option(help="Sentences to translate.")] = "data/multi30k/test_2016_flickr.de.gz",
    test_ref: Annotated[str, typer.Option(help="Their references.")] = "data/multi30k/test_2016_flickr.en.gz",
    sentences: Annotated[int, typer.Option(help="Translate at most this many test sentences.")] = 1000,
    latency_sentences: Annotated[int, typer.Option(help="Sentences translated one at a time for latency.")] = 100,
    train_seconds: Annotated[float, typer.Option(help="Seconds of training for each training measurement.")] = 90.0,
    batch_tokens: Annotated[int, typer.Option(help="Tokens per training batch.")] = TrainConfig.batch_tokens,
    peak_seconds: Annotated[float, typer.Option(help="Seconds of matrix products for each peak measurement.")] = 5.0,
    cold_runs: Annotated[int, typer.Option(help="Cold starts of `mt translate` to take the median of.")] = 3,
    output: Annotated[Path, typer.Option(help="Where to write the JSON results.")] = Path("runs/bench/benchmark.json"),
    phase_name: Annotated[str, typer.Option("--phase", hidden=True)] = "",
    phase_options: Annotated[str, typer.Option(hidden=True)] = "{}",
):
    """Measure training and translation speed, quality and memory; print a Markdown table."""
    if phase_name:
        output.write_text(json.dumps(PHASES[phase_name](json.loads(phase_options))))
        return
    import torch

    from mt.runtime import bf16_supported, compiler_found

    for path in (model, tokenizer_model, test_src, test_ref):
        if not Path(path).exists():
            raise SystemExit(f"error: {path} does not exist (run `make data` for Multi30k)")
    common = {
        "model": model,
        "test_src": test_src,
        "test_ref": test_ref,
        "sentences": sentences,
        "latency_sentences": latency_sentences,
    }
    training_options = {
        "tokenizer_model": tokenizer_model,
        "train": train,
        "src": src,
        "tgt": tgt,
        "seconds": train_seconds,
        "batch_tokens": batch_tokens,
    }
    results: dict[str, Any] = {"machine": machine(), "sentences": len(_test_set(common)[0])}
    results["matmul_peak"] = run_phase("matmul_peak", {"seconds": peak_seconds})
    results["training"] = run_phase("training", {**training_options, "loop": "mt"})
    results["textbook_training"] = run_phase("training", {**training_options, "loop": "textbook"})
    attention = {**training_options, "recipe": "attention"}
    results["attention_training"] = run_phase("training", {**attention, "loop": "mt"})
    results["attention_training_previous"] = run_phase("training", {**attention, "loop": "mt_previous_loss"})
    if bf16_supported(torch.device("cpu")):
        bf16 = {**attention, "loop": "mt", "bf16": True}
        results["attention_training_bf16"] = run_phase("training", bf16)
        if compiler_found():
            results["attention_training_bf16_compile"] = run_phase("training", {**bf16, "compile": True})
    for key, beam, quantize in (
        ("greedy", 1, False),
        ("beam5", 5, False),
        ("greedy_int8", 1, True),
        ("beam5_int8", 5, True),
    ):
        results[key] = run_phase("translation", {**common, "beam": beam, "quantize": quantize})
    results["textbook_translation"] = run_phase("textbook_translation", common)
    results["cold_runs"] = cold_runs
    results["cold_start_seconds"] = cold_start(model, "Ein Mann fährt mit dem Fahrrad.", cold_runs)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    facts = results["machine"]
    print(
        f"{facts['cpu']}, {facts['cores']} cores, flags {' '.join(facts['flags'])}, ATen {facts['aten_capability']}, "
        f"oneDNN {facts['onednn_isa']}, int8 engine {facts['quantized_engine']}, torch {facts['torch']}, {facts['date']}"
    )
    print(table(results))
    print(f"results: {output}")


if __name__ == "__main__":
    app()
