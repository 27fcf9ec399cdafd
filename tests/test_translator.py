"""The translator: sentence splitting, rejoining, and long sentences in pieces."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mt.config import DecodeConfig, ModelConfig
from mt.model import Seq2Seq
from mt.translator import Translator, split_sentences

DECODE = DecodeConfig(beam_size=2, max_length_offset=3)


@pytest.fixture(scope="module")
def translator(tiny_model, tokenizers) -> Translator:
    model = tiny_model(embedding_size=16, hidden_size=24, attention="luong")
    return Translator(model, tokenizers, source_language="de", max_tokens=12)


@pytest.mark.parametrize(
    ("text", "language", "sentences"),
    [
        ("Ich mag Obst, z. B. Äpfel. Was magst du?", "de", ["Ich mag Obst, z. B. Äpfel. ", "Was magst du?"]),
        ("Dr. Müller kommt morgen. Er bringt Kuchen.", "de", ["Dr. Müller kommt morgen. ", "Er bringt Kuchen."]),
        (
            "Das Haus Nr. 5 kostete 3.5 Mio. Euro. Es ist alt.",
            "de",
            ["Das Haus Nr. 5 kostete 3.5 Mio. Euro. ", "Es ist alt."],
        ),
        ("Er sagte: „Komm!“ Dann ging er.", "de", ["Er sagte: „Komm!“ ", "Dann ging er."]),
        ("Am 3. Oktober ist Feiertag. Wir haben frei.", "de", ["Am 3. Oktober ist Feiertag. ", "Wir haben frei."]),
        ("Ich weiß nicht... Vielleicht morgen.", "de", ["Ich weiß nicht... ", "Vielleicht morgen."]),
        ("Hallo wie geht es dir", "de", ["Hallo wie geht es dir"]),
        (
            "Mr. Smith arrived at 5 p.m. yesterday. He was tired.",
            "en",
            ["Mr. Smith arrived at 5 p.m. yesterday. ", "He was tired."],
        ),
        ("I like fruit, e.g. apples. And you?", "en", ["I like fruit, e.g. apples. ", "And you?"]),
        # news text: titles, parties, quotes, dates, amounts and company names
        (
            "Bundeskanzler Olaf Scholz (SPD) sagte: „Wir handeln jetzt.“ Die Opposition kritisierte den Plan.",
            "de",
            ["Bundeskanzler Olaf Scholz (SPD) sagte: „Wir handeln jetzt.“ ", "Die Opposition kritisierte den Plan."],
        ),
        (
            "Prof. Dr. Karl Lauterbach u. a. warnten vor einer Welle. Das RKI meldete am 12. März 12.345 Fälle.",
            "de",
            ["Prof. Dr. Karl Lauterbach u. a. warnten vor einer Welle. ", "Das RKI meldete am 12. März 12.345 Fälle."],
        ),
        (
            "Die Müller GmbH & Co. KG meldete Insolvenz an. Die Preise stiegen um ca. 5 % bzw. 10 Mrd. Euro.",
            "de",
            [
                "Die Müller GmbH & Co. KG meldete Insolvenz an. ",
                "Die Preise stiegen um ca. 5 % bzw. 10 Mrd. Euro.",
            ],
        ),
        (
            "„Wir werden das schaffen“, sagte Merkel. „Das ist klar.“ Danach reiste sie ab.",
            "de",
            ["„Wir werden das schaffen“, sagte Merkel. ", "„Das ist klar.“ ", "Danach reiste sie ab."],
        ),
        (
            'The U.S. Federal Reserve raised rates by 0.25 points. "We are committed," said Jerome Powell. Markets fell.',
            "en",
            [
                "The U.S. Federal Reserve raised rates by 0.25 points. ",
                '"We are committed," said Jerome Powell. ',
                "Markets fell.",
            ],
        ),
        (
            "Dr. Jones, Ph.D., works at Acme Inc. in the U.K. She joined in Jan. 2020 from St. Louis.",
            "en",
            ["Dr. Jones, Ph.D., works at Acme Inc. in the U.K. ", "She joined in Jan. 2020 from St. Louis."],
        ),
    ],
)
def test_sentence_splitter_handles_abbreviations_numbers_quotes_and_ellipses(text, language, sentences):
    assert split_sentences(text, language) == sentences


@given(st.text(max_size=200))
def test_split_sentences_concatenate_to_the_input(text):
    assert "".join(split_sentences(text, "de")) == text


def test_several_sentences_are_translated_one_by_one_and_rejoined_with_their_separators(translator, corpus_pairs):
    first, second, third = (pair[0] for pair in corpus_pairs[:3])
    text = f"  {first}  {second}\t{third} "
    one_by_one = translator.translate([first, second, third], DECODE)

    (joined,) = translator.translate([text], DECODE, split=True)

    assert joined == f"  {one_by_one[0]}  {one_by_one[1]}\t{one_by_one[2]} "
    assert translator.translate([text], DECODE) != [joined]  # without split: one input sentence


def test_splitting_keeps_one_output_per_input_and_empty_inputs_empty(translator, corpus_pairs):
    lines = [f"{corpus_pairs[0][0]} {corpus_pairs[1][0]}", "", "   ", corpus_pairs[2][0]]
    outputs = translator.translate(lines, DECODE, split=True)
    assert len(outputs) == len(lines)
    assert outputs[1] == outputs[2] == ""
    assert outputs[3] == translator.translate([corpus_pairs[2][0]], DECODE)[0]


def test_n_best_of_a_split_text_joins_the_ranks_of_its_sentences(translator, corpus_pairs):
    first, second = corpus_pairs[0][0], corpus_pairs[1][0]
    per_sentence = translator.translate_n_best([first, second], DECODE, n_best=2)
    (candidates,) = translator.translate_n_best([f"{first} {second}"], DECODE, n_best=2, split=True)
    for rank, candidate in enumerate(candidates):
        a, b = (options[min(rank, len(options) - 1)] for options in per_sentence)
        assert candidate.text == f"{a.text} {b.text}"
        assert candidate.score == pytest.approx(a.score + b.score)


def test_a_sentence_longer_than_the_limit_is_cut_at_clause_boundaries_and_nothing_is_dropped(translator, tokenizers):
    clauses = ["der Hund ist rot, ", "die Katze ist blau; ", "das Pferd ist grün, ", "der Vogel ist gelb"]
    sentence = "".join(clauses)
    assert len(tokenizers.source.encode([sentence])[0]) > translator.max_tokens

    pieces = translator._fit(sentence)

    assert "".join(pieces) == sentence
    assert len(pieces) > 1
    assert all(len(tokenizers.source.encode([piece])[0]) <= translator.max_tokens for piece in pieces)
    assert all(piece.rstrip()[-1] in ",;" for piece in pieces[:-1])  # cut after clause punctuation
    (translation,) = translator.translate([sentence], DECODE)
    expected = translator.translate([piece.strip() for piece in pieces], DECODE)
    assert translation == " ".join(expected)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(["Hund", "rot,", "Katze;", "xyzzyqwertzuiopü", "ist", "—", "a"]), max_size=60))
def test_long_inputs_are_cut_into_pieces_that_fit_and_concatenate_back(translator, tokenizers, words):
    text = " ".join(words)
    pieces = translator._fit(text)
    assert "".join(pieces) == text
    assert all(len(tokenizers.source.encode([piece])[0]) <= translator.max_tokens for piece in pieces)


def test_an_ensemble_of_checkpoints_with_different_tokenizers_is_refused(tmp_path, tiny_checkpoint, corpus_pairs):
    from mt.checkpoint import save_checkpoint
    from mt.config import MTError
    from mt.tokenizer import TokenizerPair, train_sentencepiece

    other = train_sentencepiece([text for pair in corpus_pairs for text in pair], vocab_size=60)
    config = ModelConfig(other.vocab_size, other.vocab_size, embedding_size=8, hidden_size=8, num_layers=1)
    paths = [tiny_checkpoint(tmp_path / "a.safetensors"), tmp_path / "b.safetensors"]
    save_checkpoint(paths[1], Seq2Seq(config), TokenizerPair(other, other), {})
    with pytest.raises(MTError, match="share one vocabulary"):
        Translator.from_checkpoints(paths)
    ensemble = Translator.from_checkpoints([paths[0], paths[0]])
    alone = Translator.from_checkpoint(paths[0])
    lines = [pair[0] for pair in corpus_pairs[:4]]
    assert ensemble.translate(lines, DECODE) == alone.translate(lines, DECODE)


NEWS_PARAGRAPH = (
    "Die Bundesregierung hat am Mittwoch neue Maßnahmen zur Bekämpfung der Inflation beschlossen. "
    "Bundeskanzler Olaf Scholz (SPD) sagte: „Wir handeln jetzt.“ "
    "Laut dem Statistischen Bundesamt stiegen die Preise im Okt. um 3,8 Prozent. "
    "Die Opposition kritisierte den Plan als zu spät. "
    "Ökonomen rechnen für das nächste Jahr mit einem Rückgang. "
    "Die Maßnahmen sollen ab dem 1. Januar gelten."
)


def test_a_news_paragraph_comes_back_complete_in_order_one_translation_per_sentence():
    """The shipped de-en model on a paragraph of six news sentences: each sentence is
    translated (none empty, none dropped or merged) and the translations follow in order."""
    from mt.files import DEFAULT_MODEL

    translator = Translator.from_checkpoint(DEFAULT_MODEL)
    sentences = split_sentences(NEWS_PARAGRAPH, "de")
    assert len(sentences) == 6 and "".join(sentences) == NEWS_PARAGRAPH
    alone = translator.translate([s.strip() for s in sentences], DecodeConfig(beam_size=2))
    (paragraph,) = translator.translate([NEWS_PARAGRAPH], DecodeConfig(beam_size=2), split=True)
    assert all(alone) and paragraph == " ".join(alone)


@pytest.mark.parametrize("text", ["👍", "42", "12:30 – 14:00", "?!", "3.5 %"])
def test_a_text_without_letters_comes_back_unchanged(translator, text):
    assert translator.translate([text], DECODE, split=True) == [text]
    assert translator.translate([f"  {text}\t"], DECODE) == [text]


def test_a_sentence_without_letters_in_a_text_keeps_its_place(translator, corpus_pairs):
    first = corpus_pairs[0][0]
    (alone,) = translator.translate([first], DECODE)
    assert translator.translate([f"{first} 👍"], DECODE, split=True) == [f"{alone} 👍"]
