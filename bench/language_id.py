"""Language identification for `mt.detect`: three packages that ship their model in
the wheel, compared on Tatoeba test sentences restricted to the languages of the
loaded models ({de, en}, and {de, en, fr}).

Per package: accuracy (all sentences, and those of at most 20 characters), sentences
per second, a new process's time to import it and to answer a first call (median of
3), the installed size (its own files, from its distribution record) and the latest
release. The test files are sorted by length, so every other line of the first 2,000
is read: short and long sentences alike. Needs only the standard library and the
packages, so it runs in a venv of its own:

    python -m venv /tmp/lid && /tmp/lid/bin/pip install numpy py3langid==0.4.0 \
        lingua-language-detector==2.1.1 langdetect==1.0.9
    /tmp/lid/bin/python bench/language_id.py
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

MULTI30K = {language: f"data/multi30k/test_2016_flickr.{language}.gz" for language in ("de", "en", "fr")}
# corpus -> (every how many lines a sentence is read, its first how many words (None: all), the test files)
CORPORA = {
    # Sorted by length: every other line of the first 2,000 gives short and long sentences alike. The
    # py3langid 0.4.0 model was trained on Tatoeba sentences too (its TRAINING.md), so some may be known to it.
    "Tatoeba": (
        2,
        None,
        {
            "de": "data/tatoeba/deu-eng/test.de.gz",
            "en": "data/tatoeba/deu-eng/test.en.gz",
            "fr": "data/tatoeba/fra-eng/test.fr.gz",
        },
    ),
    # Image captions (test2016, 1,000 lines): a register none of the packages says it was trained on;
    # also cut to their first three words ("Ein Mann mit", "A man in"): short, but seen by no package.
    "Multi30k": (1, None, MULTI30K),
    "Multi30k, 3 words": (1, 3, MULTI30K),
}
SHORT = 20  # characters: LibreTranslate hands texts shorter than this to a word list
# The latest release of each as PyPI listed it on 2026-12-06: whether it is maintained.
LATEST_RELEASE = {
    "py3langid": "0.4.0, 2026-09",
    "lingua-language-detector": "2.2.0, 2026-03",
    "langdetect": "1.0.9, 2021-05",
}


def _py3langid(languages):
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(languages))
    return lambda text: identifier.classify(text)[0]


def _lingua(languages):
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    detector = LanguageDetectorBuilder.from_iso_codes_639_1(*(IsoCode639_1.from_str(c) for c in languages)).build()

    def best(text):
        found = detector.compute_language_confidence_values(text)  # best first; detect_language_of may abstain
        return found[0].language.iso_code_639_1.name.lower() if found and found[0].value > 0 else "?"

    return best


def _langdetect(languages):
    from langdetect import DetectorFactory, LangDetectException, detector_factory

    DetectorFactory.seed = 0  # it samples n-grams: without a seed the answers vary from run to run
    detector_factory.init_factory()

    def best(text):
        detector = detector_factory._factory.create()
        detector.set_prior_map(dict.fromkeys(languages, 1.0))  # a prior of 0 rules a language out
        detector.append(text)
        try:
            return detector.detect()
        except LangDetectException:  # no features (no letters)
            return "?"

    return best


# distribution -> (its import, the function that builds a detector over some languages)
CANDIDATES = {
    "py3langid": ("import py3langid.langid", _py3langid),
    "lingua-language-detector": ("import lingua", _lingua),
    "langdetect": ("import langdetect", _langdetect),
}


def read_sample(corpus: str, language: str, count: int, root: Path) -> list[str]:
    """`count` lines of a test file, one every `stride`, each cut to its first `words`."""
    stride, words, files = CORPORA[corpus]
    with gzip.open(root / files[language], "rt", encoding="utf-8") as lines:
        return [" ".join(line.split()[:words]) for line in lines][: stride * count : stride]


def run(best, samples: dict[str, list[str]]) -> tuple[list[tuple[int, bool]], float]:
    """(length, whether it is right) of each sentence, and sentences per second."""
    best(next(iter(samples.values()))[0])  # a lazy package loads its model here, not in the timing
    start = time.perf_counter()
    found = [(len(s), best(s) == language) for language, sentences in samples.items() for s in sentences]
    return found, len(found) / (time.perf_counter() - start)


def accuracy(found: list[tuple[int, bool]], longest: int | None = None) -> str:
    """Percent right (and how many wrong) of the sentences of at most `longest` characters."""
    hits = [hit for length, hit in found if longest is None or length <= longest]
    return f"{100 * sum(hits) / len(hits):.2f} % ({len(hits) - sum(hits)} of {len(hits):,} wrong)"


def cold_start(distribution: str, rounds: int = 3) -> tuple[float, float]:
    """Median seconds of a new process to import the package, and then to build a
    {de, en} detector and answer one sentence."""
    statement, _ = CANDIDATES[distribution]
    here, sentence = str(Path(__file__).parent), "Ein Hund läuft über die Wiese."
    program = (
        f"import json, time, sys; sys.path.insert(0, {here!r}); start = time.perf_counter(); {statement}; "
        f"imported = time.perf_counter(); import language_id; "
        f"language_id.CANDIDATES[{distribution!r}][1](['de', 'en'])({sentence!r}); "
        "print(json.dumps([imported - start, time.perf_counter() - imported]))"
    )
    runs = [
        json.loads(subprocess.run([sys.executable, "-c", program], capture_output=True, check=True).stdout)
        for _ in range(rounds)
    ]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def installed_mb(distribution: str) -> tuple[float, list[str]]:
    """The size of a distribution's own installed files in MB, and what it requires."""
    found = metadata.distribution(distribution)
    size = sum(path.locate().stat().st_size for path in found.files or [] if path.locate().exists())
    requires = [r.split(";")[0].split()[0] for r in found.requires or [] if "extra ==" not in r]
    return size / 1e6, requires


LANGUAGE_SETS = (("de", "en"), ("de", "en", "fr"))


def measure(distribution: str, count: int, root: Path) -> dict | None:
    """A package's row: accuracy per corpus and language set, speed, start-up, size."""
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
    _, build = CANDIDATES[distribution]
    row = {"package": f"{distribution} {version}", "latest": LATEST_RELEASE[distribution]}
    for languages in LANGUAGE_SETS:
        best = build(languages)
        for corpus in CORPORA:
            samples = {language: read_sample(corpus, language, count, root) for language in languages}
            row[corpus, languages] = run(best, samples)
    row["import_s"], row["first_call_s"] = cold_start(distribution)
    row["mb"], row["requires"] = installed_mb(distribution)
    return row


def print_tables(rows: list[dict]) -> None:
    sets = {languages: "{" + ", ".join(languages) + "}" for languages in LANGUAGE_SETS}
    columns = [(corpus, languages, None) for corpus in CORPORA for languages in LANGUAGE_SETS]
    columns += [("Tatoeba", languages, SHORT) for languages in LANGUAGE_SETS]
    names = [f"{c} {sets[s]}" + (f", ≤ {n} characters" if n else "") for c, s, n in columns]
    print(f"| package | {' | '.join(names)} |\n|---|{'---|' * len(names)}")
    for row in rows:
        cells = [accuracy(row[corpus, languages][0], longest) for corpus, languages, longest in columns]
        print(f"| {row['package']} | {' | '.join(cells)} |")
    print()
    print(
        "| package | sentences/s (Tatoeba, {de, en}) | import (new process) | then build + first call | installed | requires | latest release |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        speed = row["Tatoeba", LANGUAGE_SETS[0]][1]
        print(
            f"| {row['package']} | {speed:,.0f} | {row['import_s'] * 1000:,.0f} ms | {row['first_call_s'] * 1000:,.0f} ms "
            f"| {row['mb']:.1f} MB | {', '.join(row['requires']) or '-'} | {row['latest']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=1000, help="Sentences per language.")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="The repository.")
    args = parser.parse_args()
    rows = []
    for distribution in CANDIDATES:
        row = measure(distribution, args.sentences, args.root)
        if row is None:
            print(f"{distribution}: not installed, left out", file=sys.stderr)
        else:
            rows.append(row)
    print(f"{args.sentences} test sentences per corpus and language; Python {sys.version.split()[0]}\n")
    print_tables(rows)


if __name__ == "__main__":
    main()
