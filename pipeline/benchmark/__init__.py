# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""`hubert-ee benchmark`: how much faster early exit is than plain `HubertForCTC`, and how close to ideal.

Every number compares `HubertEEForCTC` with `transformers.HubertForCTC` carrying the SAME weights (the HuBERT-EE
state dict loaded into `HubertForCTC` with `strict=False`: `hubert.*` and `lm_head.*` are named alike, the
`exit_branches.*` keys are left out) in the same process, on the same device, dtype and inputs.

Method
    * Everything runs under `torch.inference_mode()` with the models in eval mode.
    * Warm-up calls first (`--warmup`, not recorded), then `--repeats` recorded repetitions, interleaved
      (`timing.interleaved_times`). Reported times are medians over the repetitions.
    * Latency is reported at batch 1 (`latency_ms`), throughput (utterances/s) at larger batches.

Workloads
    `trained` (module `trained`): a trained HuBERT-EE folder on a test set at the given thresholds.
    `forced` (module `forced`): random-weight HuBERT-base / HuBERT-large shapes with exits forced to a layer
    distribution.

Ideal speedup and efficiency (`hubert_ee.cost_model`)
    From component costs measured in the same interleaved repetitions as the full forwards (each component call
    is repeated inside its timer until the timer spans `--component-min-ms`). Check `components_sum_ms` (front end
    + layers + head) against `baseline_ms` in the overhead rows: on CPU they agree; on a GPU that is launch-bound
    (small batches, fp16/bf16) a component timed alone costs its host launch time, which overlaps with device work
    inside a real forward, so the sum exceeds the measured forward and the ideal there is only indicative.

Overhead
    HuBERT-EE with exits enabled but never taken (confidence criterion, threshold 2.0: confidence never exceeds 1)
    against `HubertForCTC`, at every batch size: every branch is computed and every criterion evaluated, nothing is
    saved. Goal: at most 3 %. Reported twice: the ratio of the two medians (`overhead_pct`) and the median of each
    repetition's own ratio (`overhead_paired_pct`, steadier on a shared machine). `--overhead-detail` also times
    `early_exit=False` (no branches at all), which isolates the cost of the model's own layer loop from that of the
    branches. The host reads per forward (`instrumentation.HostTransferCounter`) and the ops per component
    (`instrumentation.KernelCounter`) are reported beside the times.

Compiling (`--compile MODE`, `--compile-backend NAME`)
    `torch.compile` with the same options wraps `HubertForCTC`, HuBERT-EE and every timed component, so speedup,
    ideal and efficiency compare compiled with compiled. The exit loop compiles to one graph per stretch between
    two exit decisions; on CUDA, `--compile default --compile-backend cudagraphs` (or `--compile reduce-overhead`)
    replays each stretch as one CUDA graph, which takes the per-kernel host launches out of an exit's cost.
    Compilation happens in the warm-up (at least 3 repetitions then); the trained workload runs eagerly.

Profiling (`--profile OUT.txt`, `profiling`)
    The never-exit path taken apart, then torch.profiler tables of both models.

Modules: `instrumentation`, `models`, `forced`, `trained`, `profiling`, `report`, `cli`; the cost model and the timing
are the shared homes `hubert_ee.cost_model` and `hubert_ee.timing` (`evaluate` uses them too).
They import only torch, transformers, numpy, the standard library, the model files and `hubert_ee.forced_exits` /
`.outputs` / `.timing` / `.cost_model` at top level, so the benchmark runs on a GPU machine without datasets/jiwer/soundfile; the
`trained` workload imports `hubert_ee.data`, `.metrics` and `.export` when it runs.
"""

from .cli import add_arguments, main, run
from ..cost_model import (
    allocate_rows,
    early_exit_cost,
    format_distribution,
    ideal_speedup,
    lookup_cost,
    needed_row_counts,
    parse_distribution,
    plain_cost,
)
from .instrumentation import HostTransferCounter, KernelCounter, dispatched_ops, host_transfers
from .models import NEVER_EXIT, baseline_from, build_forced_model
from .report import OVERHEAD_GOAL_PCT, ROW_KEYS, plot_efficiency, to_markdown
from ..timing import interleaved_times, paired_ratio, time_call

__all__ = [
    "add_arguments", "main", "run",
    "allocate_rows", "early_exit_cost", "format_distribution", "ideal_speedup", "lookup_cost", "needed_row_counts",
    "parse_distribution", "plain_cost",
    "HostTransferCounter", "KernelCounter", "dispatched_ops", "host_transfers",
    "NEVER_EXIT", "baseline_from", "build_forced_model",
    "OVERHEAD_GOAL_PCT", "ROW_KEYS", "plot_efficiency", "to_markdown",
    "interleaved_times", "paired_ratio", "time_call",
]
