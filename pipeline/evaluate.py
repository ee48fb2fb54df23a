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
  each batch is run with `early_exit=False` (the baseline: this same model at full depth, every layer and the
  final head, which computes what plain HuBERT CTC computes) and with the setting,
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

import dataclasses
import logging
import math
import sys
from typing import Sequence

import numpy as np
import torch

from configuration_early_exit import ExitSetting

from .arguments import DEFAULT_PATIENCES, DEFAULT_THRESHOLDS, UsageError, check_threshold_range
from .forced_exits import forced_exit_targets, prepare_forced_targets
from .inference import decode, featurize, greedy_decode
from .timing import interleaved_times
from .loading import load_model_and_processor, model_device, resolve_model_spec
from .metrics import char_error_rate, word_error_rate
from .outputs import write_json, write_text
from .results import TIMING_METHOD, EvaluationResult, markdown_report, plot_tradeoff, print_summary, row_of_setting

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_THRESHOLDS", "DEFAULT_PATIENCES", "EvaluationResult", "evaluate_model", "evaluate_from_args",
           "run"]



@dataclasses.dataclass
class EvaluationData:
    """The utterances evaluated, sorted into length-ordered batches already featurized on the model's device."""

    references: list[str]
    group_values: dict[str, list[str]]
    skipped: int
    batches: list[tuple[list[int], torch.Tensor, torch.Tensor]]  # (utterance indices, input_values, attention_mask)

    @property
    def count(self) -> int:
        return len(self.references)


def _tqdm(iterable, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


# ---------------------------------------------------------------------------------------------- settings

def sweep_settings(thresholds: dict[str, list[float]] | None, patiences) -> list[ExitSetting]:
    """The sweep's exit settings (each checked as it is built): thresholds per criterion, then patience values."""
    thresholds = DEFAULT_THRESHOLDS if thresholds is None else thresholds
    unknown = set(thresholds) - {"confidence", "entropy"}
    if unknown:
        raise ValueError(
            f"thresholds has unknown criteria {sorted(unknown)}: only 'confidence' and 'entropy' take thresholds "
            "(patience values go in `patiences`)."
        )
    settings: list[ExitSetting] = []
    for criterion in ("confidence", "entropy"):
        for threshold in thresholds.get(criterion) or []:
            settings.append(ExitSetting(criterion=criterion, threshold=float(threshold)))
    for patience in patiences or ():
        if isinstance(patience, bool) or int(patience) != patience or int(patience) < 1:
            raise ValueError(f"patience values must be integers >= 1, got {patience!r}")
        settings.append(ExitSetting(criterion="patience", patience=int(patience)))
    return settings


def check_arguments(model, dataset, batch_size: int, repeats: int, group_by) -> None:
    """Fail before any work on a bad batch size, repeat count or group column (settings check themselves)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    columns = list(getattr(dataset, "column_names", None) or (dataset[0].keys() if len(dataset) else []))
    unknown_columns = [column for column in group_by if column not in columns]
    if unknown_columns:
        raise ValueError(f"group_by: the dataset has no column(s) {unknown_columns}; its columns: {columns}")


# ---------------------------------------------------------------------------------------------- steps

def prepare_data(model, processor, dataset, batch_size: int, group_by: Sequence[str]) -> EvaluationData:
    """Read every utterance long enough for the model's receptive field, sort by length (longest first) and
    featurize the batches once (feature extraction is not timed)."""
    field = model.receptive_field()
    audios, references, skipped = [], [], 0
    group_values: dict[str, list[str]] = {column: [] for column in group_by}
    for index in range(len(dataset)):
        row = dataset[index]
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
    order = sorted(range(len(audios)), key=lambda i: -audios[i].size)
    device = model_device(model)
    batches = []
    for start in range(0, len(audios), batch_size):
        indices = order[start : start + batch_size]
        batches.append((indices, *featurize(processor, [audios[i] for i in indices], device)))
    return EvaluationData(references, group_values, skipped, batches)


def decode_every_head(model, processor, data: EvaluationData, progress: bool) -> list[list[str]]:
    """Transcripts of every exit forced and of the final head (last), from one full-depth pass per batch."""
    num_heads = len(model.config.exit_layers) + 1
    head_texts = [[""] * data.count for _ in range(num_heads)]
    with torch.inference_mode():
        for indices, input_values, attention_mask in _tqdm(data.batches, desc="all exits", disable=not progress,
                                                           leave=False):
            output = model(input_values, attention_mask=attention_mask, output_exit_logits=True)
            for head, logits in enumerate([*output.exit_logits, output.logits]):
                for i, text in zip(indices, greedy_decode(model, processor, logits, attention_mask)):
                    head_texts[head][i] = text
    return head_texts


def oracle_exits(head_texts: list[list[str]], exit_layers: list[int], num_layers: int) -> tuple[list[int], list[str]]:
    """Each utterance's earliest exit whose transcript equals the final head's (else the final head)."""
    layers, texts = [], []
    final_texts = head_texts[-1]
    for i, final in enumerate(final_texts):
        head = next((head for head in range(len(exit_layers)) if head_texts[head][i] == final), None)
        layers.append(num_layers if head is None else exit_layers[head])
        texts.append(final)
    return layers, texts


def race(model, data: EvaluationData, repeats: int, candidate) -> tuple[float, float, list]:
    """Time `candidate(indices, input_values, attention_mask)` against the baseline, the same model with
    `early_exit=False`, on every batch, interleaved (`hubert_ee.timing.interleaved_times`). Returns both total times
    and the candidate's first output per batch, as `(indices, output)` in batch order."""
    outputs = {}

    def keep_candidate_output(name, index, output):
        if name == "candidate":
            outputs[index] = (data.batches[index][0], output)

    cases = {"baseline": lambda indices, values, mask: model.generate(values, mask, early_exit=False),
             "candidate": candidate}
    with torch.inference_mode():
        times = interleaved_times(cases, model_device(model), repeats, inputs=data.batches,
                                  on_first_output=keep_candidate_output)
    return sum(times["baseline"]), sum(times["candidate"]), [outputs[index] for index in range(len(data.batches))]


def warm_up(model, data: EvaluationData) -> None:
    """One call of each kind (allocator, kernels, lazy init) before any timing."""
    _, values, mask = data.batches[0]
    with torch.inference_mode():
        model.generate(values, mask, early_exit=False)
        model.generate(values, mask, early_exit=True)


def measured(references, texts, layers, baseline_time: float, early_time: float, num_layers: int) -> dict:
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


def time_oracle(model, data: EvaluationData, oracle_layers: list[int], oracle_texts: list[str], repeats: int) -> dict:
    """The oracle's measurement: each batch runs with its rows forced out at their oracle layers (branches and the
    criterion still run, only the decision is replaced), raced against the baseline."""
    device = model_device(model)
    targets = {  # on the model's device before any timing (see prepare_forced_targets)
        tuple(indices): prepare_forced_targets(model, [oracle_layers[i] for i in indices], device)
        for indices, _, _ in data.batches
    }

    def forced_call(indices, input_values, attention_mask):
        with forced_exit_targets(model, targets[tuple(indices)]):
            return model.generate(input_values, attention_mask, early_exit=True)

    baseline_time, oracle_time, _ = race(model, data, repeats, forced_call)
    return measured(data.references, oracle_texts, oracle_layers, baseline_time, oracle_time,
                    model.config.num_hidden_layers)


def run_sweep(model, processor, data: EvaluationData, settings: list[ExitSetting], repeats: int, progress: bool
              ) -> tuple[list[dict], list[tuple[dict, list[str], list[int]]]]:
    """One row per setting (accuracy, depth, speed against the baseline), and each setting's texts and layers."""
    num_layers = int(model.config.num_hidden_layers)
    sweep, outputs_per_setting = [], []
    for setting in _tqdm(settings, desc="early-exit sweep", disable=not progress):
        baseline_time, early_time, outputs = race(
            model, data, repeats,
            lambda indices, input_values, attention_mask, setting=setting: model.generate(
                input_values, attention_mask, exit_setting=setting),
        )
        texts, layers = [""] * data.count, [num_layers] * data.count
        for indices, output in outputs:
            for i, text, layer in zip(indices, decode(processor, output.sequences), output.exit_layer.tolist()):
                texts[i], layers[i] = text, int(layer)
        row = {**row_of_setting(setting),
               **measured(data.references, texts, layers, baseline_time, early_time, num_layers)}
        sweep.append(row)
        outputs_per_setting.append((row, texts, layers))
    return sweep, outputs_per_setting


def evaluate_model(
    model,
    processor,
    dataset,
    thresholds: dict[str, list[float]] | None = None,
    patiences: Sequence[int] | None = DEFAULT_PATIENCES,
    batch_size: int = 8,
    repeats: int = 1,
    *,
    model_name: str | None = None,
    dataset_name: str | None = None,
    progress: bool = True,
    group_by: Sequence[str] = (),
) -> EvaluationResult:
    """Evaluate `model` on `dataset` (rows with `audio`, a float array at 16 kHz, and `text`).

    `thresholds` maps `"confidence"` / `"entropy"` to the thresholds to sweep (default `DEFAULT_THRESHOLDS`; a
    criterion left out is not swept); `patiences` are the `exit_patience` values of the patience criterion
    (empty: not swept). `repeats` times each batch that many times per setting (more stable speedups).
    Utterances too short for the convolutional front end are skipped with a warning
    (`num_skipped_too_short`). `group_by` names dataset columns to break the accuracy down by (module
    docstring, "Groups"). See the module docstring for what is measured and `EvaluationResult` for the result.
    """
    group_by = list(group_by or ())
    settings = sweep_settings(thresholds, patiences)
    check_arguments(model, dataset, batch_size, repeats, group_by)
    model.eval()
    config = model.config
    num_layers = int(config.num_hidden_layers)
    exit_layers = [int(layer) for layer in config.exit_layers]

    data = prepare_data(model, processor, dataset, batch_size, group_by)
    head_texts = decode_every_head(model, processor, data, progress)
    head_layers = [*exit_layers, num_layers]
    exits = [{"layer": layer, "wer": word_error_rate(data.references, head_texts[head]),
              "cer": char_error_rate(data.references, head_texts[head])} for head, layer in enumerate(head_layers)]
    oracle_layers, oracle_texts = oracle_exits(head_texts, exit_layers, num_layers)
    warm_up(model, data)
    oracle = time_oracle(model, data, oracle_layers, oracle_texts, repeats)
    sweep, sweep_outputs = run_sweep(model, processor, data, settings, repeats, progress)
    groups = {column: group_breakdown(data.group_values[column], data.references, head_texts, head_layers,
                                      oracle_layers, sweep_outputs) for column in group_by}
    return EvaluationResult(
        model=model_name if model_name is not None else str(getattr(config, "_name_or_path", "") or "<in-memory>"),
        dataset=dataset_name if dataset_name is not None else "<in-memory>",
        num_utterances=data.count,
        num_skipped_too_short=data.skipped,
        num_hidden_layers=num_layers,
        exit_layers=exit_layers,
        final_wer=exits[-1]["wer"],  # the last row is the final head
        final_cer=exits[-1]["cer"],
        exits=exits,
        sweep=sweep,
        oracle=oracle,
        groups=groups or None,
        timing={"device": str(model_device(model)), "batch_size": batch_size, "repeats": repeats,
                "method": TIMING_METHOD},
    )


def group_breakdown(values, references, head_texts, head_layers, oracle_layers, sweep_outputs) -> list[dict]:
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


# ---------------------------------------------------------------------------------------------- command line

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


def evaluate_from_args(args, model_spec: str) -> EvaluationResult:
    """Load model and dataset as the flags say and run `evaluate_model`; unreadable files are reported on stderr,
    left out, and listed in the result (`unreadable`)."""
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
    unreadable: list[dict[str, str]] = []
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
    result.unreadable = unreadable or None
    return result


def run(args) -> int:
    """`hubert-ee evaluate`: 0 on success, 1 when unreadable audio files were left out (the others are evaluated,
    as `transcribe` does). Usage errors raise `UsageError` (`cli.main`: one line, exit code 2)."""
    result = evaluate_from_args(args, resolve_model_spec(args.model))
    written = [write_json(result.to_json(), args.json)]
    if args.markdown:
        written.append(write_text(args.markdown, markdown_report(result)))
    if args.plot:
        written.append(plot_tradeoff(result, args.plot))
    print_summary(result)
    print("wrote " + ", ".join(str(path) for path in written))
    if result.unreadable:
        print(f"{len(result.unreadable)} unreadable file(s) left out", file=sys.stderr)
        return 1
    return 0
