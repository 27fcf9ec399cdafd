"""`mt translate` in pipelines: lines in, translations out, as the lines arrive.

`chunks` reads lines (standard input, a file) on a thread of its own and hands
them on in chunks. A chunk ends when it holds `size` lines or, for a live
stream, when no line has come for `pause` seconds: a program that writes one
line and waits for its translation gets it at once, and a fast pipe or a file
still fills whole chunks, which the translator sorts by length into full
batches. At most two chunks wait between the reader and the translator, so
memory stays flat however long the input.

`Formatter` turns a line's candidates into output: one line of text (the
default), Moses-style n-best lines, or one JSON object (`--format jsonl`,
schema in the README).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mt.config import DecodeConfig, OutputFormat
from mt.console import one_line, translation_progress
from mt.files import MAX_LINE_BYTES, atomic_file, count_lines, decode_lines, iter_lines
from mt.translator import Candidate, Translator

# A live stream that is silent this long has paused: translate what has come.
# Short enough not to be noticed by a person, long enough for a pipe that is
# being written to keep delivering whole chunks.
PAUSE_SECONDS = 0.01


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = object()


def chunks(lines: Iterable[str], size: int, pause: float | None = PAUSE_SECONDS) -> Iterator[list[str]]:
    """`lines` in order, in lists of at most `size`; with `pause`, a list also ends
    when the next line takes longer than `pause` seconds to come. An error of the
    reader (a line that is not UTF-8) is raised after the lines before it."""
    waiting: queue.Queue = queue.Queue(maxsize=2 * size)

    def read() -> None:
        try:
            for line in lines:
                waiting.put(line)
        except BaseException as error:  # noqa: BLE001  (handed to the consumer's thread)
            waiting.put(_Failed(error))
        else:
            waiting.put(_END)

    threading.Thread(target=read, name="mt-line-reader", daemon=True).start()
    chunk: list[str] = []
    while True:
        try:
            item = waiting.get(timeout=pause if chunk and pause is not None else None)
        except queue.Empty:  # the stream paused: what has come is translated now
            yield chunk
            chunk = []
            continue
        if item is _END or isinstance(item, _Failed):
            if chunk:
                yield chunk
            if isinstance(item, _Failed):
                raise item.error
            return
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []


# Characters that str.splitlines() (and so many JSON-lines readers) takes for line ends and
# that json.dumps(ensure_ascii=False) leaves as they are: escaped, one record stays one line.
LINE_ENDS = {ord(c): f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"}


@dataclass(frozen=True)
class Formatter:
    """The output for one input line: `format`, `n_best` candidates, and with
    `alignment` (jsonl only) the attention of the best translation."""

    translator: Translator
    format: OutputFormat = OutputFormat.text
    n_best: int = 1
    alignment: bool = False

    def __call__(self, index: int, source: str, candidates: list[Candidate]) -> str:
        if self.format == OutputFormat.text:
            if self.n_best == 1:
                return one_line(candidates[0].text) + "\n"
            # Moses n-best lines: the 0-based number of the input line, a translation, its score
            return "".join(f"{index} ||| {one_line(c.text)} ||| {c.score:.4f}\n" for c in candidates)
        best = candidates[0]
        record: dict = {"source": source, "translation": one_line(best.text), "score": round(best.score, 4)}
        if self.n_best > 1:
            record["n_best"] = [{"translation": one_line(c.text), "score": round(c.score, 4)} for c in candidates]
        if self.alignment:
            found = self.translator.alignment(source, best.text) if best.text else None
            record["alignment"] = found.to_dict() if found is not None else None
        return json.dumps(record, ensure_ascii=False).translate(LINE_ENDS) + "\n"


def translate_stream(
    translator: Translator,
    lines: Iterable[str],
    decode: DecodeConfig,
    formatter: Formatter,
    write: Callable[[str], None],
    buffer_size: int,
    split: bool = True,
    pause: float | None = PAUSE_SECONDS,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Translate `lines` chunk by chunk, `write` each chunk's output as soon as it
    is ready, and call `progress` with the number of lines done; returns that number."""
    done = 0
    for chunk in chunks(lines, buffer_size, pause):
        results = translator.translate_n_best(chunk, decode, formatter.n_best, split)
        write("".join(formatter(done + i, source, found) for i, (source, found) in enumerate(zip(chunk, results))))
        done += len(chunk)
        if progress is not None:
            progress(done)
    return done


def translate_lines(
    translator: Translator,
    text: list[str] | None,
    input: Path | None,
    output: Path | None,
    decode: DecodeConfig,
    formatter: Formatter,
    buffer_size: int,
    split: bool = True,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> int:
    """`mt translate` of arguments (`text`), a file (`input`, with progress on stderr) or
    standard input (translated as it arrives), to standard output or into `output`,
    which appears only when all of it is written. Returns the number of lines."""
    if text:
        lines, pause, total = text, None, None
    elif input is not None:
        lines, pause, total = iter_lines(input, max_line_bytes), None, count_lines(input)
    else:
        lines, pause = decode_lines(sys.stdin.buffer, "standard input", max_line_bytes), PAUSE_SECONDS
        total = None
    with _destination(output) as write, translation_progress(total) as progress:
        return translate_stream(translator, lines, decode, formatter, write, buffer_size, split, pause, progress)


@contextmanager
def _destination(path: Path | None) -> Iterator[Callable[[str], None]]:
    """A function that writes text to standard output (flushed: a reader gets each
    chunk at once) or into `path`, which appears only once everything is written."""
    if path is None:

        def write(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        yield write
        return
    with atomic_file(path) as out:
        yield lambda text: out.write(text.encode("utf-8"))
