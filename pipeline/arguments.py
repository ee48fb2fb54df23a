"""The command line's arguments: every `hubert-ee` subcommand's flags, the list parsers, and `UsageError`.

This module imports only the standard library (and `hubert_ee.outputs`, itself stdlib-only), so that `hubert-ee
--help` and every `hubert-ee COMMAND --help` answer without loading torch, transformers or datasets; `hubert_ee.cli`
imports a stage module only to run it. The few choices that the model's own files define (`EXIT_BRANCHES`,
`EXIT_TRAINING_STRATEGIES`, `DEFAULT_BEAM_WIDTH`) and the training presets are repeated here for that reason; tests check that the copies
match their sources.

Errors: a usage error (a bad flag value, a file the user named that is missing) raises `UsageError`; `cli.main`
prints it as one line, `hubert-ee COMMAND: error: ...`, and exits with 2. A data error (one unreadable file, one
bad row) is reported per item by the stage, and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Sequence

from .outputs import output_file

__all__ = [
    "UsageError", "float_list", "int_list", "str_list", "check_threshold_range", "DEFAULT_THRESHOLDS",
    "DEFAULT_PATIENCES", "BASE_AUDIO_EXTENSIONS", "add_model_argument", "add_device_argument",
    "add_evaluation_arguments", "add_evaluate_arguments", "add_calibrate_arguments", "add_transcribe_arguments",
    "add_compare_arguments", "add_card_arguments", "add_history_arguments", "add_push_arguments",
    "add_common_training_arguments", "add_backbone_arguments", "add_exit_arguments", "add_train_throughput_arguments",
]


class UsageError(ValueError):
    """A command-line usage problem (a bad flag value, a missing file the user named): one line, exit code 2."""


# The sweep `hubert-ee evaluate` and `calibrate` run when no thresholds or patiences are given.
DEFAULT_THRESHOLDS: dict[str, list[float]] = {
    "confidence": [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99],
    "entropy": [1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01],
}
DEFAULT_PATIENCES: tuple[int, ...] = (1, 2, 3)

# Audio files libsndfile reads everywhere; `hubert_ee.transcribe.AUDIO_EXTENSIONS` adds .mp3 where it can.
BASE_AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif")

# Copies of configuration_hubert_ee's choices and of train.BACKBONE_PRESETS' names (tests check them).
EXIT_BRANCHES = ("transformer", "linear")
EXIT_TRAINING_STRATEGIES = ("two-stage", "joint", "distill", "joint-distill")
BACKBONE_PRESET_NAMES = ("compact", "small", "tiny")
PRECISIONS = ("auto", "fp32", "bf16")


# ---------------------------------------------------------------------------------------------- list parsers

def str_list(text: str | Sequence[str] | None) -> list[str]:
    """Comma-separated words (or a sequence of them), stripped, blanks dropped."""
    if text is None:
        return []
    parts = text.split(",") if isinstance(text, str) else text
    return [part.strip() for part in parts if part.strip()]


def float_list(text: str) -> list[float]:
    """Comma-separated numbers; an empty string is the empty list."""
    try:
        return [float(part) for part in str_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def int_list(text: str) -> list[int]:
    """Comma-separated integers; an empty string is the empty list."""
    try:
        return [int(part) for part in str_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def dataset_share(text: str) -> tuple[str, float]:
    """`DATASET=SHARE` (the last `=` splits) as `(dataset, share)`, with 0 < share < 1."""
    dataset, separator, share = str(text).rpartition("=")
    try:
        value = float(share)
    except ValueError:
        value = math.nan
    if not separator or not dataset or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected DATASET=SHARE with 0 < SHARE < 1, got {text!r}")
    return dataset, value


def check_threshold_range(criterion: str, thresholds: Sequence[float], flag: str) -> None:
    """`UsageError` for a threshold outside what the criterion compares with: a confidence is a probability, in
    [0, 1] (the model takes more, which never exits, but from the command line it is a mistake); an entropy in
    nats is >= 0. The patience criterion uses no threshold."""
    if criterion not in ("confidence", "entropy"):
        return
    low, high, meaning = (0.0, 1.0, "a probability, in [0, 1]") if criterion == "confidence" else (
        0.0, math.inf, "an entropy in nats, >= 0")
    for threshold in thresholds:
        if not low <= threshold <= high:
            raise UsageError(f"{flag} {threshold:g}: a {criterion} threshold is {meaning}")


# ---------------------------------------------------------------------------------------------- shared flags

def add_model_argument(parser: argparse.ArgumentParser, help_extra: str = "") -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="HuBERT-EE model: a folder written by `hubert-ee train` or `hubert_ee.export.save_hub_folder` "
        "(weights, config.json, processor) or a Hub id. Default: the model shipped with the package "
        "(hubert_ee.DEFAULT_MODEL), when there is one."
        + help_extra,
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto",
        help="Torch device to run on, e.g. cpu, cuda, cuda:1 (default: auto = cuda when available, else cpu).",
    )


DECODERS = ("greedy", "lm")
DEFAULT_BEAM_WIDTH = 32  # modeling_early_exit.LM_BEAM_WIDTH, the pipeline's: both decode alike when nothing is named


def add_decoder_arguments(parser: argparse.ArgumentParser) -> None:
    """`--decoder`, `--beam-width`, `--lm-alpha`, `--lm-beta` (`hubert_ee.decoding.decoder_from_args`)."""
    parser.add_argument("--decoder", choices=DECODERS, default="greedy",
                        help="greedy CTC, or beam search with the model folder's n-gram LM (language_model/, "
                             "built by `hubert-ee build-lm`).")
    parser.add_argument("--beam-width", type=int, default=DEFAULT_BEAM_WIDTH,
                        help=f"--decoder lm: beams kept (default {DEFAULT_BEAM_WIDTH}).")
    parser.add_argument("--lm-alpha", type=float, default=None,
                        help="--decoder lm: the LM's weight (default: the one stored with the LM).")
    parser.add_argument("--lm-beta", type=float, default=None,
                        help="--decoder lm: the word insertion bonus (default: the one stored with the LM).")


def add_build_lm_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `hubert-ee build-lm` (`hubert_ee.language_model`)."""
    parser.add_argument("--model", required=True,
                        help="Local model folder: its tokenizer gives the alphabet, and the LM is saved into it.")
    parser.add_argument("--dataset", default=None,
                        help="A `save_to_disk` corpus (hubert-ee synth's output) whose --split is the LM's text.")
    parser.add_argument("--arpa", default=None,
                        help="Instead of --dataset: an ARPA n-gram built elsewhere (KenLM's lmplz, another folder's "
                             "language_model/*.arpa) to check against the tokenizer's alphabet and save into --model.")
    parser.add_argument("--split", default="train", help="The split whose transcripts are the LM's text.")
    parser.add_argument("--held-out-splits", type=str_list, default=["dev", "test"],
                        help="Splits none of whose sentences may be in the LM text (checked; the build stops).")
    parser.add_argument("--extra-text", type=str_list, default=["wordnet"],
                        help="More general English text: wordnet (the Debian wordnet-base glosses); empty: none.")
    parser.add_argument("--order", type=int, default=3, help="n-gram order (1 to 5).")
    parser.add_argument("--prune", type=float, default=1e-7,
                        help="Entropy-pruning threshold (relative perplexity change; 0: no pruning).")
    parser.add_argument("--min-counts", type=int_list, default=[],
                        help="Per order from unigrams up: drop n-grams seen fewer times, e.g. 0,1,2.")
    parser.add_argument("--alpha", type=float, default=0.5, help="The LM weight stored with the LM.")
    parser.add_argument("--beta", type=float, default=1.5, help="The word insertion bonus stored with the LM.")


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """Dataset, batching and sweep flags shared by `evaluate` and `calibrate`."""
    parser.add_argument(
        "--dataset", required=True,
        help="Speech dataset: a `save_to_disk` folder, an audiofolder (metadata.csv with file_name and a transcript "
        "column) or a Hub dataset id.",
    )
    parser.add_argument("--split", default=None, help="Dataset split (needed when the dataset has several).")
    parser.add_argument("--config", dest="dataset_config", default=None,
                        help="Dataset configuration name of a Hub dataset (e.g. 'clean' for librispeech_asr).")
    parser.add_argument("--text-column", default=None,
                        help="Transcript column (default: the first of text, transcription, sentence, ...).")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="Evaluate only the first N utterances of the split (quick runs).")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="Utterances per batch, batched by length (default: 8).")
    parser.add_argument("--repeats", type=int, default=1,
                        help="Time every batch this many times per setting: more paired timings, narrower intervals, "
                        "longer runs (default: 1; accuracy never needs more).")
    parser.add_argument(
        "--confidence-thresholds", type=float_list, default=None,
        help="Comma-separated confidence thresholds to sweep (default: "
        + ",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS["confidence"]) + "; empty string: none).",
    )
    parser.add_argument(
        "--entropy-thresholds", type=float_list, default=None,
        help="Comma-separated entropy thresholds in nats to sweep (default: "
        + ",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS["entropy"]) + "; empty string: none).",
    )
    parser.add_argument(
        "--patiences", type=int_list, default=None,
        help="Comma-separated exit_patience values of the patience criterion to sweep (default: "
        + ",".join(str(p) for p in DEFAULT_PATIENCES) + "; empty string: none).",
    )
    add_decoder_arguments(parser)
    add_device_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bars.")


# ---------------------------------------------------------------------------------------------- evaluation side

def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `hubert-ee evaluate`."""
    add_model_argument(parser)
    add_evaluation_arguments(parser)
    parser.add_argument("--json", required=True, type=output_file, help="Where to write the results as JSON.")
    parser.add_argument("--markdown", default=None, type=output_file,
                        help="Also write a markdown report (tables) to this file.")
    parser.add_argument("--plot", default=None, type=output_file,
                        help="Also write a PNG plot of WER against speedup to this file.")
    parser.add_argument("--group-by", type=str_list, default=[], metavar="COLUMN[,COLUMN]",
                        help="Also break accuracy and exit depth down by these dataset columns (e.g. speaker_id).")


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `hubert-ee calibrate`."""
    add_model_argument(parser, " For calibrate it must be a local folder, whose config.json (and card, README.md) "
                       "get the choice. Without --model nothing is written into a model folder: the choice is "
                       "printed (and written to --json).")
    add_evaluation_arguments(parser)
    parser.add_argument(
        "--max-wer-increase", type=float, default=0.5,
        help="Largest WER increase over the final head that is acceptable, in absolute percentage points "
        "(default: 0.5, e.g. 5.0 %% -> at most 5.5 %%).",
    )
    parser.add_argument(
        "--min-speedup", type=float, default=1.0,
        help="A setting is only chosen when its speedup (see --choose-by) is above this (default: 1.0, i.e. faster "
        "than the full model); if none is, early exit is switched off.",
    )
    parser.add_argument(
        "--choose-by", choices=("expected", "measured"), default="expected",
        help="The speedup a setting is chosen by: expected (default: the cost model's, from the setting's exit "
        "layers and the measured cost of each part of the model, which timing noise cannot sway) or measured (the "
        "clock's; settings whose measured speedup is marked unreliable are left out).",
    )
    parser.add_argument("--json", default=None, type=output_file,
                        help="Also write the evaluation and the choice as JSON to this file.")
    parser.add_argument("--dry-run", action="store_true",
                        help="Evaluate and print the choice, but do not change the model folder.")


def add_transcribe_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `hubert-ee transcribe`."""
    add_model_argument(parser)
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER",
                        help="Audio files, or folders searched recursively for "
                        + ", ".join(BASE_AUDIO_EXTENSIONS) + " files (and .mp3 where libsndfile decodes MP3).")
    parser.add_argument("--json", default=None, type=output_file,
                        help="Also write the results (and errors) as JSON to this file.")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="Files (or 20 s windows of long files) per batch (default: 8). Use 1 for per-file "
                        "latencies in time_ms.")
    parser.add_argument("--exit-criterion", choices=["confidence", "entropy", "patience"], default=None,
                        help="Exit criterion (default: the model config's exit_criterion). Giving any --exit-* option "
                        "turns early exit on, even where the model's config has it off.")
    parser.add_argument("--exit-threshold", type=float, default=None,
                        help="Threshold of the criterion: minimum confidence in [0, 1], or maximum mean entropy in "
                        "nats (default: the model config's exit_threshold).")
    parser.add_argument("--exit-patience", type=int, default=None,
                        help="Agreeing consecutive exits needed by the patience criterion (default: the config's).")
    parser.add_argument("--no-early-exit", action="store_true",
                        help="Run the full model (every layer, final head), as plain HubertForCTC does.")
    parser.add_argument("--max-length-s", type=float, default=30.0,
                        help="Audio longer than this many seconds is transcribed in overlapping windows (default: 30).")
    parser.add_argument("--chunk-length-s", type=float, default=20.0,
                        help="Window length in seconds for long audio (default: 20).")
    parser.add_argument("--stride-length-s", type=float, default=2.0,
                        help="Context in seconds on each side of a window boundary, i.e. windows overlap by twice "
                        "this (default: 2).")
    add_decoder_arguments(parser)
    add_device_argument(parser)


def evaluation_json(text: str) -> tuple[str, dict]:
    """`NAME=EVAL.json` -> `(NAME, the result)`: an argparse type for `hubert-ee compare`."""
    name, separator, file = text.partition("=")
    if not separator or not name or not file:
        raise argparse.ArgumentTypeError(f"expected NAME=EVAL.json, got {text!r}")
    path = Path(file)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{file} does not exist")
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"{file} is not JSON: {error}") from None
    missing = {"final_wer", "exits", "sweep", "oracle", "num_hidden_layers"} - set(result)
    if missing:
        raise argparse.ArgumentTypeError(f"{file} is not `hubert-ee evaluate` output: it lacks {sorted(missing)}")
    return name, result


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `hubert-ee compare`."""
    parser.add_argument("results", nargs="+", type=evaluation_json, metavar="NAME=EVAL.json",
                        help="A name for the table and a `hubert-ee evaluate --json` file.")
    parser.add_argument("--budgets", default="0.5,2", type=float_list,
                        help="Comma-separated WER budgets in absolute points (default: 0.5,2).")
    parser.add_argument("--markdown", default=None, type=output_file, help="Also write the table to this file.")
    parser.add_argument("--plot", default=None, type=output_file,
                        help="Also write a PNG of every model's sweep to this file.")


# ---------------------------------------------------------------------------------------------- publishing

def add_card_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `hubert-ee card`."""
    parser.add_argument("--model", required=True, help="The HuBERT-EE model folder the card describes.")
    parser.add_argument("--eval", required=True, help="`hubert-ee evaluate` JSON on the in-domain test split.")
    parser.add_argument("--ood-eval", default=None, help="Optional evaluate JSON on out-of-domain (real) speech.")
    parser.add_argument("--lm-eval", default=None,
                        help="Optional `hubert-ee evaluate --decoder lm` JSON on the same test split: the card's "
                             "section on decoding with the folder's n-gram LM.")
    parser.add_argument("--ood-lm-eval", default=None,
                        help="Optional `hubert-ee evaluate --decoder lm` JSON on the --ood-eval utterances: the "
                             "model's scores with the LM beside the greedy ones (and the peer's).")
    parser.add_argument("--peer-eval", default=None,
                        help="Optional JSON of a peer recogniser on the --ood-eval utterances "
                             "(recipes/pocketsphinx_peer.py), shown beside the model's scores.")
    parser.add_argument("--commands", default=None, help="Text file with the exact commands that made the model.")
    parser.add_argument("--training-data", default=None, metavar="MARKDOWN",
                        help="Markdown file describing the training data and crediting its sources (the card's "
                             "\"Training data\" section).")
    parser.add_argument("--plot", default=None, help="PNG plot (from evaluate --plot) to show in the card.")
    parser.add_argument("--comparison", default=None,
                        help="Markdown table from `hubert-ee compare --markdown` (the candidates the model was chosen "
                             "from), shown in the card.")
    parser.add_argument("--history", default=None,
                        help="Training history JSON (`hubert-ee history`): sessions, steps and hours, shown in the card.")
    parser.add_argument("--curve", default=None, help="Learning-curve PNG (`hubert-ee history --plot`) for the card.")
    parser.add_argument("--repo-id", default="ORG/hubert-ee", help="Hub repository id used in the usage snippets.")
    parser.add_argument("--dataset-name", default="synthetic-english-speech", help="Name of the training data.")
    parser.add_argument("--output", default=None, type=output_file,
                        help="Also write a copy of the card to this file (e.g. model_card.md). The card itself always "
                             "goes to MODEL/README.md, what the Hub shows; nothing else is written unless named here.")


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `hubert-ee push`."""
    parser.add_argument("--model", required=True, help="Hub-ready folder (from `hubert-ee train`, with README.md "
                                                         "from `hubert-ee card`).")
    parser.add_argument("--repo-id", required=True, help="Target repository, ORG/NAME.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login).")
    parser.add_argument("--dry-run", action="store_true", help="Only list the files that would be uploaded.")


def add_history_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `hubert-ee history`."""
    parser.add_argument("--history", required=True, type=output_file,
                        help="The history JSON file (created if absent).")
    parser.add_argument("--session", type=int, default=None, help="Session number of the entry to record.")
    parser.add_argument("--run", default=None, help="A training output folder (its newest checkpoint is read).")
    parser.add_argument("--eval-json", default=None,
                        help="Instead of --run: a `hubert-ee evaluate` JSON on the dev split (final-head CER/WER).")
    parser.add_argument("--speech-hours", type=float, default=None,
                        help="With --eval-json: hours of speech that session trained on.")
    parser.add_argument("--real-speech-eval", default=None, metavar="JSON",
                        help="A `hubert-ee evaluate` JSON of the session's final model on held-out real speech: "
                             "recorded beside the synthetic dev points and drawn on the curve; with --session "
                             "alone it is added to that session's recorded entry.")
    parser.add_argument("--speech-seconds-per-step", type=float, default=None,
                        help="With --run: speech per step for logs that predate the logged `speech_hours`.")
    parser.add_argument("--note", default="", help="What the session did (init, data, schedule).")
    parser.add_argument("--plot", default=None, type=output_file, help="Write the learning curve PNG here.")
    parser.add_argument("--target-cer", type=float, default=None,
                        help="Fit a power law to each session's last dev CER and say how many hours of speech it "
                             "needs to reach this CER (%%); the plot draws the fit.")
    parser.add_argument("--target-real-cer", type=float, default=None,
                        help="The same for the real-speech dev points (--real-speech-eval of each session): the "
                             "fit, the hours it needs to reach this CER (%%), and the fit on the plot.")


# ---------------------------------------------------------------------------------------------- training

def add_common_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Data and optimisation flags shared by `hubert-ee train-backbone` and `hubert-ee train`."""
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True,
                      help="Training data: a save_to_disk folder (e.g. from `hubert-ee synth`), an audiofolder "
                           "(metadata.csv with file_name,transcription) or a Hub dataset id (needs --dataset-config).")
    data.add_argument("--dataset-config", default=None, help="Hub dataset configuration, e.g. 'clean'.")
    data.add_argument("--train-split", default="train", help="Split to train on (default: train).")
    data.add_argument("--eval-split", default="dev",
                      help="Split to evaluate on during training (default: dev; 'none' to skip evaluation).")
    data.add_argument("--max-train-samples", type=int, default=None, help="Use at most this many training clips.")
    data.add_argument("--max-eval-samples", type=int, default=None, help="Use at most this many evaluation clips.")
    data.add_argument("--pack-seconds", type=float, default=None, metavar="S",
                      help="Pack training clips into rows of S seconds (several clips each, no padding, no attention "
                           "mask), augmented anew on every pass; needs --max-steps (default: one clip per row, "
                           "length-grouped batches, no augmentation).")
    data.add_argument("--more-train-data", action="append", metavar="DATASET",
                      help="With --pack-seconds: another corpus (same forms as --dataset) whose --train-split is "
                           "trained on too; repeat for more.")
    data.add_argument("--oversample-data", action="append", type=dataset_share, metavar="DATASET=SHARE",
                      help="With --pack-seconds: another corpus (same forms as --dataset) whose --train-split is "
                           "repeated whole so that it makes about SHARE (0 < SHARE < 1) of the training audio, e.g. "
                           "a small real-speech set beside hours of synthetic speech; each repeat is augmented anew. "
                           "Repeat the flag for more.")
    data.add_argument("--no-augment", action="store_true",
                      help="With --pack-seconds: no on-the-fly speed/volume/reverberation/telephone/noise effects.")
    data.add_argument("--num-proc", type=int, default=1,
                      help="Processes for audio decoding and feature preparation (large corpora: use the cores).")
    run = parser.add_argument_group("optimisation")
    run.add_argument("--output", required=True,
                     help="Output folder: the final Hub-ready model; Trainer checkpoints go to OUTPUT/checkpoints.")
    run.add_argument("--epochs", type=float, default=10.0, help="Training epochs (ignored when --max-steps is set).")
    run.add_argument("--max-steps", type=int, default=0, help="Stop after this many optimiser steps (0: use --epochs).")
    run.add_argument("--max-minutes", type=float, default=None,
                     help="Wall-clock budget of the training loop in minutes (data preparation not counted): after "
                          "the step that crosses it, training stops, a checkpoint is saved and the final evaluation "
                          "and save still run. The learning-rate schedule still follows --max-steps (or --epochs), "
                          "so set --max-steps to about what fits in the budget.")
    run.add_argument("--batch-size", type=int, default=16, help="Clips per device per step.")
    run.add_argument("--grad-accum", type=int, default=1, help="Gradient accumulation steps.")
    run.add_argument("--learning-rate", type=float, default=5e-4, help="Peak learning rate (AdamW).")
    run.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay.")
    run.add_argument("--warmup-steps", type=int, default=200, help="Linear warm-up steps before the schedule.")
    run.add_argument("--lr-scheduler", default="cosine", help="transformers scheduler name (default: cosine).")
    run.add_argument("--max-grad-norm", type=float, default=1.0, help="Gradient clipping norm.")
    run.add_argument("--logging-steps", type=int, default=50, help="Log the training loss every N steps.")
    run.add_argument("--eval-steps", type=int, default=500, help="Evaluate every N steps (0: only at the end).")
    run.add_argument("--save-steps", type=int, default=500, help="Write a resumable checkpoint every N steps.")
    run.add_argument("--seed", type=int, default=42, help="Random seed (model init, data order).")
    run.add_argument("--resume", action="store_true",
                     help="Resume from the newest complete checkpoint in OUTPUT/checkpoints (starts fresh if there is "
                          "none); newer ones that a crash left incomplete are skipped, each named with its problem.")
    run.add_argument("--precision", choices=PRECISIONS, default="auto",
                     help="auto: bf16 autocast where the device computes bf16 natively (CUDA with bf16, CPUs with "
                          "AVX512-BF16 or AMX), fp32 elsewhere; fp32 or bf16 force one (default: auto).")
    run.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="Same as --precision fp32.")
    run.add_argument("--torch-compile", action="store_true",
                     help="Train the model through torch.compile (the Trainer's torch_compile, inductor): it pays "
                          "where shapes repeat, e.g. --pack-seconds rows, and costs about a minute of compilation "
                          "first (BENCHMARKS.md, \"Training throughput\").")
    run.add_argument("--dataloader-workers", type=int, default=0, help="DataLoader worker processes.")
    run.add_argument("--no-progress", action="store_true", help="Hide the Trainer's progress bars.")


def add_backbone_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `hubert-ee train-backbone`."""
    add_common_training_arguments(parser)
    arch = parser.add_argument_group("architecture")
    arch.add_argument("--preset", default="small", choices=BACKBONE_PRESET_NAMES,
                      help="Backbone size (default: small, 12 layers, ~10M parameters).")
    arch.add_argument("--init-from", default=None, metavar="MODEL",
                      help="Start from the weights of this checkpoint (a HubertForCTC or HuBERT-EE folder or Hub id, "
                           "e.g. models/hubert-ee-compact-synth) instead of a random --preset model; its architecture "
                           "and tokenizer are kept, and the optimizer starts fresh (use --warmup-steps).")
    arch.add_argument("--mask-time-prob", type=float, default=None,
                      help="SpecAugment: share of frames masked in time during training (default: the preset's or "
                           "the checkpoint's).")
    arch.add_argument("--num-hidden-layers", type=int, default=None, help="Override the preset's layer count.")
    arch.add_argument("--hidden-size", type=int, default=None, help="Override the preset's hidden size.")
    arch.add_argument("--intermediate-size", type=int, default=None, help="Override the preset's FFN size.")
    arch.add_argument("--num-attention-heads", type=int, default=None, help="Override the preset's head count.")


def add_exit_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `hubert-ee train`."""
    add_common_training_arguments(parser)
    exits = parser.add_argument_group("exits")
    exits.add_argument("--model", required=True,
                       help="A HubertForCTC checkpoint (folder or Hub id, e.g. facebook/hubert-large-ls960-ft) to "
                            "convert, or a HuBERT-EE folder to continue training.")
    exits.add_argument("--exit-layers", default=None, type=int_list,
                       help="Comma-separated 1-based encoder layers that get a branch (default: spread evenly).")
    exits.add_argument("--exit-branch", default=None, choices=EXIT_BRANCHES, help="Branch type (default: transformer).")
    exits.add_argument("--strategy", default="two-stage", choices=EXIT_TRAINING_STRATEGIES,
                       help="two-stage: frozen backbone, branches learn; joint: everything learns; distill: frozen "
                            "backbone, branches learn from labels and the final head's posteriors; joint-distill: "
                            "everything learns, branches as in distill.")
    exits.add_argument("--exit-loss-weight", type=float, default=None,
                       help="joint, joint-distill: weight of the mean branch loss.")
    exits.add_argument("--distill-weight", type=float, default=None,
                       help="distill, joint-distill: share of the KL term in [0, 1].")
    exits.add_argument("--distill-temperature", type=float, default=None, help="distill: softmax temperature.")
    exits.add_argument("--random-branch-init", action="store_true",
                       help="Initialise new branches randomly instead of from the layer after them and the final head.")


def throughput_configurations(text: str) -> list[tuple[str, str, bool]]:
    """`BATCHING:PRECISION[:compiled],...` -> `[(batching, precision, compiled)]`; `ArgumentTypeError` names a bad
    item."""
    configurations = []
    for item in str_list(text):
        parts = item.split(":")
        batching, precision, rest = parts[0], parts[1] if len(parts) > 1 else "", parts[2:]
        if batching not in ("packed", "padded") or precision not in ("fp32", "bf16") or rest not in ([], ["compiled"]):
            raise argparse.ArgumentTypeError(f"{item!r} is not BATCHING:PRECISION[:compiled] (packed|padded : "
                                             "fp32|bf16)")
        configurations.append((batching, precision, bool(rest)))
    return configurations


def add_train_throughput_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `python -m hubert_ee.train_throughput`."""
    parser.add_argument("--model", required=True, help="checkpoint whose backbone is trained (HubertForCTC or HuBERT-EE)")
    parser.add_argument("--dataset", required=True, help="a `hubert-ee synth` corpus (its train split is used)")
    parser.add_argument("--configurations", default="packed:fp32,padded:fp32,packed:bf16",
                        help="comma-separated BATCHING:PRECISION[:compiled] (packed|padded : fp32|bf16; compiled: "
                             "torch.compile, its compilation left out of the timing by the warm-up steps)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration first")
    parser.add_argument("--row-seconds", type=float, default=8.0, help="packed row length")
    parser.add_argument("--rows-per-batch", type=int, default=4, help="packed rows per batch")
    parser.add_argument("--max-clips", type=int, default=4000, help="clips read from the corpus")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (data order, augmentation)")
    parser.add_argument("--json", default=None, type=output_file, help="write the rows here")
