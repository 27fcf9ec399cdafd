"""What people see: progress bars on a terminal, plain lines in a log, scores and
attention grids. Built on rich; knows nothing of torch."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

PROGRESS_EVERY = 1000  # lines between two progress lines when stderr is a log, not a terminal
SCORE_LABELS = (("BLEU", "bleu"), ("BLEU lc", "bleu_lowercase"), ("chrF", "chrf"), ("TER", "ter"))


def one_line(text: str) -> str:
    """`text` with any line break (\\r, \\u2028, ...) made a space: one output line per input line."""
    return " ".join(text.splitlines())


def stderr_console(quiet: bool = False) -> Console:
    # Plain text: paths may hold [brackets] (not markup) and must not be wrapped.
    return Console(stderr=True, markup=False, highlight=False, soft_wrap=True, quiet=quiet)


class TimeLeftColumn(ProgressColumn):
    """Time until training ends: the estimate from the step rate, or the time left
    of the --max-minutes budget (task field `deadline`) when that is sooner."""

    def render(self, task) -> Text:
        remaining = task.time_remaining
        deadline = task.fields.get("deadline")
        if deadline is not None:
            budget = max(0.0, deadline - time.monotonic())
            remaining = budget if remaining is None else min(remaining, budget)
        return Text(
            "-:--:--" if remaining is None else str(timedelta(seconds=int(remaining))), style="progress.remaining"
        )


def validation_line(record: dict[str, Any]) -> str:
    """One line of text for a validation record (a line of log.jsonl)."""
    mark = " (best)" if record.get("best") else ""
    sets = record.get("validation_sets", {})
    per_set = " (" + ", ".join(f"{name} {s['bleu']:.2f}" for name, s in sets.items()) + ")" if sets else ""
    return (
        f"step {record['step']}  epoch {record['epoch']}  valid loss {record['validation_loss']:.3f}  "
        f"valid BLEU {record['validation_bleu']:.2f}{per_set}{mark}  lr {record['learning_rate']:.2e}"
    )


def quiet_library_progress(console: Console) -> None:
    """Keep a log (a console that is not a terminal) free of the corpus readers'
    (`datasets`') progress-bar redraws."""
    if not console.is_terminal:
        import datasets

        datasets.disable_progress_bars()


class TrainingProgress(Progress):
    """The trainer's reporter (`mt.train.Reporter`) for a person: a progress bar on a
    terminal (loss, tokens/s, ETA), a line every 100 updates in a log, and each validation as a line."""

    def __init__(self, console: Console):
        quiet_library_progress(console)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
        super().__init__(
            *columns,
            TextColumn("ETA"),
            TimeLeftColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            disable=not console.is_terminal,
        )

    def started(self, total_steps, state, deadline) -> None:
        self.total_steps = total_steps
        self.task = self.add_task("training", total=total_steps, completed=state.step, info="", deadline=deadline)

    def updated(self, state, loss_average) -> None:
        rate = state.train_tokens / max(state.train_seconds, 1e-9)
        info = (
            f"epoch {state.epoch + 1} loss {loss_average:.3f} {rate:,.0f} tok/s best BLEU {max(state.best_bleu, 0):.2f}"
        )
        self.update(self.task, completed=state.step, info=info)
        if not self.console.is_terminal and state.step % 100 == 0:  # a log file gets a line now and then
            self.console.print(f"step {state.step}/{self.total_steps}  {info}")

    def validated(self, record) -> None:
        self.console.print(validation_line(record))


class RateColumn(ProgressColumn):
    """Lines per second, rich's estimate over the last half minute."""

    def render(self, task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:.1f} lines/s", style="progress.data.speed")


@contextlib.contextmanager
def translation_progress(total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A callback taking the number of lines done: a progress bar on a terminal
    (lines, lines/s, ETA), else a line on stderr every PROGRESS_EVERY lines and at the end.
    None when the total is unknown (a pipe)."""
    if not total:
        yield None
        return
    console = stderr_console()
    started, reported = time.monotonic(), 0
    columns = (BarColumn(), MofNCompleteColumn(), RateColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("translating", total=total)

        def update(done: int) -> None:
            nonlocal reported
            bar.update(task, completed=done)
            if not console.is_terminal and (done - reported >= PROGRESS_EVERY or done == total):
                rate = done / max(time.monotonic() - started, 1e-9)
                console.print(f"translated {done:,}/{total:,} lines ({rate:.1f} lines/s)")
                reported = done

        yield update


def print_scores(results: list[dict], tested: dict | None, settings: str) -> None:
    """The scores of `mt evaluate` for a person: a line per metric with its signature,
    or, for several models, a block per model and the signatures once. BLEU's
    signature ends in the `settings` that translated (beam, precision, sentence splitting)."""
    several = len(results) > 1
    for index, result in enumerate(results):
        if several:
            typer.echo(f"{result['model']}{' (baseline)' if index == 0 else ''}")
        for label, name in SCORE_LABELS:
            line = f"{'  ' if several else ''}{label:<8}{result[name]:6.2f}"
            interval = result.get(f"{name}_confidence")
            if interval is not None:
                line += f"  (μ = {interval['mean']:.2f} ± {interval['ci']:.2f})"
                if "p_value" in interval:
                    line += f"  p = {interval['p_value']:.4f}{' *' if interval['p_value'] < 0.05 else ''}"
            typer.echo(line if several else f"{line}  {_signature(result, name, settings)}")
    if several:
        test = {"bs": "paired bootstrap resampling", "ar": "paired approximate randomization"}[tested["test"]]
        typer.echo(f"p: {test} against the baseline; * p < 0.05 (unlikely to be chance)")
        for label, name in SCORE_LABELS:
            typer.echo(f"{label:<8}{_signature(results[0], name, settings)}")
    if tested is not None:
        typer.echo(f"μ ± ci: bootstrap mean and 95% confidence interval; {tested['signatures']['bleu']}")


def _signature(result: dict, name: str, settings: str) -> str:
    signature = result[f"{name}_signature"]
    return f"{signature}|mt:{settings}" if name == "bleu" else signature


def _show_alignment(alignment) -> None:
    """Print attention weights (a translator's `Alignment`) as a compact source-by-target grid."""
    if alignment is None:
        typer.echo("  (this model has no attention to show)", err=True)
        return
    shades = " ░▒▓█"
    width = max(len(p) for p in alignment.target)
    for row, piece in enumerate(alignment.target):
        cells = "".join(shades[min(4, int(float(w) * 5))] * 2 for w in alignment.weights[row])
        typer.echo(f"  {piece:>{width}} |{cells}|")
    typer.echo(f"  {'':>{width}}  " + " ".join(f"{i}:{p}" for i, p in enumerate(alignment.source)))


def interactive_prompt(translator, decode, n_best: int, show_attention: bool, split: bool, version: str) -> None:
    """`mt translate` at a terminal: a prompt with line editing and history (~/.mt_history);
    each typed line's translation, its `n_best` candidates with scores and, with
    `show_attention`, the attention grid. Ctrl-D quits; Ctrl-C exits with 130."""
    import readline  # noqa: F401  (line editing and history for input())

    history = Path.home() / ".mt_history"
    with contextlib.suppress(OSError):
        readline.read_history_file(history)
    pieces = translator.tokenizers.source.vocab_size
    typer.echo(f"mt {version}: type a sentence, Enter to translate; Ctrl-D to quit. ({pieces} subwords)", err=True)
    try:
        while True:
            sys.stderr.write("> ")  # the prompt goes to the terminal, not into `mt translate > file`
            sys.stderr.flush()
            line = input()
            if not line.strip():
                continue
            candidates = translator.translate_n_best([line], decode, n_best, split)[0]
            typer.echo(one_line(candidates[0].text))
            if n_best > 1:
                for rank, candidate in enumerate(candidates, start=1):
                    typer.echo(f"  {rank}. ({candidate.score:.3f}) {one_line(candidate.text)}")
            if show_attention:
                _show_alignment(translator.alignment(line, candidates[0].text))
    except EOFError:  # Ctrl-D: the way to quit
        typer.echo("", err=True)
    except KeyboardInterrupt:  # Ctrl-C: interrupted, as shells report it
        typer.echo("", err=True)
        raise typer.Exit(130) from None
    finally:
        with contextlib.suppress(OSError):
            readline.write_history_file(history)


def print_compare_table(rows: list[dict]) -> None:
    """`mt compare`'s rows (`mt.diagnostics.compare_cells`) as one Markdown table."""
    typer.echo(
        "| cell | hidden | parameters | updates | tokens/s | val BLEU | sentences/s (greedy) | dL/dh first/last |"
    )
    typer.echo("|---|---|---|---|---|---|---|---|")
    for row in rows:
        typer.echo(
            f"| {row['cell']} | {row['hidden_size']} | {row['parameters']:,} | {row['updates']} | "
            f"{row['tokens_per_second']:,} | {row['validation_bleu']:.2f} | {row['sentences_per_second']} | "
            f"{row['gradient_first_to_last']:.2e} |"
        )
