"""`mt serve`: the LibreTranslate-compatible API, cross-request batching, limits,
the API key, one client never breaking another, graceful shutdown and the page
(in headless Chromium when it is installed).

Every server here is real: uvicorn on 127.0.0.1 and a free port, in a thread of
this process or, for the signal test, in a subprocess. Nothing reaches any
other address (the HTTP clients ignore proxy settings).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn

from mt.batching import TranslationWorker, load_workers
from mt.config import DecodeConfig, MTError
from mt.server import create_app, http_protocol, is_loopback, listening_socket, serve
from mt.translator import Translator

BEAM5 = DecodeConfig(beam_size=5)
STARTUP_SECONDS = 120  # a busy 2-core machine imports torch slowly


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_checkpoint) -> dict[str, Path]:
    """Tiny untrained models: de->en with attention, en->de without."""
    directory = tmp_path_factory.mktemp("serve-models")
    paths = {}
    for name, attention, seed in (("de-en", "bahdanau", 0), ("en-de", "none", 1)):
        source, target = name.split("-")
        paths[name] = directory / name
        tiny_checkpoint(
            paths[name] / "model.safetensors",
            source,
            target,
            seed,
            embedding_size=16,
            hidden_size=24,
            attention=attention,
        )
    return paths


@pytest.fixture(scope="module")
def reference(checkpoints) -> dict[str, Translator]:
    """Translators of the same checkpoints, called only from the test's thread."""
    return {name: Translator.from_checkpoint(path) for name, path in checkpoints.items()}


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, trust_env=False, timeout=60)  # trust_env=False: no proxy, only 127.0.0.1


def _wait_until_answering(url: str, process: subprocess.Popen | None = None) -> None:
    """Poll /health until the server answers at all (a 403 is an answer too)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    with _client(url) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise AssertionError(f"the server exited with status {process.returncode}")
            try:
                client.get("/health", timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.02)
    raise AssertionError(f"{url} did not answer within {STARTUP_SECONDS} s")


@contextmanager
def running(app, request_timeout: float = 10.0) -> Iterator[str]:
    """`app` served by uvicorn in a thread on a free port of 127.0.0.1, with `mt serve`'s
    HTTP protocol; yields its URL."""
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=http_protocol(request_timeout),
        log_config=None,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_answering(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        assert not thread.is_alive(), "the server did not shut down"


def _serve_app(checkpoints, **options):
    workers = load_workers(
        list(checkpoints.values()),
        batch_wait_ms=options.pop("batch_wait_ms", 5.0),
        batching=options.pop("batching", True),
    )
    return create_app(workers, **options)


@pytest.fixture(scope="module")
def server(checkpoints) -> Iterator[str]:
    with running(_serve_app(checkpoints, max_chars=300, max_items=5)) as url:
        yield url


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with _client(server) as client:
        yield client


def _sentences(corpus_pairs, count: int) -> list[str]:
    return [pair[0] for pair in corpus_pairs[::7][:count]]


# -- the LibreTranslate calls -------------------------------------------------


def test_a_string_gets_the_translators_best_translation_and_alternatives(client, reference, corpus_pairs):
    text = f"{corpus_pairs[0][0]} {corpus_pairs[30][0]}"  # two sentences, split and rejoined
    expected = reference["de-en"].translate_n_best([text], BEAM5, n_best=3, split=True)[0]

    response = client.post(
        "/translate",
        json={"q": text, "source": "de", "target": "en", "format": "text", "alternatives": 2, "scores": True},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["translatedText"] == expected[0].text
    assert body["alternatives"] == [candidate.text for candidate in expected[1:]]
    assert body["scores"] == pytest.approx([candidate.score for candidate in expected])
    assert "alignment" not in body


def test_a_list_gets_one_translation_per_text_and_alternatives_per_text(client, reference, corpus_pairs):
    texts = [*_sentences(corpus_pairs, 3), "", f"{corpus_pairs[1][0]} {corpus_pairs[2][0]}"]
    expected = reference["de-en"].translate_n_best(texts, BEAM5, n_best=2, split=True)

    body = client.post("/translate", json={"q": texts, "source": "de", "target": "en", "alternatives": 1}).json()

    assert body["translatedText"] == [candidates[0].text for candidates in expected]
    assert body["alternatives"] == [[c.text for c in candidates[1:2]] for candidates in expected]
    assert body["translatedText"][3] == ""


def test_without_alternatives_the_answer_has_only_the_translation(client, reference, corpus_pairs):
    text = corpus_pairs[5][0]
    body = client.post("/translate", json={"q": text, "source": "de", "target": "en"}).json()
    assert body == {"translatedText": reference["de-en"].translate([text], BEAM5, split=True)[0]}


def test_a_form_body_is_read_like_json_and_a_repeated_q_is_a_list(client, reference, corpus_pairs):
    first, second = _sentences(corpus_pairs, 2)
    single = client.post("/translate", data={"q": first, "source": "de", "target": "en", "alternatives": "1"}).json()
    several = client.post("/translate", data={"q": [first, second], "source": "de", "target": "en"}).json()

    expected = reference["de-en"].translate_n_best([first, second], BEAM5, n_best=2, split=True)
    assert single == {"translatedText": expected[0][0].text, "alternatives": [c.text for c in expected[0][1:]]}
    assert several == {"translatedText": [expected[0][0].text, expected[1][0].text]}


def test_beam_chooses_the_search(client, reference, corpus_pairs):
    text = corpus_pairs[9][0]
    greedy = client.post("/translate", json={"q": text, "source": "de", "target": "en", "beam": 1}).json()
    assert greedy["translatedText"] == reference["de-en"].translate([text], DecodeConfig(beam_size=1), split=True)[0]


def test_alignment_gives_pieces_and_weights_for_attention_and_null_without(client, reference, corpus_pairs):
    german, english = corpus_pairs[3]
    body = client.post("/translate", json={"q": [german], "source": "de", "target": "en", "alignment": True}).json()
    (alignment,) = body["alignment"]
    source_pieces, target_pieces, weights = reference["de-en"].alignment(german, body["translatedText"][0])
    assert alignment["source"] == source_pieces and alignment["target"] == target_pieces
    assert len(alignment["weights"]) == len(target_pieces)
    assert all(
        len(row) == len(source_pieces) and sum(row) == pytest.approx(1, abs=1e-3) for row in alignment["weights"]
    )
    torch.testing.assert_close(
        torch.tensor(alignment["weights"], dtype=torch.float64), weights.double(), atol=1e-4, rtol=0
    )

    no_attention = client.post(
        "/translate", json={"q": english, "source": "en", "target": "de", "alignment": True}
    ).json()
    assert no_attention["alignment"] is None
    assert no_attention["translatedText"] == reference["en-de"].translate([english], BEAM5, split=True)[0]


def test_languages_lists_each_loaded_direction(client):
    assert client.get("/languages").json() == [
        {"code": "de", "name": "German", "targets": ["en"]},
        {"code": "en", "name": "English", "targets": ["de"]},
    ]


def test_several_models_of_one_direction_serve_as_an_ensemble(checkpoints):
    from mt.model import Ensemble

    workers = load_workers([checkpoints["de-en"], checkpoints["en-de"], checkpoints["de-en"]])
    assert [(w.source, w.target) for w in workers] == [("de", "en"), ("en", "de")]
    assert isinstance(workers[0].translator.model, Ensemble) and len(workers[0].translator.model.members) == 2
    assert not isinstance(workers[1].translator.model, Ensemble)


def test_health_names_the_models_and_counts_batches(client):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["models"] == [
        {"source": "de", "target": "en", "attention": True, "running": True},
        {"source": "en", "target": "de", "attention": False, "running": True},
    ]
    assert body["batches"] <= body["requests"] and body["pending"] == 0


# -- LibreTranslate's ways of sending a request ----------------------------------------


def test_a_form_is_read_as_utf8_whether_raw_or_percent_encoded(client):
    text = "€ 42 – ½"  # no letters: comes back unchanged, so any mojibake ("â\x82¬") would show
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    raw = client.post("/translate", content=f"q={text}&source=de&target=en".encode(), headers=form)
    encoded = client.post("/translate", data={"q": text, "source": "de", "target": "en"})
    multipart = client.post("/translate", data={"q": text, "source": "de", "target": "en"}, files={"x": b""})
    assert raw.json() == encoded.json() == multipart.json() == {"translatedText": text}
    broken = client.post("/translate", content=b"q=\xff&source=de&target=en", headers=form)
    assert broken.status_code == 400 and broken.json() == {"error": "malformed form body: it is not UTF-8"}


def test_fields_in_the_query_string_of_an_empty_post_are_read_as_deep_translator_sends_them(client, reference):
    text = "Der Hund ist rot ."
    response = client.post("/translate", params={"q": text, "source": "de", "target": "en", "format": "text"})
    assert response.json() == {"translatedText": reference["de-en"].translate([text], BEAM5, split=True)[0]}


def test_language_codes_are_case_insensitive_and_a_null_format_is_text(client):
    lower = client.post("/translate", json=GOOD).json()
    assert client.post("/translate", json={**GOOD, "source": "DE", "target": "En", "format": None}).json() == lower


def test_alternatives_beyond_the_beam_widen_it(client, reference, corpus_pairs):
    text = corpus_pairs[6][0]
    expected = reference["de-en"].translate_n_best([text], DecodeConfig(beam_size=8), n_best=8, split=True)[0]
    body = client.post("/translate", json={"q": text, "source": "de", "target": "en", "alternatives": 7}).json()
    assert body["translatedText"] == expected[0].text
    assert body["alternatives"] == [candidate.text for candidate in expected[1:]]
    assert len(set(body["alternatives"]) | {body["translatedText"]}) == len(body["alternatives"]) + 1


def test_frontend_settings_and_spec_answer_as_libretranslates(client):
    settings = client.get("/frontend/settings").json()
    assert settings["charLimit"] == 300 and settings["apiKeys"] is settings["keyRequired"] is False
    assert settings["suggestions"] is settings["filesTranslation"] is False and settings["supportedFilesFormat"] == []
    assert settings["language"]["target"] == {"code": "en", "name": "English"}
    spec = client.get("/spec").json()
    assert spec["info"]["title"] == "LibreTranslate"  # what clients (Dialect) check
    assert {"/translate", "/detect", "/languages", "/frontend/settings"} <= set(spec["paths"])


def test_suggestions_and_files_are_refused_as_disabled(client):
    suggest = client.post("/suggest", data={"q": "Hallo", "s": "Hello", "source": "de", "target": "en"})
    assert suggest.status_code == 403 and suggest.json() == {"error": "Suggestions are disabled on this server."}
    upload = client.post("/translate_file", data={"source": "de", "target": "en"}, files={"file": ("a.txt", b"Hallo")})
    assert upload.status_code == 403 and upload.json() == {"error": "Files translation are disabled on this server."}


def test_any_origin_may_call_the_api_by_default_and_preflights_are_answered(client):
    preflight = client.options(
        "/translate",
        headers={
            "Origin": "https://page.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    answer = client.post("/translate", json=GOOD, headers={"Origin": "https://page.example"})
    assert answer.headers["access-control-allow-origin"] == "*"


def test_cors_origins_limit_which_pages_may_call(checkpoints):
    with running(_serve_app(checkpoints, cors_origins=["https://mine.example"])) as url, _client(url) as client:
        mine = client.get("/languages", headers={"Origin": "https://mine.example"})
        other = client.get("/languages", headers={"Origin": "https://other.example"})
    assert mine.headers["access-control-allow-origin"] == "https://mine.example"
    assert "access-control-allow-origin" not in other.headers


def test_connections_to_the_listening_socket_have_tcp_nodelay():
    async def accepted_nodelay() -> int:
        sock = listening_socket("127.0.0.1", 0)
        seen = asyncio.get_running_loop().create_future()

        def connected(reader, writer):
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname())
            value = await asyncio.wait_for(seen, 10)
            writer.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0


def test_detect_names_the_loaded_languages_best_first(client):
    for response in (
        client.post("/detect", json={"q": "Zwei Männer sitzen auf einer Bank."}),
        client.post("/detect", data={"q": "Zwei Männer sitzen auf einer Bank."}),
    ):
        found = response.json()
        assert [guess["language"] for guess in found] == ["de", "en"]
        assert found[0]["confidence"] > 50 and set(found[0]) == {"language", "confidence"}
    assert client.post("/detect", json={"q": ""}).json() == {"error": "Invalid request: missing q parameter"}


def test_source_auto_translates_from_the_detected_language_and_says_which(client, reference):
    german, english = "Zwei Männer sitzen auf einer Bank.", "Two men are sitting on a bench."
    body = client.post("/translate", json={"q": german, "source": "auto", "target": "en"}).json()
    assert body["translatedText"] == reference["de-en"].translate([german], BEAM5, split=True)[0]
    assert body["detectedLanguage"]["language"] == "de" and body["detectedLanguage"]["confidence"] > 50
    listed = client.post("/translate", json={"q": [german, german], "source": "auto", "target": "en"}).json()
    assert listed["detectedLanguage"] == [body["detectedLanguage"]] * 2
    same = client.post("/translate", json={"q": english, "source": "auto", "target": "en"}).json()
    assert same["translatedText"] == english and same["detectedLanguage"]["language"] == "en"


class _Markup(HTMLParser):
    """The tags (with their attributes) and the text of an HTML document, in order."""

    def __init__(self, document: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []
        self.feed(document)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_endtag(self, tag):
        self.tags.append(("/" + tag, []))

    def handle_data(self, data):
        self.text.append(data)


def test_an_html_document_keeps_every_tag_and_attribute_in_order(client):
    document = '<div id="x"><p class="a b">Der Hund ist <em data-k="1">rot</em> .</p><img src="/i.png" alt=""></div>'
    body = client.post("/translate", json={**GOOD, "q": document, "format": "html", "alternatives": 2}).json()
    assert _Markup(body["translatedText"]).tags == _Markup(document).tags
    assert body["alternatives"] == []  # as LibreTranslate: none for HTML


# -- bad input and limits -------------------------------------------------------

GOOD = {"q": "Der Hund ist rot .", "source": "de", "target": "en"}
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("content", "status", "fragment"),
    [
        (b'{"q": "Hallo", "source": ', 400, "malformed JSON"),
        (b"", 400, "Invalid request: missing q parameter"),
        (b"\xff\xfe", 400, "malformed JSON"),
        (json.dumps(["Hallo"]), 400, "JSON object"),
        (json.dumps({"source": "de", "target": "en"}), 400, "Invalid request: missing q parameter"),
        (json.dumps({"q": "Hallo", "target": "en"}), 400, "Invalid request: missing source parameter"),
        (json.dumps({**GOOD, "q": 5}), 400, "q: must be a string or a list of strings"),
        (json.dumps({**GOOD, "q": ["a", 3]}), 400, "q: must be a string or a list of strings"),
        (json.dumps({**GOOD, "beam": "wide"}), 400, "beam"),
        (json.dumps({**GOOD, "beam": 0}), 400, "beam"),
        (json.dumps({**GOOD, "beam": 99}), 400, "beam"),
        (json.dumps({**GOOD, "alternatives": -1}), 400, "alternatives"),
        (json.dumps({**GOOD, "alternatives": 16}), 400, "Invalid request: alternatives parameter must be <= 15"),
        (json.dumps({**GOOD, "format": "xml"}), 400, "xml format is not supported"),
        (json.dumps({**GOOD, "target": "fr"}), 400, "fr is not supported"),
        (json.dumps({**GOOD, "target": "auto"}), 400, "auto is not supported"),
        (
            json.dumps({**GOOD, "target": "de"}),
            400,
            "German (de) is not available as a target language from German (de)",
        ),
        (json.dumps({**GOOD, "q": ""}), 400, "Invalid request: missing q parameter"),
        (json.dumps({**GOOD, "q": []}), 400, "Invalid request: missing q parameter"),
        (json.dumps({**GOOD, "q": "a" * 301}), 400, "Invalid request: request (301) exceeds text limit (300)"),
        (json.dumps({**GOOD, "q": ["a"] * 6}), 400, "Invalid request: request (6) exceeds text limit (5)"),
        (json.dumps({**GOOD, "q": "a" * 100_000}), 413, "request body larger than"),
        ("[" * 9_000 + "]" * 9_000, 400, "malformed JSON body: nested too deeply"),
        (json.dumps({**GOOD, "q": "Hallo \ud800 Welt."}), 400, "q: must be valid Unicode text"),
        (json.dumps({**GOOD, "q": ["Hallo", "\udfff"]}), 400, "q: must be valid Unicode text"),
        (json.dumps({**GOOD, "source": "d\ud800"}), 400, "source: must be valid Unicode text"),
    ],
)
def test_bad_input_is_a_4xx_json_error_and_the_server_keeps_serving(client, content, status, fragment):
    response = client.post("/translate", content=content, headers=JSON)
    assert response.status_code == status
    assert fragment in response.json()["error"]
    assert "Traceback" not in response.text
    assert client.post("/translate", json=GOOD).status_code == 200


def test_an_oversized_body_sent_in_chunks_is_refused_before_it_is_read_whole(client):
    def chunks():
        yield b'{"q": "'
        for _ in range(40):
            yield b"a" * 4096
        yield b'", "source": "de", "target": "en"}'

    response = client.post("/translate", content=chunks(), headers=JSON)  # no Content-Length: chunked
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
    assert client.get("/health").status_code == 200


def test_unknown_paths_and_methods_are_json_errors(client):
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    assert client.get("/translate").status_code == 405 and "error" in client.get("/translate").json()


class _Steered:
    """A checkpoint's Translator that the test steers: each call records its texts, waits
    until `gate` is open, and fails (as a model out of memory would) when `fails(texts)`."""

    def __init__(self, path: Path, fails=lambda texts: False):
        self.translator = Translator.from_checkpoint(path)
        self.fails = fails
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __getattr__(self, name: str):
        return getattr(self.translator, name)

    def translate_n_best(self, texts, *args, **kwargs):
        self.calls.append(list(texts))
        assert self.gate.wait(30), "the test never opened the gate"
        if self.fails(texts):
            raise RuntimeError("the model broke")
        return self.translator.translate_n_best(texts, *args, **kwargs)


def _steered_app(translator: _Steered, batch_wait_ms: float = 5.0, **options):
    return create_app([TranslationWorker(translator, "de", "en", batch_wait_ms)], **options)


def test_a_server_error_is_a_500_json_error_with_a_log_line_and_serving_goes_on(checkpoints, caplog):
    app = _steered_app(_Steered(checkpoints["de-en"], fails=lambda texts: True))
    with running(app) as url, _client(url) as client, caplog.at_level("ERROR", logger="mt.server"):
        response = client.post("/translate", json=GOOD)
        assert response.status_code == 500
        assert response.json() == {"error": "internal server error (RuntimeError)"}
        assert client.get("/health").json()["status"] == "ok"
    assert any(
        "POST /translate failed: RuntimeError: the model broke" in record.getMessage() for record in caplog.records
    )


# -- the API key -----------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(checkpoints) -> Iterator[str]:
    with running(_serve_app(checkpoints, api_key="s3cret")) as url:
        yield url


def test_an_api_key_guards_translate_and_detect_and_the_metadata_stays_open(keyed_server):
    with _client(keyed_server) as client:
        for response in (
            client.post("/translate", json=GOOD),
            client.post("/detect", data={"q": "Hallo"}),
            client.post("/translate_file", data={"source": "de", "target": "en"}),
        ):
            assert response.status_code == 400  # LibreTranslate's status for a missing key; a wrong one is 403
            assert response.json() == {"error": "Please contact the server operator to get an API key"}
        for response in (
            client.post("/translate", json={**GOOD, "api_key": "wrong"}),
            client.post("/translate", data={**GOOD, "api_key": "wrong"}),
            client.post("/translate", params={**GOOD, "api_key": "wrong"}),
            client.post("/translate", json=GOOD, headers={"Authorization": "Bearer wrong"}),
        ):
            assert response.status_code == 403 and response.json() == {"error": "Invalid API key"}
        assert client.post("/translate", json={**GOOD, "api_key": "s3cret"}).status_code == 200
        assert client.post("/translate", data={**GOOD, "api_key": "s3cret"}).status_code == 200
        assert client.post("/translate", params={**GOOD, "api_key": "s3cret"}).status_code == 200
        assert client.post("/translate", json=GOOD, params={"api_key": "s3cret"}).status_code == 200
        assert client.post("/translate", json=GOOD, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        for path in ("/languages", "/health", "/frontend/settings", "/spec", "/", "/static/app.js"):
            assert client.get(path).status_code == 200, path
        assert client.get("/frontend/settings").json()["keyRequired"] is True


def test_the_api_key_is_checked_before_the_body_and_a_key_that_is_not_unicode_is_a_400(keyed_server):
    with _client(keyed_server) as client:
        for content in (b'{"q": ', b"", b"[1, 2]", json.dumps({"q": 5}), json.dumps({**GOOD, "api_key": 5})):
            response = client.post("/translate", content=content, headers=JSON)
            assert response.status_code == 400, content
            assert "API key" in response.json()["error"]
        broken_form = {"Content-Type": "multipart/form-data"}  # no boundary
        response = client.post("/translate", content=b"q=Hallo", headers=broken_form)
        assert response.status_code == 400 and "API key" in response.json()["error"]
        keyed = {**JSON, "Authorization": "Bearer s3cret"}
        assert client.post("/translate", content=b'{"q": ', headers=keyed).status_code == 400
        response = client.post("/translate", content=b"q=Hallo", headers={**keyed, **broken_form})
        assert response.status_code == 400 and "malformed form body" in response.json()["error"]
        response = client.post("/translate", json={"source": "de"}, headers=keyed)
        assert response.json()["error"] == "Invalid request: missing q parameter"

        response = client.post("/translate", content=json.dumps({**GOOD, "api_key": "s3\ud800cret"}), headers=JSON)
        assert response.status_code == 400
        assert "api_key must be valid Unicode text" in response.json()["error"]


# -- batching across requests ---------------------------------------------------


def _concurrently(url: str, bodies: list[dict | str]) -> list[httpx.Response]:
    """POST every body (a dict, or JSON text) at once, each from its own thread and connection."""
    start = threading.Barrier(len(bodies))

    def post(body: dict | str) -> httpx.Response:
        with _client(url) as client:
            start.wait()
            return client.post("/translate", content=body if isinstance(body, str) else json.dumps(body), headers=JSON)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_requests_share_batches_and_get_what_they_would_alone(
    checkpoints, reference, corpus_pairs, batching
):
    texts = _sentences(corpus_pairs, 12)
    bodies = [{"q": text, "source": "de", "target": "en", "alternatives": i % 3} for i, text in enumerate(texts)]
    bodies[0]["beam"] = 2  # another beam: another batch
    app = _serve_app(checkpoints, batch_wait_ms=300, batching=batching)
    with running(app) as url:
        responses = _concurrently(url, bodies)
        with _client(url) as client:
            counts = client.get("/health").json()

    for body, response in zip(bodies, responses):
        decode = DecodeConfig(beam_size=body.get("beam", 5))
        expected = reference["de-en"].translate_n_best(
            [body["q"]], decode, n_best=body["alternatives"] + 1, split=True
        )[0]
        assert response.status_code == 200
        assert response.json()["translatedText"] == expected[0].text
        assert response.json().get("alternatives", []) == [c.text for c in expected[1:]]
    assert counts["requests"] == len(bodies)
    if batching:
        assert 2 <= counts["batches"] < len(bodies)
    else:
        assert counts["batches"] == len(bodies)


@pytest.mark.parametrize("name", ["de-en", "en-de"])
def test_a_sentences_translation_does_not_depend_on_its_batch_mates(reference, corpus_pairs, name):
    side = 0 if name == "de-en" else 1
    sentences = [pair[side] for pair in corpus_pairs[::5]]
    alone = [reference[name].translate_n_best([s], BEAM5, n_best=3)[0] for s in sentences]
    together = reference[name].translate_n_best(sentences, BEAM5, n_best=3)
    reversed_pairs = reference[name].translate_n_best(sentences[::-1] + sentences[:3], BEAM5, n_best=3)[
        : len(sentences)
    ][::-1]
    for own, *others in zip(alone, together, reversed_pairs):
        for other in others:
            assert [c.text for c in other] == [c.text for c in own]
            assert [c.score for c in other] == pytest.approx([c.score for c in own], abs=1e-4)


# -- one client never breaks another ----------------------------------------------


def _wait_for(condition, seconds: float = 10) -> None:
    """Poll `condition` until it holds."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s in vain"
        time.sleep(0.01)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _post(url: str, body: dict) -> httpx.Response:
    with _client(url) as client:
        return client.post("/translate", json=body)


def _read_until_closed(sock: socket.socket, seconds: float = 5) -> bytes:
    """All the server sends until it closes the connection; socket.timeout if it does not within `seconds`."""
    sock.settimeout(seconds)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def _json_answer(raw: bytes) -> tuple[bytes, dict]:
    """(status line and headers, JSON body) of the last response in `raw`."""
    head, body = raw[raw.rindex(b"HTTP/1.1 ") :].split(b"\r\n\r\n", 1)
    assert b"content-type: application/json" in head.lower()
    return head, json.loads(body)


def test_a_text_that_is_not_unicode_is_a_400_alone_and_its_batch_mates_get_their_answers(
    checkpoints, reference, corpus_pairs
):
    texts = _sentences(corpus_pairs, 4)
    poisoned = json.dumps({"q": "Hallo \ud800 Welt.", "source": "de", "target": "en"})  # valid JSON
    bodies = [{"q": text, "source": "de", "target": "en"} for text in texts]
    with running(_serve_app(checkpoints, batch_wait_ms=300)) as url:
        responses = _concurrently(url, [*bodies[:2], poisoned, *bodies[2:]])
        with _client(url) as client:
            counts = client.get("/health").json()

    refused = responses.pop(2)
    assert refused.status_code == 400 and "q: must be valid Unicode text" in refused.json()["error"]
    assert [response.status_code for response in responses] == [200] * len(texts)
    alone = [reference["de-en"].translate([text], BEAM5, split=True)[0] for text in texts]
    assert [response.json()["translatedText"] for response in responses] == alone
    assert counts["requests"] == len(texts) and counts["batches"] < len(texts)  # they shared a batch


def test_a_request_that_breaks_its_batch_fails_alone_and_the_others_are_translated_without_it(
    checkpoints, reference, corpus_pairs, caplog
):
    texts = _sentences(corpus_pairs, 4)
    poison = "Gift ."
    steered = _Steered(checkpoints["de-en"], fails=lambda batch: poison in batch)
    bodies = [{"q": text, "source": "de", "target": "en"} for text in [*texts[:2], poison, *texts[2:]]]
    with caplog.at_level("WARNING", logger="mt.batching"), running(_steered_app(steered, batch_wait_ms=300)) as url:
        responses = _concurrently(url, bodies)

    failed = responses.pop(2)
    assert failed.status_code == 500 and failed.json() == {"error": "internal server error (RuntimeError)"}
    alone = [reference["de-en"].translate([text], BEAM5, split=True)[0] for text in texts]
    assert [response.json().get("translatedText") for response in responses] == alone
    assert any(poison in call and len(call) > 1 for call in steered.calls)  # the shared call failed
    assert any("translating them one by one" in record.getMessage() for record in caplog.records)


class _FailingLoop(TranslationWorker):
    """A worker whose batching loop fails, as `--batch-wait-ms inf` could make it fail."""

    async def _collect(self, first):
        raise OverflowError("timestamp too large to convert to C _PyTime_t")


def test_a_stopped_worker_fails_its_requests_at_once_with_503_and_health_reports_it(checkpoints, caplog):
    worker = _FailingLoop(Translator.from_checkpoint(checkpoints["de-en"]), "de", "en")
    with caplog.at_level("ERROR", logger="mt.batching"), running(create_app([worker])) as url, _client(url) as client:
        for _ in range(2):  # the request that met the failure, then one after it
            response = client.post("/translate", json=GOOD, timeout=5)
            assert response.status_code == 503
            assert response.json() == {"error": "the de->en model is not running"}
        health = client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "error"
    assert health.json()["models"][0]["running"] is False
    assert any("the de->en batching task failed" in record.getMessage() for record in caplog.records)


def test_a_client_too_slow_to_send_its_request_gets_408_and_its_connection_closed(checkpoints):
    head = b"POST /translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    for sent in (
        b"",  # connects, sends nothing
        head,  # headers never finished
        head + b"Content-Length: 60\r\n\r\n" + b'{"q": ',  # the body never finished
        b"GET /languages HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + head,  # the next request never finished
    ):
        with running(_serve_app(checkpoints), request_timeout=0.5) as url:
            with socket.create_connection(("127.0.0.1", _port(url)), timeout=5) as sock:
                sock.sendall(sent)
                started = time.monotonic()
                answer = _read_until_closed(sock)  # raises socket.timeout if the server holds on
            assert time.monotonic() - started < 4
        status, body = _json_answer(answer)
        assert status.startswith(b"HTTP/1.1 408 ")
        assert body == {"error": "the request did not arrive within 0.5 s"}


def test_a_request_that_is_not_http_gets_a_json_400(server):
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=5) as sock:
        sock.sendall(b"HELLO THERE\r\n\r\n")
        status, body = _json_answer(_read_until_closed(sock))
    assert status.startswith(b"HTTP/1.1 400 ") and body == {"error": "Invalid HTTP request received."}


def test_a_full_queue_is_refused_with_503_and_retry_after(checkpoints, reference, corpus_pairs):
    steered = _Steered(checkpoints["de-en"])
    steered.gate.clear()  # the model holds the first request
    text = corpus_pairs[4][0]
    with running(_steered_app(steered, max_queue=1)) as url, _client(url) as client, ThreadPoolExecutor(1) as pool:
        try:
            first = pool.submit(_post, url, {"q": text, "source": "de", "target": "en"})
            _wait_for(lambda: client.get("/health").json()["pending"] == 1)
            refused = client.post("/translate", json=GOOD, timeout=5)
        finally:
            steered.gate.set()
        answered = first.result(timeout=30)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json() == {"error": "the de->en model's queue is full (1 waiting); try again shortly"}
    assert answered.json() == {"translatedText": reference["de-en"].translate([text], BEAM5, split=True)[0]}


def _raw_post(body: dict) -> bytes:
    content = json.dumps(body).encode()
    return (
        b"POST /translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(content)}\r\n\r\n".encode()
        + content
    )


def test_a_request_whose_client_has_gone_is_not_translated(checkpoints, corpus_pairs):
    steered = _Steered(checkpoints["de-en"])
    steered.gate.clear()
    first, abandoned, last = (corpus_pairs[index][0] for index in (4, 8, 12))
    with running(_steered_app(steered)) as url, _client(url) as client, ThreadPoolExecutor(1) as pool:
        try:
            answer = pool.submit(_post, url, {"q": first, "source": "de", "target": "en"})
            _wait_for(lambda: steered.calls)  # the first request is with the model, which waits
            with socket.create_connection(("127.0.0.1", _port(url)), timeout=5) as sock:
                sock.sendall(_raw_post({"q": abandoned, "source": "de", "target": "en"}))
                _wait_for(lambda: client.get("/health").json()["pending"] == 2)
            _wait_for(lambda: client.get("/health").json()["pending"] == 1)  # it noticed the client go
        finally:
            steered.gate.set()
        assert answer.result(timeout=30).status_code == 200
        assert client.post("/translate", json={"q": last, "source": "de", "target": "en"}).status_code == 200
    assert steered.calls == [[first], [last]]


def test_a_request_whose_search_would_be_too_long_is_refused_and_a_narrower_beam_is_not(client, reference):
    from mt.server import COST_PER_CHAR

    text = " ".join("abcdefghijklmnopqrstuvwxyz" * 6)[:300]  # --max-chars of the `server` fixture
    pieces = len(reference["de-en"].tokenizers.source.encode([text])[0])
    max_cost = COST_PER_CHAR * 300
    wide = max_cost // pieces + 1
    assert 2 <= wide <= 16, "the text should fit some beams and not others"

    refused = client.post("/translate", json={**GOOD, "q": text, "beam": wide})
    assert refused.status_code == 400
    assert refused.json()["error"].startswith(f"q has {pieces} subword pieces; at beam {wide} at most ")
    assert client.post("/translate", json={**GOOD, "q": text, "beam": wide - 1}).status_code == 200


def test_alternatives_are_distinct_and_best_first(client, corpus_pairs):
    texts = [*_sentences(corpus_pairs, 4), f"{corpus_pairs[1][0]} {corpus_pairs[2][0]}"]  # --max-items 5
    body = client.post(
        "/translate",
        json={"q": texts, "source": "de", "target": "en", "alternatives": 5, "beam": 8, "scores": True},
    ).json()
    for best, alternatives, scores in zip(body["translatedText"], body["alternatives"], body["scores"]):
        candidates = [best, *alternatives]
        assert len(set(candidates)) == len(candidates), candidates
        assert scores == sorted(scores, reverse=True)


# -- running: serve(), signals ------------------------------------------------------


def test_loopback_addresses_are_told_from_others():
    assert all(is_loopback(host) for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "192.0.2.1", "::", "example.org"))


def test_serve_warns_about_a_non_loopback_host_and_fails_in_one_line_on_a_bad_address():
    lines: list[str] = []
    with pytest.raises(MTError, match="cannot listen on 192.0.2.1:5000"):
        serve(host="192.0.2.1", echo=lines.append)  # TEST-NET-1: no interface here has it
    assert lines and lines[0].startswith("warning: --host 192.0.2.1 is not a loopback address")
    with pytest.raises(MTError, match="--max-chars must be >= 1"):
        serve(max_chars=0, echo=lines.append)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("batch_wait_ms", float("inf"), "--batch-wait-ms must be between 0 and 10000, got inf"),
        ("batch_wait_ms", 1e12, "--batch-wait-ms must be between 0 and 10000"),
        ("batch_wait_ms", float("nan"), "--batch-wait-ms must be between 0 and 10000, got nan"),
        ("batch_wait_ms", -1, "--batch-wait-ms must be between 0 and 10000"),
        ("request_timeout", 0, "--request-timeout must be between 0.1 and 600"),
        ("request_timeout", float("inf"), "--request-timeout must be between 0.1 and 600"),
        ("max_queue", 0, "--max-queue must be >= 1"),
    ],
)
def test_serve_refuses_a_batch_wait_timeout_or_queue_that_is_not_finite_and_in_range(option, value, message):
    with pytest.raises(MTError, match=message):
        serve(**{option: value}, echo=lambda line: None)


@pytest.mark.parametrize(
    ("key", "message"), [("", "--api-key is empty"), ("s\udcffx", "--api-key must be valid UTF-8")]
)
def test_serve_refuses_an_empty_or_undecodable_api_key(key, message):
    with pytest.raises(MTError, match=message):
        serve(api_key=key, echo=lambda line: None)


def test_mt_serve_says_in_one_line_what_is_wrong_with_its_options():
    from helpers import _assert_cli_error, invoke

    _assert_cli_error(invoke(["serve", "--batch-wait-ms", "inf"]), "--batch-wait-ms must be between 0 and 10000")
    _assert_cli_error(invoke(["serve", "--api-key", ""]), "--api-key is empty")


def _start_server_process(checkpoints, **options) -> tuple[subprocess.Popen, str, list[str]]:
    """`serve` in a subprocess on a free port; returns it, its URL and its (growing) stderr lines."""
    arguments = {"models": [str(p) for p in checkpoints.values()], "host": "127.0.0.1", "port": 0, **options}
    code = "import json, sys; from mt.server import serve; serve(**json.loads(sys.argv[1]))"
    process = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(arguments)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lines: list[str] = []
    announced = threading.Event()

    def read() -> None:
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith("serving "):
                announced.set()

    threading.Thread(target=read, daemon=True).start()
    if not announced.wait(STARTUP_SECONDS):
        process.kill()
        raise AssertionError("the server did not start:\n" + "\n".join(lines))
    url = next(line for line in lines if line.startswith("serving ")).split(" on ")[1].split()[0]
    _wait_until_answering(url, process)
    return process, url, lines


@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight_then_exits_cleanly(checkpoints, reference, corpus_pairs):
    process, url, lines = _start_server_process(
        checkpoints, batch_wait_ms=1500
    )  # a request waits 1.5 s for batch mates
    try:
        text = corpus_pairs[11][0]
        with ThreadPoolExecutor(1) as pool, _client(url) as client, _client(url) as requester:
            answer = pool.submit(requester.post, "/translate", json={"q": text, "source": "de", "target": "en"})
            deadline = time.monotonic() + 30
            while client.get("/health").json()["pending"] == 0:  # the request is with the worker now
                assert time.monotonic() < deadline and not answer.done(), "the request never reached the worker"
            assert not answer.done()
            process.send_signal(signal.SIGTERM)
            response = answer.result(timeout=60)
        assert response.status_code == 200
        assert response.json()["translatedText"] == reference["de-en"].translate([text], BEAM5, split=True)[0]
        assert process.wait(timeout=60) == 0
        assert any("Finished server process" in line for line in lines)
        assert not any("Traceback" in line for line in lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- the page ---------------------------------------------------------------------


def test_the_page_and_its_assets_load_nothing_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    for text in (page.text, client.get("/static/app.js").text, client.get("/static/style.css").text):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _browser_missing() -> str | None:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        return "needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs selenium (pip install -e '.[dev]')"
    return None


@pytest.fixture
def browser(tmp_path, monkeypatch):
    if reason := _browser_missing():
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_AVOID_STATS", "true")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        f"--user-data-dir={tmp_path / 'chromium'}",
        # No name lookups but 127.0.0.1's: Chromium would otherwise resolve its update,
        # extension and search-engine hosts even with the flags above.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--disable-extensions",
        "--disable-default-apps",
        "--no-default-browser-check",
        "--window-size=390,844",  # a phone
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
def test_the_page_translates_as_you_type_and_shows_the_attention_heatmap(browser, server, reference, corpus_pairs):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    first, second = corpus_pairs[3][0], corpus_pairs[60][0]
    expected = reference["de-en"].translate([first, second], BEAM5, split=True)
    assert all(expected), "the tiny model should say something"
    wait = WebDriverWait(browser, 30)
    browser.get(server + "/")
    wait.until(lambda d: d.find_element(By.ID, "target").get_attribute("value") == "en")

    text = browser.find_element(By.ID, "text")
    text.send_keys(first)  # then the page waits for a pause in typing
    wait.until(lambda d: d.find_element(By.ID, "translation").text == expected[0])
    heatmap = browser.find_element(By.ID, "heatmap")
    wait.until(lambda d: heatmap.is_displayed() and heatmap.find_elements(By.CSS_SELECTOR, "tbody tr"))
    source_pieces, target_pieces, _ = reference["de-en"].alignment(first, expected[0])
    assert len(heatmap.find_elements(By.CSS_SELECTOR, "tbody tr")) == len(target_pieces)
    assert len(heatmap.find_elements(By.CSS_SELECTOR, "thead th")) == len(source_pieces)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#alternatives-list li")) >= 1

    text.clear()
    text.send_keys(second, Keys.CONTROL, Keys.ENTER)
    wait.until(lambda d: d.find_element(By.ID, "translation").text == expected[1])
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    assert browser.find_element(By.CSS_SELECTOR, "label[for=text]").text == "Text"


@pytest.mark.slow
def test_the_page_asks_for_the_key_of_a_keyed_server_and_translates_with_it(browser, keyed_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(keyed_server + "/")
    wait.until(lambda d: d.find_element(By.ID, "key-row").is_displayed())
    wait.until(lambda d: "needs an API key" in d.find_element(By.ID, "status").text)
    browser.find_element(By.ID, "text").send_keys("Hallo")
    wait.until(lambda d: "contact the server operator" in d.find_element(By.ID, "status").text)
    browser.find_element(By.ID, "api-key").send_keys("s3cret")
    browser.find_element(By.ID, "form").submit()
    wait.until(lambda d: d.find_element(By.ID, "translation").text)
    assert browser.find_element(By.ID, "status").text == ""
