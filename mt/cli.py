"""The `mt` command line: thin Typer commands over the package's functions.

Every error a user can cause surfaces as `MTError` and is printed here as
one line on stderr with exit status 1; nothing else prints tracebacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import sys
import time
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import ProgressColumn
from rich.text import Text

from mt import __version__
from mt.config import (
    MAX_BEAM,
    AttentionKind,
    Cell,
    CellImpl,
    MTError,
    OutputFormat,
    SignificanceTest,
    SubwordModel,
)

app = typer.Typer(
    name="mt",
    help="Translate with an LSTM encoder-decoder: train tokenizers and models, evaluate with BLEU, translate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts hold literal [brackets]
)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


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


def resolve_device(device: Device):
    import torch

    if device == Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == Device.cuda and not torch.cuda.is_available():
        raise MTError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(device.value)


def default_model() -> Path:
    from mt.checkpoint import DEFAULT_MODEL

    return DEFAULT_MODEL


ModelOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--model",
        "-m",
        help="Checkpoint file or directory; repeat for an ensemble of models that share one tokenizer. "
        "[default: the shipped checkpoints/de-en]",
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
DEFAULT_TRAIN = ["data/multi30k/train"]
DEFAULT_VALID = ["data/multi30k/val"]
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
    dataset: Annotated[
        str, typer.Option(help="A Hugging Face translation dataset on the hub.")
    ] = "bentrevett/multi30k",
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
    joint: Annotated[
        bool, typer.Option("--joint/--separate", help="One tokenizer for both languages, or one each.")
    ] = True,
    max_sentences: Annotated[
        int,
        typer.Option(
            help="Learn from a random sample of at most this many sentences (per tokenizer) of a large corpus."
        ),
    ] = 2_000_000,
    output: Annotated[Path | None, typer.Option(help="Output directory. [default: data/tokenizers/SRC-TGT]")] = None,
    seed: Annotated[int, typer.Option(help="Random seed for SentencePiece's sampling.")] = 1,
):
    """Train SentencePiece tokenizers on the training side of one or more corpora.

    Several corpora are mixed as mt train mixes them (PATH:N counts a corpus N
    times), and the tokenizer learns from a random sample of the mixture.

    Example: mt train-tokenizer --train data/tatoeba/deu-eng/train --train data/multi30k/train --src de --tgt en
    """
    from mt.data import CorpusSpec, load_corpus, mixture_sentences
    from mt.tokenizer import TokenizerPair, train_sentencepiece

    if vocab_size < 8:
        raise MTError(f"--vocab-size must be >= 8, got {vocab_size}")
    if max_sentences <= 100:  # SentencePiece's smallest sample
        raise MTError(f"--max-sentences must be > 100, got {max_sentences}")
    specs = [CorpusSpec.parse(text) for text in train]
    corpora = [(load_corpus(spec.spec, src, tgt), spec.factor) for spec in specs]
    options = dict(vocab_size=vocab_size, model_type=model_type.value, seed=seed, input_sentence_size=max_sentences)
    if joint:
        source = target = train_sentencepiece(mixture_sentences(corpora, ["source", "target"]), **options)
    else:
        source = train_sentencepiece(mixture_sentences(corpora, ["source"]), **options)
        target = train_sentencepiece(mixture_sentences(corpora, ["target"]), **options)
    output = output or Path("data/tokenizers") / f"{src}-{tgt}"
    TokenizerPair(source, target).save(output)
    kind = "joint" if joint else "separate"
    typer.echo(
        f"wrote {kind} {model_type.value} tokenizers ({source.vocab_size} / {target.vocab_size} pieces) to {output}",
        err=True,
    )


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
        CellImpl, typer.Option(help="fused: torch's kernels; reference: the lecture's equations (slow).")
    ] = CellImpl.fused,
    attention: Annotated[
        AttentionKind, typer.Option(help="none: the encoder's final state is all the decoder sees.")
    ] = AttentionKind.none,
    bidirectional: Annotated[bool, typer.Option(help="Bidirectional encoder, bridged to the decoder.")] = False,
    reverse_source: Annotated[bool, typer.Option(help="Read the source backwards (Sutskever et al. 2014).")] = True,
    tie_embeddings: Annotated[bool, typer.Option(help="Tie the decoder's input and output embeddings.")] = True,
    share_embeddings: Annotated[
        bool, typer.Option(help="One embedding matrix for both languages (joint tokenizer).")
    ] = False,
    batch_tokens: BatchTokensOption = 4096,
    accumulate: Annotated[
        int, typer.Option(help="Batches per update (per worker under torchrun): a larger batch than memory allows.")
    ] = 1,
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
            "with a fresh optimizer and schedule; architecture options must agree with it."
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(help="Start afresh: delete the run's own checkpoints and log (only after every input was read)."),
    ] = False,
):
    """Train an encoder-decoder; keeps the best (by validation BLEU) and the last checkpoint.

    Re-running the same command on the same --output resumes an interrupted run.
    Several --train corpora are mixed into one (PATH:N: N copies per epoch);
    with several --valid sets, the mean of their BLEU selects the best model.
    --init-from fine-tunes a trained model (e.g. on a new domain) in a new run.
    Under torchrun (torchrun --nproc-per-node N -m mt train ...) it trains on N
    workers; see the README.

    Example: mt train --src de --tgt en --attention luong --bidirectional --output runs/de-en
    """
    from mt import distributed
    from mt.checkpoint import load_checkpoint
    from mt.config import TrainConfig
    from mt.train import Interrupted, RunDirectory, Trainer, provenance

    train_config = _config(TrainConfig, ctx.params)
    parent = load_checkpoint(init_from) if init_from is not None else None
    tokenizers, model_config = _model_to_train(ctx, parent)
    run = RunDirectory(output or Path("runs") / f"{src}-{tgt}")
    resume = run.check(overwrite)
    device_ = distributed.start(resolve_device(device))
    workers = distributed.current()
    # Only the first worker reports and writes; the others would repeat every line.
    err = _stderr_console(quiet=not workers.is_main)
    try:
        with run.lock() if workers.is_main else contextlib.nullcontext():
            with distributed.main_first():  # the first worker tokenizes into the datasets cache
                corpus, validation, train_corpora = _training_data(train, valid, src, tgt, tokenizers, max_length, err)
            if overwrite and workers.is_main:
                run.clear()
            info = provenance(src, tgt, train_corpora, list(validation), seed, workers.world_size, init_from, parent)
            trainer = Trainer(model_config, train_config, tokenizers, corpus, validation, run.path, device_, info)
            if parent is not None:
                trainer.model.load_state_dict(parent.model.state_dict())
            if resume:
                changes = trainer.resume()
                err.print(f"resuming {run.path} at step {trainer.state.step} (epoch {trainer.state.epoch + 1})")
                for change in changes:
                    err.print(f"  changed since the last run: {change}")
            where = f"{workers.world_size} workers on {device_.type}" if workers.world_size > 1 else str(device_)
            err.print(f"model: {trainer.model.num_parameters():,} parameters on {where}")
            try:
                with _progress_reporter(err) as reporter:
                    result = trainer.run(reporter)
            except Interrupted:
                err.print(
                    f"interrupted at step {trainer.state.step}; saved {trainer.last_path}. Resume with the same command."
                )
                raise typer.Exit(130) from None
        err.print(f"best validation BLEU {result.best_bleu:.2f}: {result.best}")
        err.print(f"last checkpoint: {result.last}")
    finally:
        distributed.stop()


def _model_to_train(ctx: typer.Context, parent) -> tuple:
    """The tokenizers and the model config of `mt train`: from the options and the
    tokenizer directory, or from the --init-from checkpoint `parent`."""
    from mt.config import ModelConfig
    from mt.tokenizer import TokenizerPair

    options = ctx.params
    if parent is not None and _given(ctx, "tokenizer"):
        raise MTError("--tokenizer cannot be combined with --init-from: the model keeps its checkpoint's tokenizer")
    tokenizers = (
        parent.tokenizers
        if parent
        else TokenizerPair.load(options["tokenizer"] or Path("data/tokenizers") / f"{options['src']}-{options['tgt']}")
    )
    vocab_sizes = {"src_vocab_size": tokenizers.source.vocab_size, "tgt_vocab_size": tokenizers.target.vocab_size}
    model_config = _config(ModelConfig, {**options, **vocab_sizes})
    if parent is not None:
        model_config = _inherit_architecture(ctx, parent.model.config, model_config)
    return tokenizers, model_config


def _config(cls, options: dict):
    """A config dataclass from the command's options of the same names (choices by their value)."""
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(
        **{name: value.value if isinstance(value, Enum) else value for name, value in options.items() if name in names}
    )


# ModelConfig fields that make the architecture (each set by the option of the same name).
ARCHITECTURE = (
    "embedding_size",
    "hidden_size",
    "num_layers",
    "cell",
    "attention",
    "bidirectional",
    "reverse_source",
    "tie_embeddings",
    "share_embeddings",
)


def _given(ctx: typer.Context, parameter: str) -> bool:
    """Whether the user gave this option (rather than leaving its default)."""
    source = ctx.get_parameter_source(parameter)  # compared by name: typer may bring its own click
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def _inherit_architecture(ctx: typer.Context, parent, requested):
    """The parent checkpoint's architecture, with this run's dropout and cell
    implementation; an architecture option given with another value is an error."""
    for field in ARCHITECTURE:
        mine, theirs = getattr(requested, field), getattr(parent, field)
        if _given(ctx, field) and mine != theirs:
            flag = next(param.opts[0] for param in ctx.command.params if param.name == field)
            raise MTError(f"{flag} {mine} conflicts with --init-from, whose model has {theirs}; leave the option out")
    return dataclasses.replace(parent, dropout=requested.dropout, cell_impl=requested.cell_impl)


def _training_data(train: list[str], valid: list[str], src: str, tgt: str, tokenizers, max_length: int, err):
    """Read and tokenize the training corpora (mixed by their upsampling factors)
    and read the validation sets; report what the length filter dropped.
    Returns the mixed corpus, the validation sets by name and, per training
    corpus, its spec, factor and fingerprint (for the checkpoint's provenance)."""
    from mt.data import CorpusSpec, TokenizedCorpus, corpus_fingerprint, load_corpus, tokenize_corpus

    if not err.is_terminal:  # keep logs free of progress-bar redraws
        import datasets

        datasets.disable_progress_bars()
    for name, specs in (("--train", train), ("--valid", valid)):
        if len(set(specs)) < len(specs):
            raise MTError(f"{name}: the same corpus is given twice; use PATH:N to weight a training corpus")
    specs = [CorpusSpec.parse(text) for text in train]
    validation = {}
    for spec in valid:
        valid_data = load_corpus(spec, src, tgt)
        validation[spec] = (valid_data["source"], valid_data["target"])
    parts, provenance = [], []
    for spec in specs:
        train_data = load_corpus(spec.spec, src, tgt)
        part = tokenize_corpus(train_data, tokenizers, max_length)
        if not len(part):
            raise MTError(
                f"{spec.spec}: no training pairs left after filtering empty and longer than {max_length} subwords"
            )
        times = f", taken {spec.factor} times per epoch" if spec.factor > 1 else ""
        err.print(
            f"training pairs of {spec.spec}: {len(part):,} kept, {part.dropped:,} dropped "
            f"(empty or longer than {max_length} subwords){times}"
        )
        parts.append((part, spec.factor))
        provenance.append(
            {
                "corpus": spec.spec,
                "factor": spec.factor,
                "fingerprint": corpus_fingerprint(spec.spec, src, tgt, train_data),
            }
        )
    return TokenizedCorpus.mix(parts), validation, provenance


def _stderr_console(quiet: bool = False):
    from rich.console import Console

    # Plain text: paths may hold [brackets] (not markup) and must not be wrapped.
    return Console(stderr=True, markup=False, highlight=False, soft_wrap=True, quiet=quiet)


class TimeLeftColumn(ProgressColumn):
    """Time until training ends: the estimate from the step rate, or the time left
    of the --max-minutes budget (task field `deadline`) when that is sooner."""

    def render(self, task) -> Text:
        remaining = task.time_remaining
        deadline = task.fields.get("deadline")
        if deadline is not None:
            budget = max(0.0, deadline - time.monotonic())
            remaining = budget if remaining is None else min(remaining, budget)
        return Text(
            "-:--:--" if remaining is None else str(timedelta(seconds=int(remaining))), style="progress.remaining"
        )


def _progress_reporter(console):
    """The trainer's reporter for a person: a rich progress bar on a terminal (loss,
    tokens/s, ETA), a line every 100 updates in a log, and each validation as a line."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from mt.train import Reporter, validation_line

    class ProgressReporter(Reporter, Progress):
        def started(self, total_steps, state, deadline) -> None:
            self.total_steps = total_steps
            self.task = self.add_task("training", total=total_steps, completed=state.step, info="", deadline=deadline)

        def updated(self, state, loss_average) -> None:
            rate = state.train_tokens / max(state.train_seconds, 1e-9)
            info = f"epoch {state.epoch + 1} loss {loss_average:.3f} {rate:,.0f} tok/s best BLEU {max(state.best_bleu, 0):.2f}"
            self.update(self.task, completed=state.step, info=info)
            if not self.console.is_terminal and state.step % 100 == 0:  # a log file gets a line now and then
                self.console.print(f"step {state.step}/{self.total_steps}  {info}")

        def validated(self, record) -> None:
            self.console.print(validation_line(record))

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    return ProgressReporter(
        *columns,
        TextColumn("ETA"),
        TimeLeftColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=not console.is_terminal,
    )


def _load_translator(model: list[Path] | None, device: Device, quantize: bool | None):
    from mt.translator import Translator

    return Translator.from_checkpoints(model or [default_model()], resolve_device(device), quantize)


def _decode_config(beam: int, length_penalty: float, **sampling):
    from mt.config import DecodeConfig

    if beam < 1:
        raise MTError(f"--beam must be >= 1, got {beam}")
    return DecodeConfig(beam_size=beam, length_penalty=length_penalty, **sampling)


def _input_file(option: str, path: Path) -> None:
    """A file to read, checked before any work (and before torch is imported)."""
    if not path.is_file():
        raise MTError(f"{option} {path}: {'not a regular file' if path.exists() else 'file not found'}")


def _output_file(path: Path | None, inputs: dict[str, Path]) -> Path | None:
    """Where to write an output file, checked before any work: a regular file (or a
    new one) that is none of the inputs. A symbolic link is written through (the file
    it points to is replaced, the link stays); `-`, a directory, a device or a FIFO is refused."""
    if path is None:
        return None
    if str(path) == "-":
        raise MTError("--output -: give a file name (standard output carries the scores)")
    target = path.resolve()
    if target.exists() and not target.is_file():
        raise MTError(f"--output {path} is not a regular file (a directory, device or FIFO); give a file name")
    for option, input_path in inputs.items():
        if input_path.exists() and target == input_path.resolve():
            raise MTError(f"--output {path} is the {option} file; writing it would destroy the input")
    return target


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
    ensemble: Annotated[
        bool, typer.Option(help="Score the --models as one ensemble instead of comparing them.")
    ] = False,
    beam: BeamOption = 5,
    length_penalty: LengthPenaltyOption = 1.0,
    confidence: Annotated[
        bool, typer.Option(help="Add bootstrap 95% confidence intervals of BLEU, chrF and TER (1000 resamples).")
    ] = False,
    paired_test: Annotated[
        SignificanceTest,
        typer.Option(help="Several models: paired bootstrap resampling (bs) or approximate randomization (ar)."),
    ] = SignificanceTest.bs,
    output: Annotated[Path | None, typer.Option(help="Write the translations to this file (one model).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
    device: DeviceOption = Device.auto,
    quantize: QuantizeOption = None,
):
    """Translate a file and score it against references with sacreBLEU (BLEU, chrF, TER).

    With several --model options each model is scored and compared with the
    first by a paired significance test (p < 0.05: the difference is unlikely
    to be chance); --confidence gives each score's 95% confidence interval.

    \b
    Examples:
      mt evaluate --model checkpoints/de-en --src data/multi30k/test_2016_flickr.de.gz --ref data/multi30k/test_2016_flickr.en.gz
      mt evaluate -m checkpoints/de-en -m checkpoints/de-en-base --src test.de --ref test.en   (paired test)
      mt evaluate -m a.safetensors -m b.safetensors --ensemble --src test.de --ref test.en --confidence
    """
    decode = _decode_config(beam, length_penalty)
    _input_file("--src", src)
    _input_file("--ref", ref)
    output = _output_file(output, {"--src": src, "--ref": ref})
    from mt.checkpoint import write_atomic  # torch (seconds): after the checks above
    from mt.data import read_lines
    from mt.evaluate import score, significance

    models = model or [default_model()]
    systems = [models] if ensemble or len(models) == 1 else [[path] for path in models]
    if output is not None and len(systems) > 1:
        raise MTError("--output holds the translations of one model; give one --model (or --ensemble)")
    sources, references = read_lines(src), read_lines(ref)
    if len(sources) != len(references):
        raise MTError(f"{src} has {len(sources)} lines but {ref} has {len(references)}")
    if not sources:
        raise MTError(f"{src} is empty")
    hypotheses = []
    for paths in systems:  # one model in memory at a time
        translator = _load_translator(paths, device, quantize)
        hypotheses.append(translator.translate(sources, decode))
    if output is not None:
        write_atomic(output, "".join(h + "\n" for h in hypotheses[0]).encode())
    results = [
        {
            "model": str(paths[0]),
            **({"ensemble": [str(p) for p in paths]} if len(paths) > 1 else {}),
            **score(h, references),
        }
        for paths, h in zip(systems, hypotheses)
    ]
    tested = significance(hypotheses, references, paired_test) if confidence or len(systems) > 1 else None
    if tested is not None:
        for result, intervals in zip(results, tested["systems"]):
            result.update({f"{name}_confidence": interval for name, interval in intervals.items()})
    settings = {"beam": beam, "length_penalty": length_penalty, "quantize": translator.int8}
    if as_json:
        if len(results) == 1:
            body = {**results[0], **settings}
        else:
            body = {**settings, "paired_test": paired_test.value, "baseline": results[0]["model"], "systems": results}
        if tested is not None:
            body["confidence_signatures"] = tested["signatures"]
        typer.echo(json.dumps(body))
        return
    _print_scores(results, tested)


SCORE_LABELS = (("BLEU", "bleu"), ("BLEU lc", "bleu_lowercase"), ("chrF", "chrf"), ("TER", "ter"))


def _print_scores(results: list[dict], tested: dict | None) -> None:
    """The scores of `mt evaluate` for a person: a line per metric with its signature,
    or, for several models, a block per model and the signatures once."""
    several = len(results) > 1
    for index, result in enumerate(results):
        if several:
            typer.echo(f"{result['model']}{' (baseline)' if index == 0 else ''}")
        for label, name in SCORE_LABELS:
            line = f"{'  ' if several else ''}{label:<8}{result[name]:6.2f}"
            interval = result.get(f"{name}_confidence")
            if interval is not None:
                line += f"  (μ = {interval['mean']:.2f} ± {interval['ci']:.2f})"
                if "p_value" in interval:
                    line += f"  p = {interval['p_value']:.4f}{' *' if interval['p_value'] < 0.05 else ''}"
            typer.echo(line if several else f"{line}  {result[name + '_signature']}")
    if several:
        test = {"bs": "paired bootstrap resampling", "ar": "paired approximate randomization"}[tested["test"]]
        typer.echo(f"p: {test} against the baseline; * p < 0.05 (unlikely to be chance)")
        for label, name in SCORE_LABELS:
            typer.echo(f"{label:<8}{results[0][name + '_signature']}")
    if tested is not None:
        typer.echo(f"μ ± ci: bootstrap mean and 95% confidence interval; {tested['signatures']['bleu']}")


def _show_alignment(translator, source: str, translation: str) -> None:
    """Print the attention weights as a compact source-by-target grid."""
    alignment = translator.alignment(source, translation)
    if alignment is None:
        typer.echo("  (this model has no attention to show)", err=True)
        return
    shades = " ░▒▓█"
    width = max(len(p) for p in alignment.target)
    for row, piece in enumerate(alignment.target):
        cells = "".join(shades[min(4, int(float(w) * 5))] * 2 for w in alignment.weights[row])
        typer.echo(f"  {piece:>{width}} |{cells}|")
    typer.echo(f"  {'':>{width}}  " + " ".join(f"{i}:{p}" for i, p in enumerate(alignment.source)))


class RateColumn(ProgressColumn):
    """Lines per second, rich's estimate over the last half minute."""

    def render(self, task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:.1f} lines/s", style="progress.data.speed")


PROGRESS_EVERY = 1000  # lines between two progress lines when stderr is a log, not a terminal


@contextlib.contextmanager
def _translation_progress(total: int):
    """A callback taking the number of lines done: a progress bar on a terminal
    (lines, lines/s, ETA), else a line on stderr every PROGRESS_EVERY lines and at the end."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    console = _stderr_console()
    started, reported = time.monotonic(), 0
    columns = (BarColumn(), MofNCompleteColumn(), RateColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("translating", total=total)

        def update(done: int) -> None:
            nonlocal reported
            bar.update(task, completed=done)
            if not console.is_terminal and (done - reported >= PROGRESS_EVERY or done == total):
                rate = done / max(time.monotonic() - started, 1e-9)
                console.print(f"translated {done:,}/{total:,} lines ({rate:.1f} lines/s)")
                reported = done

        yield update


@contextlib.contextmanager
def _destination(path: Path | None):
    """A function that writes text to standard output (flushed: a reader gets each
    chunk at once) or into `path`, which appears only once everything is written."""
    from mt.checkpoint import atomic_file

    if path is None:

        def write(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        yield write
        return
    with atomic_file(path) as out:
        yield lambda text: out.write(text.encode("utf-8"))


@app.command("translate")
@user_errors
def translate_cli(
    text: Annotated[list[str] | None, typer.Argument(help="Sentences to translate; without them, read stdin.")] = None,
    model: ModelOption = None,
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="Translate this file (.gz allowed; - is stdin), line by line.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write here (- is stdout); the file appears only when complete."),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="text: one line per input line; jsonl: one JSON object per line.")
    ] = OutputFormat.text,
    beam: BeamOption = 5,
    length_penalty: LengthPenaltyOption = 1.0,
    n_best: Annotated[
        int,
        typer.Option(
            help="The N best translations (or N samples) with scores: Moses 'LINE ||| TEXT ||| SCORE' lines "
            "in text, an n_best list in jsonl."
        ),
    ] = 1,
    alignment: Annotated[
        bool, typer.Option(help="jsonl: add the attention alignment of each translation (attention models).")
    ] = False,
    buffer_size: Annotated[
        int, typer.Option(help="Lines translated together from a pipe or file (fewer when the input pauses).")
    ] = 256,
    sampling: Annotated[bool, typer.Option(help="Sample translations instead of searching for the best.")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling: < 1 sharpens the distribution, > 1 flattens it.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sampling: only from the K most likely tokens (0: all).")] = 0,
    top_p: Annotated[float, typer.Option(help="Sampling: only from the most likely tokens that make up P.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling: the same seed and input give the same samples.")] = 1,
    show_attention: Annotated[
        bool, typer.Option(help="Show the source-target attention (interactive, attention models).")
    ] = False,
    split: Annotated[
        bool, typer.Option("--split/--no-split", help="Translate a text of several sentences sentence by sentence.")
    ] = True,
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
    options = dict(sampling=sampling, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    decode = _decode_config(beam, length_penalty, **options)
    most = MAX_BEAM if sampling else beam
    if not 1 <= n_best <= most:
        raise MTError(f"--n-best must be between 1 and {'100' if sampling else f'--beam ({beam})'}, got {n_best}")
    if buffer_size < 1:
        raise MTError(f"--buffer-size must be >= 1, got {buffer_size}")
    if alignment and output_format != OutputFormat.jsonl:
        raise MTError("--alignment needs --format jsonl (at the interactive prompt: --show-attention)")
    if text == ["-"]:  # the usual name of standard input
        text = None
    if text and input is not None:
        raise MTError("give the sentences as arguments or with --input, not both")
    if input is not None and str(input) == "-":
        input = None
    elif input is not None:
        _input_file("--input", input)
    output = None if output is None or str(output) == "-" else _output_file(output, {"--input": input} if input else {})
    if not text and input is None and sys.stdin is None:
        raise MTError("standard input is closed; give the sentences as arguments, with --input or through a pipe")
    interactive = not text and input is None and sys.stdin.isatty()
    if interactive and (output is not None or output_format != OutputFormat.text):
        interactive = False  # typed lines are a stream like any other: no prompt in the output
    # Only now what imports torch (seconds): a mistake above is reported at once.
    from mt.data import count_lines, decode_lines, iter_lines
    from mt.streams import PAUSE_SECONDS, Formatter, translate_stream

    translator = _load_translator(model, device, quantize)
    if alignment and not translator.has_attention:
        raise MTError("--alignment: this model has no attention (train with --attention luong or bahdanau)")
    if interactive:
        _interactive(translator, decode, n_best, show_attention, split)
        return
    if text:
        lines, pause, total = text, None, None
    elif input is not None:
        lines, pause, total = iter_lines(input), None, count_lines(input)
    else:
        lines, pause, total = decode_lines(sys.stdin.buffer, "standard input"), PAUSE_SECONDS, None
    formatter = Formatter(translator, output_format, n_best, alignment)
    try:
        with _destination(output) as write:
            with _translation_progress(total) if total else contextlib.nullcontext() as progress:
                translate_stream(translator, lines, decode, formatter, write, buffer_size, split, pause, progress)
    except KeyboardInterrupt:  # Ctrl-C: what was written stays whole; an --output file is not written at all
        typer.echo(f"interrupted{f': {output} was not written' if output else ''}", err=True)
        raise typer.Exit(130) from None


def _interactive(translator, decode, n_best: int, show_attention: bool, split: bool) -> None:
    import readline  # noqa: F401  (line editing and history for input())

    from mt.streams import one_line

    history = Path.home() / ".mt_history"
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    info = translator.tokenizers
    typer.echo(
        f"mt {__version__}: type a sentence, Enter to translate; Ctrl-D to quit. ({info.source.vocab_size} subwords)",
        err=True,
    )
    try:
        while True:
            sys.stderr.write("> ")  # the prompt goes to the terminal, not into `mt translate > file`
            sys.stderr.flush()
            line = input()
            if not line.strip():
                continue
            candidates = translator.translate_n_best([line], decode, n_best, split)[0]
            typer.echo(one_line(candidates[0].text))
            if n_best > 1:
                for rank, candidate in enumerate(candidates, start=1):
                    typer.echo(f"  {rank}. ({candidate.score:.3f}) {one_line(candidate.text)}")
            if show_attention:
                _show_alignment(translator, line, candidates[0].text)
    except EOFError:  # Ctrl-D: the way to quit
        typer.echo("", err=True)
    except KeyboardInterrupt:  # Ctrl-C: interrupted, as shells report it
        typer.echo("", err=True)
        raise typer.Exit(130) from None
    finally:
        try:
            readline.write_history_file(history)
        except OSError:
            pass


@app.command("average")
@user_errors
def average_cli(
    checkpoints: Annotated[
        list[Path], typer.Argument(help="Checkpoints of one model, e.g. runs/de-en/step-*.safetensors.")
    ],
    output: Annotated[Path, typer.Option(help="Where to write the averaged checkpoint (file or directory).")],
    fp16: Annotated[bool, typer.Option(help="Store the weights in float16 (half the size).")] = False,
):
    """Average the weights of several checkpoints of one run (or convert one to fp16).

    Example: mt average runs/de-en/step-*.safetensors --output checkpoints/de-en --fp16
    """
    import torch

    from mt.checkpoint import FILENAME, average_checkpoints, save_checkpoint

    averaged = average_checkpoints(checkpoints)
    info = {key: value for key, value in averaged.info.items() if key not in ("trainer_state", "optimizer_groups")}
    target = output / FILENAME if output.is_dir() or not output.suffix else output
    save_checkpoint(target, averaged.model, averaged.tokenizers, info, dtype=torch.float16 if fp16 else None)
    typer.echo(f"wrote {target} (average of {len(checkpoints)})", err=True)


@app.command("inspect")
@user_errors
def inspect_cli(
    model: Annotated[
        list[Path] | None,
        typer.Option("--model", "-m", help="Checkpoint(s); repeat to compare. [default: the shipped model]"),
    ] = None,
    src: Annotated[Path | None, typer.Option(help="Source sentences. [default: data/multi30k/val.SRC.gz]")] = None,
    ref: Annotated[Path | None, typer.Option(help="Their references. [default: data/multi30k/val.TGT.gz]")] = None,
    sentences: Annotated[int, typer.Option(help="How many sentences to average over.")] = 64,
    distance: Annotated[int, typer.Option(help="Measure the gradient up to this many steps back in time.")] = 15,
    log: Annotated[
        list[Path] | None, typer.Option(help="A run's log.jsonl: plot its learning curves; repeat to compare runs.")
    ] = None,
    sentence: Annotated[
        str | None, typer.Option(help="Sentence for the attention heatmap. [default: the first source]")
    ] = None,
    untrained: Annotated[
        bool, typer.Option(help="Also measure each model freshly initialised (same config, seed 1).")
    ] = False,
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
    import torch

    from mt.checkpoint import load_checkpoint
    from mt.data import read_lines
    from mt.diagnostics import inspect_model, plot_attention, plot_gradient_flow, plot_learning_curves, read_log
    from mt.model import Seq2Seq

    if sentences < 1 or distance < 1:
        raise MTError(f"--sentences and --distance must be >= 1, got {sentences} and {distance}")
    runs = {label: read_log(path) for path, label in zip(log or [], _short_names(log or []))}
    checkpoints = []
    paths = [Path(p) for p in model or [default_model()]]
    for path, label in zip(paths, _short_names(paths)):
        checkpoint = load_checkpoint(path)
        checkpoints.append((label, checkpoint))
        if untrained:
            torch.manual_seed(1)
            fresh = dataclasses.replace(checkpoint, model=Seq2Seq(checkpoint.model.config).eval())
            checkpoints.append((f"{label}, untrained", fresh))
    output.mkdir(parents=True, exist_ok=True)
    report: dict = {"models": {}}
    flows = {}
    for label, checkpoint in checkpoints:
        config, info = checkpoint.model.config, checkpoint.info
        source_path = src or Path(f"data/multi30k/val.{info.get('source_language', 'de')}.gz")
        reference_path = ref or Path(f"data/multi30k/val.{info.get('target_language', 'en')}.gz")
        sources, references = read_lines(source_path), read_lines(reference_path)
        if len(sources) != len(references):
            raise MTError(f"{source_path} has {len(sources)} lines but {reference_path} has {len(references)}")
        sources, references = sources[:sentences], references[:sentences]
        found = inspect_model(checkpoint.model, checkpoint.tokenizers, sources, references, distance, sentence)
        flow = flows[f"{label} ({config.cell})"] = found.flow
        typer.echo(
            f"{label}: {config.cell}, attention {config.attention}; |dL/dh_t| by steps before the last one read ({flow.sentences} sentences)"
        )
        for d in range(0, len(flow.hidden), max(1, len(flow.hidden) // 8)):
            cell = f"   |dL/dC| {flow.cell[d]:.3e}" if flow.cell else ""
            typer.echo(f"  {d:>3}  |dL/dh| {flow.hidden[d]:.3e}{cell}")
        typer.echo(f"  first/last step gradient ratio: {flow.first_to_last_ratio:.3e}")
        if found.gates:
            typer.echo("  encoder gates: mean (share < 0.1 / share > 0.9)")
            for layer, values in found.gates.items():
                summary = "  ".join(
                    f"{g} {v['mean']:.2f} ({v['near_0']:.0%}/{v['near_1']:.0%})" for g, v in values.items()
                )
                typer.echo(f"    {layer}: {summary}")
        if found.alignment:
            heatmap = output / ("attention-" + re.sub(r"[^\w.-]+", "-", label) + ".png")
            plot_attention(*found.alignment, heatmap)
            typer.echo(f"  attention heatmap: {heatmap}")
        report["models"][label] = {
            "cell": config.cell,
            "attention": config.attention,
            "gradient_flow": dataclasses.asdict(flow),
            "first_to_last": flow.first_to_last_ratio,
            "gates": found.gates,
        }
    plot_gradient_flow(flows, output / "gradient-flow.png")
    typer.echo(f"gradient flow plot: {output / 'gradient-flow.png'}")
    if runs:
        plot_learning_curves(runs, output / "learning-curves.png")
        typer.echo(f"learning curves: {output / 'learning-curves.png'}")
    (output / "inspect.json").write_text(json.dumps(report, indent=2) + "\n")


def _short_names(paths: list[Path]) -> list[str]:
    """Short names for files: the file or folder name, with its parent
    folder when two would otherwise read the same (runs/x/best, runs/y/best)."""
    names = [p.stem if p.suffix else p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.resolve().parent.name}/{name}" for p, name in zip(paths, names)]
    return names


@app.command("compare")
@user_errors
def compare_cli(
    ctx: typer.Context,
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
    from mt.config import ModelConfig, TrainConfig
    from mt.diagnostics import compare_cells
    from mt.tokenizer import TokenizerPair

    if minutes <= 0:
        raise MTError(f"--minutes must be > 0, got {minutes}")
    tokenizers = TokenizerPair.load(tokenizer or Path("data/tokenizers") / f"{src}-{tgt}")
    vocab_sizes = {"src_vocab_size": tokenizers.source.vocab_size, "tgt_vocab_size": tokenizers.target.vocab_size}
    config = _config(ModelConfig, {**ctx.params, **vocab_sizes})
    train_config = TrainConfig(
        batch_tokens=batch_tokens,
        max_minutes=minutes,
        max_epochs=1000,
        patience=0,
        validate_every=validate_every,
        seed=seed,
    )
    err = _stderr_console()
    corpus, validation, _ = _training_data(train, valid, src, tgt, tokenizers, train_config.max_length, err)
    with _progress_reporter(err) as reporter:
        rows = compare_cells(
            config, train_config, tokenizers, corpus, validation, output, resolve_device(device), reporter=reporter
        )
    (output / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
    typer.echo(
        "| cell | hidden | parameters | updates | tokens/s | val BLEU | sentences/s (greedy) | dL/dh first/last |"
    )
    typer.echo("|---|---|---|---|---|---|---|---|")
    for row in rows:
        typer.echo(
            f"| {row['cell']} | {row['hidden_size']} | {row['parameters']:,} | {row['updates']} | {row['tokens_per_second']:,} | "
            f"{row['validation_bleu']:.2f} | {row['sentences_per_second']} | {row['gradient_first_to_last']:.2e} |"
        )


@app.command("serve")
@user_errors
def serve_cli(
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            "-m",
            help="Checkpoint file or directory; repeat for several directions (several of one direction: an ensemble). "
            "[default: the shipped checkpoints/de-en and checkpoints/en-de]",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; any but a loopback address opens the server to other machines.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 5000,
    max_chars: Annotated[int, typer.Option(help="Most characters of text in one request.")] = 5000,
    max_items: Annotated[int, typer.Option(help="Most texts in one request's q list.")] = 100,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="MT_API_KEY",
            help="Require this key on every call but the page: api_key in the body or Authorization: Bearer KEY.",
        ),
    ] = None,
    batch_wait_ms: Annotated[
        float, typer.Option(help="How long a model's worker waits for more requests to translate with the first.")
    ] = 5.0,
    batching: Annotated[
        bool, typer.Option("--batching/--no-batching", help="Translate the requests that arrive together as one batch.")
    ] = True,
    device: DeviceOption = Device.auto,
    quantize: QuantizeOption = None,
):
    """Serve translations over HTTP: a LibreTranslate-compatible JSON API and a web page.

    POST /translate with {"q": "...", "source": "de", "target": "en"} answers
    {"translatedText": "..."}; GET /languages lists the loaded directions; the
    page at / translates as you type. Ctrl-C or SIGTERM finish the requests in
    flight, then stop the server.

    \b
    Examples:
      mt serve                          (http://127.0.0.1:5000: de->en and en->de)
      mt serve --model checkpoints/de-en --port 8080
      MT_API_KEY=secret mt serve --host 0.0.0.0
    """
    from mt.server import serve

    serve(model, host, port, max_chars, max_items, api_key, batch_wait_ms, batching, resolve_device(device), quantize)


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
