"""Evaluate stage: accuracy and speed of every exit, of a sweep of exit thresholds, and of the oracle.

`hubert-ee evaluate --model M --dataset D --json OUT.json [--markdown OUT.md] [--plot OUT.png] [--group-by COL]`

What is measured (all WERs and CERs are corpus-level percentages after `hubert_ee.text.normalize_text`, see
`hubert_ee.metrics`; every row that has a WER has the CER beside it):

* **Exits forced** (`exits`): one full-depth pass per batch with `output_exit_logits=True` gives every branch's
  logits and the final head's; each is greedy-CTC decoded on its valid (non-padding) frames. The last row of
  `exits` is the final head (`layer == num_hidden_layers`, `wer == final_wer`).
* **Sweep** (`sweep`): for each criterion setting (confidence and entropy thresholds, patience values) the model
  runs `generate(early_exit=True, ...)`; each row gives the WER, the mean exit layer, `layers_skipped`
  (`1 - mean_exit_layer / num_hidden_layers`, the share of encoder layers not run), the measured wall-clock
  `speedup` and `ideal_speedup` (`num_hidden_layers / mean_exit_layer`, the cost model below).
* **Measured speedup**: the dataset is sorted by length (longest first) and cut into batches; for every setting
  each batch is run with `early_exit=False` (the baseline: the plain HuBERT CTC model) and with the setting,
  alternating which of the two goes first from batch to batch (interleaving cancels drift: clocks, caches,
  thermal state). Times are summed with `time.perf_counter` under `torch.inference_mode` (with CUDA
  synchronisation on GPUs); `speedup = baseline time / early-exit time` on the same batches. Feature extraction is
  done once up front and is not timed. One warm-up call of each kind runs before any timing.
* **Oracle** (`oracle`): each utterance takes the earliest exit whose greedy transcript equals the final head's
  (else the final head). Its WER is therefore the final head's. Its speedup is measured like the sweep's: the
  model runs with each utterance's exit forced to its oracle layer (`hubert_ee.forced_exits.forced_exit_targets`;
  branches and the criterion still run, only the decision is replaced), timed against the full model on the same
  batches. It bounds what any exit criterion can reach on this data. `ideal_speedup` (`num_hidden_layers /
  mean_exit_layer`, layers run) is given beside it, as for the sweep rows.
* **Groups** (`groups`, with `group_by`): for each named dataset column (a speaker, voice or domain column, e.g.
  LibriSpeech's `speaker_id`) and each of its values, the utterance count, the final head's WER/CER, every forced
  exit's WER, the oracle's mean exit layer, and each sweep setting's WER, CER and mean exit layer on that group's
  utterances. Speed is not split by group (batches mix groups).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .forced_exits import forced_exit_targets, prepare_forced_targets
from .metrics import char_error_rate, word_error_rate
from .outputs import output_file, write_json, write_text
from .plots import pyplot, save_figure

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DEFAULT_PATIENCES",
    "evaluate_model",
    "markdown_report",
    "plot_tradeoff",
    "load_model_and_processor",
    "resolve_model_spec",
    "add_arguments",
    "run",
]

DEFAULT_THRESHOLDS: dict[str, list[float]] = {
    "confidence": [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99],
    "entropy": [1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01],
}
DEFAULT_PATIENCES: tuple[int, ...] = (1, 2, 3)
NO_DEFAULT_MODEL = ("no --model given, and there is no default model: this install lacks the repository's "
                    "models/hubert-ee-compact-synth folder and HUBERT_EE_DEFAULT_MODEL is not set")


class UsageError(ValueError):
    """A command-line usage problem, reported as `error: ...` with exit code 2."""


# ---------------------------------------------------------------------------------------------
# Helpers shared with calibrate / transcribe
# ---------------------------------------------------------------------------------------------

def resolve_model_spec(model: str | None) -> str:
    """`--model`, or `hubert_ee.DEFAULT_MODEL` when that exists; else a `UsageError`."""
    if model:
        return str(model)
    package = importlib.import_module(__package__ or "hubert_ee")
    default = getattr(package, "DEFAULT_MODEL", None)
    if not default:
        raise UsageError(NO_DEFAULT_MODEL)
    return str(default)


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _looks_like_local_path(spec: str) -> bool:
    """A Hub id is `name` or `owner/name`; anything else path-like (absolute, `./x`, `~/x`, `a/b/c`) is a folder."""
    return spec.startswith((".", "~", "/")) or "\\" in spec or spec.count("/") > 1 or Path(spec).is_absolute()


def load_model_and_processor(spec: str | Path, device: str | torch.device | None = None):
    """Load a HuBERT-EE model (folder or Hub id) and the processor saved beside it, in eval mode on `device`."""
    from modeling_hubert_ee import HubertEEForCTC

    from .export import check_vocab_matches, load_processor

    spec = str(Path(spec).expanduser()) if str(spec).startswith("~") else str(spec)
    # A mistyped folder would otherwise be tried as a Hub id: retries, then an error about the network.
    if _looks_like_local_path(spec) and not Path(spec).exists():
        raise FileNotFoundError(f"model folder {spec} does not exist")
    model = HubertEEForCTC.from_pretrained(spec)
    processor = load_processor(spec)
    check_vocab_matches(model, processor)
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    return model.to(device).eval(), processor


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_decode(processor, ids) -> list[str]:
    tokenizer = getattr(processor, "tokenizer", processor)
    if isinstance(ids, torch.Tensor):
        ids = ids.cpu().tolist()
    return tokenizer.batch_decode(ids)


def featurize(processor, audios: Sequence[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised, padded `input_values` and the sample-level `attention_mask`, on `device`."""
    feature_extractor = getattr(processor, "feature_extractor", processor)
    features = feature_extractor(
        [np.asarray(audio, dtype=np.float32) for audio in audios],
        sampling_rate=feature_extractor.sampling_rate,
        return_tensors="pt",
        padding=True,
        return_attention_mask=True,
    )
    return features["input_values"].to(device), features["attention_mask"].to(device)


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _item(dataset, index: int) -> dict:
    return dataset[index]


def _tqdm(iterable, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def _settings(thresholds: dict[str, list[float]] | None, patiences) -> list[tuple[str, float | None, int | None]]:
    thresholds = DEFAULT_THRESHOLDS if thresholds is None else thresholds
    unknown = set(thresholds) - {"confidence", "entropy"}
    if unknown:
        raise ValueError(
            f"thresholds has unknown criteria {sorted(unknown)}: only 'confidence' and 'entropy' take thresholds "
            "(patience values go in `patiences`)."
        )
    settings: list[tuple[str, float | None, int | None]] = []
    for criterion in ("confidence", "entropy"):
        for threshold in thresholds.get(criterion) or []:
            settings.append((criterion, float(threshold), None))
    for patience in patiences or ():
        if isinstance(patience, bool) or int(patience) != patience or int(patience) < 1:
            raise ValueError(f"patience values must be integers >= 1, got {patience!r}")
        settings.append(("patience", None, int(patience)))
    return settings


def evaluate_model(
    model,
    processor,
    dataset,
    thresholds: dict[str, list[float]] | None = None,
    patiences: Sequence[int] | None = (1, 2, 3),
    batch_size: int = 8,
    repeats: int = 1,
    *,
    model_name: str | None = None,
    dataset_name: str | None = None,
    progress: bool = True,
    group_by: Sequence[str] = (),
) -> dict[str, Any]:
    """Evaluate `model` on `dataset` (rows with `audio`, a float array at 16 kHz, and `text`).

    `thresholds` maps `"confidence"` / `"entropy"` to the thresholds to sweep (default `DEFAULT_THRESHOLDS`; a
    criterion left out is not swept); `patiences` are the `exit_patience` values of the patience criterion
    (empty: not swept). `repeats` times each batch that many times per setting (more stable speedups).
    Utterances too short for the convolutional front end are skipped with a warning
    (`num_skipped_too_short`). `group_by` names dataset columns to break the accuracy down by (module
    docstring, "Groups"). See the module docstring for what is measured and how; the result is
    JSON-serialisable.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    config = model.config
    settings = _settings(thresholds, patiences)
    for criterion, threshold, patience in settings:  # fail before any work on a bad value
        overrides = {"exit_criterion": criterion}
        if threshold is not None:
            overrides["exit_threshold"] = threshold
        if patience is not None:
            overrides["exit_patience"] = patience
        config.validate_exit_settings(**overrides)

    group_by = list(group_by or ())
    columns = list(getattr(dataset, "column_names", None) or (_item(dataset, 0).keys() if len(dataset) else []))
    unknown_columns = [column for column in group_by if column not in columns]
    if unknown_columns:
        raise ValueError(f"group_by: the dataset has no column(s) {unknown_columns}; its columns: {columns}")

    model.eval()
    device = _model_device(model)
    num_layers = int(config.num_hidden_layers)
    exit_layers = [int(layer) for layer in config.exit_layers]
    pad_id = config.pad_token_id

    # ---- data: sorted by length (longest first), too-short utterances left out
    field = model.receptive_field()
    audios, references, skipped = [], [], 0
    group_values: dict[str, list[str]] = {column: [] for column in group_by}
    for index in range(len(dataset)):
        row = _item(dataset, index)
        audio = np.asarray(row["audio"], dtype=np.float32).reshape(-1)
        if audio.size < field:
            skipped += 1
            continue
        audios.append(audio)
        references.append("" if row.get("text") is None else str(row["text"]))
        for column in group_by:
            group_values[column].append(str(row[column]))
    if skipped:
        logger.warning("Skipped %d utterance(s) shorter than %d samples (the model's receptive field).", skipped, field)
    if not audios:
        raise ValueError("The dataset has no utterance long enough to evaluate.")
    count = len(audios)
    order = sorted(range(count), key=lambda i: -audios[i].size)
    batches = []
    for start in range(0, count, batch_size):
        indices = order[start : start + batch_size]
        input_values, attention_mask = featurize(processor, [audios[i] for i in indices], device)
        batches.append((indices, input_values, attention_mask))

    # ---- every exit forced, and the final head: one full-depth pass per batch
    num_heads = len(exit_layers) + 1
    head_texts = [[""] * count for _ in range(num_heads)]
    with torch.inference_mode():
        for indices, input_values, attention_mask in _tqdm(
            batches, desc="all exits", disable=not progress, leave=False
        ):
            output = model(input_values, attention_mask=attention_mask, output_exit_logits=True)
            lengths = model.frame_lengths(attention_mask.sum(-1))
            for head, logits in enumerate([*output.exit_logits, output.logits]):
                ids = logits.argmax(-1)
                padding = torch.arange(ids.shape[1], device=ids.device)[None, :] >= lengths[:, None]
                texts = batch_decode(processor, ids.masked_fill(padding, pad_id))
                for i, text in zip(indices, texts):
                    head_texts[head][i] = text
    final_texts = head_texts[-1]
    exits = [
        {"layer": layer, "wer": word_error_rate(references, head_texts[head]),
         "cer": char_error_rate(references, head_texts[head])}
        for head, layer in enumerate([*exit_layers, num_layers])
    ]
    final_wer = exits[-1]["wer"]  # the last row is the final head

    # ---- oracle: earliest exit agreeing with the final head
    oracle_layers, oracle_texts = [], []
    for i in range(count):
        for head, layer in enumerate(exit_layers):
            if head_texts[head][i] == final_texts[i]:
                oracle_layers.append(layer)
                oracle_texts.append(head_texts[head][i])
                break
        else:
            oracle_layers.append(num_layers)
            oracle_texts.append(final_texts[i])

    # ---- timing
    def timed(call):
        synchronize(device)
        start = time.perf_counter()
        result = call()
        synchronize(device)
        return time.perf_counter() - start, result

    with torch.inference_mode():  # warm-up (allocator, kernels, lazy init) before any timing
        _, first_values, first_mask = batches[0]
        model.generate(first_values, first_mask, early_exit=False)
        model.generate(first_values, first_mask, early_exit=True)

    def race(candidate):
        """Time `candidate(indices, input_values, attention_mask)` against the full model (`early_exit=False`) on
        every batch, interleaved (the order alternates per batch and repeat); returns both total times and the
        candidate's first output per batch."""
        baseline_time = candidate_time = 0.0
        outputs = []
        with torch.inference_mode():
            for number, (indices, input_values, attention_mask) in enumerate(batches):
                for repeat in range(repeats):
                    for is_candidate in ((True, False) if (number + repeat) % 2 == 1 else (False, True)):
                        if not is_candidate:
                            seconds, _ = timed(lambda: model.generate(input_values, attention_mask, early_exit=False))
                            baseline_time += seconds
                            continue
                        seconds, output = timed(lambda: candidate(indices, input_values, attention_mask))
                        candidate_time += seconds
                        if repeat == 0:
                            outputs.append((indices, output))
        return baseline_time, candidate_time, outputs

    # ---- oracle, timed with its exits forced (the real criterion still runs, its answer is replaced)
    oracle_targets = {  # on the model's device before any timing (see prepare_forced_targets)
        tuple(indices): prepare_forced_targets(model, [oracle_layers[i] for i in indices], device)
        for indices, _, _ in batches
    }

    def oracle_call(indices, input_values, attention_mask):
        with forced_exit_targets(model, oracle_targets[tuple(indices)]):
            return model.generate(input_values, attention_mask, early_exit=True)

    def measured(texts, layers, baseline_time, early_time) -> dict:
        """Accuracy, depth and speed of one way of exiting (a sweep setting or the oracle)."""
        mean_layer = float(np.mean(layers))
        return {
            "wer": word_error_rate(references, texts),
            "cer": char_error_rate(references, texts),
            "mean_exit_layer": mean_layer,
            "layers_skipped": 1.0 - mean_layer / num_layers,
            "speedup": baseline_time / early_time if early_time > 0 else math.inf,
            "ideal_speedup": num_layers / mean_layer,
            "baseline_seconds": baseline_time,
            "early_exit_seconds": early_time,
        }

    baseline_time, oracle_time, _ = race(oracle_call)
    oracle = measured(oracle_texts, oracle_layers, baseline_time, oracle_time)

    # ---- sweep, timed against the full model on the same batches, interleaved
    sweep, sweep_outputs = [], []
    for criterion, threshold, patience in _tqdm(settings, desc="early-exit sweep", disable=not progress):
        overrides: dict[str, Any] = {"early_exit": True, "exit_criterion": criterion}
        if threshold is not None:
            overrides["exit_threshold"] = threshold
        if patience is not None:
            overrides["exit_patience"] = patience
        baseline_time, early_time, outputs = race(
            lambda indices, input_values, attention_mask: model.generate(input_values, attention_mask, **overrides)
        )
        texts = [""] * count
        layers = [num_layers] * count
        for indices, output in outputs:
            for i, text, layer in zip(indices, batch_decode(processor, output.sequences), output.exit_layer.tolist()):
                texts[i], layers[i] = text, int(layer)
        row = {"criterion": criterion, "threshold": threshold, **measured(texts, layers, baseline_time, early_time)}
        if patience is not None:
            row["patience"] = patience
        sweep.append(row)
        sweep_outputs.append((row, texts, layers))

    groups = {
        column: _group_breakdown(group_values[column], references, head_texts, [*exit_layers, num_layers],
                                 oracle_layers, sweep_outputs)
        for column in group_by
    }

    return {
        "model": model_name if model_name is not None else str(getattr(config, "_name_or_path", "") or "<in-memory>"),
        "dataset": dataset_name if dataset_name is not None else "<in-memory>",
        "num_utterances": count,
        "num_skipped_too_short": skipped,
        "num_hidden_layers": num_layers,
        "exit_layers": exit_layers,
        "final_wer": final_wer,
        "final_cer": exits[-1]["cer"],
        "exits": exits,
        "sweep": sweep,
        "oracle": oracle,
        **({"groups": groups} if group_by else {}),
        "timing": {
            "device": str(device),
            "batch_size": batch_size,
            "repeats": repeats,
            "method": "sum of perf_counter times per batch, early_exit=False vs early exit, interleaved",
        },
        "wer_note": "corpus-level WER and CER in percent after hubert_ee.text.normalize_text",
    }


def _group_breakdown(values, references, head_texts, head_layers, oracle_layers, sweep_outputs) -> list[dict]:
    """Per value of one group column: accuracy of the final head, of each forced exit and of each sweep setting on
    that group's utterances, and where they exit (see the module docstring, "Groups")."""
    entries = []
    for value in sorted(set(values)):
        members = [i for i, item in enumerate(values) if item == value]
        refs = [references[i] for i in members]

        def pick(items):
            return [items[i] for i in members]

        exits = [{"layer": layer, "wer": word_error_rate(refs, pick(head_texts[head]))}
                 for head, layer in enumerate(head_layers)]
        entry = {
            "value": value,
            "utterances": len(members),
            "final_wer": exits[-1]["wer"],  # the last row is the final head
            "final_cer": char_error_rate(refs, pick(head_texts[-1])),
            "exits": exits,
            "oracle_mean_exit_layer": float(np.mean(pick(oracle_layers))),
            "sweep": [],
        }
        for row, texts, layers in sweep_outputs:
            setting = {key: row[key] for key in ("criterion", "threshold", "patience") if key in row}
            entry["sweep"].append({**setting, "wer": word_error_rate(refs, pick(texts)),
                                   "cer": char_error_rate(refs, pick(texts)),
                                   "mean_exit_layer": float(np.mean(pick(layers)))})
        entries.append(entry)
    return entries


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------

def _setting_label(row: dict) -> str:
    if row["criterion"] == "patience":
        return f"patience {row.get('patience')}"
    return f"{row['criterion']} {row['threshold']:g}"


def markdown_report(result: dict) -> str:
    """A markdown summary of an `evaluate_model` result: per-exit WERs, the sweep and the oracle."""
    num_layers = result["num_hidden_layers"]
    lines = [
        "# HuBERT-EE evaluation",
        "",
        f"- model: `{result.get('model')}`",
        f"- dataset: `{result.get('dataset')}` ({result['num_utterances']} utterances)",
        f"- encoder layers: {num_layers}; exits after layers {result['exit_layers']}",
        f"- final head WER: {result['final_wer']:.2f} %"
        + (f", CER: {result['final_cer']:.2f} %" if "final_cer" in result else ""),
        "",
        ("WER and CER" if "final_cer" in result else "WER")
        + ": corpus-level, in percent, after `hubert_ee.text.normalize_text`. Speedup: wall-clock time of the full "
        "model (`early_exit=False`) divided by that of early exit, on the same batches, interleaved.",
        "",
    ]
    # Results written before CER was reported have no "cer" fields: their tables keep their old columns.
    cer = "final_cer" in result

    def rates(row):
        return f"{row['wer']:.2f} |" + (f" {row['cer']:.2f} |" if cer else "")

    rate_heads, rate_rule = ("WER (%) | CER (%) |", "---:|---:|") if cer else ("WER (%) |", "---:|")
    lines += ["## Each exit forced", "", "| layer | " + rate_heads, "|---:|" + rate_rule]
    for row in result["exits"]:
        name = f"{row['layer']} (final head)" if row["layer"] == num_layers else str(row["layer"])
        lines.append(f"| {name} | " + rates(row))
    lines += [
        "",
        "## Early-exit sweep",
        "",
        "| criterion | threshold / patience | " + rate_heads + " mean exit layer | layers skipped | speedup |",
        "|---|---:|" + rate_rule + "---:|---:|---:|",
    ]
    for row in result["sweep"]:
        setting = f"patience {row['patience']}" if row["criterion"] == "patience" else f"{row['threshold']:g}"
        lines.append(
            f"| {row['criterion']} | {setting} | " + rates(row) + f" {row['mean_exit_layer']:.2f} | "
            f"{100 * row.get('layers_skipped', 1 - row['mean_exit_layer'] / num_layers):.1f} % | "
            f"{row['speedup']:.2f}x |"
        )
    oracle = result["oracle"]
    lines += [
        "",
        "## Oracle",
        "",
        "Each utterance leaves at the earliest exit whose transcript equals the final head's.",
        "",
        "| " + rate_heads + " mean exit layer | speedup |",
        "|" + rate_rule + "---:|---:|",
        "| " + rates(oracle) + f" {oracle['mean_exit_layer']:.2f} | {oracle['speedup']:.2f}x |",
        "",
    ]
    for column, entries in (result.get("groups") or {}).items():
        lines += [
            f"## By `{column}`",
            "",
            "Final head and oracle per group; each sweep setting per group is in the JSON (`groups`).",
            "",
            f"| {column} | utterances | final WER (%) | final CER (%) | oracle mean exit layer |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [f"| {entry['value']} | {entry['utterances']} | {entry['final_wer']:.2f} | {entry['final_cer']:.2f} "
                  f"| {entry['oracle_mean_exit_layer']:.2f} |" for entry in entries]
        lines.append("")
    return "\n".join(lines)


def plot_tradeoff(result: dict, path: str | Path) -> Path:
    """PNG of WER against speedup: one curve per criterion, the oracle and the final head (speedup 1)."""
    figure, axes = pyplot().subplots(figsize=(7, 4.5))
    markers = {"confidence": "o", "entropy": "s", "patience": "^"}
    for criterion in ("confidence", "entropy", "patience"):
        rows = sorted((row for row in result["sweep"] if row["criterion"] == criterion), key=lambda r: r["speedup"])
        if rows:
            axes.plot([r["speedup"] for r in rows], [r["wer"] for r in rows], marker=markers[criterion],
                      label=criterion)
    oracle = result["oracle"]
    oracle_label = "oracle"
    axes.scatter([oracle["speedup"]], [oracle["wer"]], marker="*", s=180, color="gold", edgecolor="black",
                 zorder=3, label=oracle_label)
    axes.scatter([1.0], [result["final_wer"]], marker="D", s=60, color="black", zorder=3, label="final head (no exit)")
    axes.set_xlabel("speedup over the full model (x)")
    axes.set_ylabel("WER (%)")
    axes.set_title(f"HuBERT-EE: WER vs speedup ({result.get('dataset')}, {result['num_utterances']} utterances)",
                   fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend()
    return save_figure(figure, path)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _float_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


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
    parser.add_argument("--repeats", type=int, default=3,
                        help="Time every batch this many times per setting, for steadier speedups (default: 3).")
    parser.add_argument(
        "--confidence-thresholds", type=_float_list, default=None,
        help="Comma-separated confidence thresholds to sweep (default: "
        + ",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS["confidence"]) + "; empty string: none).",
    )
    parser.add_argument(
        "--entropy-thresholds", type=_float_list, default=None,
        help="Comma-separated entropy thresholds in nats to sweep (default: "
        + ",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS["entropy"]) + "; empty string: none).",
    )
    parser.add_argument(
        "--patiences", type=_int_list, default=None,
        help="Comma-separated exit_patience values of the patience criterion to sweep (default: "
        + ",".join(str(p) for p in DEFAULT_PATIENCES) + "; empty string: none).",
    )
    add_device_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bars.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `hubert-ee evaluate`."""
    add_model_argument(parser)
    add_evaluation_arguments(parser)
    parser.add_argument("--json", required=True, type=output_file, help="Where to write the results as JSON.")
    parser.add_argument("--markdown", default=None, type=output_file,
                        help="Also write a markdown report (tables) to this file.")
    parser.add_argument("--plot", default=None, type=output_file,
                        help="Also write a PNG plot of WER against speedup to this file.")
    parser.add_argument("--group-by", type=_str_list, default=[], metavar="COLUMN[,COLUMN]",
                        help="Also break accuracy and exit depth down by these dataset columns (e.g. speaker_id).")


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


def sweep_from_args(args) -> tuple[dict[str, list[float]], list[int]]:
    thresholds = {
        "confidence": DEFAULT_THRESHOLDS["confidence"] if args.confidence_thresholds is None
        else args.confidence_thresholds,
        "entropy": DEFAULT_THRESHOLDS["entropy"] if args.entropy_thresholds is None else args.entropy_thresholds,
    }
    for criterion, values in thresholds.items():
        check_threshold_range(criterion, values, f"--{criterion}-thresholds")
    patiences = list(DEFAULT_PATIENCES) if args.patiences is None else args.patiences
    return thresholds, patiences


def evaluate_from_args(args, model_spec: str) -> dict:
    """Load model and dataset as the flags say and run `evaluate_model`."""
    from .data import load_speech_dataset

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {args.repeats}")
    thresholds, patiences = sweep_from_args(args)
    try:
        model, processor = load_model_and_processor(model_spec, args.device)
    except OSError as error:  # the model named cannot be read (missing or incomplete files): for the user to fix
        raise UsageError(str(error)) from error
    unreadable: list[dict[str, str]] = []  # files that cannot be read: reported, left out, the rest evaluated
    dataset = load_speech_dataset(
        args.dataset, split=args.split, config=args.dataset_config,
        sampling_rate=processor.feature_extractor.sampling_rate, max_samples=args.max_samples,
        text_column=args.text_column, unreadable=unreadable,
    )
    for item in unreadable:
        print(f"error: {item['path']}: {item['error']} (left out)", file=sys.stderr)
    name = args.dataset + "".join(f" {key}={value}" for key, value in
                                  (("config", args.dataset_config), ("split", args.split)) if value)
    result = evaluate_model(
        model, processor, dataset, thresholds=thresholds, patiences=patiences, batch_size=args.batch_size,
        repeats=args.repeats, model_name=model_spec, dataset_name=name, progress=not args.no_progress,
        group_by=getattr(args, "group_by", None) or (),
    )
    return {**result, "unreadable": unreadable} if unreadable else result


def print_summary(result: dict, file=None) -> None:
    file = file or sys.stdout
    print(f"final head WER {result['final_wer']:.2f} %, CER {result['final_cer']:.2f} % on "
          f"{result['num_utterances']} utterances", file=file)
    best = max(result["sweep"], key=lambda row: row["speedup"], default=None)
    if best is not None:
        print(f"fastest setting: {_setting_label(best)}: WER {best['wer']:.2f} %, speedup {best['speedup']:.2f}x",
              file=file)
    oracle = result["oracle"]
    print(f"oracle: WER {oracle['wer']:.2f} %, mean exit layer {oracle['mean_exit_layer']:.2f}, "
          f"speedup {oracle['speedup']:.2f}x (ideal {oracle['ideal_speedup']:.2f}x)", file=file)


def run(args) -> int:
    """`hubert-ee evaluate`: 0 on success, 1 on a failure while evaluating or when unreadable audio files were left
    out (the others are evaluated, as `transcribe` does), 2 on a usage error."""
    try:
        model_spec = resolve_model_spec(args.model)
        result = evaluate_from_args(args, model_spec)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    written = [write_json(result, args.json)]
    if args.markdown:
        written.append(write_text(args.markdown, markdown_report(result)))
    if args.plot:
        written.append(plot_tradeoff(result, args.plot))
    print_summary(result)
    print("wrote " + ", ".join(str(path) for path in written))
    if result.get("unreadable"):
        print(f"{len(result['unreadable'])} unreadable file(s) left out", file=sys.stderr)
        return 1
    return 0
