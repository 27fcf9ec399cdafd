"""The `mt` command line: option declarations and one call each into the library.

Every error a user can cause surfaces as `MTError` and is printed here as one line
on stderr with exit status 1; nothing else prints tracebacks. Torch is imported only
after a command's arguments were checked, so that a mistake is reported at once.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mt import __version__
from mt.config import (
    AttentionKind,
    Cell,
    CellImpl,
    DecodeConfig,
    Device,
    MTError,
    OutputFormat,
    RunConfig,
    SignificanceTest,
    SubwordModel,
    TrainConfig,
)
from mt.console import print_compare_table, print_scores, quiet_library_progress, stderr_console
from mt.files import DEFAULT_MODEL, evaluation_files, language_of, translation_files, write_atomic

app = typer.Typer(
    name="mt",
    help="Translate with an LSTM encoder-decoder: train tokenizers and models, evaluate with BLEU, translate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts hold literal [brackets]
)


def user_errors(command):
    """Print an MTError as one line on stderr and exit 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MTError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
        except BrokenPipeError:  # the reader went away (`| head -1`): a normal end, not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
            raise typer.Exit(0) from None
        except OSError as error:  # a path the user gave cannot be written or read
            where = f"{error.filename}: " if error.filename else ""
            typer.echo(f"error: {where}{error.strerror or error}", err=True)
            raise typer.Exit(1) from None

    return wrapper


ModelOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--model",
        "-m",
        help="Checkpoint file or directory; repeat for an ensemble of models that share one tokenizer. "
        "[default: the shipped checkpoints/de-en; with --to, de-en and en-de]",
    ),
]
BeamOption = Annotated[int, typer.Option("--beam", "-b", help="Beam size; 1 is greedy search.")]
QuantizeOption = Annotated[
    bool | None,
    typer.Option(
        "--quantize/--no-quantize",
        help="int8 weights and products in the recurrent, linear and output layers (CPU), or fp32: "
        "int8 is 1.3-2.4x faster at beam 5, BLEU within 0.3. [default: int8 on x86 CPUs, else fp32]",
        show_default=False,
    ),
]
LengthPenaltyOption = Annotated[
    float,
    typer.Option(
        "--length-penalty", help="GNMT length penalty alpha: 0 ranks by raw log-probability, 1 normalises by length."
    ),
]
SplitOption = Annotated[
    bool, typer.Option("--split/--no-split", help="Translate a text of several sentences sentence by sentence.")
]
DeviceOption = Annotated[Device, typer.Option(help="Where to run: auto picks CUDA when available.")]
TrainOption = Annotated[
    list[str],
    typer.Option(
        help="Training corpus: a file prefix, a .tsv file, or hf:NAME[@SPLIT]; repeat to mix corpora, "
        "PATH:N to take a corpus N times per epoch (upsampling)."
    ),
]
ValidOption = Annotated[
    list[str],
    typer.Option(
        help="Validation corpus, same forms as --train; repeat for several sets (the mean BLEU selects the model)."
    ),
]
DEFAULT_TRAIN = list(RunConfig.train)
DEFAULT_VALID = list(RunConfig.valid)
SrcOption = Annotated[str, typer.Option(help="Source language (file suffix or dataset key).")]
TgtOption = Annotated[str, typer.Option(help="Target language (file suffix or dataset key).")]
TokenizerOption = Annotated[Path | None, typer.Option(help="Tokenizer directory. [default: data/tokenizers/SRC-TGT]")]
EmbeddingOption = Annotated[int, typer.Option(help="Embedding size E.")]
LayersOption = Annotated[int, typer.Option("--layers", help="Recurrent layers in encoder and decoder.")]
BatchTokensOption = Annotated[int, typer.Option(help="Tokens per batch (padded, the longer side).")]
SeedOption = Annotated[int, typer.Option(help="Random seed: the same seed on CPU gives the same model.")]


@app.command("prepare-data")
@user_errors
def prepare_data_cli(
    dataset: Annotated[str, typer.Option(help="A Hugging Face translation dataset.")] = "bentrevett/multi30k",
    output: Annotated[Path, typer.Option(help="Directory for the {split}.{lang}.gz files.")] = Path("data/multi30k"),
):
    """Download a translation dataset through `datasets` as one text file per split and language.

    Example: mt prepare-data --dataset bentrevett/multi30k --output data/multi30k
    """
    from mt.data import export_dataset

    for path in export_dataset(dataset, output):
        typer.echo(f"wrote {path}", err=True)


@app.command("train-tokenizer")
@user_errors
def train_tokenizer_cli(
    train: TrainOption = DEFAULT_TRAIN,
    src: SrcOption = "de",
    tgt: TgtOption = "en",
    vocab_size: Annotated[int, typer.Option(help="Subword vocabulary size (per tokenizer).")] = 8000,
    model_type: Annotated[SubwordModel, typer.Option(help="SentencePiece algorithm.")] = SubwordModel.unigram,
    joint: Annotated[bool, typer.Option("--joint/--separate", help="One tokenizer for both languages, or two.")] = True,
    max_sentences: Annotated[
        int, typer.Option(help="Learn from a random sample of at most this many sentences (per tokenizer).")
    ] = 2_000_000,
    output: Annotated[Path | None, typer.Option(help="Output directory. [default: data/tokenizers/SRC-TGT]")] = None,
    seed: Annotated[int, typer.Option(help="Random seed for SentencePiece's sampling.")] = 1,
):
    """Train SentencePiece tokenizers on the training side of one or more corpora.

    Several corpora are mixed as mt train mixes them (PATH:N counts a corpus N
    times), and the tokenizer learns from a random sample of the mixture.

    Example: mt train-tokenizer --train data/tatoeba/deu-eng/train --train data/multi30k/train --src de --tgt en
    """
    from mt.data import train_tokenizers

    output = output or Path("data/tokenizers") / f"{src}-{tgt}"
    quiet_library_progress(stderr_console())
    tokenizers = train_tokenizers(train, src, tgt, vocab_size, model_type.value, joint, max_sentences, seed)
    tokenizers.save(output)
    kind, pieces = f"{'joint' if joint else 'separate'} {model_type.value}", tokenizers.source.vocab_size
    typer.echo(f"wrote {kind} tokenizers ({pieces} / {tokenizers.target.vocab_size} pieces) to {output}", err=True)


@app.command("train")
@user_errors
def train_cli(
    ctx: typer.Context,
    train: TrainOption = DEFAULT_TRAIN,
    valid: ValidOption = DEFAULT_VALID,
    src: SrcOption = "de",
    tgt: TgtOption = "en",
    tokenizer: TokenizerOption = None,
    output: Annotated[Path | None, typer.Option(help="Run directory. [default: runs/SRC-TGT]")] = None,
    embedding_size: EmbeddingOption = 256,
    hidden_size: Annotated[int, typer.Option(help="Hidden size H of the recurrent layers.")] = 512,
    num_layers: LayersOption = 2,
    dropout: Annotated[float, typer.Option(help="Dropout on embeddings, between layers and before the output.")] = 0.3,
    cell: Annotated[Cell, typer.Option(help="Recurrent cell.")] = Cell.lstm,
    cell_impl: Annotated[
        CellImpl, typer.Option(help="torch's kernels, or the lecture's equations (slow).")
    ] = CellImpl.fused,
    attention: Annotated[AttentionKind, typer.Option(help="none: the final state only.")] = AttentionKind.none,
    bidirectional: Annotated[bool, typer.Option(help="Bidirectional encoder, bridged to the decoder.")] = False,
    reverse_source: Annotated[bool, typer.Option(help="Read the source backwards (Sutskever et al. 2014).")] = True,
    tie_embeddings: Annotated[bool, typer.Option(help="Tie the decoder's input and output embeddings.")] = True,
    share_embeddings: Annotated[bool, typer.Option(help="One embedding for both languages (joint tokenizer).")] = False,
    batch_tokens: BatchTokensOption = 4096,
    accumulate: Annotated[int, typer.Option(help="Batches per update per worker: more than memory holds.")] = 1,
    learning_rate: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 1e-3,
    clip_norm: Annotated[float, typer.Option(help="Clip the gradient norm to this (exploding gradients).")] = 1.0,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing of the loss, in [0, 0.99].")] = 0.1,
    max_epochs: Annotated[int, typer.Option("--epochs", help="Maximum epochs.")] = 30,
    max_steps: Annotated[int, typer.Option(help="Stop after this many updates (0: no limit).")] = 0,
    validate_every: Annotated[int, typer.Option(help="Validate every N updates (0: every epoch).")] = 0,
    patience: Annotated[int, typer.Option(help="Stop after N validations without a better BLEU (0: never).")] = 5,
    lr_patience: Annotated[int, typer.Option(help="Decay the learning rate after N validations without gain.")] = 2,
    lr_decay: Annotated[float, typer.Option(help="Factor of each learning-rate decay, in (0, 1].")] = 0.5,
    warmup_steps: Annotated[int, typer.Option(help="Linear learning-rate warm-up steps.")] = 0,
    max_length: Annotated[int, typer.Option(help="Drop training pairs longer than this many subwords.")] = 100,
    validation_beam: Annotated[int, typer.Option(help="Beam size for validation BLEU.")] = 1,
    max_minutes: Annotated[float, typer.Option(help="Stop after this many minutes of wall time (0: no limit).")] = 0.0,
    keep_checkpoints: Annotated[int, typer.Option(help="Keep the last N validation checkpoints, for mt average.")] = 0,
    bf16: Annotated[
        bool,
        typer.Option(
            help="bf16 autocast for the forward pass (faster on CPUs with AVX512-BF16 or AMX, and on GPUs); weights stay fp32."
        ),
    ] = False,
    compile: Annotated[
        bool,
        typer.Option(
            help="Compile the attention decoder's step with torch.compile (needs a C++ compiler on a CPU; "
            "the first update takes about half a minute longer). With --bf16 the fastest way to train on a CPU."
        ),
    ] = False,
    seed: SeedOption = 1,
    device: DeviceOption = Device.auto,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Start from this trained model's weights, tokenizer and architecture (fine-tuning), "
            "with a fresh optimizer and schedule; architecture options must agree with it, but a larger "
            "--hidden-size widens it (the wider model starts by translating as it does)."
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(help="Start afresh: delete the run's checkpoints and log (after every input was read)."),
    ] = False,
):
    """Train an encoder-decoder; keeps the best (by validation BLEU) and the last checkpoint.

    Re-running the same command on the same --output resumes an interrupted run,
    and a finished one given a larger budget (--max-steps, --epochs, --max-minutes).
    Several --train corpora are mixed into one (PATH:N: N copies per epoch);
    with several --valid sets, the mean of their BLEU selects the best model.
    --init-from fine-tunes a trained model (e.g. on a new domain) in a new run.
    Under torchrun (torchrun --nproc-per-node N -m mt train ...) it trains on N
    workers; see the README.

    Example: mt train --src de --tgt en --attention luong --bidirectional --output runs/de-en
    """
    config = TrainConfig(
        batch_tokens=batch_tokens, accumulate=accumulate, learning_rate=learning_rate, clip_norm=clip_norm,
        label_smoothing=label_smoothing, max_epochs=max_epochs, max_steps=max_steps, validate_every=validate_every,
        patience=patience, lr_patience=lr_patience, lr_decay=lr_decay, warmup_steps=warmup_steps,
        max_length=max_length, seed=seed, validation_beam=validation_beam, max_minutes=max_minutes,
        keep_checkpoints=keep_checkpoints, bf16=bf16, compile=compile,
    )  # fmt: skip
    model = dict(
        embedding_size=embedding_size, hidden_size=hidden_size, num_layers=num_layers, dropout=dropout, cell=cell,
        cell_impl=cell_impl, attention=attention, bidirectional=bidirectional, reverse_source=reverse_source,
        tie_embeddings=tie_embeddings, share_embeddings=share_embeddings,
    )  # fmt: skip
    run = RunConfig(tuple(train), tuple(valid), src, tgt, tokenizer, init_from, output, overwrite)
    from mt.console import TrainingProgress
    from mt.runtime import resolve_device
    from mt.train import Interrupted
    from mt.train import train as train_model

    err = stderr_console()
    # The architecture options the user gave (not left at their defaults): --init-from checks them.
    chosen = [name for name in model if ctx.get_parameter_source(name).name in ("COMMANDLINE", "ENVIRONMENT")]
    try:
        with TrainingProgress(err) as reporter:
            train_model(run, model, chosen, config, resolve_device(device), err.print, reporter)
    except Interrupted:
        raise typer.Exit(130) from None


@app.command("evaluate")
@user_errors
def evaluate_cli(
    src: Annotated[Path, typer.Option(help="Source sentences, one per line (.gz allowed).")],
    ref: Annotated[Path, typer.Option(help="Reference translations, one per line.")],
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            "-m",
            help="Checkpoint file or directory; repeat to compare models (a paired test against the first). "
            "[default: the shipped checkpoints/de-en]",
        ),
    ] = None,
    ensemble: Annotated[bool, typer.Option(help="Score the --models as one ensemble, not each.")] = False,
    beam: BeamOption = 5,
    length_penalty: LengthPenaltyOption = 1.0,
    confidence: Annotated[bool, typer.Option(help="Bootstrap 95% confidence intervals of BLEU, chrF, TER.")] = False,
    paired_test: Annotated[
        SignificanceTest,
        typer.Option(help="Paired test: bootstrap resampling (bs) or approximate randomization (ar)."),
    ] = SignificanceTest.bs,
    output: Annotated[Path | None, typer.Option(help="Write the translations to this file (one model).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
    split: SplitOption = True,
    device: DeviceOption = Device.auto,
    quantize: QuantizeOption = None,
):
    """Translate a file and score it against references with sacreBLEU (BLEU, chrF, TER).

    Each line is translated as `mt translate` translates it (split into sentences
    unless --no-split). With several --model options each model is scored and
    compared with the first by a paired significance test (p < 0.05: the difference
    is unlikely to be chance); --confidence gives each score's 95% confidence interval.

    \b
    Examples:
      mt evaluate --model checkpoints/de-en --src data/multi30k/test_2016_flickr.de.gz --ref data/multi30k/test_2016_flickr.en.gz
      mt evaluate -m checkpoints/de-en -m checkpoints/de-en-base --src test.de --ref test.en   (paired test)
      mt evaluate -m a.safetensors -m b.safetensors --ensemble --src test.de --ref test.en --confidence
    """
    decode = DecodeConfig(beam_size=beam, length_penalty=length_penalty)
    models = model or [DEFAULT_MODEL]
    systems = [models] if ensemble or len(models) == 1 else [[path] for path in models]
    if output is not None and len(systems) > 1:
        raise MTError("--output holds the translations of one model; give one --model (or --ensemble)")
    sources, references, output = evaluation_files(src, ref, output)
    from mt.checkpoint import check_directions  # torch (seconds): after the checks above
    from mt.evaluate import json_report, report

    check_directions(models, language_of(src), language_of(ref))
    hypotheses = []
    for paths in systems:  # one model in memory at a time
        translator = _load_translator(paths, device, quantize)
        hypotheses.append(translator.translate(sources, decode, split=split))
    if output is not None:
        write_atomic(output, "".join(h + "\n" for h in hypotheses[0]).encode())
    results, tested = report(systems, hypotheses, references, paired_test.value, confidence)
    settings = {"beam": beam, "length_penalty": length_penalty, "quantize": translator.int8, "split": split}
    if as_json:
        typer.echo(json.dumps(json_report(results, tested, settings)))
    else:
        precision, splitting = "int8" if translator.int8 else "fp32", "split" if split else "no-split"
        print_scores(results, tested, f"beam{beam}+lp{length_penalty}+{precision}+{splitting}")


def _load_translator(model: list[Path] | None, device: Device, quantize: bool | None, to: str | None = None):
    """The translator of `--model` (the shipped de-en by default; mt.routing for --to), set up for inference."""
    from mt.routing import load_translator
    from mt.runtime import for_inference, resolve_device

    for_inference()
    return load_translator(model, resolve_device(device), quantize, to)


@app.command("translate")
@user_errors
def translate_cli(
    text: Annotated[list[str] | None, typer.Argument(help="Sentences to translate; without them, read stdin.")] = None,
    model: ModelOption = None,
    to: Annotated[str | None, typer.Option(help="Into this language, each text from its detected language.")] = None,
    input: Annotated[Path | None, typer.Option("--input", "-i", help="Translate this file (.gz; - is stdin).")] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write here (- is stdout); the file appears when complete."),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="text: one line per input line; jsonl: one JSON object per line.")
    ] = OutputFormat.text,
    beam: BeamOption = 5,
    length_penalty: LengthPenaltyOption = 1.0,
    n_best: Annotated[
        int,
        typer.Option(help="The N best translations (or samples) with scores: Moses n-best lines, or a jsonl list."),
    ] = 1,
    alignment: Annotated[bool, typer.Option(help="jsonl: add each translation's attention alignment.")] = False,
    buffer_size: Annotated[int, typer.Option(help="Lines translated together (fewer if a pipe pauses).")] = 256,
    sampling: Annotated[bool, typer.Option(help="Sample translations instead of searching for the best.")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling: < 1 sharpens the distribution, > 1 flattens it.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sampling: only from the K most likely tokens (0: all).")] = 0,
    top_p: Annotated[float, typer.Option(help="Sampling: only from the most likely tokens that make up P.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling: the same seed and input give the same samples.")] = 1,
    show_attention: Annotated[bool, typer.Option(help="Show the attention (interactive prompt).")] = False,
    split: SplitOption = True,
    max_line_bytes: Annotated[
        int, typer.Option(help="Longest input line: a longer one stops with an error.")
    ] = 1_000_000,
    device: DeviceOption = Device.auto,
    quantize: QuantizeOption = None,
):
    """Translate text: from arguments, a pipe or a file (one line out per line in), or interactively.

    A pipe is translated as it arrives, --buffer-size lines at a time or
    whatever has come when the input pauses, so a program can write a line and
    read its translation. A text of several sentences is split into sentences,
    translated as one batch and put back together with its own spaces; a
    sentence longer than the model reads well is translated in pieces.

    \b
    Examples:
      mt translate "Ein Hund läuft über die Wiese."
      mt translate < sentences.de > sentences.en
      mt translate -i sentences.de.gz -o sentences.en       (a progress bar; the output appears when done)
      mt translate --format jsonl --n-best 3 < in.de        (JSON lines with scores and 3 candidates)
      mt translate              (interactive; Ctrl-D to quit)
      mt translate -m runs/a/best.safetensors -m runs/b/best.safetensors < in.de   (an ensemble)
      mt translate --sampling --top-p 0.9 --n-best 3      (three samples per sentence)
    """
    decode = DecodeConfig(
        beam_size=beam, length_penalty=length_penalty, sampling=sampling, temperature=temperature, top_k=top_k,
        top_p=top_p, seed=seed,
    )  # fmt: skip
    decode.check_n_best(n_best)
    for option, value in (("--buffer-size", buffer_size), ("--max-line-bytes", max_line_bytes)):
        if value < 1:
            raise MTError(f"{option} must be >= 1, got {value}")
    if alignment and output_format != OutputFormat.jsonl:
        raise MTError("--alignment needs --format jsonl (at the interactive prompt: --show-attention)")
    text, input, output = translation_files(text, input, output)
    interactive = not text and input is None and sys.stdin.isatty()
    if interactive and (output is not None or output_format != OutputFormat.text):
        interactive = False  # typed lines are a stream like any other: no prompt in the output
    translator = _load_translator(model, device, quantize, to)  # torch (seconds): after the checks above
    if alignment and not translator.has_attention:
        raise MTError("--alignment: this model has no attention (train with --attention luong or bahdanau)")
    if interactive:
        from mt.console import interactive_prompt

        interactive_prompt(translator, decode, n_best, show_attention, split, __version__)
        return
    from mt.runtime import Terminated, sigterm_as_interrupt
    from mt.streams import Formatter, translate_lines

    formatter = Formatter(translator, output_format, n_best, alignment)
    try:
        with sigterm_as_interrupt():
            translate_lines(translator, text, input, output, decode, formatter, buffer_size, split, max_line_bytes)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: what was written stays whole; no --output file at all
        typer.echo(f"interrupted{f': {output} was not written' if output else ''}", err=True)
        raise typer.Exit(143 if isinstance(stop, Terminated) else 130) from None


@app.command("average")
@user_errors
def average_cli(
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoints of one model: runs/X/step-*.safetensors.")],
    output: Annotated[Path, typer.Option(help="Where to write the averaged checkpoint (file or directory).")],
    fp16: Annotated[bool, typer.Option(help="Store the weights in float16 (half the size).")] = False,
):
    """Average the weights of several checkpoints of one run (or convert one to fp16).

    Example: mt average runs/de-en/step-*.safetensors --output checkpoints/de-en --fp16
    """
    from mt.checkpoint import save_average

    target = save_average(checkpoints, output, fp16)
    typer.echo(f"wrote {target} (average of {len(checkpoints)})", err=True)


@app.command("inspect")
@user_errors
def inspect_cli(
    model: Annotated[
        list[Path] | None,
        typer.Option("--model", "-m", help="Checkpoint(s); repeat to compare. [default: shipped]"),
    ] = None,
    src: Annotated[Path | None, typer.Option(help="Source sentences. [default: data/multi30k/val.SRC.gz]")] = None,
    ref: Annotated[Path | None, typer.Option(help="Their references. [default: data/multi30k/val.TGT.gz]")] = None,
    sentences: Annotated[int, typer.Option(help="How many sentences to average over.")] = 64,
    distance: Annotated[int, typer.Option(help="Measure the gradient up to this many steps back in time.")] = 15,
    log: Annotated[list[Path] | None, typer.Option(help="A run's log.jsonl to plot; repeat to compare.")] = None,
    sentence: Annotated[str | None, typer.Option(help="Sentence of the attention map. [default: the first]")] = None,
    untrained: Annotated[bool, typer.Option(help="Also measure each model freshly initialised.")] = False,
    output: Annotated[Path, typer.Option(help="Directory for the PNG plots and inspect.json.")] = Path("inspect"),
):
    """Measure what the lecture talks about: the gradient reaching each encoder step
    (backpropagation through time), the LSTM's gate activations, learning curves and attention.

    \b
    Examples:
      mt inspect --model checkpoints/de-en-base
      mt inspect -m runs/compare/rnn/best.safetensors -m runs/compare/lstm/best.safetensors --output inspect/cells
      mt inspect --log runs/compare/rnn/log.jsonl --log runs/compare/lstm/log.jsonl
    """
    from mt.diagnostics import inspect_runs

    inspect_runs(model or [DEFAULT_MODEL], src, ref, sentences, distance, log or [], sentence, untrained, output)


@app.command("compare")
@user_errors
def compare_cli(
    train: TrainOption = DEFAULT_TRAIN,
    valid: ValidOption = DEFAULT_VALID,
    src: SrcOption = "de",
    tgt: TgtOption = "en",
    tokenizer: TokenizerOption = None,
    minutes: Annotated[float, typer.Option(help="Wall-clock minutes of training for each cell.")] = 10.0,
    embedding_size: EmbeddingOption = 256,
    hidden_size: Annotated[int, typer.Option(help="The LSTM's hidden size; it sets the parameter budget.")] = 512,
    num_layers: LayersOption = 2,
    attention: Annotated[AttentionKind, typer.Option(help="Attention of all three models.")] = AttentionKind.none,
    batch_tokens: BatchTokensOption = 4096,
    validate_every: Annotated[int, typer.Option(help="Validate every N updates (0: every epoch).")] = 200,
    output: Annotated[Path, typer.Option(help="Directory for the three runs and compare.json.")] = Path("runs/compare"),
    seed: SeedOption = 1,
    device: DeviceOption = Device.auto,
):
    """Train a plain RNN, a GRU and an LSTM of equal parameter budget for the same wall time; print one table.

    Example: mt compare --minutes 8 --output runs/compare
    """
    config = TrainConfig(
        batch_tokens=batch_tokens, max_minutes=minutes, max_epochs=1000, patience=0, validate_every=validate_every,
        seed=seed,
    )  # fmt: skip
    model = dict(embedding_size=embedding_size, hidden_size=hidden_size, num_layers=num_layers, attention=attention)
    run = RunConfig(tuple(train), tuple(valid), src, tgt, tokenizer, output=output)
    from mt.console import TrainingProgress
    from mt.diagnostics import compare_cells
    from mt.runtime import resolve_device

    err = stderr_console()
    with TrainingProgress(err) as reporter:
        rows = compare_cells(run, model, config, resolve_device(device), err.print, reporter)
    (output / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
    print_compare_table(rows)


@app.command("serve")
@user_errors
def serve_cli(
    model: Annotated[
        list[Path] | None,
        typer.Option("--model", "-m", help="A checkpoint per direction (several: an ensemble). [default: the shipped]"),
    ] = None,
    host: Annotated[str, typer.Option(help="Address; a non-loopback one opens the server to others.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 5000,
    max_chars: Annotated[int, typer.Option(help="Most characters in one request (pieces x beam: 6x this).")] = 5000,
    max_items: Annotated[int, typer.Option(help="Most texts in one request's q list.")] = 100,
    api_key: Annotated[
        str | None, typer.Option(envvar="MT_API_KEY", help="Require this key (api_key, or Authorization: Bearer).")
    ] = None,
    batch_wait_ms: Annotated[float, typer.Option(help="How long a batch waits for more (0-10000 ms).")] = 5.0,
    batching: Annotated[
        bool, typer.Option("--batching/--no-batching", help="Batch requests arriving together.")
    ] = True,
    max_queue: Annotated[int, typer.Option(help="Most requests waiting per model (more: 503).")] = 64,
    request_timeout: Annotated[float, typer.Option(help="Seconds to send a whole request (slower: 408).")] = 10.0,
    cors_origin: Annotated[list[str], typer.Option(metavar="ORIGIN", help="Web origin allowed (CORS).")] = ["*"],  # noqa: B006
    device: DeviceOption = Device.auto,
    quantize: QuantizeOption = None,
):
    """Serve translations over HTTP: a LibreTranslate-compatible API and a web page.

    POST /translate {"q": "...", "source": "de", "target": "en"} answers {"translatedText": "..."};
    the page at / translates as you type. Ctrl-C or SIGTERM finish the requests in flight, then stop.

    \b
    Examples:
      mt serve                          (http://127.0.0.1:5000: de->en and en->de)
      mt serve --model checkpoints/de-en --port 8080
      MT_API_KEY=secret mt serve --host 0.0.0.0
    """
    from mt.runtime import for_inference, resolve_device
    from mt.server import serve

    for_inference()
    serve(
        model,
        host,
        port,
        max_chars,
        max_items,
        api_key,
        batch_wait_ms,
        batching,
        resolve_device(device),
        quantize,
        max_queue=max_queue,
        request_timeout=request_timeout,
        cors_origins=cors_origin,
    )


@app.command("version")
def version_cli():
    """Print the version of mt."""
    typer.echo(__version__)


def main() -> None:
    """The console script: click's own usage errors (an unknown option, `--beam abc`, an
    unreadable path) become the same one `error:` line as every other mistake."""
    if sys.stdout is None or sys.stderr is None:  # started with stdout or stderr closed (`>&-`)
        sys.exit(1)
    try:
        code = app(standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):  # Ctrl-C while loading, before a command could handle it
        typer.echo("", err=True)
        sys.exit(130)
    except typer.TyperException as error:  # click's exceptions (typer's copy of click)
        if type(error).__name__ == "NoArgsIsHelpError":  # `mt` alone: the help
            error.show()
        else:
            typer.echo(f"error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
