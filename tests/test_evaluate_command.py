"""`mt evaluate`: the scores and their sacreBLEU signatures (JSON and text), the
precision it translates at, --output (one translation per source line, what `mt
translate` gives a user), and confidence intervals and the paired test on the shipped
models. Mistakes are in test_mistakes.py.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import _write_gz, invoke, run_mt

# Every test here translates with a trained model: `cli_model` (trained for 200 steps in
# the session) or the shipped models, in processes of their own.
pytestmark = pytest.mark.slow


# -- scores --------------------------------------------------------------------------------


def test_evaluate_json_prints_one_object_with_scores_and_signatures(cli_corpus, cli_model):
    result = invoke(
        [
            "evaluate",
            "--model",
            cli_model,
            "--src",
            cli_corpus.valid_src,
            "--ref",
            cli_corpus.valid_ref,
            "--beam",
            2,
            "--json",
            "--device",
            "cpu",
        ]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, lines
    scores = json.loads(lines[0])
    assert isinstance(scores, dict)
    for metric in ("bleu", "bleu_lowercase", "chrf"):
        assert isinstance(scores[metric], (int, float))
        assert 0 <= scores[metric] <= 100
    assert scores["bleu_signature"].startswith("nrefs:1")
    assert "tok:13a" in scores["bleu_signature"]
    assert "case:lc" in scores["bleu_lowercase_signature"]
    assert scores["chrf_signature"].startswith("nrefs:1")
    assert scores["beam"] == 2
    assert scores["model"] == str(cli_model)


def test_evaluate_text_report_has_bleu_chrf_and_ter_lines(cli_corpus, cli_model):
    result = invoke(
        [
            "evaluate",
            "-m",
            cli_model,
            "--src",
            cli_corpus.valid_src,
            "--ref",
            cli_corpus.valid_ref,
            "--beam",
            1,
            "--device",
            "cpu",
        ]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["BLEU", "BLEU", "chrF", "TER"]


# -- precision -----------------------------------------------------------------------------


def test_evaluate_runs_the_default_precision_unless_told_and_reports_it(cli_corpus, cli_model):
    from mt.quantize import int8_by_default

    def precision(*flags: str) -> bool:
        arguments = ["--src", cli_corpus.valid_src, "--ref", cli_corpus.valid_ref, "--json", "--device", "cpu"]
        result = invoke(["evaluate", "-m", cli_model, *arguments, *flags])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["quantize"]

    assert precision() is int8_by_default(torch.device("cpu"))
    assert precision("--no-quantize") is False
    assert precision("--quantize") is True


def test_evaluate_and_translate_quantized_give_one_line_each_and_no_warnings(cli_corpus, cli_model):
    arguments = ["--model", str(cli_model), "--quantize", "--device", "cpu"]
    process = run_mt(
        "evaluate", "--src", cli_corpus.valid_src, "--ref", cli_corpus.valid_ref, "--json", *arguments, stdin=b""
    )
    assert process.returncode == 0, process.stderr
    assert json.loads(process.stdout)["quantize"] is True
    assert process.stderr.decode() == ""
    process = run_mt("translate", *arguments, stdin=b"ein hund\n\nzwei katzen\n")
    assert process.returncode == 0, process.stderr
    assert len(process.stdout.decode().splitlines()) == 3 and process.stdout.decode().splitlines()[1] == ""
    assert process.stderr.decode() == ""


# -- the translations it scores (--output) -------------------------------------------------


def test_evaluate_output_writes_one_translation_per_source_line(cli_corpus, cli_model, tmp_path):
    output = tmp_path / "out" / "hyp.en"
    output.parent.mkdir()  # an output's directory must exist (test_mistakes.py)
    result = invoke(
        [
            "evaluate",
            "--model",
            cli_model,
            "--src",
            cli_corpus.valid_src,
            "--ref",
            cli_corpus.valid_ref,
            "--output",
            output,
            "--json",
            "--device",
            "cpu",
        ]
    )
    assert result.exit_code == 0, result.output
    text = output.read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert len(text.splitlines()) == len(cli_corpus.valid_pairs)
    assert len(json.loads(result.stdout)) > 0


def test_evaluate_output_keeps_empty_source_lines(cli_model, tmp_path):
    src = _write_gz(tmp_path / "test.de.gz", ["Ein Hund läuft im Park.", "", "Eine Katze schläft."])
    ref = _write_gz(tmp_path / "test.en.gz", ["A dog runs in the park.", "", "A cat sleeps."])
    output = tmp_path / "hyp.en"
    result = invoke(
        ["evaluate", "--model", cli_model, "--src", src, "--ref", ref, "--output", output, "--json", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    lines = output.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 4 and lines[-1] == ""
    assert lines[1] == "" and lines[0] and lines[2]


def test_evaluate_scores_what_translate_gives_a_user_on_multi_sentence_lines(cli_corpus, cli_model, tmp_path):
    """`mt evaluate` translates a line as `mt translate` does: sentence by sentence by
    default (each sentence's own translation, joined with the line's space), the whole
    line with --no-split; its --output holds what translate writes, and --json says which."""
    pairs = cli_corpus.valid_pairs
    firsts, seconds = pairs[0::2], pairs[1::2]
    sources = [f"{a} {b}" for (a, _), (b, _) in zip(firsts, seconds)]
    src = _write_gz(tmp_path / "two.de.gz", sources)
    ref = _write_gz(tmp_path / "two.en.gz", [f"{a} {b}" for (_, a), (_, b) in zip(firsts, seconds)])
    common = ["--model", cli_model, "--beam", 2, "--device", "cpu"]
    alone = run_mt("translate", *common, stdin="".join(f"{a}\n{b}\n" for (a, _), (b, _) in zip(firsts, seconds)))
    assert alone.returncode == 0, alone.stderr
    sentences = alone.stdout.splitlines()
    for flags in ([], ["--no-split"]):
        output = tmp_path / f"hypotheses{len(flags)}.en"
        evaluated = invoke(["evaluate", *common, *flags, "--src", src, "--ref", ref, "--output", output, "--json"])
        assert evaluated.exit_code == 0, evaluated.output
        assert json.loads(evaluated.stdout)["split"] == (not flags)
        translated = run_mt("translate", *common, *flags, stdin="".join(line + "\n" for line in sources))
        assert translated.returncode == 0, translated.stderr
        assert output.read_text(encoding="utf-8") == translated.stdout
    split_lines = (tmp_path / "hypotheses0.en").read_text(encoding="utf-8").splitlines()
    assert split_lines == [f"{a} {b}" for a, b in zip(sentences[0::2], sentences[1::2])]


# -- confidence intervals, comparisons and ensembles ---------------------------------------


def _evaluate(*arguments, test_set) -> dict:
    src, ref = test_set
    process = run_mt("evaluate", "--src", src, "--ref", ref, "--beam", "1", "--json", *arguments)
    assert process.returncode == 0, process.stderr
    return json.loads(process.stdout)


def test_evaluate_compares_two_shipped_models_with_a_paired_test_and_intervals(test_set):
    from mt.files import SHIPPED_MODELS

    first, second = SHIPPED_MODELS / "de-en", SHIPPED_MODELS / "de-en-base"
    compared = _evaluate("-m", first, "-m", second, test_set=test_set)
    assert compared["paired_test"] == "bs" and compared["baseline"] == str(first)
    baseline, other = compared["systems"]
    for system, path in ((baseline, first), (other, second)):
        assert system["model"] == str(path)
        alone = _evaluate("-m", path, test_set=test_set)
        assert {name: system[name] for name in ("bleu", "chrf", "ter")} == {
            n: alone[n] for n in ("bleu", "chrf", "ter")
        }
        for name in ("bleu", "chrf", "ter"):
            interval = system[f"{name}_confidence"]
            assert interval["ci"] > 0 and abs(interval["mean"] - system[name]) < interval["ci"] + 1
    assert all("p_value" not in baseline[f"{name}_confidence"] for name in ("bleu", "chrf", "ter"))
    assert all(0 < other[f"{name}_confidence"]["p_value"] <= 1 for name in ("bleu", "chrf", "ter"))
    assert "bs:1000" in compared["confidence_signatures"]["bleu"]


def test_evaluate_confidence_of_one_model_and_an_ensemble_of_two(test_set):
    from mt.files import SHIPPED_MODELS

    single = _evaluate("-m", SHIPPED_MODELS / "de-en", "--confidence", test_set=test_set)
    assert {"bleu_confidence", "chrf_confidence", "ter_confidence", "ter", "ter_signature"} <= set(single)
    assert "p_value" not in single["bleu_confidence"]
    paths = [SHIPPED_MODELS / "de-en", SHIPPED_MODELS / "de-en"]
    ensemble = _evaluate("-m", paths[0], "-m", paths[1], "--ensemble", test_set=test_set)
    assert ensemble["ensemble"] == [str(p) for p in paths] and ensemble["bleu"] == single["bleu"]
