"""Which of the loaded models' languages a text is in: language identification with
py3langid (langid.py's naive Bayes over byte n-grams, its model inside the wheel;
bench/language_id.py and docs/benchmarks.md give the comparison that chose it).

The detector weighs only the candidate languages against each other, as LibreTranslate
restricts its detector to the installed languages: a text is placed among the
languages that can be translated, never in another one. py3langid is imported on the
first call (numpy and the model: about 0.5 s), so commands that do not detect never pay.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache, lru_cache

# Enough text to tell languages apart; bounds the time a long request can take.
MAX_CHARACTERS = 10_000


@cache
def _full_identifier():
    """langid.py's model over all of its languages, loaded once, with the scores of a
    text normalised into probabilities (`norm_probs`)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@cache
def _known() -> frozenset[str]:
    return frozenset(_full_identifier().labels)


@lru_cache(maxsize=16)
def _identifier(labels: tuple[str, ...]):
    """A copy of the model restricted to `labels`, kept per set. Restricting changes an
    identifier, so the shared one never is: threads may call `detect` at once."""
    import copy

    identifier = copy.copy(_full_identifier())  # shares the weights; set_languages slices its own
    identifier.set_languages(list(labels))
    return identifier


def _label(code: str) -> str:
    """The model's name of a language: the primary subtag ("pt-BR" -> "pt")."""
    return code.replace("_", "-").split("-")[0].lower()


def detect(text: str, languages: Sequence[str]) -> list[tuple[str, float]]:
    """Each of `languages` (codes as the checkpoints record them; a repeated one once)
    with the confidence in percent (0-100, about 100 together) that `text` is in it,
    best first.

    A text without letters (empty, numbers, emoji, punctuation) has no language: every
    candidate comes back with 0, in the order given. So does a candidate the model does
    not know, or one whose primary subtag an earlier candidate has ("pt" and "pt-BR"),
    after the others.
    """
    languages = list(dict.fromkeys(languages))
    if not any(character.isalpha() for character in text):
        return [(code, 0.0) for code in languages]
    by_label: dict[str, str] = {}  # the model's label -> the first candidate with it
    for code in languages:
        if _label(code) in _known():
            by_label.setdefault(_label(code), code)
    ranked = _identifier(tuple(sorted(by_label))).rank(text[:MAX_CHARACTERS]) if by_label else []
    found = [(by_label[label], round(100 * float(probability), 1)) for label, probability in ranked]
    return found + [(code, 0.0) for code in languages if code not in by_label.values()]
