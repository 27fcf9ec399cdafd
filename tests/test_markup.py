"""HTML translation: the markup comes back whole and in order, the text between it translated."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mt.config import DecodeConfig
from mt.markup import VOID, translate_html
from mt.translator import Alignment, Translator

DECODE = DecodeConfig(beam_size=2, max_length_offset=3)

DOCUMENT = """<!DOCTYPE html>
<html lang="de">
<head>
  <meta charset="utf-8">
  <title>Der Hund</title>
  <style>p > b { color: red; } /* Der Hund */</style>
</head>
<body>
  <!-- Die Katze -->
  <h1 id="top" class="title">Die Katze schläft .</h1>
  <p>Der <b>Hund</b> ist <a href="/farben?a=1&amp;b=2" title="Farbe" data-x='y'>rot</a> .<br>
     Ich sehe <em>zwei <strong>Katzen</strong></em> .</p>
  <ul>
    <li>Das Pferd läuft .</li>
    <li>Der Vogel <img src="vogel.png" alt="Vogel"> spielt .</li>
  </ul>
  <table><tr><td>Die Maus frisst .</td><td>&copy; 2024 &ndash; 42</td></tr></table>
  <pre>  Der Hund
    ist <b>rot</b> .</pre>
  <p>Die Katze ist <code>grün &lt;3</code> .</p>
  <textarea name="t">Der Fisch &amp; die Maus</textarea>
  <div translate="no"><p>Der Hund <b>schläft</b> .</p></div>
  <p class="notranslate">Die Katze läuft .</p>
  <script>if (a < b && c) { document.write("<p>Der Hund</p>"); }</script>
</body>
</html>
"""

# The parts of DOCUMENT that are not to be translated, as written there.
KEPT = [
    "<style>p > b { color: red; } /* Der Hund */</style>",
    "<pre>  Der Hund\n    ist <b>rot</b> .</pre>",
    "<code>grün &lt;3</code>",
    '<textarea name="t">Der Fisch &amp; die Maus</textarea>',
    '<div translate="no"><p>Der Hund <b>schläft</b> .</p></div>',
    '<p class="notranslate">Die Katze läuft .</p>',
    '<script>if (a < b && c) { document.write("<p>Der Hund</p>"); }</script>',
]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.items: list[tuple] = []

    def handle_starttag(self, tag, attrs):
        self.items.append(("start", tag, attrs, self.get_starttag_text()))

    def handle_startendtag(self, tag, attrs):
        self.items.append(("startend", tag, attrs, self.get_starttag_text()))

    def handle_endtag(self, tag):
        self.items.append(("end", tag))

    def handle_comment(self, data):
        self.items.append(("comment", data))

    def handle_decl(self, decl):
        self.items.append(("decl", decl))


def markup(html: str) -> list[tuple]:
    """The tags (with their attributes, in order, and as written), comments and doctype of `html`."""
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser.items


def well_formed(html: str) -> bool:
    """Whether every element of `html` (but the void ones) is closed, innermost first."""
    open_: list[str] = []
    for item in markup(html):
        if item[0] == "start" and item[1] not in VOID:
            open_.append(item[1])
        elif item[0] == "end" and item[1] not in VOID and (not open_ or open_.pop() != item[1]):
            return False
    return not open_


class Recording:
    """A translator that records the lists of texts it is asked to translate; with
    `translations` (and `alignments`, by source text), it answers with those."""

    def __init__(self, translator: Translator, translations: dict | None = None, alignments: dict | None = None):
        self.translator, self.translations, self.alignments = translator, translations, alignments
        self.requests: list[list[str]] = []

    def __getattr__(self, name):
        return getattr(self.translator, name)

    def translate(self, texts, decode, split=False):
        self.requests.append(list(texts))
        if self.translations is not None:
            return [self.translations[text] for text in texts]
        return self.translator.translate(texts, decode, split=split)

    def alignment(self, source, translation):
        if self.alignments is not None:
            return self.alignments.get(source)
        return self.translator.alignment(source, translation)


@pytest.fixture(scope="module")
def translator(tiny_model, tokenizers) -> Translator:
    model = tiny_model(embedding_size=16, hidden_size=24, attention="luong")
    return Translator(model, tokenizers, source_language="de", max_tokens=12)


@pytest.fixture(scope="module")
def translated(translator) -> str:
    return translate_html(translator, DOCUMENT, DECODE)


def test_every_tag_attribute_comment_and_doctype_comes_back_in_order(translated):
    assert markup(translated) == markup(DOCUMENT)


def test_the_output_is_well_formed_where_the_input_is(translated):
    assert well_formed(DOCUMENT)
    assert well_formed(translated)


@pytest.mark.parametrize("kept", KEPT)
def test_code_pre_script_style_textarea_and_translate_no_come_back_byte_identical(translated, kept):
    assert translated.count(kept) == DOCUMENT.count(kept) == 1


def test_whitespace_between_blocks_comes_back_unchanged(translator):
    document = "<ul>\n  <li>Der Hund läuft .</li>\n\t<li>Die Katze schläft .</li>\n</ul>\n\n<p>\n  Ich sehe zwei Hunde .\n</p>\n"
    shouting = Recording(
        translator,
        {text: text.upper() for text in ("Der Hund läuft .", "Die Katze schläft .", "Ich sehe zwei Hunde .")},
    )
    expected = document.replace("Der Hund läuft", "DER HUND LÄUFT").replace("Die Katze schläft", "DIE KATZE SCHLÄFT")
    assert translate_html(shouting, document, DECODE) == expected.replace("Ich sehe zwei Hunde", "ICH SEHE ZWEI HUNDE")


def test_entities_come_back_as_the_source_wrote_them(translator):
    document = "<p>Tom &amp; Jerry &copy; 2024 &#8211; die Katze&nbsp;!</p><td>&copy; 2024 &ndash; 42&nbsp;%</td>"
    scripted = Recording(translator, {"Tom & Jerry © 2024 – die Katze\xa0!": "Tom & Jerry © 2024 – the cat <3\xa0!"})
    expected = "<p>Tom &amp; Jerry &copy; 2024 &#8211; the cat &lt;3&nbsp;!</p><td>&copy; 2024 &ndash; 42&nbsp;%</td>"
    assert translate_html(scripted, document, DECODE) == expected


def test_an_inline_tag_inside_a_sentence_costs_one_translation_of_the_whole_sentence(translator):
    recording = Recording(translator)
    output = translate_html(recording, '<p>Ich sehe <a href="/z" title="Zahl">zwei <em>Hunde</em></a> .</p>', DECODE)
    assert recording.requests == [["Ich sehe zwei Hunde ."]]
    assert output.startswith("<p>") and output.endswith("</p>")
    assert output.count('<a href="/z" title="Zahl">') == output.count("</a>") == 1
    assert output.count("<em>") == output.count("</em>") == 1
    assert output.index('<a href="/z"') < output.index("<em>") < output.index("</em>") < output.index("</a>")


def test_block_elements_cut_the_text_into_texts_translated_in_one_call(translator):
    recording = Recording(translator)
    translate_html(
        recording, "<ul><li>Der Hund läuft .</li><li>Die Katze</li></ul><p>Ich sehe<br>zwei Hunde .</p>", DECODE
    )
    assert recording.requests == [["Der Hund läuft .", "Die Katze", "Ich sehe", "zwei Hunde ."]]


def test_a_document_without_tags_translates_like_plain_text(translator, corpus_pairs):
    text = " ".join(german for german, _ in corpus_pairs[:3])
    assert translate_html(translator, text, DECODE) == translator.translate([text], DECODE, split=True)[0]


def _alignment(source: list[str], target: list[str], links: dict[int, int]) -> Alignment:
    """An alignment of pieces (each a word here) where target piece t attends to source piece links[t]."""
    weights = torch.zeros(len(target) + 1, len(source) + 1)
    for t, s in links.items():
        weights[t, s] = 1.0
    weights[len(target), len(source)] = 1.0  # </s> attends to </s>
    return Alignment([*source, "</s>"], [*target, "</s>"], weights)


def test_an_inline_tag_goes_around_the_target_word_the_attention_links_to_its_source_word(translator):
    reversed_ = _alignment(["▁Eins", "▁zwei", "▁drei"], ["▁three", "▁two", "▁one"], {0: 2, 1: 1, 2: 0})
    scripted = Recording(translator, {"Eins zwei drei": "three two one"}, {"Eins zwei drei": reversed_})
    assert translate_html(scripted, "<p><b>Eins</b> zwei drei</p>", DECODE) == "<p>three two <b>one</b></p>"


def test_without_attention_an_inline_tag_keeps_its_relative_place(translator):
    scripted = Recording(translator, {"Eins zwei drei": "three two one"}, alignments={})
    assert translate_html(scripted, "<p><b>Eins</b> zwei drei</p>", DECODE) == "<p><b>three</b> two one</p>"
    assert translate_html(scripted, "<p>Eins zwei <i>drei</i></p>", DECODE) == "<p>three two <i>one</i></p>"


def test_a_kept_element_inside_a_sentence_replaces_the_words_the_attention_links_to_it(translator):
    identity = _alignment(["▁Klicke", "▁OK", "▁jetzt"], ["▁click", "▁okay", "▁now"], {0: 0, 1: 1, 2: 2})
    scripted = Recording(translator, {"Klicke OK jetzt": "click okay now"}, {"Klicke OK jetzt": identity})
    output = translate_html(scripted, "<p>Klicke <code>OK</code> jetzt</p>", DECODE)
    assert scripted.requests == [["Klicke OK jetzt"]]
    assert output == "<p>click <code>OK</code> now</p>"


def test_without_attention_a_kept_element_is_left_out_of_the_sentence_and_put_back(tiny_model, tokenizers):
    model = tiny_model(embedding_size=16, hidden_size=24, attention="none")
    recording = Recording(Translator(model, tokenizers, source_language="de", max_tokens=12))
    output = translate_html(recording, "<p>Der Hund <code>print(x)</code> läuft .</p>", DECODE)
    assert recording.requests == [["Der Hund  läuft ."]]
    assert output.count("<code>print(x)</code>") == 1 and markup(output) == markup("<p><code></code></p>")


def test_translate_no_and_notranslate_keep_an_element_with_everything_inside(translator):
    document = '<div translate="no"><p>Der <b>Hund</b></p> Die Katze</div><p class="a notranslate">Die Maus</p><p>Das Pferd</p>'
    recording = Recording(translator)
    output = translate_html(recording, document, DECODE)
    assert recording.requests == [["Das Pferd"]]
    assert output.startswith(
        '<div translate="no"><p>Der <b>Hund</b></p> Die Katze</div><p class="a notranslate">Die Maus</p>'
    )


def test_a_document_with_unclosed_and_stray_tags_loses_no_tag(translator):
    document = (
        '<p>Der <b>Hund läuft .<p>Die </i>Katze <span class="x">ist<br>rot</span></div> .<li>Ich <a href="#">sehe'
    )
    assert markup(translate_html(translator, document, DECODE)) == markup(document)


INLINE = ["<b>", "<i>", "<em>", '<span class="k">', '<a href="/x?y=1&amp;z=2">', "<strong>"]
ATOMS = ['<img src="i.png" alt="Bild">', "<!-- c -->", "<wbr>"]


@st.composite
def marked_sentences(draw, sentences: list[str]) -> tuple[str, str]:
    """A sentence and the same sentence with inline elements and atoms, well nested, between its words."""
    sentence = draw(st.sampled_from(sentences))
    parts, open_ = [], []
    for index, word in enumerate(sentence.split()):
        for _ in range(draw(st.integers(0, 2))):
            tag = draw(st.sampled_from(INLINE))
            parts.append(tag)
            open_.append(tag[1:].split()[0].rstrip(">"))
        parts.append(draw(st.sampled_from(["", *ATOMS])) + word)
        for _ in range(draw(st.integers(0, len(open_)))):
            parts.append(f"</{open_.pop()}>")
        parts.append(" " if index < len(sentence.split()) - 1 else "")
    parts += [f"</{tag}>" for tag in reversed(open_)]
    return sentence, "<p>" + "".join(parts) + "</p>"


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_inline_markup_comes_back_whole_nested_and_in_order_around_one_translation(translator, corpus_pairs, data):
    sentence, document = data.draw(marked_sentences([german for german, _ in corpus_pairs]))
    recording = Recording(translator)
    output = translate_html(recording, document, DECODE)
    assert recording.requests == [[sentence]]
    assert markup(output) == markup(document)
    assert well_formed(output)


def test_the_shipped_model_puts_the_bold_tag_around_the_word_for_bank():
    from mt.files import DEFAULT_MODEL

    translator = Translator.from_checkpoint(DEFAULT_MODEL)
    output = translate_html(translator, "<p>Zwei Männer sitzen auf einer <b>Bank</b>.</p>", DecodeConfig())
    assert output.startswith("<p>") and output.endswith("</p>"), output
    assert output.count("<b>") == output.count("</b>") == 1, output
    assert output[output.index("<b>") + 3 : output.index("</b>")].strip(), output
