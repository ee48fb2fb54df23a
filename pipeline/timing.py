# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""Timing primitives: one synchronised timer, one way to time several candidates interleaved, and one way to turn
paired timings into a speedup with its interval and a verdict on whether it can be trusted.

Interleaving: within a repetition every case runs once on every input, and the order of the cases is rotated from
one repetition (and one input) to the next, so that a slow phase of a noisy, shared machine hits all of them alike.
On CUDA the device is synchronised before every timer starts and before it stops.

Speedups (`paired_speedup`, `speedup_verdict`, `format_speedup`): the baseline and the candidate are timed in pairs
(the same input, one right after the other, in `interleaved_times_per_input`); the speedup is the ratio of the summed
times, and its interval a percentile bootstrap over the pairs. A figure is unreliable when it has too few pairs, when
its interval is wide, or when it lies above its ideal (what skipping layers can give at most): the noise could
explain it, and reports show it as such. Standard library, numpy and torch only.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence

import numpy as np
import torch


def sync(device: torch.device) -> None:
    """Wait for everything queued on `device` (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """`(seconds, result)` of one call of `fn`; on CUDA, synchronised before the timer starts and before it stops."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call of `fn` (see `timed`)."""
    return timed(fn, device)[0]


def interleaved_times_per_input(
    cases: dict[str, Callable[..., object]],
    device: torch.device,
    repeats: int,
    warmup: int = 0,
    progress=None,
    inputs: Sequence[tuple] = ((),),
    on_first_output: Callable[[str, int, object], None] | None = None,
) -> dict[str, list[list[float]]]:
    """Per case, per recorded repetition, the seconds of each input's call (in the order of `inputs`); every case runs
    on every input, interleaved, and the first `warmup` repetitions are not recorded.

    `cases`: name -> callable, called as `case(*input)` for each input of `inputs` (argument tuples; default: one
    call without arguments). In repetition r on input i the cases run in their order rotated by r + i, one right
    after the other: each input's timings of two cases are a pair. `on_first_output` is called as
    `on_first_output(name, input_index, output)` with every output of the first repetition (outside the timers),
    e.g. to decode or check it. `progress`: anything with `update(n)`, advanced once per call.
    """
    names = list(cases)
    times = {name: [] for name in names}
    for repetition in range(warmup + repeats):
        elapsed = {name: [0.0] * len(inputs) for name in names}
        for index, arguments in enumerate(inputs):
            shift = (repetition + index) % len(names)
            for name in names[shift:] + names[:shift]:
                seconds, output = timed(lambda: cases[name](*arguments), device)
                elapsed[name][index] = seconds
                if progress is not None:
                    progress.update(1)
                if repetition == 0 and on_first_output is not None:
                    on_first_output(name, index, output)
                del output  # not kept alive into the next call (CUDA-graph replays reuse output memory)
        if repetition >= warmup:
            for name in names:
                times[name].append(elapsed[name])
    return times


def interleaved_times(
    cases: dict[str, Callable[..., object]],
    device: torch.device,
    repeats: int,
    warmup: int = 0,
    progress=None,
    inputs: Sequence[tuple] = ((),),
    on_first_output: Callable[[str, int, object], None] | None = None,
) -> dict[str, list[float]]:
    """`interleaved_times_per_input` with each recorded repetition's seconds summed over the inputs."""
    per_input = interleaved_times_per_input(cases, device, repeats, warmup, progress, inputs, on_first_output)
    return {name: [sum(repetition) for repetition in repetitions] for name, repetitions in per_input.items()}


def repeated(fn: Callable[[], object], device: torch.device, min_seconds: float) -> tuple[Callable[[], None], int]:
    """`fn` called `inner` times in a row, `inner` chosen (after a warm-up call) so that one timer spans at least
    `min_seconds`: launch overhead and timer resolution then do not dominate small pieces of the model."""
    time_call(fn, device)
    once = time_call(fn, device)
    inner = max(1, min(1000, math.ceil(min_seconds / max(once, 1e-7))))

    def many():
        for _ in range(inner):
            fn()

    return many, inner


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """Median over repetitions of each repetition's own candidate/baseline time ratio (both timed in the same
    interleaved repetition): a shared machine's slow and fast phases cancel within a repetition, which the ratio
    of the two medians does not guarantee."""
    if len(candidate) != len(baseline) or not candidate:
        raise ValueError(f"paired timings need the same non-zero number of repetitions, got {len(candidate)} "
                         f"and {len(baseline)}")
    return median([c / b for c, b in zip(candidate, baseline)])


# A speedup is unreliable with fewer pairs than this, or when its interval's half-width is more than this share of
# it. Baseline repetitions spreading more than BUSY_SPREAD (median relative difference) mean a busy machine.
CONFIDENCE = 0.95
MIN_PAIRS = 3
WIDE_INTERVAL = 0.10
BUSY_SPREAD = 0.10
BOOTSTRAP_RESAMPLES = 2000


def paired_speedup(baseline: Sequence[float], candidate: Sequence[float], expected_baseline: Sequence[float] | None
                   = None, expected_candidate: Sequence[float] | None = None, seed: int = 0) -> dict:
    """The speedup `sum(baseline) / sum(candidate)` of paired timings (pair i: the same work timed both ways, one
    right after the other) and its `CONFIDENCE` percentile-bootstrap interval over the pairs.

    Pairs that differ in content (batches of different lengths and exits) differ in their ratio without any noise.
    Given each pair's expected costs (`expected_*`, from the cost model), each resample's ratio is divided by the
    expected ratio of the same resample and multiplied by the expected ratio of all pairs (a control variate), so
    that the interval measures the timing noise rather than the mix of pairs drawn.

    Returns `{"speedup", "speedup_interval": [low, high], "pairs"}`.
    """
    baseline, candidate = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if len(baseline) != len(candidate) or not len(baseline):
        raise ValueError(f"paired timings need the same non-zero number of pairs, got {len(baseline)} and "
                         f"{len(candidate)}")
    speedup = float(baseline.sum() / candidate.sum())
    draws = np.random.default_rng(seed).integers(0, len(baseline), size=(BOOTSTRAP_RESAMPLES, len(baseline)))
    resampled = baseline[draws].sum(1) / candidate[draws].sum(1)
    if expected_baseline is not None and expected_candidate is not None:
        expected_baseline = np.asarray(expected_baseline, dtype=float)
        expected_candidate = np.asarray(expected_candidate, dtype=float)
        expected = expected_baseline.sum() / expected_candidate.sum()
        resampled = resampled * expected / (expected_baseline[draws].sum(1) / expected_candidate[draws].sum(1))
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return {"speedup": speedup, "speedup_interval": [float(min(low, speedup)), float(max(high, speedup))],
            "pairs": int(len(baseline))}


def speedup_verdict(measured: dict, ideal: float | None) -> dict:
    """`{"speedup_reliable", "speedup_note"}` for a `paired_speedup` result: unreliable (with the reasons in the
    note) when it has fewer than `MIN_PAIRS` pairs, when its interval's half-width exceeds `WIDE_INTERVAL` of it, or
    when it lies above `ideal` (what its skipped layers can give at most; 1.0 when none is skipped)."""
    speedup, (low, high) = measured["speedup"], measured["speedup_interval"]
    reasons = []
    if measured["pairs"] < MIN_PAIRS:
        reasons.append(f"{measured['pairs']} paired timing(s), fewer than {MIN_PAIRS}")
    half_width = max(speedup - low, high - speedup)
    if half_width > WIDE_INTERVAL * speedup:
        reasons.append(f"interval ±{half_width:.2f} wider than {100 * WIDE_INTERVAL:g} % of it")
    if ideal is not None and speedup > ideal + 1e-9:
        reasons.append(f"above its ideal {ideal:.2f}x")
    return {"speedup_reliable": not reasons, "speedup_note": "; ".join(reasons)}


def format_speedup(row: dict) -> str:
    """`1.42x ± 0.03` (the interval's larger half-width); `unreliable: 1.42x ± 0.31` for a figure marked unreliable
    (`speedup_verdict`); `1.42x` for a result written before speedups carried an interval."""
    text = f"{row['speedup']:.2f}x"
    if row.get("speedup_interval"):
        low, high = row["speedup_interval"]
        text += f" ± {max(row['speedup'] - low, high - row['speedup']):.2f}"
    return text if row.get("speedup_reliable", True) else f"unreliable: {text}"


def spread(repetitions: Sequence[Sequence[float]]) -> float:
    """How far repeated timings of the same work disagree: per item (index across `repetitions`), (max - min) /
    median of its timings; the median over items. 0.0 with fewer than two repetitions."""
    if len(repetitions) < 2:
        return 0.0
    values = np.asarray(repetitions, dtype=float)
    return float(np.median((values.max(0) - values.min(0)) / np.median(values, 0)))


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr (lazy import), or a silent stand-in."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            pass
    return types.SimpleNamespace(update=lambda n=1: None, close=lambda: None, set_postfix_str=lambda s: None)
