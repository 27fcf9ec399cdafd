"""The server's cross-request batching: one TranslationWorker per direction.

Each model has one asyncio task that drains its queue. It takes every request
queued for the model, waiting up to `batch_wait_ms` for more to arrive after
the first, and translates the texts of all requests with the same beam in one
call of `Translator.translate_n_best` (HTML documents: one
`mt.markup.translate_html` call each), run in a thread (`asyncio.to_thread`) so
that the event loop never runs the model. A model's task awaits one call before
it starts the next: its Translator is used by one thread at a time.

One request never breaks another: a batch whose Translator call fails is
retried request by request (only the request that broke it fails, with
TranslationFailed), a request whose client has gone is dropped before it is
translated, and when the task ends the requests still waiting fail at once
with WorkerStopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import torch

from mt.checkpoint import read_info, resolve
from mt.config import DecodeConfig, MTError
from mt.markup import translate_html
from mt.translator import Alignment, Translator

logger = logging.getLogger("mt.batching")


@dataclass(frozen=True)
class TextResult:
    texts: list[str]  # the best translation first, then the alternatives
    scores: list[float]
    alignment: Alignment | None


@dataclass
class _Job:
    """One request's texts, waiting for its model's worker."""

    texts: list[str]
    beam: int
    n_best: int
    alignment: bool
    future: asyncio.Future[list[TextResult]]
    html: bool = False  # translated by mt.markup, tags kept; no alternatives

    @property
    def kind(self) -> tuple[bool, int]:
        """Jobs of one kind share a Translator call."""
        return self.html, self.beam


class TranslationFailed(Exception):
    """The Translator raised `error` on a request's texts: the request answers 500."""

    def __init__(self, error: Exception):
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


class WorkerStopped(Exception):
    """A model's batching task has ended (it failed, or the server is stopping): its requests answer 503."""


class TranslationWorker:
    """One model's Translator and the asyncio task that feeds it batches.

    `batching=False` translates each request on its own (for comparison);
    otherwise a batch is every request queued within `batch_wait_ms` of the
    first. `batches` and `requests` count the Translator calls and the
    requests they served; `pending`, the requests waiting for their answer.
    If the task ends, the requests waiting and those that come after it fail
    with WorkerStopped instead of waiting for ever.
    """

    def __init__(self, translator, source: str, target: str, batch_wait_ms: float = 5.0, batching: bool = True):
        self.translator = translator
        self.source, self.target = source, target
        self.batch_wait = batch_wait_ms / 1000
        self.batching = batching
        self.batches = 0
        self.requests = 0
        self._waiting: set[asyncio.Future[list[TextResult]]] = set()
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def attention(self) -> bool:
        return self.translator.has_attention

    @property
    def pending(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def pieces(self, texts: list[str]) -> int:
        """How many source subword pieces `texts` make: what the search works through."""
        return sum(len(ids) for ids in self.translator.tokenizers.source.encode(texts))

    def start(self) -> None:
        """Start the task, on the event loop that will serve the requests."""
        self._task = asyncio.create_task(self._run(), name=f"translate-{self.source}-{self.target}")
        self._task.add_done_callback(self._stopped)

    async def stop(self) -> None:
        """Finish the queued requests, then end the task."""
        if self._task is not None and not self._task.done():
            self._queue.put_nowait(None)
            await self._task

    def _stopped(self, task: asyncio.Task[None]) -> None:
        """The task has ended: fail the requests still waiting, as nothing will answer them now."""
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("the %s->%s batching task failed", self.source, self.target, exc_info=error)
        for future in self._waiting:
            if not future.done():
                future.set_exception(WorkerStopped(f"the {self.source}->{self.target} model is not running"))

    async def translate(
        self, texts: list[str], beam: int, n_best: int, alignment: bool, html: bool = False
    ) -> list[TextResult]:
        """The n best of each text (of an HTML document: its one translation); raises TranslationFailed if the Translator fails
        on them, WorkerStopped if the task has ended. Cancelling the call (its
        client has gone) takes its texts out of the batch they wait for."""
        if not self.running:
            raise WorkerStopped(f"the {self.source}->{self.target} model is not running")
        future = asyncio.get_running_loop().create_future()
        self._waiting.add(future)
        try:
            self._queue.put_nowait(_Job(texts, beam, n_best, alignment, future, html))
            return await future
        finally:
            self._waiting.discard(future)

    async def _run(self) -> None:
        while (first := await self._queue.get()) is not None:
            jobs, stopping = await self._collect(first)
            for _, group in groupby(sorted(jobs, key=lambda job: job.kind), key=lambda job: job.kind):
                await self._answer(list(group))
            if stopping:
                return

    async def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """`first` and what arrives within the batch wait (with a wait of 0: what is
        queued already); True if the stop sign came too."""
        jobs = [first]
        if not self.batching:
            return jobs, False
        try:
            async with asyncio.timeout(self.batch_wait):
                while (job := await self._queue.get()) is not None:
                    jobs.append(job)
                return jobs, True
        except TimeoutError:
            return jobs, False

    async def _answer(self, jobs: list[_Job]) -> None:
        """Translate `jobs` (all of one kind) and settle their futures; a job whose
        request was cancelled (client gone, forced shutdown) is not translated."""
        jobs = [job for job in jobs if not job.future.done()]
        self.requests += len(jobs)
        answers = await self._attempt(jobs) if jobs else []
        for job, answer in zip(jobs, answers):
            if job.future.done():
                continue
            if isinstance(answer, Exception):
                job.future.set_exception(TranslationFailed(answer))
            else:
                job.future.set_result(answer)

    async def _attempt(self, jobs: list[_Job]) -> list[list[TextResult] | Exception]:
        """One Translator call (in a thread) for `jobs`; if it fails, one call per job,
        so that a request that breaks the shared call fails alone."""
        self.batches += 1
        try:
            return await asyncio.to_thread(self._translate_html if jobs[0].html else self._translate, jobs)
        except Exception as error:  # noqa: BLE001  (retried below, or this request answers 500)
            if len(jobs) == 1:
                return [error]
            logger.warning("a batch of %d requests failed (%s); translating them one by one", len(jobs), error)
        answers: list[list[TextResult] | Exception] = []
        for job in jobs:
            answers += await self._attempt([job])
        return answers

    def _translate(self, jobs: list[_Job]) -> list[list[TextResult] | Exception]:
        """In a thread: one Translator call for the texts of `jobs` (all of one
        beam), then each job's results or the error that its own part raised.
        The n best of a larger n_best start with the n best of a smaller one,
        so requests that ask for different numbers of alternatives share it."""
        texts = [text for job in jobs for text in job.texts]
        n_best = max(job.n_best for job in jobs)
        candidates = self.translator.translate_n_best(texts, DecodeConfig(beam_size=jobs[0].beam), n_best, split=True)
        answers: list[list[TextResult] | Exception] = []
        position = 0
        for job in jobs:
            found = candidates[position : position + len(job.texts)]
            position += len(job.texts)
            try:
                answers.append(
                    [
                        self._result(text, options[: job.n_best], job.alignment)
                        for text, options in zip(job.texts, found)
                    ]
                )
            except Exception as error:  # noqa: BLE001  (this request answers 500)
                answers.append(error)
        return answers

    def _translate_html(self, jobs: list[_Job]) -> list[list[TextResult] | Exception]:
        """In a thread: each job's HTML documents, translated by mt.markup (text between the tags)."""
        decode = DecodeConfig(beam_size=jobs[0].beam)
        answers: list[list[TextResult] | Exception] = []
        for job in jobs:
            try:
                answers.append(
                    [TextResult([translate_html(self.translator, text, decode)], [], None) for text in job.texts]
                )
            except Exception as error:  # noqa: BLE001  (this request answers 500)
                answers.append(error)
        return answers

    def _result(self, source: str, candidates, alignment: bool) -> TextResult:
        attention = self.translator.alignment(source, candidates[0].text) if alignment else None
        return TextResult([c.text for c in candidates], [c.score for c in candidates], attention)


def load_workers(
    models: Sequence[Path],
    device: torch.device | str = "cpu",
    quantize: bool | None = None,
    batch_wait_ms: float = 5.0,
    batching: bool = True,
) -> list[TranslationWorker]:
    """A worker per direction, the languages read from each checkpoint's record;
    several checkpoints of one direction translate as an ensemble."""
    directions: dict[tuple[str, str], list[Path]] = {}
    for path in models:
        directions.setdefault(checkpoint_languages(path), []).append(path)
    return [
        TranslationWorker(Translator.from_checkpoints(paths, device, quantize), source, target, batch_wait_ms, batching)
        for (source, target), paths in directions.items()
    ]


def checkpoint_languages(path: Path) -> tuple[str, str]:
    """(source, target) language codes of a checkpoint, from its record."""
    info = read_info(path)
    source, target = info.get("source_language"), info.get("target_language")
    if not (isinstance(source, str) and isinstance(target, str) and source and target):
        raise MTError(
            f"{resolve(path)} does not record its languages (source_language, target_language); the server needs them"
        )
    return source, target
