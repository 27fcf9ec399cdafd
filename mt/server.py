"""The translation server: a LibreTranslate-compatible JSON API and a web page.

    POST /translate   {"q": str | [str], "source": "de", "target": "en", "alternatives": N}
                      -> {"translatedText": str | [str], "alternatives": [...]}
                      mt's extras, per request: "beam", "scores", "alignment"
    GET  /languages   [{"code", "name", "targets"}] of the loaded models
    GET  /health      status, the loaded models and the batching counters
    GET  /            the page (mt/static/)

Every error is a JSON object {"error": "..."}: 4xx for what a client sent
wrong, 500 (and a log entry) for the server's own failures.

Cross-request batching: each model has one asyncio task that drains its queue.
It takes every request queued for the model, waiting up to `batch_wait_ms` for
more to arrive after the first, and translates the texts of all requests with
the same beam in one call of `Translator.translate_n_best`, run in a thread
(`asyncio.to_thread`) so that the event loop never runs the model. A model's
task awaits one call before it starts the next: its Translator is used by one
thread at a time.

The handlers live at module level and read the app's settings from
`request.app.state` (set by `create_app`): `workers` (by direction),
`max_chars`, `max_items` and `api_key`.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import json
import logging
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Annotated, Any

import torch
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, ValidationError, field_validator
from starlette.datastructures import State
from starlette.exceptions import HTTPException

from mt.checkpoint import read_info, resolve
from mt.config import DecodeConfig, MTError
from mt.files import DEFAULT_MODEL
from mt.translator import Alignment, Translator

logger = logging.getLogger("mt.server")

STATIC = Path(__file__).resolve().parent / "static"
SERVER_MAX_BEAM = 16  # a request's widest beam (the CLI allows mt.config.MAX_BEAM)
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
    beam: int = Field(5, ge=1, le=SERVER_MAX_BEAM)
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


# The translator's Alignment, written as {"source", "target", "weights"} (weights[t][s] rounded to 4 decimals).
AlignmentJSON = Annotated[Alignment, PlainSerializer(Alignment.to_dict)]


class TranslateResponse(BaseModel):
    """One entry per text for a list `q`, the entry itself for a string `q`.

    `alternatives` (when asked for) are the next best translations; `scores`
    (when asked for) are the scores of the translation and then of each
    alternative; `alignment` is null for a model without attention.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)  # Alignment.weights is a tensor

    translatedText: str | list[str]
    alternatives: list[str] | list[list[str]] | None = None
    scores: list[float] | list[list[float]] | None = None
    alignment: AlignmentJSON | list[AlignmentJSON | None] | None = None


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
    future: asyncio.Future[list[TextResult]]


class TranslationFailed(Exception):
    """The Translator raised `error` on a request's texts: the request answers 500."""

    def __init__(self, error: Exception):
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


class TranslationWorker:
    """One model's Translator and the asyncio task that feeds it batches.

    `batching=False` translates each request on its own (for comparison);
    otherwise a batch is every request queued within `batch_wait_ms` of the
    first. `batches` and `requests` count the Translator calls and the
    requests they served; `pending`, the requests waiting for their answer.
    """

    def __init__(self, translator, source: str, target: str, batch_wait_ms: float = 5.0, batching: bool = True):
        self.translator = translator
        self.source, self.target = source, target
        self.batch_wait = batch_wait_ms / 1000
        self.batching = batching
        self.batches = 0
        self.requests = 0
        self.pending = 0
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def attention(self) -> bool:
        return self.translator.has_attention

    def start(self) -> None:
        """Start the task, on the event loop that will serve the requests."""
        self._task = asyncio.create_task(self._run(), name=f"translate-{self.source}-{self.target}")

    async def stop(self) -> None:
        """Finish the queued requests, then end the task."""
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task

    async def translate(self, texts: list[str], beam: int, n_best: int, alignment: bool) -> list[TextResult]:
        """The n best of each text; raises TranslationFailed if the Translator fails on them."""
        future = asyncio.get_running_loop().create_future()
        self.pending += 1
        try:
            self._queue.put_nowait(_Job(texts, beam, n_best, alignment, future))
            return await future
        finally:
            self.pending -= 1

    async def _run(self) -> None:
        while (first := await self._queue.get()) is not None:
            jobs, stopping = await self._collect(first)
            for _, group in groupby(sorted(jobs, key=lambda job: job.beam), key=lambda job: job.beam):
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
        """Translate `jobs` (all of one beam) in a thread and settle their futures."""
        self.batches += 1
        self.requests += len(jobs)
        try:
            answers = await asyncio.to_thread(self._translate, jobs)
        except Exception as error:  # noqa: BLE001  (every request of the batch answers 500)
            answers = [error] * len(jobs)
        for job, answer in zip(jobs, answers):
            if job.future.done():  # the request was cancelled (client gone, forced shutdown)
                continue
            if isinstance(answer, Exception):
                job.future.set_exception(TranslationFailed(answer))
            else:
                job.future.set_result(answer)

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


# -- errors ------------------------------------------------------------------------


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


async def _http_error(_: Request, error: HTTPException) -> JSONResponse:
    return _error(error.status_code, str(error.detail))


async def _invalid(_: Request, error: ValidationError | RequestValidationError) -> JSONResponse:
    return _error(400, _validation_message(error))


def _server_error(request: Request, error: Exception, traceback: bool) -> JSONResponse:
    name = type(error).__name__
    logger.error(
        "%s %s failed: %s: %s", request.method, request.url.path, name, error, exc_info=error if traceback else None
    )
    return _error(500, f"internal server error ({name})")


async def _translation_failed(request: Request, failure: TranslationFailed) -> JSONResponse:
    """The model failed (out of memory, a bug in it): 500 and the traceback in the log; serving goes on."""
    return _server_error(request, failure.error, traceback=True)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    """Any other exception (a bug here): 500. Starlette raises the exception again
    after this answer: uvicorn logs its traceback and closes the connection."""
    return _server_error(request, error, traceback=False)


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


# -- the routes --------------------------------------------------------------------


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


async def translate_request(request: Request) -> TranslateRequest | None:
    """Dependency: a POST's body (JSON or a form) validated; None for a GET.
    FastAPI reads it once per request for both `require_api_key` and the route."""
    if request.method != "POST":
        return None
    return TranslateRequest.model_validate(await _request_data(request))


async def require_api_key(
    request: Request, body: Annotated[TranslateRequest | None, Depends(translate_request)]
) -> None:
    """Dependency of every API route when the server has a key: the key from the
    body (LibreTranslate), `Authorization: Bearer KEY` or `?api_key=`; else 403."""
    expected = request.app.state.api_key
    if expected is None:
        return
    bearer = request.headers.get("authorization", "")
    given = (body and body.api_key) or (
        bearer[7:].strip() if bearer[:7].lower() == "bearer " else request.query_params.get("api_key")
    )
    if not given or not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(403, "invalid or missing API key")


def _worker_for(body: TranslateRequest, state: State) -> TranslationWorker:
    """The worker of the request's direction, once the request is within the limits in `state`."""
    pairs = ", ".join(f"{s}->{t}" for s, t in state.workers)
    if body.source == "auto":
        raise HTTPException(
            400, f"source language detection ('auto') is not supported; name the source language ({pairs})"
        )
    if body.format != "text":
        raise HTTPException(400, f"format {body.format!r} is not supported; send plain text with format 'text'")
    if (body.source, body.target) not in state.workers:
        raise HTTPException(
            400, f"no model translates {body.source!r} to {body.target!r}; this server translates {pairs}"
        )
    texts = body.texts
    if not texts or (isinstance(body.q, str) and not body.q.strip()):
        raise HTTPException(400, "q is empty: give a text or a list of texts")
    if len(texts) > state.max_items:
        raise HTTPException(400, f"q has {len(texts)} texts; at most {state.max_items} per request")
    characters = sum(len(text) for text in texts)
    if characters > state.max_chars:
        raise HTTPException(400, f"q has {characters} characters; at most {state.max_chars} per request")
    if body.alternatives >= body.beam:
        raise HTTPException(
            400, f"alternatives ({body.alternatives}) must be fewer than beam ({body.beam}): ask for a larger beam"
        )
    return state.workers[body.source, body.target]


def _response(body: TranslateRequest, results: list[TextResult]) -> TranslateResponse:
    """The answer holds only what `body` asked for."""

    def each(values: list) -> Any:
        return values[0] if isinstance(body.q, str) else values

    response = TranslateResponse(translatedText=each([r.texts[0] for r in results]))
    if body.alternatives:
        response.alternatives = each([r.texts[1:] for r in results])
    if body.scores:
        response.scores = each([r.scores for r in results])
    if body.alignment:
        response.alignment = each([r.alignment for r in results])
    return response


api = APIRouter(dependencies=[Depends(require_api_key)])


@api.post("/translate")
async def translate(request: Request, body: Annotated[TranslateRequest, Depends(translate_request)]) -> JSONResponse:
    worker = _worker_for(body, request.app.state)
    results = await worker.translate(body.texts, body.beam, body.alternatives + 1, body.alignment)
    # Written by json.dumps: a response_model would write the floats with pydantic's writer (1e-05 as 0.00001).
    return JSONResponse(_response(body, results).model_dump(exclude_unset=True))


@api.get("/languages")
async def languages(request: Request) -> list[Language]:
    pairs = request.app.state.workers.keys()
    return [
        Language(code=code, name=LANGUAGE_NAMES.get(code, code), targets=sorted(t for s, t in pairs if s == code))
        for code in sorted({code for pair in pairs for code in pair})
    ]


@api.get("/health")
async def health(request: Request) -> dict:
    workers = request.app.state.workers.values()
    return {
        "status": "ok",
        "models": [{"source": w.source, "target": w.target, "attention": w.attention} for w in workers],
        "batches": sum(w.batches for w in workers),
        "requests": sum(w.requests for w in workers),
        "pending": sum(w.pending for w in workers),
    }


async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})


@asynccontextmanager
async def _lifespan(app: FastAPI):
    workers = app.state.workers.values()
    for worker in workers:
        worker.start()
    try:
        yield
    finally:  # uvicorn has finished the requests in flight
        for worker in workers:
            await worker.stop()


def create_app(
    workers: Sequence[TranslationWorker],
    max_chars: int = 5000,
    max_items: int = 100,
    api_key: str | None = None,
    max_body_bytes: int | None = None,
) -> FastAPI:
    """The app over `workers`, whose tasks start with it; `max_body_bytes` defaults
    to room for `max_chars` characters each written as a JSON escape pair."""
    app = FastAPI(title="mt", lifespan=_lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.workers = {(worker.source, worker.target): worker for worker in workers}
    app.state.max_chars, app.state.max_items, app.state.api_key = max_chars, max_items, api_key
    app.add_middleware(_BodyLimit, limit=max_body_bytes or 16_384 + 12 * max_chars)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(ValidationError, _invalid)
    app.add_exception_handler(TranslationFailed, _translation_failed)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(api)
    app.add_api_route("/", page, include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


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
