"""`mt serve` as a drop-in LibreTranslate server: the clients people use, pinned in the dev
extras, against a real `mt serve` of the shipped models (de-en, en-de) on 127.0.0.1, once
open and once with --api-key. Every answer must be right, not only a 200: the English of
GERMAN speaks of a bench. translate 3.8.1 pins an older libretranslatepy, so it runs in an
environment of its own (`make test` makes .venv/clients) through a small script.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_server import _Markup, _start_server_process  # serve() in a subprocess, on a free port

from mt.server import default_models

pytestmark = pytest.mark.slow  # real `mt serve` processes

ROOT = Path(__file__).resolve().parents[1]
CLIENTS_PYTHON = ROOT / ".venv" / "clients" / "bin" / "python"  # made by `make test`
KEY = "client-test-key"
GERMAN = "Zwei Männer sitzen auf einer Bank."
DOG = "Ein Hund läuft durch den Schnee."


@dataclass(frozen=True)
class Served:
    url: str
    key: str | None  # the server's key, None for an open server


@pytest.fixture(scope="module", params=["open", "with key"])
def served(request) -> Iterator[Served]:
    key = KEY if request.param == "with key" else None
    process, url, _ = _start_server_process(dict(enumerate(default_models())), api_key=key)
    try:
        yield Served(url, key)
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch) -> None:
    """The clients read proxy settings from the environment: 127.0.0.1 goes direct."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


def _keyed_only(served: Served) -> None:
    if served.key is None:
        pytest.skip("an open server takes any key")


HTML = (
    '<p class="intro" id="a1">Zwei Männer sitzen auf einer <b title="Holz">Bank</b>.</p><br/><a href="/x">Ein Hund.</a>'
)


# -- libretranslatepy 2.1.4 -------------------------------------------------------------


def test_libretranslatepy_translates_and_lists_languages(served):
    LibreTranslateAPI = pytest.importorskip("libretranslatepy").LibreTranslateAPI

    api = LibreTranslateAPI(served.url, served.key)
    assert "bench" in api.translate(GERMAN, "de", "en")
    assert "Bank" in api.translate("Two men are sitting on a bench.", "en", "de")
    assert [(language["code"], language["targets"]) for language in api.languages()] == [("de", ["en"]), ("en", ["de"])]


def test_libretranslatepy_detects(served):
    LibreTranslateAPI = pytest.importorskip("libretranslatepy").LibreTranslateAPI

    found = LibreTranslateAPI(served.url, served.key).detect(GERMAN)
    assert found[0]["language"] == "de" and found[0]["confidence"] > 50


def test_libretranslatepy_with_a_wrong_key_is_refused(served):
    import urllib.error

    LibreTranslateAPI = pytest.importorskip("libretranslatepy").LibreTranslateAPI

    _keyed_only(served)
    for call in (lambda api: api.translate(GERMAN, "de", "en"), lambda api: api.detect(GERMAN)):
        with pytest.raises(urllib.error.HTTPError) as refused:
            call(LibreTranslateAPI(served.url, "wrong"))
        assert refused.value.code == 403


# -- deep-translator 1.11.4 ----------------------------------------------------------------


def _deep(served: Served, source: str, key: str | None = None):
    LibreTranslator = pytest.importorskip("deep_translator").LibreTranslator

    # deep-translator demands a key even for an open server; it sends its fields in the query string
    key = key or served.key or "unused"
    return LibreTranslator(source=source, target="en", custom_url=served.url + "/", api_key=key)


def test_deep_translator_translates_a_text_and_a_batch(served):
    assert "bench" in _deep(served, "de").translate(GERMAN)
    first, second = _deep(served, "de").translate_batch([GERMAN, DOG])
    assert "bench" in first and "dog" in second.lower()


def test_deep_translator_translates_from_auto(served):
    assert "bench" in _deep(served, "auto").translate(GERMAN)


def test_deep_translator_with_a_wrong_key_is_refused(served):
    AuthorizationException = pytest.importorskip("deep_translator.exceptions").AuthorizationException

    _keyed_only(served)
    with pytest.raises(AuthorizationException):
        _deep(served, "de", key="wrong").translate(GERMAN)


# -- libretranslate-aio 0.1.3 ----------------------------------------------------------------


@pytest.fixture
def aio(served):
    LibreTranslate = pytest.importorskip("libretranslate_aio").LibreTranslate

    with httpx.Client(base_url=served.url, trust_env=False, timeout=120) as client:
        yield LibreTranslate(served.url, api_key=served.key, client=client)


def test_libretranslate_aio_translates_a_string_a_list_and_alternatives(aio):
    assert "bench" in aio.translate(GERMAN, "de", "en").translated_text
    first, second = aio.translate([GERMAN, DOG], "de", "en").translated_text
    assert "bench" in first and "dog" in second.lower()

    answer = aio.translate(GERMAN, "de", "en", alternatives=3)
    assert len(answer.alternatives) == 3
    assert len({answer.translated_text, *answer.alternatives}) == 4  # distinct, and none is the translation
    assert all("bench" in alternative for alternative in answer.alternatives)


def test_libretranslate_aio_translates_from_auto_and_detects(aio):
    answer = aio.translate(GERMAN, "auto", "en")
    assert "bench" in answer.translated_text
    assert answer.detected_language.language == "de" and answer.detected_language.confidence > 50
    assert aio.detect("Two men are sitting on a bench.")[0].language == "en"


def test_libretranslate_aio_translates_html_and_keeps_every_tag_and_attribute_in_order(aio):
    translated = aio.translate(HTML, "de", "en", format="html").translated_text
    assert _Markup(translated).tags == _Markup(HTML).tags
    assert "bench" in "".join(_Markup(translated).text).lower()


def test_libretranslate_aio_reads_the_languages_settings_and_health(aio, served):
    assert [(language.code, language.targets) for language in aio.languages()] == [("de", ["en"]), ("en", ["de"])]
    settings = aio.frontend_settings()
    assert settings.char_limit == 5000
    assert settings.api_keys is settings.key_required is (served.key is not None)
    assert settings.language.target.code in ("de", "en") and not settings.suggestions
    assert aio.health() is True


def test_libretranslate_aio_with_a_wrong_key_is_refused(served):
    LibreTranslate = pytest.importorskip("libretranslate_aio").LibreTranslate
    ForbiddenError = pytest.importorskip("libretranslate_aio.exceptions").ForbiddenError

    _keyed_only(served)
    with httpx.Client(base_url=served.url, trust_env=False, timeout=120) as client:
        wrong = LibreTranslate(served.url, api_key="wrong", client=client)
        for call in (lambda: wrong.translate(GERMAN, "de", "en"), lambda: wrong.detect(GERMAN)):
            with pytest.raises(ForbiddenError, match="Invalid API key"):
                call()


# -- translate 3.8.1, in .venv/clients -------------------------------------------------------

TRANSLATE_SCRIPT = textwrap.dedent(
    """
    import sys
    from translate import Translator

    url, key, source, text = sys.argv[1:]
    options = {"from_lang": source} if source else {}  # without it: translate's default, autodetect
    translator = Translator(provider="libre", to_lang="en", base_url=url, secret_access_key=key or None, **options)
    try:
        print(translator.translate(text))
    except Exception as error:
        print(f"error: {type(error).__name__}: {error}")
    """
)


def _translate_client(served: Served, source: str, key: str | None) -> str:
    if not CLIENTS_PYTHON.exists():
        pytest.skip(f"needs translate==3.8.1 in {CLIENTS_PYTHON.parent.parent} (make test makes it)")
    done = subprocess.run(
        [str(CLIENTS_PYTHON), "-c", TRANSLATE_SCRIPT, served.url, key or "", source, GERMAN],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"},
        check=True,
    )
    return done.stdout.strip()


def test_translate_translates_from_german(served):
    assert "bench" in _translate_client(served, "de", served.key)


def test_translate_translates_from_its_default_autodetect(served):
    assert "bench" in _translate_client(served, "", served.key)


def test_translate_with_a_wrong_key_is_refused(served):
    _keyed_only(served)
    for source in ("de", ""):
        answer = _translate_client(served, source, "wrong")
        assert answer.startswith("error: ") and "403" in answer
