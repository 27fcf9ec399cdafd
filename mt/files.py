"""Files: atomic writes and UTF-8 line readers (plain or gzip). No torch, so that
the CLI can check and write files before the seconds that importing torch takes.

Every reader raises `MTError` naming the file (and the line) for a missing or
unreadable file or a line that is not UTF-8.
"""

from __future__ import annotations

import gzip
import os
import stat
import sys
import sysconfig
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from mt.config import MTError


def shipped_models_in(source_tree: Path, data_directories: Sequence[Path]) -> Path:
    """Where the shipped models are: `checkpoints/` of the source tree (an editable
    install), else the copy that installing the package put under the first data
    directory that has one (`share/mt/checkpoints`: the environment's prefix, or the
    user's after `pip install --user`); the prefix's when none has."""
    if source_tree.is_dir():
        return source_tree
    installed = [Path(directory) / "share" / "mt" / "checkpoints" for directory in data_directories]
    return next((path for path in installed if path.is_dir()), installed[0])


def _data_directories() -> list[Path]:
    """Where pip puts data files: the environment's prefix, then the user's scheme."""
    user = sysconfig.get_preferred_scheme("user")
    return [Path(sys.prefix), Path(sysconfig.get_path("data")), Path(sysconfig.get_path("data", user))]


SHIPPED_MODELS = shipped_models_in(Path(__file__).resolve().parent.parent / "checkpoints", _data_directories())
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
    if not target.parent.is_dir():
        missing = "is not a directory" if target.parent.exists() else "does not exist"
        raise MTError(f"--output {path}: {target.parent} {missing}")
    if target.exists() and not target.is_file():
        raise MTError(f"--output {path} is not a regular file (a directory, device or FIFO); give a file name")
    for option, input_path in inputs.items():
        if input_path.exists() and target.exists() and os.path.samefile(target, input_path):
            raise MTError(f"--output {path} is the {option} file; writing it would destroy the input")
    return target


def evaluation_files(src: Path, ref: Path, output: Path | None) -> tuple[list[str], list[str], Path | None]:
    """`mt evaluate`'s sources and references, read, and its --output, checked before any
    work: one reference per source, at least one, and an output that is neither."""
    check_input_file("--src", src)
    check_input_file("--ref", ref)
    output = output_path(output, {"--src": src, "--ref": ref})
    sources, references = read_lines(src), read_lines(ref)
    if len(sources) != len(references):
        raise MTError(f"{src} has {len(sources)} lines but {ref} has {len(references)}")
    if not sources:
        raise MTError(f"{src} is empty")
    return sources, references, output


def translation_files(
    text: list[str] | None, input: Path | None, output: Path | None
) -> tuple[list[str] | None, Path | None, Path | None]:
    """`mt translate`'s sentences, --input and --output, checked before any work: `-`
    names standard input or output (None here), and the output is none of the inputs."""
    if text == ["-"]:  # the usual name of standard input
        text = None
    for number, argument in enumerate(text or [], start=1):
        if not _is_utf8(argument):
            raise MTError(f"argument {number} is not valid UTF-8 text")
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


def _is_utf8(text: str) -> bool:
    """Whether `text` (e.g. a command-line argument, whose undecodable bytes Python keeps as
    lone surrogates) is valid Unicode that UTF-8 can write."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def language_of(path: Path) -> str | None:
    """The language code a corpus file's name ends in (`test.de.gz` -> "de"), if any."""
    suffixes = [suffix.lstrip(".") for suffix in path.suffixes if suffix != ".gz"]
    code = suffixes[-1] if suffixes else ""
    return code if code.isalpha() and 2 <= len(code) <= 3 and code.islower() else None


def open_text(path: Path):
    """Open a text file (gzip when it ends in .gz) for reading bytes."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


# The longest line a reader takes: a stream without line ends (a pipe of megabytes that
# never says "\n") stops with an error instead of filling memory.
MAX_LINE_BYTES = 1_000_000


def iter_lines(path: Path, max_bytes: int = MAX_LINE_BYTES) -> Iterator[str]:
    """Yield the lines of a UTF-8 text file without their line ends."""
    path = Path(path)
    if not path.exists():
        raise MTError(f"file not found: {path}")
    if path.is_dir():
        raise MTError(f"expected a file, got a directory: {path}")
    try:
        with open_text(path) as handle:
            yield from decode_lines(handle, str(path), max_bytes)
    except (OSError, EOFError, zlib.error) as error:  # permissions, a corrupt or cut-off gzip stream
        raise _unreadable(path, error) from None


def _unreadable(path: Path, error: Exception) -> MTError:
    """A file that cannot be read: permissions, a corrupt or cut-off gzip stream."""
    return MTError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}")


def decode_lines(handle: BinaryIO, name: str, max_bytes: int = MAX_LINE_BYTES) -> Iterator[str]:
    """Yield the lines of a binary stream as text without their line ends, as they
    arrive; a line that is not UTF-8, or longer than `max_bytes`, raises `MTError`
    naming `name` and the line."""
    number = 0
    while raw := handle.readline(max_bytes + 1):
        number += 1
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            raise MTError(f"{name}: line {number} is longer than {max_bytes:,} bytes (a stream without line ends?)")
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
    a crash, Ctrl-C or SIGTERM on the way leaves the old file (or none), never half of
    the new one. The file keeps the mode of the one it replaces; a new file gets the
    mode the umask allows (as `open` would give it). Its directory must exist."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, _mode_for(path))  # mkstemp makes it private (0600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _mode_for(path: Path) -> int:
    """The permission bits of the file at `path`, or of a new file under the process's umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)  # reading the umask means setting it: set it back at once
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old file or the new one."""
    with atomic_file(path) as out:
        out.write(data)
