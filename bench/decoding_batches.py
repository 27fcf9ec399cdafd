"""What a beam-search step costs on this CPU: the decoder's weights against memory bandwidth.

For the batches a server or a person sends (one to a few dozen sentences,
K = 5 rows each) a decoder step reads every weight of the decoder once and
does little arithmetic with each, so its time follows the bytes of the
weights and the memory bandwidth, not the FLOPs. This prints the decoder's
weight bytes per step (fp32; `--quantize` stores them in a quarter), the machine's read bandwidth
from memory, the rate at which products of 5 rows read weight matrices (in and out of the
cache), and the seconds per batch of random test2016 sentences of
1, 8, 16 and 32 sentences at beam 5, fp32 against int8.

    python bench/decoding_batches.py
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def read_bandwidth_gb_s(megabytes: int = 256) -> float:
    """GB/s of summing a tensor much larger than the caches."""
    data = torch.ones(megabytes * 2**20 // 4)
    data.sum()
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < 1.0:
        data.sum()
        runs += 1
    return runs * data.numel() * 4 / (time.perf_counter() - started) / 1e9


def small_product_gb_s(matrices: int, rows: int = 5) -> float:
    """GB/s of weights read by products of `rows` rows with `matrices` distinct 1,792 x 704
    fp32 matrices (5 MB each, the shape of an LSTM layer's input weights), one after another."""
    weights = [torch.randn(1792, 704) for _ in range(matrices)]
    x = torch.randn(rows, 704)
    for w in weights:
        torch.nn.functional.linear(x, w)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < 0.5:
        for w in weights:
            torch.nn.functional.linear(x, w)
        runs += 1
    return runs * matrices * weights[0].numel() * 4 / (time.perf_counter() - started) / 1e9


def decoder_megabytes(decoder: torch.nn.Module) -> float:
    """MB of the fp32 weights a decoder step reads: every parameter but the input
    embedding's lookup, plus the embedding matrix again when it is the tied output layer."""
    weights = sum(p.numel() for name, p in decoder.named_parameters() if not name.startswith("embedding."))
    if decoder.tie_embeddings:
        weights += decoder.embedding.weight.numel()
    return weights * 4 / 1e6


def main() -> None:
    from mt.config import DecodeConfig
    from mt.files import read_lines
    from mt.runtime import for_inference
    from mt.translator import Translator

    for_inference()  # as mt translate

    model = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "checkpoints" / "de-en")
    sentences = read_lines(ROOT / "data" / "multi30k" / "test_2016_flickr.de.gz")
    print(f"torch threads {torch.get_num_threads()}, read bandwidth {read_bandwidth_gb_s():.1f} GB/s")
    rates = ", ".join(f"{n} x 5 MB: {small_product_gb_s(n):.1f}" for n in (1, 2, 4, 8))
    print(f"5-row products stream their weights at (GB/s) {rates}")
    decode = DecodeConfig(beam_size=5)
    for quantize in (False, True):
        translator = Translator.from_checkpoint(Path(model), quantize=quantize)
        if not quantize:
            print(f"fp32 decoder weights read per step: {decoder_megabytes(translator.model.decoder):.1f} MB")
        print("int8 (--quantize)" if quantize else "fp32")
        translator.translate(sentences[:8], decode)  # warm-up
        draw = random.Random(1)
        for size in (1, 8, 16, 32):
            seconds = []
            for _ in range(12):
                batch = draw.sample(sentences, size)
                started = time.perf_counter()
                translator.translate(batch, decode)
                seconds.append(time.perf_counter() - started)
            median = statistics.median(seconds)
            print(
                f"  {size:>2} sentences: {1000 * median:6.0f} ms per batch (median of 12), {size / median:5.1f} sentences/s"
            )


if __name__ == "__main__":
    main()
