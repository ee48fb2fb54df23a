# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""The `trained` workload: a trained HuBERT-EE folder (`--model`) on a test set (`--dataset`) at the given
thresholds, against `HubertForCTC` on the same weights: measured speedup, WER of both models, mean exit layer, and
the ideal speedup of the exits the model took.

The data stack (`hubert_ee.data`, `.export`, `.metrics`) is imported when the workload runs, so that the rest of
the benchmark runs on a machine without it.
"""

from __future__ import annotations

import numpy as np
import torch

from configuration_early_exit import ExitSetting

from ..cost_model import format_distribution, ideal_speedup_of_layers, measure_components
from .models import DTYPES, NEVER_EXIT, SAMPLING_RATE, baseline_from, with_overlap
from .report import overhead_fields, round_or_none, speedup_fields
from ..loading import load_early_exit_model
from ..timing import interleaved_times, median, progress_bar

def run_trained(args, device: torch.device, dtype_name: str, log) -> dict:
    """Trained workload: a HuBERT-EE folder on a test set at each threshold, against HubertForCTC. `args`: the
    parsed options, with list options already split and `args.model` resolved (see `cli.run`)."""
    from ..data import load_speech_dataset
    from ..export import load_processor
    from ..metrics import word_error_rate

    dtype = DTYPES[dtype_name]
    model = load_early_exit_model(args.model).to(device=device, dtype=dtype).eval()
    model = with_overlap(model, args.overlap_exit_decisions)
    baseline = baseline_from(model)
    processor = load_processor(args.model)
    dataset = load_speech_dataset(args.dataset, split=args.split, max_samples=args.max_samples)
    audio = [np.asarray(example["audio"], dtype=np.float32) for example in dataset]
    references = [str(example["text"]) for example in dataset]
    criterion = args.exit_criterion or model.config.exit_criterion
    config = model.config
    out = {"rows": [], "branch_cost": [], "overhead": [], "components": []}
    common = {"device": device.type, "dtype": dtype_name, "workload": "trained", "arch": str(args.model),
              "branch": config.exit_branch, "num_hidden_layers": config.num_hidden_layers,
              "exit_layers": list(config.exit_layers), "dataset": str(args.dataset), "utterances": len(audio),
              "criterion": criterion}
    cases = trained_cases(model, baseline, criterion, args.thresholds or [config.exit_threshold])
    for batch_size in args.batch_sizes:
        label = f"trained {device.type}/{dtype_name}/b{batch_size}"
        batches = _feature_batches(model, processor, audio, batch_size)
        totals, hypotheses, exit_layers = _time_on_batches(args, cases, batches, processor, config.pad_token_id,
                                                           label)
        table = _component_costs(args, model, audio, batch_size)
        baseline_wer = word_error_rate(references, hypotheses["baseline"])
        rows, overheads = _trained_rows(totals, hypotheses, exit_layers, references, baseline_wer, table, config,
                                        {**common, "batch_size": batch_size}, args.repeats)
        out["rows"] += rows
        out["overhead"] += overheads
        log(f"{label}: baseline WER {baseline_wer:.2f} %; "
            + "; ".join(f"{row['threshold']}: x{row['speedup']:.3f}, WER {row['wer']:.2f} %, mean exit "
                        f"{row['mean_exit_layer']:.2f}" for row in rows))
    return out

def setting_for(criterion: str, threshold: float) -> ExitSetting:
    """The exit setting measuring `threshold`, a patience for the patience criterion (which must then be a whole
    number). Early exit on: a calibrated config may store early_exit=False (no setting met its budget), and a
    threshold asked for here must still be measured."""
    if criterion != "patience":
        return ExitSetting(criterion=criterion, threshold=threshold)
    if threshold != int(threshold):
        raise ValueError(f"--thresholds {threshold:g}: under the patience criterion a threshold is a patience, a "
                         "whole number >= 1.")
    return ExitSetting(criterion=criterion, patience=int(threshold))

def trained_cases(model, baseline, criterion: str, thresholds) -> dict:
    """The callables `(input_values, attention_mask)` timed together: the baseline, each threshold, never-exit."""
    cases = {"baseline": lambda x, m: baseline(x, attention_mask=m)}
    for threshold in thresholds:
        setting = setting_for(criterion, threshold)
        cases[f"t={threshold:g}"] = lambda x, m, setting=setting: model(x, attention_mask=m, exit_setting=setting)
    cases["never"] = lambda x, m: model(x, attention_mask=m, exit_setting=NEVER_EXIT)
    return cases

def _feature_batches(model, processor, audio, batch_size: int) -> list[tuple]:
    """`(input_values, attention_mask, frame_lengths)` per batch of `audio`, on the model's device and dtype."""
    parameter = next(model.parameters())
    batches = []
    for start in range(0, len(audio), batch_size):
        clips = audio[start:start + batch_size]
        features = processor(clips, sampling_rate=SAMPLING_RATE, padding=True, return_tensors="pt")
        input_values = features["input_values"].to(device=parameter.device, dtype=parameter.dtype)
        mask = features.get("attention_mask")
        mask = mask.to(parameter.device) if mask is not None else None
        sample_lengths = mask.sum(-1) if mask is not None else torch.full((len(clips),), input_values.shape[1],
                                                                          device=parameter.device)
        batches.append((input_values, mask, model.frame_lengths(sample_lengths)))
    return batches

def _time_on_batches(args, cases: dict, batches: list[tuple], processor, pad_token_id: int, label: str):
    """Every case on every batch, interleaved (`timing.interleaved_times`). Returns the per-repetition total
    seconds per case, and from the first repetition each case's transcripts and (HuBERT-EE) exit layers."""
    hypotheses = {name: [] for name in cases}
    exit_layers = {name: [] for name in cases}

    def keep(name, index, output):
        ids = output.logits.argmax(-1)
        lengths = batches[index][2]
        padding = torch.arange(ids.shape[1], device=ids.device)[None, :] >= lengths[:, None]
        ids = ids.masked_fill(padding, pad_token_id)
        hypotheses[name] += processor.batch_decode(ids.cpu().numpy())
        if name != "baseline":
            exit_layers[name] += output.exit_layer.tolist()

    bar = progress_bar((args.warmup + args.repeats) * len(cases) * len(batches), label, args.progress)
    with torch.inference_mode():
        totals = interleaved_times(cases, batches[0][0].device, args.repeats, args.warmup, bar,
                                   inputs=[(input_values, mask) for input_values, mask, _ in batches],
                                   on_first_output=keep)
    bar.close()
    return totals, hypotheses, exit_layers

def _component_costs(args, model, audio, batch_size: int) -> dict:
    """Component costs on a clip of the mean length, at every row count compaction can leave: on a GPU a small model
    is launch-bound and its cost is far from linear in rows, so no count is extrapolated."""
    parameter = next(model.parameters())
    mean_seconds = float(np.mean([len(clip) for clip in audio])) / SAMPLING_RATE
    probe = torch.randn(min(batch_size, len(audio)), max(int(mean_seconds * SAMPLING_RATE), 400),
                        generator=torch.Generator().manual_seed(args.seed)).to(device=parameter.device,
                                                                                dtype=parameter.dtype)
    with torch.inference_mode():
        return measure_components(model, probe, set(range(1, probe.shape[0] + 1)), args.repeats, 1,
                                  args.component_min_ms / 1000.0)

def _trained_rows(totals, hypotheses, exit_layers, references, baseline_wer, table, config, common, repeats):
    """A row per threshold (speedup, ideal, WER, mean exit layer, latency or throughput per utterance) and the
    never-exit overhead row."""
    from ..metrics import word_error_rate

    medians = {name: median(values) for name, values in totals.items()}
    base, batch_size, count = medians["baseline"], common["batch_size"], len(references)
    rows, overheads = [], []
    for name in totals:
        if name == "baseline":
            continue
        if name == "never":
            overheads.append({**common, **overhead_fields(totals[name], totals["baseline"])})
            continue
        layers = exit_layers[name]
        counts = {layer: layers.count(layer) / len(layers) for layer in sorted(set(layers))}
        ideal = ideal_speedup_of_layers(table, config.num_hidden_layers, config.exit_layers, layers, batch_size)
        row = {**common, "threshold": name, "exit_distribution": format_distribution(counts),
               "mean_exit_layer": round_or_none(float(np.mean(layers))),
               "wer": round_or_none(word_error_rate(references, hypotheses[name]), 3),
               "baseline_wer": round_or_none(baseline_wer, 3),
               **speedup_fields(totals["baseline"], totals[name], ideal), "repeats": repeats}
        if batch_size == 1:  # mean latency per utterance
            row.update(latency_ms=round_or_none(medians[name] / count * 1e3),
                       baseline_latency_ms=round_or_none(base / count * 1e3))
        else:
            row.update(throughput=round_or_none(count / medians[name]), baseline_throughput=round_or_none(count / base))
        rows.append(row)
    return rows, overheads
