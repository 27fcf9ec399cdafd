"""Process-wide settings: backend flags, the compiler, the allocator. Set once where
a command starts (`for_inference`, `for_training`), never flipped per call.

Training and translation want oneDNN differently: its LSTM kernels make whole
sequences fast (and are the only bf16 LSTM on a CPU), while one decoder step at a
time runs faster on torch's own LSTM.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from mt.config import Device, MTError


def resolve_device(device: Device) -> torch.device:
    """The torch device of a --device choice; cuda where none is, an error."""
    if device == Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == Device.cuda and not torch.cuda.is_available():
        raise MTError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(device.value)


def for_inference() -> None:
    """Translation: torch's own LSTM, the faster one step at a time."""
    torch.backends.mkldnn.enabled = False


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt (`sigterm_as_interrupt`)."""


def _terminate(signum, frame) -> None:
    raise Terminated


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block (on the main thread), SIGTERM stops the work as Ctrl-C does: what
    is half written is cleaned up on the way out, and `Terminated` says which signal it was."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def for_training(device: torch.device, *, bf16: bool, compile: bool) -> None:
    """Training: oneDNN's LSTM; freed memory kept for the next update; with `compile`,
    torch.compile traces the one-step nn.LSTM call into its graph. Refuses `bf16` and
    `compile` where they cannot work, with one line saying why."""
    if bf16 and not bf16_supported(device):
        raise MTError(
            f"--bf16: this {device.type} has no bf16 kernels for the LSTM (AVX512-BF16 or AMX); train without --bf16"
        )
    if compile and device.type == "cpu" and not compiler_found():
        raise MTError(
            "--compile: torch.compile found no C++ compiler here; install g++ (or set CXX), or train without --compile"
        )
    torch.backends.mkldnn.enabled = True
    keep_freed_memory()
    if compile:
        torch._dynamo.config.allow_rnn = True  # experimental in torch: set for the whole process


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast can train here: on GPUs that have bf16, and on CPUs whose
    oneDNN has bf16 LSTM kernels (AVX512-BF16 or AMX); other CPUs fail inside the LSTM.
    Asked of oneDNN's LSTM, the one training runs, even after `for_inference` turned it off
    (torch's own LSTM would answer yes on every CPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    onednn, torch.backends.mkldnn.enabled = torch.backends.mkldnn.enabled, True
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            torch.nn.LSTM(4, 4, batch_first=True)(torch.zeros(1, 2, 4))
    except RuntimeError:
        return False
    finally:
        torch.backends.mkldnn.enabled = onednn
    return True


def keep_freed_memory() -> None:
    """Have glibc's malloc keep the memory that torch frees, for the next tensors of the
    same sizes, instead of handing it back to the kernel. By default it maps large blocks
    (from 128 KiB; the threshold rises as such blocks are freed) and unmaps them when they
    are freed, and trims a large free top of the heap; every page of fresh memory is then
    faulted in again (16,000-20,000 page faults per update in the first updates of the
    attention recipe, 8,500-11,000 with this). Updates are 2-5% faster
    (`docs/benchmarks.md`); memory stays near its peak, as in training it would anyway.
    A no-op where the C library is not glibc (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt(3)
    libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest: blocks up to 32 MiB come from the heap
    libc.mallopt(m_trim_threshold, 2**31 - 1)  # (an int) a free heap top is kept up to 2 GiB


def compiler_found() -> bool:
    """Whether torch.compile finds the C++ compiler it builds its CPU code with (g++, or $CXX)."""
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        get_cpp_compiler()
    except InvalidCxxCompiler:
        return False
    return True
