"""Language detection among the loaded models' languages (mt.detect): the right
language of everyday sentences, only candidates, percentages best first, and a
text without letters placed nowhere."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from mt.detect import detect

GERMAN = [
    "Ein Hund läuft über die Wiese.",
    "Ich habe keine Zeit.",
    "Wo ist der Bahnhof?",
    "Die Kinder spielen im Garten, während ihre Eltern kochen.",
]
ENGLISH = [
    "A dog runs across the meadow.",
    "I don't have time.",
    "Where is the station?",
    "The children are playing in the garden while their parents cook.",
]
FRENCH = "Les enfants jouent dans le jardin pendant que leurs parents cuisinent."


@pytest.mark.parametrize(("language", "sentences"), [("de", GERMAN), ("en", ENGLISH)])
def test_german_and_english_sentences_are_told_apart(language, sentences):
    for sentence in sentences:
        assert detect(sentence, ["de", "en"])[0][0] == language, sentence


def test_only_the_candidate_languages_come_back_each_once():
    found = detect(FRENCH, ["de", "en", "de"])
    assert sorted(code for code, _ in found) == ["de", "en"]
    assert detect(FRENCH, ["de", "en", "fr"])[0][0] == "fr"


def test_confidences_are_percentages_best_first():
    for text in [*GERMAN, *ENGLISH, FRENCH, "ok", "Hallo"]:
        for languages in (["de", "en"], ["en", "de", "fr"]):
            confidences = [confidence for _, confidence in detect(text, languages)]
            assert all(0 <= confidence <= 100 for confidence in confidences)
            assert confidences == sorted(confidences, reverse=True)
            assert sum(confidences) == pytest.approx(100, abs=1)


@pytest.mark.parametrize("text", ["", "   \n", "42", "3,14 + 2 = 5.14!", "🙂🙂", "..."])
def test_a_text_without_letters_has_no_language(text):
    assert detect(text, ["en", "de"]) == [("en", 0.0), ("de", 0.0)]


def test_a_language_the_model_does_not_know_comes_last_with_nothing():
    found = detect(GERMAN[0], ["xx", "de", "en"])
    assert found[0][0] == "de" and found[-1] == ("xx", 0.0)
    assert detect(GERMAN[0], ["xx"]) == [("xx", 0.0)]
    assert detect(GERMAN[0], []) == []


def test_a_regional_code_is_detected_by_its_language():
    assert detect(GERMAN[0], ["en-US", "de-AT"])[0][0] == "de-AT"


def test_threads_with_different_candidates_get_the_answers_of_one_thread():
    calls = [(text, languages) for text in [*GERMAN, FRENCH] for languages in (("de", "en"), ("de", "en", "fr"))] * 20
    alone = [detect(text, languages) for text, languages in calls]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda call: detect(*call), calls)) == alone


def test_detection_needs_no_torch():
    program = (
        "import sys; from mt.detect import detect; detect('Hallo Welt', ['de', 'en']); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
