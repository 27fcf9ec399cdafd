"""The translation server: a LibreTranslate-compatible JSON API and a web page.

    POST /translate   {"q": str | [str], "source": "de", "target": "en", "alternatives": N}
                      -> {"translatedText": str | [str], "alternatives": [...]}
                      mt's extras, per request: "beam", "scores", "alignment"
    GET  /languages   [{"code", "name", "targets"}] of the loaded models
    GET  /health      status, the loaded models and the batching counters
    GET  /            the page (mt/static/)

Every error is a JSON object {"error": "..."}: 4xx for what a client sent
wrong, 500 (and a log entry) for the server's own failures.

Cross-request batching: each model has one worker thread, the only thread that
calls its Translator. The worker takes every request queued for its model,
waiting up to `batch_wait_ms` for more to arrive after the first, and
translates the texts of all requests with the same beam in one call of
`Translator.translate_n_best`. The event loop only queues work and awaits a
future that the worker resolves through `loop.call_soon_threadsafe`; it never
runs torch.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import json
import logging
import queue
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException

from mt.checkpoint import DEFAULT_MODEL, read_info, resolve
from mt.config import DecodeConfig, MTError
from mt.translator import Translator

logger = logging.getLogger("mt.server")

STATIC = Path(__file__).resolve().parent / "static"
MAX_BEAM = 16
LANGUAGE_NAMES = {"cs": "Czech", "de": "German", "en": "English", "fr": "French"}
# The page's only sources are this server: no CDN, no inline script.
PAGE_POLICY = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


def default_models() -> list[Path]:
    """The shipped general models, one per direction."""
    return [DEFAULT_MODEL, DEFAULT_MODEL.parent / "en-de"]


# -- request and response models ---------------------------------------------


class TranslateRequest(BaseModel):
    """LibreTranslate's /translate body, plus mt's extras (`beam`, `scores`, `alignment`)."""

    model_config = ConfigDict(extra="ignore")  # LibreTranslate clients may send fields this server does not use

    q: str | list[str]
    source: str
    target: str
    format: str = "text"
    alternatives: int = Field(0, ge=0)
    api_key: str | None = None
    beam: int = Field(5, ge=1, le=MAX_BEAM)
    scores: bool = False
    alignment: bool = False

    @field_validator("q", mode="before")
    @classmethod
    def _text_or_texts(cls, value: Any) -> Any:
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            return value
        raise ValueError("must be a string or a list of strings")

    @property
    def texts(self) -> list[str]:
        return [self.q] if isinstance(self.q, str) else self.q


class Alignment(BaseModel):
    """Attention of a translation over its source: weights[t][s] for target piece t, source piece s."""

    source: list[str]
    target: list[str]
    weights: list[list[float]]


class TranslateResponse(BaseModel):
    """One entry per text for a list `q`, the entry itself for a string `q`.

    `alternatives` (when asked for) are the next best translations; `scores`
    (when asked for) are the scores of the translation and then of each
    alternative; `alignment` is null for a model without attention.
    """

    translatedText: str | list[str]
    alternatives: list[str] | list[list[str]] | None = None
    scores: list[float] | list[list[float]] | None = None
    alignment: Alignment | list[Alignment | None] | None = None


class Language(BaseModel):
    code: str
    name: str
    targets: list[str]


# -- the batching worker -------------------------------------------------------


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
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    """On the event loop: hand a job's result (or error) to its request."""
    if future.done():  # the request was cancelled (client gone, forced shutdown)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _reply(job: _Job, result: Any, error: BaseException | None = None) -> None:
    """From the worker thread: settle `job`'s future on its event loop."""
    try:
        job.loop.call_soon_threadsafe(_settle, job.future, result, error)
    except RuntimeError:  # the event loop has closed: nobody is waiting
        pass


class TranslationWorker:
    """One model's Translator and the one thread that calls it.

    `batching=False` translates each request on its own (for comparison);
    otherwise a batch is every request queued within `batch_wait_ms` of the
    first. `batches` and `requests` count the Translator calls and the
    requests they served.
    """

    def __init__(self, translator, source: str, target: str, batch_wait_ms: float = 5.0, batching: bool = True):
        self.translator = translator
        self.source, self.target = source, target
        self.batch_wait = batch_wait_ms / 1000
        self.batching = batching
        self.batches = 0
        self.requests = 0
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"translate-{source}-{target}", daemon=True)

    @property
    def attention(self) -> bool:
        return self.translator.has_attention

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the queued requests, then end the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    async def translate(self, texts: list[str], beam: int, n_best: int, alignment: bool) -> list[TextResult]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(texts, beam, n_best, alignment, future, loop))
        return await future

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            jobs, stopping = self._collect(first)
            for _, group in groupby(sorted(jobs, key=lambda job: job.beam), key=lambda job: job.beam):
                self._translate(list(group))
            if stopping:
                return

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """`first` and what arrives within the batch wait; True if the stop sign came too."""
        jobs = [first]
        deadline = time.monotonic() + self.batch_wait
        while self.batching:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _translate(self, jobs: list[_Job]) -> None:
        """One Translator call for the texts of `jobs` (all of one beam). The n
        best of a larger n_best start with the n best of a smaller one, so
        requests that ask for different numbers of alternatives share it."""
        texts = [text for job in jobs for text in job.texts]
        n_best = max(job.n_best for job in jobs)
        self.batches += 1
        self.requests += len(jobs)
        try:
            candidates = self.translator.translate_n_best(
                texts, DecodeConfig(beam_size=jobs[0].beam), n_best, split=True
            )
        except Exception as error:  # noqa: BLE001  (every request of the batch answers 500)
            for job in jobs:
                _reply(job, None, error)
            return
        position = 0
        for job in jobs:
            found = candidates[position : position + len(job.texts)]
            position += len(job.texts)
            try:
                _reply(
                    job,
                    [
                        self._result(text, options[: job.n_best], job.alignment)
                        for text, options in zip(job.texts, found)
                    ],
                )
            except Exception as error:  # noqa: BLE001
                _reply(job, None, error)

    def _result(self, source: str, candidates, alignment: bool) -> TextResult:
        attention = self.translator.alignment(source, candidates[0].text) if alignment else None
        if attention is not None:
            attention = Alignment(**attention.to_dict())
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


# -- the app -------------------------------------------------------------------


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(error: ValidationError | RequestValidationError) -> str:
    parts = []
    for detail in error.errors()[:3]:
        if detail["type"] == "model_type":
            return "invalid request: the body must be a JSON object with q, source and target"
        where = ".".join(str(part) for part in detail["loc"] if part != "body") or "body"
        parts.append(f"{where}: {detail['msg'].removeprefix('Value error, ')}")
    return "invalid request: " + "; ".join(parts)


class _BodyLimit:
    """ASGI middleware: a body larger than `limit` bytes is refused with 413
    before anything parses it (declared or streamed); others are read whole and
    passed on."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        too_large = _error(413, f"request body larger than {self.limit} bytes")
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            return await too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await too_large(scope, receive, send)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class _ServerErrors:
    """ASGI middleware: an exception no handler took becomes a 500 JSON error and a log entry."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as error:  # noqa: BLE001
            logger.error(
                "%s %s failed: %s: %s", scope["method"], scope["path"], type(error).__name__, error, exc_info=error
            )
            if not started:
                await _error(500, f"internal server error ({type(error).__name__})")(scope, receive, send)


def create_app(
    workers: Sequence[TranslationWorker],
    max_chars: int = 5000,
    max_items: int = 100,
    api_key: str | None = None,
    max_body_bytes: int | None = None,
) -> FastAPI:
    """The app over started-on-startup `workers`; `max_body_bytes` defaults to
    room for `max_chars` characters each written as a JSON escape pair."""
    routes = {(worker.source, worker.target): worker for worker in workers}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        for worker in workers:
            worker.start()
        try:
            yield
        finally:  # uvicorn has finished the requests in flight
            for worker in workers:
                await asyncio.to_thread(worker.stop)

    app = FastAPI(title="mt", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_BodyLimit, limit=max_body_bytes or 16_384 + 12 * max_chars)
    app.add_middleware(_ServerErrors)
    pending = 0  # requests waiting for a worker

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(ValidationError)
    async def invalid(_: Request, error) -> JSONResponse:
        return _error(400, _validation_message(error))

    def authorize(request: Request, key_in_body: str | None = None) -> None:
        """The key from the body (LibreTranslate), `Authorization: Bearer KEY` or `?api_key=`."""
        if api_key is None:
            return
        bearer = request.headers.get("authorization", "")
        given = key_in_body or (
            bearer[7:].strip() if bearer[:7].lower() == "bearer " else request.query_params.get("api_key")
        )
        if not given or not secrets.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(403, "invalid or missing API key")

    def route(body: TranslateRequest) -> TranslationWorker:
        pairs = ", ".join(f"{s}->{t}" for s, t in routes)
        if body.source == "auto":
            raise HTTPException(
                400, f"source language detection ('auto') is not supported; name the source language ({pairs})"
            )
        if body.format != "text":
            raise HTTPException(400, f"format {body.format!r} is not supported; send plain text with format 'text'")
        if (body.source, body.target) not in routes:
            raise HTTPException(
                400, f"no model translates {body.source!r} to {body.target!r}; this server translates {pairs}"
            )
        texts = body.texts
        if not texts or (isinstance(body.q, str) and not body.q.strip()):
            raise HTTPException(400, "q is empty: give a text or a list of texts")
        if len(texts) > max_items:
            raise HTTPException(400, f"q has {len(texts)} texts; at most {max_items} per request")
        characters = sum(len(text) for text in texts)
        if characters > max_chars:
            raise HTTPException(400, f"q has {characters} characters; at most {max_chars} per request")
        if body.alternatives >= body.beam:
            raise HTTPException(
                400, f"alternatives ({body.alternatives}) must be fewer than beam ({body.beam}): ask for a larger beam"
            )
        return routes[body.source, body.target]

    @app.post("/translate", response_model=TranslateResponse)
    async def translate(request: Request) -> JSONResponse:
        nonlocal pending
        body = TranslateRequest.model_validate(await _request_data(request))
        authorize(request, body.api_key)
        worker = route(body)
        pending += 1
        try:
            results = await worker.translate(body.texts, body.beam, body.alternatives + 1, body.alignment)
        finally:
            pending -= 1
        single = isinstance(body.q, str)

        def each(values: list) -> Any:
            return values[0] if single else values

        response = TranslateResponse(translatedText=each([r.texts[0] for r in results]))
        if body.alternatives:
            response.alternatives = each([r.texts[1:] for r in results])
        if body.scores:
            response.scores = each([r.scores for r in results])
        if body.alignment:
            response.alignment = each([r.alignment for r in results])
        return JSONResponse(response.model_dump(exclude_unset=True))

    @app.get("/languages", response_model=list[Language])
    async def languages(request: Request) -> list[Language]:
        authorize(request)
        codes = sorted({code for pair in routes for code in pair})
        return [
            Language(code=code, name=LANGUAGE_NAMES.get(code, code), targets=sorted(t for s, t in routes if s == code))
            for code in codes
        ]

    @app.get("/health")
    async def health(request: Request) -> dict:
        authorize(request)
        return {
            "status": "ok",
            "models": [{"source": w.source, "target": w.target, "attention": w.attention} for w in workers],
            "batches": sum(w.batches for w in workers),
            "requests": sum(w.requests for w in workers),
            "pending": pending,
        }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def _request_data(request: Request) -> Any:
    """The body as JSON, or as a form (one field per name; a repeated `q` is a list)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        data: dict[str, Any] = {key: form.get(key) for key in form}
        if len(texts := form.getlist("q")) > 1:
            data["q"] = texts
        return data
    raw = await request.body()
    if not raw.strip():
        raise HTTPException(400, "empty body: send a JSON object (or a form) with q, source and target")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise HTTPException(400, f"malformed JSON body: {error}") from None


# -- running it ----------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextmanager
def _quiet_signal_exit() -> Iterator[None]:
    """Let Ctrl-C and SIGTERM end the server with status 0: uvicorn shuts down
    gracefully on them, then re-raises the signal to the handler it found."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(
    models: Sequence[Path] | None = None,
    host: str = "127.0.0.1",
    port: int = 5000,
    max_chars: int = 5000,
    max_items: int = 100,
    api_key: str | None = None,
    batch_wait_ms: float = 5.0,
    batching: bool = True,
    device: torch.device | str = "cpu",
    quantize: bool | None = None,
    echo: Callable[[str], None] | None = None,
) -> None:
    """Load `models` (default: the shipped de-en and en-de), listen on host:port
    (0: any free port) and serve until Ctrl-C or SIGTERM, which finish the
    requests in flight first. `echo` prints the lines for the user (default: stderr)."""
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    for name, value, low in (
        ("--max-chars", max_chars, 1),
        ("--max-items", max_items, 1),
        ("--batch-wait-ms", batch_wait_ms, 0),
    ):
        if value < low:
            raise MTError(f"{name} must be >= {low}, got {value}")
    if not 0 <= port <= 65535:
        raise MTError(f"--port must be between 0 and 65535, got {port}")
    if not is_loopback(host):
        echo(
            f"warning: --host {host} is not a loopback address: anyone who can reach this machine can use the server"
            + ("" if api_key else " (set --api-key to require a key)")
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))  # before loading the models: a taken port fails at once
    except OSError as error:
        sock.close()
        raise MTError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    port = sock.getsockname()[1]
    # Inference only: torch's own LSTM is the faster one step at a time. Switched
    # off once for the process, so the workers' per-call switch never races.
    torch.backends.mkldnn.enabled = False
    try:
        workers = load_workers(list(models or default_models()), device, quantize, batch_wait_ms, batching)
    except BaseException:
        sock.close()
        raise
    app = create_app(workers, max_chars, max_items, api_key)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["mt"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config = uvicorn.Config(
        app, host=host, port=port, log_config=log_config, timeout_graceful_shutdown=60, server_header=False
    )
    pairs = ", ".join(f"{w.source}->{w.target} ({'int8' if w.translator.int8 else 'fp32'})" for w in workers)
    url_host = f"[{host}]" if ":" in host else host
    echo(f"serving {pairs} on http://{url_host}:{port} (Ctrl-C to stop)")
    with _quiet_signal_exit():
        uvicorn.Server(config).run(sockets=[sock])
