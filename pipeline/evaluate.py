"""Evaluate stage: accuracy and speed of every exit, of a sweep of exit thresholds, and of the oracle.

`hubert-ee evaluate --model M --dataset D --json OUT.json [--markdown OUT.md] [--plot OUT.png] [--group-by COL]`

What is measured (all WERs and CERs are corpus-level percentages after `hubert_ee.text.normalize_text`, see
`hubert_ee.metrics`; every row that has a WER has the CER beside it):

* **Exits forced** (`exits`): one full-depth pass per batch with `output_exit_logits=True` gives every branch's
  logits and the final head's; each is greedy-CTC decoded on its valid (non-padding) frames. The last row of
  `exits` is the final head (`layer == num_hidden_layers`, `wer == final_wer`).
* **Sweep** (`sweep`): for each criterion setting (confidence and entropy thresholds, patience values), where each
  utterance leaves comes from the same full-depth pass: the model's own criterion (`exit_decision`) is applied to
  every branch's logits in turn, and the first exit that says leave answers (`exits_taken`), with that head's
  transcript. Each row gives the WER, the mean exit layer, `layers_skipped` (`1 - mean_exit_layer /
  num_hidden_layers`, the share of encoder layers not run) and three speedups: `speedup` (measured, with
  `speedup_interval`, `speedup_reliable` and `speedup_note`), `expected_speedup` (the cost model's) and
  `ideal_speedup` (`num_hidden_layers / mean_exit_layer`, the layers run).
* **Measured speedup** (the only part that needs a clock): the dataset is sorted by length (longest first) and cut
  into batches. On every batch, one right after the other in an order rotated from batch to batch, run: the
  baseline twice (this same model with `early_exit=False`, every layer and the final head, which computes what
  plain HuBERT CTC computes), each distinct way of exiting once (settings that send every utterance to the same
  layers under the same criterion are the same work, timed once) and the oracle. Each batch gives a pair
  (baseline: the mean of its two timings), `speedup = summed baseline time / summed early-exit time`, and its 95 %
  interval is a bootstrap over the pairs, with the cost model's expected times as a control variate so that the
  interval measures the noise rather than the mix of batches (`hubert_ee.timing.paired_speedup`). A speedup is
  marked unreliable when its interval is wide, when fewer than 3 pairs were timed, or when it lies above its ideal
  (`hubert_ee.timing.speedup_verdict`). The spread of the two baseline timings tells a busy machine (`timing.busy`).
  Feature extraction is done once up front and is not timed; one warm-up call of each kind runs first; with
  `repeats` > 1 every batch is timed that many times (more pairs).
* **Expected speedup** (the cost model, `hubert_ee.cost_model`): the front end, one encoder layer, one branch, the
  criterion and the final head are each timed once, on the middle batch (`timing.part_costs`); each batch's cost at
  full depth and under a setting follows from where its utterances leave, with batch compaction and the frames of
  the rows still running. Calibration chooses by it (`hubert_ee.operating_point.choose_operating_point`).
* **Oracle** (`oracle`): each utterance takes the earliest exit whose greedy transcript equals the final head's
  (else the final head). Its WER is therefore the final head's. Its speedup is measured like the sweep's: the
  model runs with each utterance's exit forced to its oracle layer (`hubert_ee.forced_exits.forced_exit_targets`;
  branches and the criterion still run, only the decision is replaced), timed against the full model on the same
  batches. It bounds what any exit criterion can reach on this data.
* **LM decoding** (`decoder`, `--decoder lm`, `hubert_ee.decoding`): every head's transcript comes from the
  decoder the command names, and the JSON records it (`decoder`). With the n-gram LM, each exit and sweep row also
  has `greedy_wer` and `greedy_cer` (the same logits decoded greedily), each exit row its `decode_seconds` (the LM
  decode of every utterance from that head, one utterance at a time, summed), and each sweep row and the oracle the
  end-to-end speedup with decoding included: each timed batch's encoder time plus the decode time of its
  utterances at the heads they answer from, against the full-depth time plus the final head's decode time
  (`end_to_end_speedup`, its interval and verdict, `end_to_end_expected_speedup`). The decode times come from the
  all-exits pass, once per utterance and head; calibration chooses by the end-to-end speedup.
* **Groups** (`groups`, with `group_by`): for each named dataset column (a speaker, voice or domain column, e.g.
  LibriSpeech's `speaker_id`) and each of its values, the utterance count, the final head's WER/CER, every forced
  exit's WER, the oracle's mean exit layer, and each sweep setting's WER, CER and mean exit layer on that group's
  utterances. Speed is not split by group (batches mix groups).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from typing import Sequence

import numpy as np
import torch

from configuration_early_exit import ExitSetting

from .arguments import DEFAULT_PATIENCES, DEFAULT_THRESHOLDS, UsageError, check_threshold_range
from .cost_model import expected_batch_costs, measure_components
from .forced_exits import forced_exit_targets, prepare_forced_targets
from .decoding import GreedyDecoder, decoder_from_args
from .inference import featurize, frame_lengths
from .timing import (
    BUSY_SPREAD,
    CONFIDENCE,
    interleaved_times_per_input,
    paired_speedup,
    progress_bar,
    speedup_verdict,
    spread,
)
from .loading import load_model_and_processor, model_device, resolve_model_spec, weights_fingerprint
from .metrics import char_error_rate, word_error_rate
from .outputs import write_json, write_text
from .results import TIMING_METHOD, EvaluationResult, markdown_report, plot_tradeoff, print_summary, row_of_setting

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_THRESHOLDS", "DEFAULT_PATIENCES", "EvaluationResult", "evaluate_model", "evaluate_from_args",
           "run"]


# The cost model's parts are each timed PART_REPEATS times, interleaved, each timer spanning PART_MIN_SECONDS.
PART_REPEATS = 5
PART_MIN_SECONDS = 0.02


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


@dataclasses.dataclass
class AllExitsPass:
    """What one full-depth pass with every branch gives, without a clock: the transcript of every head (each exit,
    then the final head) and, per sweep setting, where each utterance leaves under it."""

    head_texts: list[list[str]]  # [head][utterance], by the evaluation's decoder
    setting_layers: list[list[int]]  # [setting][utterance]
    frames: list[int]  # valid frames per utterance
    # with an LM decoder only: greedy transcripts beside the LM's, and the LM decode's seconds per utterance
    greedy_texts: list[list[str]] | None = None  # [head][utterance]
    decode_seconds: list[list[float]] | None = None  # [head][utterance]


def exits_taken(model, exit_logits: Sequence[torch.Tensor], valid: torch.Tensor, setting: ExitSetting
                ) -> torch.Tensor:
    """The layer each row leaves at under `setting` (from `model.exit_setting`), decided by the model's own
    criterion (`exit_decision`) on every branch's logits of a full-depth pass: the first exit whose decision says
    leave, else the final head. Rows keep their place in the criterion's state after they leave (the exit loop drops
    them instead), which changes no decision of the rows still running."""
    taken = torch.full((valid.shape[0],), int(model.config.num_hidden_layers), dtype=torch.long)
    left = torch.zeros(valid.shape[0], dtype=torch.bool)
    state: dict = {}
    for layer, logits in zip(model.config.exit_layers, exit_logits):
        leaving = model.exit_decision(logits, valid, setting, state).cpu() & ~left
        taken[leaving] = int(layer)
        left |= leaving
    return taken


def decode_heads(passed: AllExitsPass, decoder, greedy: GreedyDecoder, indices, head_logits, lengths) -> None:
    """Fill in every head's transcripts of one batch; with an LM decoder also the greedy ones and the decode
    time of each utterance (one row at a time, as a batch-1 caller would decode)."""
    for head, logits in enumerate(head_logits):
        if passed.decode_seconds is None:
            for i, text in zip(indices, decoder.decode(logits, lengths)):
                passed.head_texts[head][i] = text
            continue
        for i, text in zip(indices, greedy.decode(logits, lengths)):
            passed.greedy_texts[head][i] = text
        for row, i in enumerate(indices):
            start = time.perf_counter()
            passed.head_texts[head][i] = decoder.decode(logits[row : row + 1], lengths[row : row + 1])[0]
            passed.decode_seconds[head][i] = time.perf_counter() - start


def all_exits_pass(model, data: EvaluationData, settings: list[ExitSetting], decoder, greedy: GreedyDecoder,
                   progress: bool) -> AllExitsPass:
    """Every head's transcripts (by `decoder`; with an LM decoder, `greedy`'s too) and every setting's exit
    layers, from one full-depth pass per batch."""
    num_heads = len(model.config.exit_layers) + 1
    empty = [[""] * data.count for _ in range(num_heads)]
    with_lm = decoder.name != greedy.name  # a greedy decoder built elsewhere is not an LM decoder
    passed = AllExitsPass(head_texts=empty, setting_layers=[[0] * data.count for _ in settings],
                          frames=[0] * data.count,
                          greedy_texts=[[""] * data.count for _ in range(num_heads)] if with_lm else None,
                          decode_seconds=[[0.0] * data.count for _ in range(num_heads)] if with_lm else None)
    setting_layers, frames = passed.setting_layers, passed.frames
    resolved = [model.exit_setting(setting) for setting in settings]
    with torch.inference_mode():
        for indices, input_values, attention_mask in _tqdm(data.batches, desc="all exits", disable=not progress,
                                                           leave=False):
            output = model(input_values, attention_mask=attention_mask, output_exit_logits=True)
            lengths = frame_lengths(model, attention_mask)
            decode_heads(passed, decoder, greedy, indices, [*output.exit_logits, output.logits], lengths.cpu())
            valid = torch.arange(output.logits.shape[1], device=lengths.device)[None, :] < lengths[:, None]
            for i, length in zip(indices, lengths.tolist()):
                frames[i] = int(length)
            for number, setting in enumerate(resolved):
                taken = exits_taken(model, output.exit_logits, valid, setting)
                for i, layer in zip(indices, taken.tolist()):
                    setting_layers[number][i] = layer
    return passed


def texts_at(head_texts: list[list[str]], head_layers: list[int], layers: list[int]) -> list[str]:
    """Each utterance's transcript from the head at its exit layer."""
    head_of = {layer: head for head, layer in enumerate(head_layers)}
    return [head_texts[head_of[layer]][i] for i, layer in enumerate(layers)]


def oracle_exits(head_texts: list[list[str]], exit_layers: list[int], num_layers: int) -> tuple[list[int], list[str]]:
    """Each utterance's earliest exit whose transcript equals the final head's (else the final head)."""
    layers, texts = [], []
    final_texts = head_texts[-1]
    for i, final in enumerate(final_texts):
        head = next((head for head in range(len(exit_layers)) if head_texts[head][i] == final), None)
        layers.append(num_layers if head is None else exit_layers[head])
        texts.append(final)
    return layers, texts


def warm_up(model, data: EvaluationData) -> None:
    """One call of each kind on the smallest batch (allocator, kernels, lazy init) before any timing."""
    _, values, mask = data.batches[-1]
    with torch.inference_mode():
        model.generate(values, mask, early_exit=False)
        model.generate(values, mask, early_exit=True)


def measure_part_costs(model, data: EvaluationData) -> tuple[dict, int]:
    """The cost model's parts measured once on a batch of the data (the middle one by length): front end, one
    encoder layer, one branch, the criterion, the final head. Returns the table and the frames it was measured at."""
    _, values, _ = data.batches[len(data.batches) // 2]
    table = measure_components(model, values, {values.shape[0]}, repeats=PART_REPEATS, warmup=1,
                               min_seconds=PART_MIN_SECONDS)
    return table, int(model.frame_lengths([values.shape[1]])[0])


def accuracy_fields(references, texts, layers, num_layers: int) -> dict:
    mean_layer = float(np.mean(layers))
    return {"wer": word_error_rate(references, texts), "cer": char_error_rate(references, texts),
            "mean_exit_layer": mean_layer, "layers_skipped": 1.0 - mean_layer / num_layers}


def lm_head_fields(references, passed: AllExitsPass, head: int) -> dict:
    """With an LM decoder: a head's greedy WER and CER and its LM decode seconds (summed); else nothing."""
    if passed.greedy_texts is None:
        return {}
    texts = passed.greedy_texts[head]
    return {"greedy_wer": word_error_rate(references, texts), "greedy_cer": char_error_rate(references, texts),
            "decode_seconds": float(sum(passed.decode_seconds[head]))}


def greedy_fields(references, passed: AllExitsPass, head_layers: list[int], layers: list[int]) -> dict:
    """With an LM decoder: a sweep row's greedy WER and CER (each utterance greedy-decoded at its exit)."""
    if passed.greedy_texts is None:
        return {}
    texts = texts_at(passed.greedy_texts, head_layers, layers)
    return {"greedy_wer": word_error_rate(references, texts), "greedy_cer": char_error_rate(references, texts)}


def with_decoding(seconds: list[float], per_batch: list[float]) -> list[float]:
    """Timed pairs (repetition-major, batch-minor) with each batch's decode seconds added."""
    return [value + per_batch[number % len(per_batch)] for number, value in enumerate(seconds)]


def end_to_end_fields(baseline: list[float], candidate: list[float], expected: list[tuple[float, float]],
                      decode_baseline: list[float], decode_candidate: list[float], layers, num_layers: int) -> dict:
    """The speedup with LM decoding included on both sides: each batch's encoder time plus the decode time of its
    utterances at the head they answer from (full depth: the final head), measured and expected."""
    expected = [(base + decode_base, early + decode_early) for (base, early), decode_base, decode_early
                in zip(expected, decode_baseline * (len(expected) // len(decode_baseline)),
                       decode_candidate * (len(expected) // len(decode_candidate)))]
    fields = speed_fields(with_decoding(baseline, decode_baseline), with_decoding(candidate, decode_candidate),
                          expected, layers, num_layers)
    return {"end_to_end_speedup": fields["speedup"], "end_to_end_interval": fields["speedup_interval"],
            "end_to_end_reliable": fields["speedup_reliable"],
            "end_to_end_expected_speedup": fields["expected_speedup"], "decode_seconds": sum(decode_candidate),
            "baseline_decode_seconds": sum(decode_baseline)}


def speed_fields(baseline: list[float], candidate: list[float], expected: list[tuple[float, float]], layers,
                 num_layers: int) -> dict:
    """Measured speedup over the paired timings (baseline, candidate), with its interval and verdict; the cost
    model's expected speedup; the ideal (layers run)."""
    expected_baseline, expected_candidate = zip(*expected)
    measured = paired_speedup(baseline, candidate, expected_baseline, expected_candidate)
    ideal = num_layers / float(np.mean(layers))
    return {"speedup": measured["speedup"], "speedup_interval": measured["speedup_interval"],
            **speedup_verdict(measured, ideal),
            "expected_speedup": sum(expected_baseline) / sum(expected_candidate), "ideal_speedup": ideal,
            "baseline_seconds": sum(baseline), "early_exit_seconds": sum(candidate)}


def timed_cases(model, data: EvaluationData, settings: list[ExitSetting], setting_layers: list[list[int]],
                oracle_layers: list[int]) -> tuple[dict, list[int]]:
    """The calls to time on each batch `(indices, input_values, attention_mask)`: the baseline twice (this model
    with `early_exit=False`; the two timings' spread tells a busy machine), each distinct way of exiting once (a
    setting whose criterion sends every utterance to the same layers as an earlier one's is the same work), and the
    oracle (each batch's rows forced out at their oracle layers; branches and the criterion still run). Returns the
    cases and, per setting, the case that times it."""
    def generate_with(overrides):
        return lambda indices, input_values, attention_mask: model.generate(input_values, attention_mask,
                                                                            **overrides)

    cases = {"baseline": generate_with({"early_exit": False}), "baseline again": generate_with({"early_exit": False})}
    timed_as, first_of = [], {}
    for number, setting in enumerate(settings):
        key = (setting.criterion, tuple(setting_layers[number]))
        if key not in first_of:
            first_of[key] = number
            cases[f"setting {number}"] = generate_with({"exit_setting": setting})
        timed_as.append(first_of[key])
    device = model_device(model)
    targets = {  # on the model's device before any timing (see prepare_forced_targets)
        tuple(indices): prepare_forced_targets(model, [oracle_layers[i] for i in indices], device)
        for indices, _, _ in data.batches
    }

    def forced_call(indices, input_values, attention_mask):
        with forced_exit_targets(model, targets[tuple(indices)]):
            return model.generate(input_values, attention_mask, early_exit=True)

    cases["oracle"] = forced_call
    return cases, timed_as


def time_cases(model, data: EvaluationData, cases: dict, setting_layers: list[list[int]], timed_as: list[int],
               repeats: int, progress: bool) -> tuple[dict[str, list[float]], int]:
    """Every case on every batch, interleaved, `repeats` times: per case, one time per (repetition, batch) pair.
    Also counts the utterances whose exit in the timed run differs from the one the all-exits pass gave (float
    noise at a threshold's edge)."""
    timed_layers = {f"setting {number}": setting_layers[number] for number in set(timed_as)}
    landed: dict[str, dict[int, int]] = {name: {} for name in timed_layers}

    def keep_exit_layers(name, index, output):
        if name in landed:
            landed[name].update(zip(data.batches[index][0], output.exit_layer.tolist()))

    bar = progress_bar(repeats * len(cases) * len(data.batches), "timing", progress)
    with torch.inference_mode():
        per_input = interleaved_times_per_input(cases, model_device(model), repeats, progress=bar,
                                                inputs=data.batches, on_first_output=keep_exit_layers)
    bar.close()
    mismatches = sum(timed_layers[name][i] != layer for name, layers in landed.items() for i, layer in layers.items())
    pairs = {name: [seconds for repetition in times for seconds in repetition] for name, times in per_input.items()}
    return pairs, mismatches


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
    decoder=None,
) -> EvaluationResult:
    """Evaluate `model` on `dataset` (rows with `audio`, a float array at 16 kHz, and `text`).

    `thresholds` maps `"confidence"` / `"entropy"` to the thresholds to sweep (default `DEFAULT_THRESHOLDS`; a
    criterion left out is not swept); `patiences` are the `exit_patience` values of the patience criterion
    (empty: not swept). `repeats` times each batch that many times per setting (more stable speedups).
    Utterances too short for the convolutional front end are skipped with a warning
    (`num_skipped_too_short`). `group_by` names dataset columns to break the accuracy down by (module
    docstring, "Groups"). `decoder` (`hubert_ee.decoding`; default greedy) turns every head's logits into text;
    an LM decoder adds the greedy figures and the decode time beside it (module docstring, "LM decoding").
    See the module docstring for what is measured and `EvaluationResult` for the result.
    """
    greedy = GreedyDecoder(processor, model.config.pad_token_id)
    decoder = greedy if decoder is None else decoder
    group_by = list(group_by or ())
    settings = sweep_settings(thresholds, patiences)
    check_arguments(model, dataset, batch_size, repeats, group_by)
    model.eval()
    config = model.config
    num_layers = int(config.num_hidden_layers)
    exit_layers = [int(layer) for layer in config.exit_layers]
    head_layers = [*exit_layers, num_layers]

    data = prepare_data(model, processor, dataset, batch_size, group_by)
    passed = all_exits_pass(model, data, settings, decoder, greedy, progress)
    exits = [{"layer": layer, "wer": word_error_rate(data.references, passed.head_texts[head]),
              "cer": char_error_rate(data.references, passed.head_texts[head]),
              **lm_head_fields(data.references, passed, head)} for head, layer in enumerate(head_layers)]
    oracle_layers, oracle_texts = oracle_exits(passed.head_texts, exit_layers, num_layers)
    sweep_texts = [texts_at(passed.head_texts, head_layers, layers) for layers in passed.setting_layers]

    sweep_speeds, oracle_speed, timing = measure_speed(model, data, settings, passed, oracle_layers, repeats,
                                                       progress)
    if passed.decode_seconds is not None:
        timing["final_head_decode_seconds"] = float(sum(passed.decode_seconds[-1]))
    sweep = []
    for number, setting in enumerate(settings):
        sweep.append({**row_of_setting(setting),
                      **accuracy_fields(data.references, sweep_texts[number], passed.setting_layers[number],
                                        num_layers),
                      **greedy_fields(data.references, passed, head_layers, passed.setting_layers[number]),
                      **sweep_speeds[number]})
    oracle = {**accuracy_fields(data.references, oracle_texts, oracle_layers, num_layers), **oracle_speed}
    sweep_outputs = [(row, sweep_texts[number], passed.setting_layers[number]) for number, row in enumerate(sweep)]
    groups = {column: group_breakdown(data.group_values[column], data.references, passed.head_texts, head_layers,
                                      oracle_layers, sweep_outputs, passed.greedy_texts) for column in group_by}
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
        timing={"device": str(model_device(model)), "batch_size": batch_size, "repeats": repeats, **timing},
        vocab_size=int(config.vocab_size),
        weights_sha256=weights_fingerprint(model.state_dict()),
        decoder=decoder.describe(),
    )


def measure_speed(model, data: EvaluationData, settings: list[ExitSetting], passed: AllExitsPass,
                  oracle_layers: list[int], repeats: int, progress: bool) -> tuple[list[dict], dict, dict]:
    """The speed fields of each setting and of the oracle (`speed_fields`), and what the `timing` record says of
    how they were measured: the cost model's parts timed once, then each batch timed at full depth twice and in
    each distinct way of exiting once (`timed_cases`, `time_cases`)."""
    num_layers, exit_layers = int(model.config.num_hidden_layers), list(model.config.exit_layers)
    warm_up(model, data)
    table, measured_frames = measure_part_costs(model, data)
    cases, timed_as = timed_cases(model, data, settings, passed.setting_layers, oracle_layers)
    times, mismatches = time_cases(model, data, cases, passed.setting_layers, timed_as, repeats, progress)
    if mismatches:
        logger.warning("%d timed exit(s) differ from the all-exits pass's (float noise at a threshold's edge); "
                       "accuracy and depth are the all-exits pass's.", mismatches)
    baseline = [(first + again) / 2 for first, again in zip(times["baseline"], times["baseline again"])]

    def speed(case: str, layers: list[int]) -> dict:
        batches = [([layers[i] for i in indices], [passed.frames[i] for i in indices])
                   for indices, _, _ in data.batches]
        expected = expected_batch_costs(table, measured_frames, num_layers, exit_layers, batches) * repeats
        fields = speed_fields(baseline, times[case], expected, layers, num_layers)
        if passed.decode_seconds is None:
            return fields
        decode_full = batch_decode_seconds(passed, data, [num_layers] * len(layers), [*exit_layers, num_layers])
        decode_here = batch_decode_seconds(passed, data, layers, [*exit_layers, num_layers])
        return {**fields, **end_to_end_fields(baseline, times[case], expected, decode_full, decode_here, layers,
                                              num_layers)}

    sweep_speeds = [speed(f"setting {timed_as[number]}", layers) for number, layers in enumerate(passed.setting_layers)]
    baseline_spread = spread([times["baseline"], times["baseline again"]])
    timing = {"method": TIMING_METHOD, "confidence": CONFIDENCE, "timed_settings": len(set(timed_as)),
              "baseline_spread": baseline_spread, "busy": baseline_spread > BUSY_SPREAD,
              "exit_mismatches": mismatches, "part_costs": part_costs(table, measured_frames)}
    return sweep_speeds, speed("oracle", oracle_layers), timing


def batch_decode_seconds(passed: AllExitsPass, data: EvaluationData, layers: list[int], head_layers: list[int]
                         ) -> list[float]:
    """Per batch, the LM decode seconds of its utterances, each decoded from the head at its exit layer."""
    head_of = {layer: head for head, layer in enumerate(head_layers)}
    return [sum(passed.decode_seconds[head_of[layers[i]]][i] for i in indices) for indices, _, _ in data.batches]


def part_costs(table: dict, frames: int) -> dict:
    """The cost model's parts as the JSON keeps them: seconds per call at the rows and frames measured."""
    rows = next(iter(table["layer"]))
    return {"rows": rows, "frames": frames,
            **{name: table[name][rows] for name in ("embed", "layer", "branch", "criterion", "head")}}


def group_breakdown(values, references, head_texts, head_layers, oracle_layers, sweep_outputs, greedy_texts=None
                    ) -> list[dict]:
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
            **({"final_greedy_wer": word_error_rate(refs, pick(greedy_texts[-1]))} if greedy_texts else {}),
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
        decoder = decoder_from_args(args, model_spec, processor, model.config.pad_token_id)
    except (OSError, ValueError) as error:  # the model or its LM cannot be read, or does not fit: for the user to fix
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
        group_by=getattr(args, "group_by", None) or (), decoder=decoder,
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
