"""HTML in, HTML out: the text between the tags translated, the markup kept byte for byte.

The document is read by the standard library's `html.parser` into tokens, each
with its exact source text. Tokens are grouped into blocks:

- Block elements (`<p>`, `<div>`, `<li>`, `<h1>`, `<td>`, `<br>`, ...) cut the
  text: each block's text is translated on its own, sentence by sentence (split
  as `Translator.translate(..., split=True)` splits). The tags themselves and
  the whitespace between blocks come back unchanged.
- Inline elements (`<b>`, `<i>`, `<a>`, `<em>`, `<span>`, unknown tags) do not:
  the whole sentence is translated once, and each inline element is put back
  around the target words that the attention (`Translator.alignment`) links to
  the words it held in the source (`_Placer.span`). Words are counted as units
  (runs of letters and digits, or single punctuation marks), so `<b>Bank</b>.`
  becomes `<b>bench</b>.`. Void elements, comments and unpaired tags inside a
  sentence go where the word they follow (or precede) went.
- Kept elements (`<code>`, `<kbd>`, `<samp>`, `<var>`, `<pre>`, `<script>`,
  `<style>`, `<textarea>`, `<svg>`, `<math>`, and any element with
  `translate="no"` or the class `notranslate`, with everything inside them)
  come back as they were. Inside a sentence, the model reads the words a kept
  element shows (so that "Klicken Sie auf <code>OK</code>" stays a sentence),
  and the element, as written, replaces the target words the attention links
  to them. Where those are not one consecutive stretch, or the model has no
  attention, it is put back like a void element instead (without attention,
  its words are then left out of the sentence; with attention, the model's
  rendering of them stays beside it: shown twice rather than lost).
  `<textarea>` is kept because its content is a form's value, not the page's
  prose. Attributes (`alt`, `title`, `placeholder`) are not translated.

Every tag comes back exactly once, with its attributes as written, in the
input's order, and the inline elements of a sentence nest in the translation
as they nested in the source (a child is placed inside its parent, siblings in
their order; an element the alignment cannot place gets the nearest place that
keeps this order, empty if need be: where the translation swaps two sibling
elements' words, `<b>morgen</b> nach <i>Berlin</i>` comes back as
`to Berlin <b>tomorrow</b><i></i>`). When the model has no attention, or its
alignment cannot be used (a sentence cut for length, a piece the tokenizer
normalised), word order is taken as monotone: the i-th of k source words maps
to the (i + 1/2) * m / k-th of m target words, so a tag around the last word
wraps the end of the translation. Characters that the source wrote as entities
(`&copy;`, `&#8217;`) are written the same way when they come back, and `&`,
`<`, `>` are always escaped (`&amp;`, `&lt;`, `&gt;`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser

import torch

from mt.config import DecodeConfig
from mt.translator import Alignment, Segment, Translator, split_sentences

# Elements whose start and end tags end the text before them: paragraphs, sections,
# list items, table cells, line breaks, form controls and the document's frame.
BLOCK = frozenset(
    """address article aside audio blockquote body br button canvas caption col colgroup dd details dialog
    div dl dt fieldset figcaption figure footer form frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr
    html iframe legend li link main menu meta nav noscript object ol optgroup option p section select source
    summary table tbody td template tfoot th thead title tr track ul video""".split()
)
# Elements whose content is not prose: it comes back as it was.
KEPT = frozenset("code kbd math pre samp script style svg textarea var".split())
# Kept elements whose content is not words that a sentence reads.
OPAQUE = frozenset("math script style svg textarea".split())
# Elements without content or end tag.
VOID = frozenset("area base br col embed hr img input keygen link meta param source track wbr".split())
# An open element that a start tag closes without an end tag (HTML's optional end tags).
CLOSED_BY = {
    "li": {"li"},
    "dt": {"dt", "dd"},
    "dd": {"dt", "dd"},
    "tr": {"tr", "td", "th"},
    "td": {"td", "th"},
    "th": {"td", "th"},
    "option": {"option"},
    "optgroup": {"option", "optgroup"},
}
# A unit of placement: a word (with inner apostrophes) or one other visible character.
UNIT = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


@dataclass(frozen=True)
class Token:
    """One piece of the document, as written."""

    kind: str  # "start", "end", "text", "atom" (void or self-closed element, comment, doctype) or "kept"
    raw: str  # its source text, byte for byte (of "kept": the whole element)
    tag: str = ""
    attrs: tuple[tuple[str, str | None], ...] = ()
    text: str = ""  # of "text": the characters it stands for (entities decoded); of "kept": the words it shows


class _Tokenizer(HTMLParser):
    """Records each parser event with the offset where its source text starts."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=False)
        self.line_starts = [0]
        for line in html.split("\n")[:-1]:
            self.line_starts.append(self.line_starts[-1] + len(line) + 1)
        self.events: list[tuple[int, str, str, list, str, int | None]] = []

    def _add(self, kind: str, tag: str = "", attrs: list | None = None, text: str = "", length: int | None = None):
        line, column = self.getpos()  # where the event's source text starts
        self.events.append((self.line_starts[line - 1] + column, kind, tag, attrs or [], text, length))

    def handle_starttag(self, tag, attrs):
        self._add("atom" if tag in VOID else "start", tag, attrs)

    def handle_startendtag(self, tag, attrs):
        self._add("atom", tag, attrs)

    def handle_endtag(self, tag):
        self._add("end", tag)

    def handle_data(self, data):
        self._add("text", text=data, length=len(data))

    def handle_entityref(self, name):
        self._add("entity", length=len(name) + 1)  # "&name", and ";" if the source has it

    def handle_charref(self, name):
        self._add("entity", length=len(name) + 2)  # "&#name"

    def handle_comment(self, data):
        self._add("atom")

    def handle_decl(self, decl):
        self._add("atom")

    def handle_pi(self, data):
        self._add("atom")

    def unknown_decl(self, data):
        self._add("atom")


def tokens(html: str) -> list[Token]:
    """The document as tokens; their `raw` texts concatenate to `html` exactly."""
    parser = _Tokenizer(html)
    parser.feed(html)
    parser.close()
    events = parser.events
    if not events or events[0][0] > 0:
        events.insert(0, (0, "atom", "", [], "", None))
    ends = [event[0] for event in events[1:]] + [len(html)]
    result = []
    for (start, kind, tag, attrs, text, length), end in zip(events, ends):
        raw = html[start:end]
        if length is None:
            result.append(Token(kind, raw, tag, tuple(attrs)))
            continue
        if kind == "entity":
            length += raw[length : length + 1] == ";"
            text = unescape(raw[:length])
        # An entity the parser does not know stays as written; so does source text it skipped.
        known = kind == "text" or text != raw[:length]
        result.append(Token("text", raw[:length], text=text) if known else Token("atom", raw[:length]))
        if length < len(raw):
            result.append(Token("atom", raw[length:]))
    return [token for token in result if token.raw]


def _is_kept(token: Token) -> bool:
    attrs = {name: value or "" for name, value in token.attrs}
    return (
        token.tag in KEPT
        or attrs.get("translate", "").strip().lower() == "no"
        or "notranslate" in attrs.get("class", "").split()
    )


class _Chunker:
    """Cuts a document's tokens into runs of inline content (lists of tokens) and raw markup between them.

    It follows the open elements (closing those HTML closes without an end tag:
    a `<p>` at a block's start, an `<li>` at the next one) only to know where a
    kept element ends; a kept element becomes one "kept" token.
    """

    def __init__(self) -> None:
        self.out: list[str | list[Token]] = []
        self.run: list[Token] = []
        self.open: list[str] = []
        self.kept_at: int | None = None  # depth of the kept element we are in
        self.kept: list[Token] = []

    def flush(self) -> None:
        if self.run:
            self.out.append(self.run)
            self.run = []

    def close_implied(self, tag: str) -> None:
        while self.open and (self.open[-1] in CLOSED_BY.get(tag, ()) or (self.open[-1] == "p" and tag in BLOCK)):
            self.open.pop()

    def close(self, tag: str) -> None:
        if tag in self.open:
            del self.open[len(self.open) - 1 - self.open[::-1].index(tag) :]

    def feed(self, token: Token) -> None:
        if self.kept_at is not None and self.in_kept(token):
            return
        if token.kind == "start":
            self.close_implied(token.tag)
            self.open.append(token.tag)
            if _is_kept(token):
                self.kept_at, self.kept = len(self.open) - 1, [token]
                return
        elif token.kind == "end":
            self.close(token.tag)
        if token.tag in BLOCK:
            self.flush()
            self.out.append(token.raw)
        else:
            self.run.append(token)

    def in_kept(self, token: Token) -> bool:
        """Whether `token` belongs to the kept element we are in; if it closes that
        element from outside (an ancestor's end tag, a start tag that implies its end),
        the element ends before it and it is left to `feed`."""
        root, before = self.open[self.kept_at], list(self.open)
        if token.kind == "start":
            self.close_implied(token.tag)
        elif token.kind == "end":
            self.close(token.tag)
        if len(self.open) > self.kept_at:
            if token.kind == "start":
                self.open.append(token.tag)
            self.kept.append(token)
            return True
        if token.kind == "end" and token.tag == root and len(self.open) == self.kept_at:  # its own end tag
            self.kept.append(token)
            self.end_kept(root)
            return True
        self.open = before
        self.end_kept(root)
        return False

    def end_kept(self, root: str) -> None:
        words = "" if root in OPAQUE else " ".join("".join(t.text for t in self.kept if t.kind == "text").split())
        kept = Token("kept", "".join(token.raw for token in self.kept), root, text=words)
        self.kept_at, self.kept = None, []
        if root in BLOCK:
            self.flush()
            self.out.append(kept.raw)
        else:
            self.run.append(kept)

    def finish(self) -> list[str | list[Token]]:
        if self.kept_at is not None:
            self.end_kept(self.open[self.kept_at])
        self.flush()
        return self.out


@dataclass
class _Markup:
    """Markup over the characters [start, end) of its block's text: an inline
    element (`close` its end tag; `children` inside it), an atom (void element,
    comment, unpaired tag: `close` None, start == end) or a kept element whose
    words (`kept`) stand in the text for it; `target`: its characters in the translation."""

    open: str
    close: str | None
    start: int
    end: int
    kept: bool = False
    children: list[_Markup] = field(default_factory=list)
    target: tuple[int, int] = (0, 0)
    spacing: tuple[str, str] = ("", "")  # added before and after it in the translation

    def shift(self, by: int, length: int) -> None:
        self.start, self.end = (min(max(offset - by, 0), length) for offset in (self.start, self.end))
        for child in self.children:
            child.shift(by, length)

    def descendants(self) -> list[_Markup]:
        return [node for child in self.children for node in (child, *child.descendants())]


@dataclass(frozen=True)
class _Sentence:
    segment: Segment  # `text` is what the model reads
    start: int  # where `segment.text` starts in the block's text


@dataclass
class _Block:
    """A run's text (without the whitespace around it), its inline markup and its sentences."""

    lead: str  # raw source before the text: whitespace, atoms, tags left open or closed from before
    text: str
    markup: _Markup
    sentences: list[_Sentence]
    tail: str  # raw source after the text


def _pairs(run: list[Token]) -> dict[int, int]:
    """Start index -> end index of the inline elements opened and closed within `run`
    (an end tag closes the innermost open element of its name; any opened after it stay unpaired)."""
    pairs, open_ = {}, []
    for index, token in enumerate(run):
        if token.kind == "start":
            open_.append(index)
        elif token.kind == "end":
            names = [run[i].tag for i in open_]
            if token.tag in names:
                at = len(names) - 1 - names[::-1].index(token.tag)
                pairs[open_[at]] = index
                del open_[at:]
    return pairs


def _markup_tree(run: list[Token], pairs: dict[int, int], read_kept: bool) -> tuple[str, _Markup]:
    """The text of `run` and its markup as a tree (character offsets in the text)."""
    root = _Markup("", "", 0, 0)
    parents, text, offset = [root], [], 0
    ends = set(pairs.values())
    for index, token in enumerate(run):
        if token.kind == "text" or (token.kind == "kept" and read_kept and token.text):
            if token.kind == "kept":
                parents[-1].children.append(_Markup(token.raw, None, offset, offset + len(token.text), kept=True))
            text.append(token.text)
            offset += len(token.text)
        elif index in pairs:
            node = _Markup(token.raw, "", offset, offset)
            parents[-1].children.append(node)
            parents.append(node)
        elif index in ends:
            node = parents.pop()
            node.close, node.end = token.raw, offset
        else:
            parents[-1].children.append(_Markup(token.raw, None, offset, offset))
    return "".join(text), root


def _apart(token: Token) -> list[Token]:
    """A text token as the whitespace before it, its words and the whitespace after them."""
    if token.kind != "text" or token.raw != token.text or not token.text.strip():
        return [token]
    words = token.text.strip()
    start = token.text.index(words)
    pieces = (token.text[:start], words, token.text[start + len(words) :])
    return [Token("text", piece, text=piece) for piece in pieces if piece]


def _block(run: list[Token], language: str, read_kept: bool) -> str | _Block:
    """A run to translate as a block, or its raw source when it has nothing to translate.
    With `read_kept`, the words of kept elements are part of the text the model reads."""
    if not any(character.isalpha() for token in run if token.kind == "text" for character in token.text):
        return "".join(token.raw for token in run)
    run = [piece for token in run for piece in _apart(token)]
    pairs = _pairs(run)
    paired = set(pairs) | set(pairs.values())

    def at_edge(index: int) -> bool:  # whitespace or markup that does not hold any of the text
        token = run[index]
        if token.kind == "text":
            return not token.text.strip()
        return index not in paired and not (token.kind == "kept" and read_kept and token.text)

    first, last = 0, len(run)
    while at_edge(first):
        first += 1
    while at_edge(last - 1):
        last -= 1
    text, markup = _markup_tree(run[first:last], {i - first: j - first for i, j in pairs.items()}, read_kept)
    stripped = text.strip()
    markup.shift(len(text) - len(text.lstrip()), len(stripped))
    sentences, offset = [], 0
    for piece in split_sentences(stripped, language):
        segment = Segment.of(piece)
        sentences.append(_Sentence(segment, offset + len(segment.before)))
        offset += len(piece)
    lead, tail = ("".join(token.raw for token in part) for part in (run[:first], run[last:]))
    return _Block(lead, stripped, markup, sentences, tail)


# -- where the markup goes in the translation ---------------------------------


def _units(text: str, offset: int = 0) -> list[tuple[int, int]]:
    """The character spans of `text`'s units, shifted by `offset`."""
    return [(match.start() + offset, match.end() + offset) for match in UNIT.finditer(text)]


def _piece_spans(pieces: list[str], text: str) -> list[tuple[int, int]] | None:
    """Where each SentencePiece piece lies in `text`; None where a piece is not
    there as written (the tokenizer normalised it)."""
    spans, cursor = [], 0
    for piece in pieces:
        surface = piece.lstrip("▁")  # ▁ marks the start of a word
        at = text.find(surface, cursor)
        if at < 0 or text[cursor:at].strip():
            return None
        spans.append((at, at + len(surface)))
        cursor = at + len(surface)
    return spans


def _membership(spans: list[tuple[int, int]], units: list[tuple[int, int]]) -> torch.Tensor:
    """(pieces, units): 1 where a piece overlaps a unit."""
    return torch.tensor([[float(s < unit_end and e > unit_start) for unit_start, unit_end in units] for s, e in spans])


_Links = tuple[list[int | None], list[int | None]]  # per target unit its source unit, per source unit its target unit


def _attention_links(
    alignment: Alignment | None, source: str, translation: str, source_units: list, target_units: list
) -> _Links | None:
    """Each target unit's most attended source unit and each source unit's most
    attending target unit; None when the alignment does not cover the units."""
    if alignment is None:
        return None
    source_spans = _piece_spans(alignment.source[:-1], source)  # the last piece is </s>
    target_spans = _piece_spans(alignment.target[:-1], translation)
    if source_spans is None or target_spans is None or not source_spans or not target_spans:
        return None
    source_member = _membership(source_spans, source_units)
    target_member = _membership(target_spans, target_units)
    if (source_member.sum(0) == 0).any():  # a unit the model did not read (cut for length)
        return None
    weights = alignment.weights[: len(target_spans), : len(source_spans)].float()  # (T, S)
    unit_weights = target_member.T @ weights @ source_member  # (target units, source units)
    forward = [int(row.argmax()) if row.sum() > 0 else None for row in unit_weights]
    backward = [int(column.argmax()) if column.sum() > 0 else None for column in unit_weights.T]
    return forward, backward


def _diagonal(source_count: int, target_count: int) -> _Links:
    """Monotone links: the i-th of k units maps to the (i + 1/2) * m / k-th of m."""
    forward = [min(source_count - 1, (2 * j + 1) * source_count // (2 * target_count)) for j in range(target_count)]
    backward = [min(target_count - 1, (2 * i + 1) * target_count // (2 * source_count)) for i in range(source_count)]
    return [i if source_count else None for i in forward], [j if target_count else None for j in backward]


@dataclass
class _Placer:
    """Source units and target units of a block and the links between them."""

    text: str  # the block's source text
    translation: str  # the block's translation
    source: list[tuple[int, int]] = field(default_factory=list)  # character spans in the block's text
    target: list[tuple[int, int]] = field(default_factory=list)  # character spans in the translation
    forward: list[int | None] = field(default_factory=list)
    backward: list[int | None] = field(default_factory=list)
    attended: list[bool] = field(default_factory=list)  # per source unit: linked by the attention (not diagonal)
    home: list[int] = field(default_factory=list)  # per source unit: where its sentence's translation starts

    def add(self, source: list, target: list, links: _Links, attended: bool, home: int) -> None:
        forward, backward = links
        self.forward += [None if i is None else i + len(self.source) for i in forward]
        self.backward += [None if j is None else j + len(self.target) for j in backward]
        self.source += source
        self.target += target
        self.attended += [attended] * len(source)
        self.home += [home] * len(source)

    def covered(self, start: int, end: int) -> list[int]:
        return [i for i, (s, e) in enumerate(self.source) if s < end and e > start]

    def span(self, start: int, end: int) -> tuple[int, int] | None:
        """The translation's characters for the source characters [start, end); None if no
        target unit is linked to a source unit there.

        The core is the target units linked both ways (each attends most to a source unit
        there, and is the one attending most to it), else those linked one way; it grows over
        neighbours that attend most to a source unit there. So a word whose attention looks
        ahead ("Can" attending to "bitte") does not stretch the element over words between.
        """
        covered = set(self.covered(start, end))
        forward = {j for j, i in enumerate(self.forward) if i in covered}
        backward = {self.backward[i] for i in covered if self.backward[i] is not None}
        core = (forward & backward) or forward or backward
        if not core:
            return None
        low, high = min(core), max(core)
        while low - 1 in forward:
            low -= 1
        while high + 1 in forward:
            high += 1
        return self.target[low][0], self.target[high][1]

    def replaced(self, start: int, end: int) -> tuple[int, int] | None:
        """The translation's characters that translate exactly the kept words at [start, end):
        the target units the attention links to them, if they are consecutive (less punctuation
        at their ends where the kept words end in letters or digits); else None."""
        covered = self.covered(start, end)
        whole = all(self.attended[i] and start <= self.source[i][0] and self.source[i][1] <= end for i in covered)
        linked = [j for j, i in enumerate(self.forward) if i in covered] if covered and whole else []
        while linked and self.text[start].isalnum() and not self.is_word(linked[0]):
            linked.pop(0)
        while linked and self.text[end - 1].isalnum() and not self.is_word(linked[-1]):
            linked.pop()
        if not linked or linked[-1] - linked[0] + 1 != len(linked):
            return None
        return self.target[linked[0]][0], self.target[linked[-1]][1]

    def is_word(self, j: int) -> bool:
        return any(character.isalnum() for character in self.translation[slice(*self.target[j])])

    def anchor(self, offset: int) -> int:
        """Where something at source character `offset` goes: after the translation
        of the unit it follows, else before that of the unit after it."""
        for i, (_, end) in enumerate(self.source):
            if end == offset and self.backward[i] is not None:
                return self.target[self.backward[i]][1]
        following = next((i for i, (_, end) in enumerate(self.source) if end > offset), None)
        if following is None:
            return len(self.translation)
        j = self.backward[following]
        return self.target[j][0] if j is not None else self.home[following]

    def place(self, node: _Markup, low: int, high: int) -> None:
        """Targets for `node`'s children inside [low, high], in their order, none overlapping."""
        cursor = low
        for child in node.children:
            if child.kept:
                wanted = self.replaced(child.start, child.end)
            else:
                wanted = self.span(child.start, child.end) if child.close is not None else None
            start, end = wanted or (self.anchor(child.start),) * 2
            start = min(max(start, cursor), high)
            end = min(max(end, start), high)
            child.target = (start, end)
            if not wanted:
                child.spacing = self.spacing(child, start)
            self.place(child, start, end)
            cursor = end

    def spacing(self, node: _Markup, at: int) -> tuple[str, str]:
        """Spaces to put before and after markup put in at translation character `at`
        (not where the translation put its words): where the source had whitespace
        beside it and the translation has none there."""

        def space(text: str, index: int) -> bool:
            return not 0 <= index < len(text) or text[index].isspace()

        before = (
            space(self.text, node.start - 1) and not space(self.translation, at - 1) and space(self.translation, at)
        )
        after = space(self.text, node.end) and not space(self.translation, at) and space(self.translation, at - 1)
        return " " * before, " " * after


def _render(node: _Markup, translation: str, low: int, high: int, escape: Callable[[str], str]) -> str:
    """The translation's characters [low, high] with `node`'s children in their places."""
    parts, cursor = [], low
    for child in node.children:
        start, end = child.target
        parts.append(escape(translation[cursor:start]))
        if child.close is None:  # an atom, or a kept element in place of its words' translation
            parts += [child.spacing[0], child.open, child.spacing[1]]
        else:
            inside = _render(child, translation, start, end, escape)
            parts += [child.spacing[0], child.open, inside, child.close, child.spacing[1]]
        cursor = end
    parts.append(escape(translation[cursor:high]))
    return "".join(parts)


def _needs_attention(markup: _Markup, start: int, end: int) -> bool:
    """Whether markup starts or ends inside the sentence at [start, end) or stands for words of it."""
    return any(
        start < node.start < end or start < node.end < end or (node.kept and node.start < end and node.end > start)
        for node in markup.descendants()
    )


def _translated_block(
    translator: Translator, block: _Block, translations: list[str], escape: Callable[[str], str]
) -> str:
    """The block's translation with its markup placed (by the attention for sentences with markup inside)."""
    parts, homes, length = [], [], 0
    for sentence, translation in zip(block.sentences, translations):
        homes.append(length + len(sentence.segment.before))
        parts += [sentence.segment.before, translation, sentence.segment.after]
        length = homes[-1] + len(translation) + len(sentence.segment.after)
    placer = _Placer(block.text, "".join(parts))
    for sentence, translation, home in zip(block.sentences, translations, homes):
        source, end = sentence.segment.text, sentence.start + len(sentence.segment.text)
        source_units, target_units = _units(source), _units(translation)
        links = None
        if target_units and _needs_attention(block.markup, sentence.start, end):
            alignment = translator.alignment(source, translation)
            links = _attention_links(alignment, source, translation, source_units, target_units)
        attended = links is not None
        links = links or _diagonal(len(source_units), len(target_units))
        placer.add(_units(source, sentence.start), _units(translation, home), links, attended, home)
    placer.place(block.markup, 0, length)
    return _render(block.markup, placer.translation, 0, length, escape)


def _escaper(document: list[Token]) -> Callable[[str], str]:
    """Escapes text for the output: `&`, `<`, `>`, and the non-ASCII characters
    the source wrote as entities, written as the source first wrote them."""
    spelling = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
    for token in document:
        if token.kind == "text" and token.raw != token.text and (not token.text.isascii() or token.text in spelling):
            spelling.setdefault(token.text, token.raw)
    pattern = re.compile("|".join(re.escape(text) for text in sorted(spelling, key=len, reverse=True)))
    return lambda text: pattern.sub(lambda match: spelling[match.group()], text)


def translate_html(translator: Translator, html: str, decode: DecodeConfig) -> str:
    """`html` with the text between its tags translated and its markup kept (see the module's
    docstring). All sentences of the document go to the model in one batched call."""
    document = tokens(html)
    chunker = _Chunker()
    for token in document:
        chunker.feed(token)
    chunks = [
        chunk if isinstance(chunk, str) else _block(chunk, translator.source_language, translator.has_attention)
        for chunk in chunker.finish()
    ]
    texts = [sentence.segment.text for chunk in chunks if isinstance(chunk, _Block) for sentence in chunk.sentences]
    translations = iter(translator.translate(texts, decode) if texts else [])
    escape = _escaper(document)
    out = []
    for chunk in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        else:
            translated = _translated_block(translator, chunk, [next(translations) for _ in chunk.sentences], escape)
            out.append(chunk.lead + translated + chunk.tail)
    return "".join(out)
