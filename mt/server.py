"""The translation server: a LibreTranslate-compatible API and a web page.

    POST /translate   {"q": str | [str], "source": "de" | "auto", "target": "en", "format": "text" | "html",
                       "alternatives": N} -> {"translatedText": str | [str], "alternatives": [...],
                       "detectedLanguage": {"language", "confidence"} (for "auto")}
                      mt's extras, per request: "beam", "scores", "alignment"
    POST /detect      {"q": str} -> [{"language", "confidence"}] among the loaded models' languages
    GET  /languages   [{"code", "name", "targets"}] of the loaded models
    GET  /health      status, the loaded models and the batching counters
    GET  /frontend/settings, /spec (OpenAPI)   LibreTranslate's metadata
    POST /suggest, /translate_file             403: disabled, in LibreTranslate's words
    GET  /            the page (mt/static/)

Requests are read as LibreTranslate reads them: fields from a JSON body, a form or the
query string; /translate and /detect need the API key when the server has one (`api_key`
in any of them, or `Authorization: Bearer`), the rest never does.

Every error is a JSON object {"error": "..."}: 4xx for what a client sent
wrong, 503 (with Retry-After) when a model's queue is full or its worker has
stopped, 500 (and a log entry) for the server's own failures.

One client must never break another: each text is checked before it joins a
batch, a batch whose Translator call fails is retried request by request (so
only the request that broke it fails), a request's search is bounded (source
pieces x beam), each model's queue is bounded, a request whose client has gone
is dropped before it is translated, and a client must send each request whole
within `request_timeout` seconds (`_RequestDeadline`). Requests are batched across
clients by one mt.batching.TranslationWorker per direction.

The handlers live at module level and read the app's settings from
`request.app.state` (set by `create_app`): `workers` (by direction),
`max_chars`, `max_items`, `max_cost`, `max_queue` and `api_key`.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import ipaddress
import json
import logging
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

import h11
import torch
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
)
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from mt import __version__
from mt.batching import TextResult, TranslationFailed, TranslationWorker, WorkerStopped, load_workers
from mt.config import MTError
from mt.detect import detect
from mt.files import DEFAULT_MODEL
from mt.translator import Alignment

logger = logging.getLogger("mt.server")

STATIC = Path(__file__).resolve().parent / "static"
SERVER_MAX_BEAM = 16  # a request's widest beam (the CLI allows mt.config.MAX_BEAM)
FORMATS = ("text", "html")  # LibreTranslate's
MAX_ALTERNATIVES = SERVER_MAX_BEAM - 1  # alternatives widen the beam up to SERVER_MAX_BEAM
FRONTEND_TIMEOUT_MS = 500  # /frontend/settings: how long LibreTranslate's page waits after typing
CORS_MAX_AGE = 20 * 24 * 3600  # how long browsers may keep a preflight's answer (LibreTranslate's 20 days)
# A request's search is bounded by its source pieces x beam: beam search's work grows with both
# (not with the number of alternatives, which are the best of the beam). The bound is this much per
# character of --max-chars: a piece is at least a character long (bar a lone word-start mark, hence
# 6 rather than the default beam's 5), so the longest text fits at the default beam; a wider beam
# needs a shorter text. 6 x 5,000 is about 5 s of one busy CPU core for the shipped models.
COST_PER_CHAR = 6
MAX_BATCH_WAIT_MS = 10_000  # longer, and a lone request would wait that long for company
MAX_REQUEST_TIMEOUT = 600  # --request-timeout's ceiling: longer is no timeout
RETRY_AFTER_SECONDS = 1  # a 503's Retry-After: about how long a model takes over a batch on a CPU
LANGUAGE_NAMES = {"cs": "Czech", "de": "German", "en": "English", "fr": "French"}
# The page's only sources are this server: no CDN, no inline script.
PAGE_POLICY = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


def default_models() -> list[Path]:
    """The shipped general models, one per direction."""
    return [DEFAULT_MODEL, DEFAULT_MODEL.parent / "en-de"]


# -- request and response models ---------------------------------------------


def _unicode_text(text: str) -> str:
    """`text`, if it can be written as UTF-8: JSON's escapes (\\ud800) can make
    strings with unpaired surrogates, which no tokenizer or response can hold."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds an unpaired surrogate)") from None
    return text


Text = Annotated[str, AfterValidator(_unicode_text)]


def _language_code(code: Any) -> Any:
    """Language codes are case-insensitive, as in LibreTranslate ("DE" is "de")."""
    return code.strip().lower() if isinstance(code, str) else code


LanguageCode = Annotated[Text, BeforeValidator(_language_code)]


class TextsRequest(BaseModel):
    """The `q` of a /translate or /detect request: a text or a list of texts.
    Its `api_key` is read by `require_api_key`, before the body is validated."""

    model_config = ConfigDict(extra="ignore")  # LibreTranslate clients may send fields this server does not use

    q: str | list[str]

    @field_validator("q", mode="before")
    @classmethod
    def _text_or_texts(cls, value: Any) -> Any:
        if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(item, str) for item in value))):
            raise ValueError("must be a string or a list of strings")
        for text in [value] if isinstance(value, str) else value:
            _unicode_text(text)
        return value

    @property
    def texts(self) -> list[str]:
        return [self.q] if isinstance(self.q, str) else self.q


class TranslateRequest(TextsRequest):
    """LibreTranslate's /translate body, plus mt's extras (`beam`, `scores`, `alignment`).
    `alternatives` widens the beam when it needs more than `beam` - 1."""

    source: LanguageCode
    target: LanguageCode
    format: Annotated[Text, BeforeValidator(lambda value: value or "text")] = "text"  # null: text, as in LibreTranslate
    alternatives: int = Field(0, ge=0)
    beam: int = Field(5, ge=1, le=SERVER_MAX_BEAM)
    scores: bool = False
    alignment: bool = False

    @property
    def html(self) -> bool:
        return self.format == "html"

    @property
    def search_beam(self) -> int:
        """The beam that finds the alternatives asked for (HTML has none)."""
        return self.beam if self.html else max(self.beam, self.alternatives + 1)


RequestModel = TypeVar("RequestModel", bound=TextsRequest)

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
    detectedLanguage: DetectedLanguage | list[DetectedLanguage] | None = None  # for source "auto"
    alternatives: list[str] | list[list[str]] | None = None
    scores: list[float] | list[list[float]] | None = None
    alignment: AlignmentJSON | list[AlignmentJSON | None] | None = None


class Language(BaseModel):
    code: str
    name: str
    targets: list[str]


class DetectedLanguage(BaseModel):
    language: str
    confidence: float  # percent


# -- errors ------------------------------------------------------------------------


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(error: ValidationError | RequestValidationError) -> str:
    """LibreTranslate's words where it has them ("Invalid request: missing q parameter")."""
    parts = []
    for detail in error.errors()[:3]:
        if detail["type"] == "model_type":
            return "Invalid request: the body must be a JSON object with q, source and target"
        where = ".".join(str(part) for part in detail["loc"] if part != "body") or "body"
        if detail["type"] == "missing":
            return f"Invalid request: missing {where} parameter"
        parts.append(f"{where}: {detail['msg'].removeprefix('Value error, ')}")
    return "Invalid request: " + "; ".join(parts)


async def _http_error(_: Request, error: HTTPException) -> JSONResponse:
    return _error(error.status_code, str(error.detail), error.headers)


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


async def _worker_stopped(_: Request, error: WorkerStopped) -> JSONResponse:
    """The model's batching task has ended (logged where it ended): 503 at once, never a wait."""
    return _error(503, str(error))


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


# -- reading requests ----------------------------------------------------------------


@dataclass(frozen=True)
class _Unreadable:
    """A POST body that is neither JSON nor a form: refused with 400 once the API key is checked."""

    message: str


def _fields(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Form or query fields, the first value of each name; a repeated `q` is a list."""
    fields: dict[str, Any] = {}
    for name, value in pairs:
        if name == "q" and name in fields:
            fields["q"] = [*(fields["q"] if isinstance(fields["q"], list) else [fields["q"]]), value]
        else:
            fields.setdefault(name, value)
    return fields


async def _body_fields(request: Request) -> Any:
    """A POST's body: a JSON value, a form's fields ({} for an empty body) or _Unreadable."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            form = await request.form()
        except HTTPException as error:  # Starlette's 400 for a broken multipart body
            return _Unreadable(f"malformed form body: {error.detail}")
        return _fields((name, value) for name, value in form.multi_items() if isinstance(value, str))
    raw = await request.body()
    if content_type == "application/x-www-form-urlencoded":
        try:  # UTF-8, raw or percent-encoded (Starlette would read raw bytes as Latin-1)
            return _fields(parse_qsl(raw.decode(), keep_blank_values=True, errors="strict"))
        except UnicodeDecodeError:
            return _Unreadable("malformed form body: it is not UTF-8")
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except RecursionError:  # thousands of nested brackets
        return _Unreadable("malformed JSON body: nested too deeply")
    except (ValueError, UnicodeDecodeError) as error:
        return _Unreadable(f"malformed JSON body: {error}")


async def request_data(request: Request) -> Any:
    """Dependency: the request's fields as LibreTranslate reads them: from a JSON body, a form
    (urlencoded or multipart) or the query string (deep-translator POSTs an empty body and
    its fields in the query string); the query string's fill in what the body lacks.
    _Unreadable for a body that is neither JSON nor a form. FastAPI reads it once per
    request, for both `require_api_key` and the route."""
    query = _fields(request.query_params.multi_items())
    body = await _body_fields(request) if request.method == "POST" else {}
    return {**query, **body} if isinstance(body, dict) else body


def _validated(data: Any, model: type[RequestModel]) -> RequestModel:
    if isinstance(data, _Unreadable):
        raise HTTPException(400, data.message)
    return model.model_validate(data)


async def translate_request(data: Annotated[Any, Depends(request_data)]) -> TranslateRequest:
    """Dependency: the request's fields, validated."""
    return _validated(data, TranslateRequest)


def _given_key(request: Request, data: Any) -> str | None:
    """The key as LibreTranslate reads it (`api_key` in the JSON body, the form or the query
    string), or from mt's `Authorization: Bearer KEY`."""
    given = data.get("api_key") if isinstance(data, dict) else request.query_params.get("api_key")
    if isinstance(given, str) and given:
        return given
    bearer = request.headers.get("authorization", "")
    return bearer[7:].strip() or None if bearer[:7].lower() == "bearer " else None


async def require_api_key(request: Request, data: Annotated[Any, Depends(request_data)]) -> None:
    """Dependency of /translate and /detect when the server has a key, checked before
    anything else about the request. As in LibreTranslate: a wrong key is 403, a missing
    one 400 (as is a key that is not valid Unicode text); the metadata routes are open."""
    expected = request.app.state.api_key
    if expected is None:
        return
    given = _given_key(request, data)
    if not given:
        raise HTTPException(400, "Please contact the server operator to get an API key")
    try:
        valid = secrets.compare_digest(given.encode(), expected.encode())
    except UnicodeEncodeError:
        raise HTTPException(400, "api_key must be valid Unicode text (it holds an unpaired surrogate)") from None
    if not valid:
        raise HTTPException(403, "Invalid API key")


# -- checking requests ---------------------------------------------------------------


def _language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


def _check_request(body: TranslateRequest, state: State) -> None:
    """400, in LibreTranslate's words, unless `body`'s texts, alternatives, languages and
    format are within what `state` serves."""
    texts = body.texts
    if not texts or body.q == "":
        raise HTTPException(400, "Invalid request: missing q parameter")
    characters = sum(len(text) for text in texts)
    for size, limit in ((len(texts), state.max_items), (characters, state.max_chars)):
        if size > limit:
            raise HTTPException(400, f"Invalid request: request ({size}) exceeds text limit ({limit})")
    if body.alternatives > MAX_ALTERNATIVES:
        raise HTTPException(400, f"Invalid request: alternatives parameter must be <= {MAX_ALTERNATIVES}")
    known = {code for pair in state.workers for code in pair} | {"auto"}
    for code in (body.source, body.target):
        if code not in known or code == body.target == "auto":
            raise HTTPException(400, f"{code} is not supported")
    if body.format not in FORMATS:
        raise HTTPException(400, f"{body.format} format is not supported")


def _worker_for(body: TranslateRequest, source: str, state: State) -> TranslationWorker:
    """The worker that translates `source` to the request's target, once its search is
    within `state`'s bound (source pieces x beam) and its queue has room."""
    if (source, body.target) not in state.workers:
        raise HTTPException(
            400,
            f"{_language_name(body.target)} ({body.target}) is not available as a target language "
            f"from {_language_name(source)} ({source})",
        )
    worker = state.workers[source, body.target]
    pieces, beam = worker.pieces(body.texts), body.search_beam
    if pieces * beam > state.max_cost:
        raise HTTPException(
            400,
            f"q has {pieces} subword pieces; at beam {beam} at most {state.max_cost // beam} per request "
            f"(pieces x beam <= {state.max_cost}): send less text, a smaller beam or fewer alternatives",
        )
    if worker.pending >= state.max_queue:
        raise HTTPException(
            503,
            f"the {source}->{body.target} model's queue is full ({worker.pending} waiting); try again shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return worker


async def _detected(texts: list[str], state: State) -> list[DetectedLanguage]:
    """The languages of the loaded models that `texts` may be in, best first (one guess for
    all of them, as LibreTranslate makes); run in a thread, off the event loop."""
    languages = sorted({code for pair in state.workers for code in pair})
    found = await asyncio.to_thread(detect, "\n".join(texts), languages)
    return [DetectedLanguage(language=code, confidence=confidence) for code, confidence in found]


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (its body is read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _translated(request: Request, worker: TranslationWorker, body: TranslateRequest) -> list[TextResult] | None:
    """`body`'s texts translated by `worker`; None if the client has gone first."""
    n_best = 1 if body.html else body.alternatives + 1
    work = asyncio.ensure_future(worker.translate(body.texts, body.search_beam, n_best, body.alignment, body.html))
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        work.cancel()  # the client has gone (or this request is cancelled): its texts leave the queue
    return work.result() if work.done() else None


def _response(body: TranslateRequest, results: list[TextResult], detected: DetectedLanguage | None) -> Response:
    """The answer holds only what `body` asked for. Written by json.dumps: a response_model
    would write the floats with pydantic's writer (1e-05 as 0.00001)."""

    def each(values: list) -> Any:
        return values[0] if isinstance(body.q, str) else values

    response = TranslateResponse(translatedText=each([r.texts[0] for r in results]))
    if detected is not None:
        response.detectedLanguage = each([detected] * len(results))
    if body.alternatives:
        response.alternatives = each([r.texts[1:] for r in results])
    if body.scores:
        response.scores = each([r.scores for r in results])
    if body.alignment:
        response.alignment = each([r.alignment for r in results])
    return JSONResponse(response.model_dump(exclude_unset=True))


# -- the routes --------------------------------------------------------------------

keyed = APIRouter(dependencies=[Depends(require_api_key)])  # the routes that need the key, if the server has one
metadata = APIRouter()


@keyed.post("/translate")
async def translate(request: Request, body: Annotated[TranslateRequest, Depends(translate_request)]) -> Response:
    state = request.app.state
    _check_request(body, state)
    detected = (await _detected(body.texts, state))[0] if body.source == "auto" else None
    source = detected.language if detected else body.source
    if detected and source == body.target:  # detected in the target language: nothing to translate
        return _response(body, [TextResult([text], [], None) for text in body.texts], detected)
    results = await _translated(request, _worker_for(body, source, state), body)
    if results is None:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it
    return _response(body, results, detected)


@keyed.post("/detect")
async def detect_language(request: Request, data: Annotated[Any, Depends(request_data)]) -> list[DetectedLanguage]:
    """The languages of the loaded models that `q` may be in, best first, with confidences in percent."""
    texts = _validated(data, TextsRequest).texts
    if not "".join(texts):
        raise HTTPException(400, "Invalid request: missing q parameter")
    return await _detected(texts, request.app.state)


@keyed.post("/translate_file")
async def translate_file() -> None:
    raise HTTPException(403, "Files translation are disabled on this server.")


@metadata.post("/suggest")
async def suggest() -> None:
    raise HTTPException(403, "Suggestions are disabled on this server.")


@metadata.get("/languages")
async def languages(request: Request) -> list[Language]:
    pairs = request.app.state.workers.keys()
    return [
        Language(code=code, name=_language_name(code), targets=sorted(t for s, t in pairs if s == code))
        for code in sorted({code for pair in pairs for code in pair})
    ]


@metadata.get("/health")
async def health(request: Request) -> JSONResponse:
    """200 and status "ok" while every model's batching task runs; else 503 and status "error"."""
    workers = request.app.state.workers.values()
    healthy = all(w.running for w in workers)
    body = {
        "status": "ok" if healthy else "error",
        "models": [
            {"source": w.source, "target": w.target, "attention": w.attention, "running": w.running} for w in workers
        ],
        "batches": sum(w.batches for w in workers),
        "requests": sum(w.requests for w in workers),
        "pending": sum(w.pending for w in workers),
    }
    return JSONResponse(body, status_code=200 if healthy else 503)


@metadata.get("/frontend/settings")
async def frontend_settings(request: Request) -> dict[str, Any]:
    """LibreTranslate's settings for its page, which clients read to learn the limits and whether a key is needed."""
    state = request.app.state
    target = next(iter(state.workers))[1]
    keyed_server = state.api_key is not None
    return {
        "charLimit": state.max_chars,
        "frontendTimeout": FRONTEND_TIMEOUT_MS,
        "apiKeys": keyed_server,
        "keyRequired": keyed_server,
        "suggestions": False,
        "filesTranslation": False,
        "supportedFilesFormat": [],
        "language": {
            "source": {"code": "auto", "name": "Auto Detect"},
            "target": _named(target),
        },
    }


def _named(code: str) -> dict[str, str]:
    return {"code": code, "name": _language_name(code)}


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
    max_queue: int = 64,
    max_cost: int | None = None,
    cors_origins: Sequence[str] = ("*",),
) -> FastAPI:
    """The app over `workers`, whose tasks start with it. `max_queue`: the most requests
    waiting for one model (more: 503); `max_cost`: the most source pieces x beam of a
    request (default COST_PER_CHAR x `max_chars`); `max_body_bytes` defaults to room
    for `max_chars` characters each written as a JSON escape pair; `cors_origins`: the
    web pages (origins) whose scripts may call the API, "*" for any (LibreTranslate's default).
    /spec is the OpenAPI document, titled "LibreTranslate" as clients (Dialect) check."""
    app = FastAPI(
        title="LibreTranslate",
        summary="mt: an LSTM translator's LibreTranslate-compatible API",
        version=__version__,
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/spec",
    )
    app.state.workers = {(worker.source, worker.target): worker for worker in workers}
    app.state.max_chars, app.state.max_items, app.state.api_key = max_chars, max_items, api_key
    app.state.max_queue, app.state.max_cost = max_queue, max_cost or COST_PER_CHAR * max_chars
    app.add_middleware(_BodyLimit, limit=max_body_bytes or 16_384 + 12 * max_chars)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(cors_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["Authorization"],
        max_age=CORS_MAX_AGE,
    )
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(ValidationError, _invalid)
    app.add_exception_handler(TranslationFailed, _translation_failed)
    app.add_exception_handler(WorkerStopped, _worker_stopped)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(keyed)
    app.include_router(metadata)
    app.add_api_route("/", page, include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# -- running it ----------------------------------------------------------------


class _RequestDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for receiving each request, and
    the JSON error shape for its own errors (uvicorn writes them as plain text).

    uvicorn closes idle keep-alive connections, but not one on which a request
    arrives slowly (or never, after the connection opens): a client sending its
    headers or body a byte at a time would hold its connection for ever. Here a
    request must arrive whole within `request_timeout` seconds of the connection or
    of its first byte; else the server answers 408 and closes the connection.
    """

    def __init__(self, *args: Any, request_timeout: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.request_timeout = request_timeout
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._deadline = self.loop.call_later(self.request_timeout, self._too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._clear_deadline()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        """After h11 has read what came: a request is arriving while its headers are
        incomplete (data waits in h11's buffer) or its body is."""
        super().handle_events()
        state = self.conn.their_state
        if state is h11.SEND_BODY or (state is h11.IDLE and self.conn.trailing_data[0]):
            if self._deadline is None:
                self._deadline = self.loop.call_later(self.request_timeout, self._too_slow)
        else:
            self._clear_deadline()

    def send_400_response(self, msg: str) -> None:
        self._close_with(400, msg)

    def _clear_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        answering = self.cycle is not None and self.cycle.response_started and self.conn.their_state is h11.SEND_BODY
        if answering:  # the app has answered (413) while the body still comes: only close
            self.transport.close()
        else:
            self._close_with(408, f"the request did not arrive within {self.request_timeout:g} s")

    def _close_with(self, status: int, message: str) -> None:
        """Answer `status` with {"error": message} and close the connection. Written
        past h11: the request is unusable, and nothing follows on this connection."""
        body = json.dumps({"error": message}).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()


def http_protocol(request_timeout: float) -> Callable[..., asyncio.Protocol]:
    """uvicorn's `http` setting: HTTP/1.1 in which a request must arrive within `request_timeout` seconds."""
    return functools.partial(_RequestDeadline, request_timeout=request_timeout)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port. Made with IPPROTO_TCP rather than protocol 0: asyncio
    sets TCP_NODELAY only on connections whose socket says TCP, and without it a client that
    reuses its connection waits for its delayed ACK (about 40 ms) before each answer arrives."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


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


def _check_options(
    port: int, max_chars: int, max_items: int, max_queue: int, batch_wait_ms: float, request_timeout: float
) -> None:
    """MTError, in one line, for an option out of range (NaN and infinity are out of every range)."""
    for name, value, low in (
        ("--max-chars", max_chars, 1),
        ("--max-items", max_items, 1),
        ("--max-queue", max_queue, 1),
    ):
        if value < low:
            raise MTError(f"{name} must be >= {low}, got {value}")
    for name, value, low, high in (
        ("--port", port, 0, 65535),
        ("--batch-wait-ms", batch_wait_ms, 0, MAX_BATCH_WAIT_MS),
        ("--request-timeout", request_timeout, 0.1, MAX_REQUEST_TIMEOUT),
    ):
        if not low <= value <= high:
            raise MTError(f"{name} must be between {low} and {high}, got {value}")


def _check_api_key(api_key: str | None) -> None:
    if api_key is None:
        return
    if not api_key:
        raise MTError("--api-key is empty: give a key, or leave the option out to serve without one")
    try:
        api_key.encode()
    except UnicodeEncodeError:  # bytes that are not UTF-8 in argv arrive as surrogates
        raise MTError("--api-key must be valid UTF-8 text") from None


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
    max_queue: int = 64,
    request_timeout: float = 10.0,
    echo: Callable[[str], None] | None = None,
    cors_origins: Sequence[str] = ("*",),
) -> None:
    """Load `models` (default: the shipped de-en and en-de), listen on host:port
    (0: any free port) and serve until Ctrl-C or SIGTERM, which finish the
    requests in flight first. `echo` prints the lines for the user (default: stderr)."""
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    _check_options(port, max_chars, max_items, max_queue, batch_wait_ms, request_timeout)
    _check_api_key(api_key)
    if not is_loopback(host):
        echo(
            f"warning: --host {host} is not a loopback address: anyone who can reach this machine can use the server"
            + ("" if api_key else " (set --api-key to require a key)")
        )
    try:
        sock = listening_socket(host, port)  # before loading the models: a taken port fails at once
    except OSError as error:
        raise MTError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    port = sock.getsockname()[1]
    try:
        workers = load_workers(list(models or default_models()), device, quantize, batch_wait_ms, batching)
    except BaseException:
        sock.close()
        raise
    app = create_app(workers, max_chars, max_items, api_key, max_queue=max_queue, cors_origins=cors_origins)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["mt"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http_protocol(request_timeout),
        log_config=log_config,
        timeout_graceful_shutdown=60,
        server_header=False,
    )
    pairs = ", ".join(f"{w.source}->{w.target} ({'int8' if w.translator.int8 else 'fp32'})" for w in workers)
    url_host = f"[{host}]" if ":" in host else host
    echo(f"serving {pairs} on http://{url_host}:{port} (Ctrl-C to stop)")
    with _quiet_signal_exit():
        uvicorn.Server(config).run(sockets=[sock])
