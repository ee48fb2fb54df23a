# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""Timing primitives: one synchronised timer, and one way to time several candidates interleaved.

Interleaving: within a repetition every case runs once on every input, and the order of the cases is rotated from
one repetition (and one input) to the next, so that a slow phase of a noisy, shared machine hits all of them alike.
On CUDA the device is synchronised before every timer starts and before it stops. Standard library and torch only.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence

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


def interleaved_times(
    cases: dict[str, Callable[..., object]],
    device: torch.device,
    repeats: int,
    warmup: int = 0,
    progress=None,
    inputs: Sequence[tuple] = ((),),
    on_first_output: Callable[[str, int, object], None] | None = None,
) -> dict[str, list[float]]:
    """Per case, `repeats` values: each recorded repetition's seconds, summed over the inputs; every case runs on every
    input, interleaved, and the first `warmup` repetitions are not recorded.

    `cases`: name -> callable, called as `case(*input)` for each input of `inputs` (argument tuples; default: one
    call without arguments). In repetition r on input i the cases run in their order rotated by r + i.
    `on_first_output` is called as `on_first_output(name, input_index, output)` with every output of the first
    repetition (outside the timers), e.g. to decode or check it. `progress`: anything with `update(n)`, advanced
    once per call.
    """
    names = list(cases)
    times = {name: [] for name in names}
    for repetition in range(warmup + repeats):
        elapsed = dict.fromkeys(names, 0.0)
        for index, arguments in enumerate(inputs):
            shift = (repetition + index) % len(names)
            for name in names[shift:] + names[:shift]:
                seconds, output = timed(lambda: cases[name](*arguments), device)
                elapsed[name] += seconds
                if progress is not None:
                    progress.update(1)
                if repetition == 0 and on_first_output is not None:
                    on_first_output(name, index, output)
                del output  # not kept alive into the next call (CUDA-graph replays reuse output memory)
        if repetition >= warmup:
            for name in names:
                times[name].append(elapsed[name])
    return times


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


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr (lazy import), or a silent stand-in."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            pass
    return types.SimpleNamespace(update=lambda n=1: None, close=lambda: None, set_postfix_str=lambda s: None)
