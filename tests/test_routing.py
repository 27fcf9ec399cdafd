"""`mt translate --to LANG` (mt.routing): each text is translated by the models of its
detected language, a text already in LANG or without letters comes back as it is,
and no model into LANG is a one-line error."""

from __future__ import annotations

import pytest
from helpers import _assert_cli_error, invoke

from mt.config import DecodeConfig
from mt.model import Ensemble
from mt.routing import AutoSourceTranslator, load_translator
from mt.translator import Candidate, Translator

GERMAN = ["Ein Hund läuft über die Wiese.", "Die Kinder spielen im Garten."]
ENGLISH = ["A dog runs across the meadow.", "The children are playing in the garden."]
GREEDY = DecodeConfig(beam_size=1)


@pytest.fixture(scope="module")
def directions(tmp_path_factory, tiny_checkpoint):
    """Tiny checkpoints: two de->en (an ensemble), one en->de (with attention), one fr->de."""
    folder = tmp_path_factory.mktemp("directions")
    return {
        "de-en": [tiny_checkpoint(folder / f"de-en-{seed}.safetensors", "de", "en", seed=seed) for seed in (1, 2)],
        "en-de": [tiny_checkpoint(folder / "en-de.safetensors", "en", "de", seed=3, attention="luong")],
        "fr-de": [tiny_checkpoint(folder / "fr-de.safetensors", "fr", "de", seed=4)],
    }


def test_each_text_is_translated_by_the_models_of_its_language(directions):
    routed = load_translator([*directions["de-en"], *directions["en-de"]], into="en")
    alone = Translator.from_checkpoints(directions["de-en"])
    assert isinstance(routed, AutoSourceTranslator) and list(routed.translators) == ["de"]
    assert isinstance(routed.translators["de"].model, Ensemble)
    first, second = alone.translate(GERMAN, GREEDY)
    assert routed.translate([GERMAN[0], ENGLISH[0], GERMAN[1]], GREEDY) == [first, ENGLISH[0], second]


def test_a_text_in_the_target_language_or_without_letters_comes_back_as_it_is(directions):
    routed = load_translator(directions["en-de"] + directions["fr-de"], into="de")
    for text in [*GERMAN, "42", "", "🙂 !"]:
        assert routed.translate_n_best([text], GREEDY, n_best=3) == [[Candidate(text, 0.0)]]
        assert routed.translate([text], GREEDY) == [text]
        assert routed.alignment(text, text) is None


def test_a_routed_text_has_its_n_best_and_its_models_alignment(directions):
    routed = load_translator(directions["en-de"] + directions["fr-de"], into="de")
    alone = Translator.from_checkpoints(directions["en-de"])
    decode = DecodeConfig(beam_size=3)
    assert routed.translate_n_best(ENGLISH, decode, n_best=3) == alone.translate_n_best(ENGLISH, decode, n_best=3)
    best = alone.translate(ENGLISH[:1], decode)[0]
    assert routed.alignment(ENGLISH[0], best).to_dict() == alone.alignment(ENGLISH[0], best).to_dict()


def test_without_to_the_models_are_loaded_as_before(directions):
    translator = load_translator(directions["de-en"])
    assert isinstance(translator, Translator) and isinstance(translator.model, Ensemble)


def test_mt_translate_to_translates_what_is_not_in_the_target_yet(directions):
    models = [option for path in directions["de-en"] + directions["en-de"] for option in ("-m", path)]
    result = invoke(["translate", *models, "--to", "en", "--beam", "1", "--device", "cpu", GERMAN[0], ENGLISH[0], "3"])
    assert result.exit_code == 0, result.output
    expected = Translator.from_checkpoints(directions["de-en"]).translate(GERMAN[:1], GREEDY)[0]
    assert result.stdout.splitlines() == [expected, ENGLISH[0], "3"]


def test_to_a_language_no_model_translates_into_is_a_one_line_error(directions):
    result = invoke(["translate", "-m", directions["en-de"][0], "--to", "fr", "--device", "cpu", "Hallo"])
    _assert_cli_error(result, "--to fr", "no model translates into fr", "en->de")
