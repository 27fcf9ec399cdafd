"""Files: atomic writes and UTF-8 line readers (plain or gzip). No torch, so that
the CLI can check and write files before the seconds that importing torch takes.

Every reader raises `MTError` naming the file (and the line) for a missing or
unreadable file or a line that is not UTF-8.
"""

from __future__ import annotations

import gzip
import os
import sys
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from mt.config import MTError


def _shipped_models() -> Path:
    """`checkpoints/` of the source tree (an editable install), else the copy that
    installing the package puts under the environment's prefix (`share/mt/checkpoints`)."""
    source_tree = Path(__file__).resolve().parent.parent / "checkpoints"
    return source_tree if source_tree.is_dir() else Path(sys.prefix) / "share" / "mt" / "checkpoints"


SHIPPED_MODELS = _shipped_models()
DEFAULT_MODEL = SHIPPED_MODELS / "de-en"


def check_input_file(option: str, path: Path) -> None:
    """A file to read, checked before any work (and before torch is imported)."""
    if not path.is_file():
        raise MTError(f"{option} {path}: {'not a regular file' if path.exists() else 'file not found'}")


def output_path(path: Path | None, inputs: dict[str, Path]) -> Path | None:
    """Where to write an output file, checked before any work: a regular file (or a
    new one) that is none of the inputs. A symbolic link is written through (the file
    it points to is replaced, the link stays); `-`, a directory, a device or a FIFO is refused."""
    if path is None:
        return None
    if str(path) == "-":
        raise MTError("--output -: give a file name (standard output carries the scores)")
    target = path.resolve()
    if target.exists() and not target.is_file():
        raise MTError(f"--output {path} is not a regular file (a directory, device or FIFO); give a file name")
    for option, input_path in inputs.items():
        if input_path.exists() and target == input_path.resolve():
            raise MTError(f"--output {path} is the {option} file; writing it would destroy the input")
    return target


def translation_files(
    text: list[str] | None, input: Path | None, output: Path | None
) -> tuple[list[str] | None, Path | None, Path | None]:
    """`mt translate`'s sentences, --input and --output, checked before any work: `-`
    names standard input or output (None here), and the output is none of the inputs."""
    if text == ["-"]:  # the usual name of standard input
        text = None
    if text and input is not None:
        raise MTError("give the sentences as arguments or with --input, not both")
    if input is not None and str(input) == "-":
        input = None
    elif input is not None:
        check_input_file("--input", input)
    output = None if output is None or str(output) == "-" else output_path(output, {"--input": input} if input else {})
    if not text and input is None and sys.stdin is None:
        raise MTError("standard input is closed; give the sentences as arguments, with --input or through a pipe")
    return text, input, output


def open_text(path: Path):
    """Open a text file (gzip when it ends in .gz) for reading bytes."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_lines(path: Path) -> Iterator[str]:
    """Yield the lines of a UTF-8 text file without their line ends."""
    path = Path(path)
    if not path.exists():
        raise MTError(f"file not found: {path}")
    if path.is_dir():
        raise MTError(f"expected a file, got a directory: {path}")
    try:
        with open_text(path) as handle:
            yield from decode_lines(handle, str(path))
    except (OSError, EOFError, zlib.error) as error:  # permissions, a corrupt or cut-off gzip stream
        raise _unreadable(path, error) from None


def _unreadable(path: Path, error: Exception) -> MTError:
    """A file that cannot be read: permissions, a corrupt or cut-off gzip stream."""
    return MTError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}")


def decode_lines(handle: BinaryIO, name: str) -> Iterator[str]:
    """Yield the lines of a binary stream as text without their line ends, as
    they arrive; a line that is not UTF-8 raises `MTError` naming `name` and the line."""
    for number, raw in enumerate(handle, start=1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise MTError(f"{name}: line {number} is not valid UTF-8") from None


def count_lines(path: Path) -> int:
    """How many lines `iter_lines(path)` yields (a last line without a newline counts)."""
    count, last = 0, b"\n"
    try:
        with open_text(path) as handle:
            while block := handle.read(1 << 20):
                count += block.count(b"\n")
                last = block[-1:]
    except (OSError, EOFError, zlib.error) as error:
        raise _unreadable(path, error) from None
    return count + (last != b"\n")


def read_lines(path: Path) -> list[str]:
    return list(iter_lines(path))


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` when the block ends without an error:
    a crash or Ctrl-C on the way leaves the old file (or none), never half of the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it private; models and outputs are for everyone to read
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old file or the new one."""
    with atomic_file(path) as out:
        out.write(data)
