# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""`hubert-ee benchmark`: how much faster early exit is than plain `HubertForCTC`, and how close to ideal.

Every number compares `HubertEEForCTC` with `transformers.HubertForCTC` carrying the SAME weights (the HuBERT-EE
state dict loaded into `HubertForCTC` with `strict=False`: `hubert.*` and `lm_head.*` are named alike, the
`exit_branches.*` keys are left out) in the same process, on the same device, dtype and inputs.

Method
    * Everything runs under `torch.inference_mode()` with the models in eval mode.
    * Warm-up calls first (`--warmup`, not recorded), then `--repeats` recorded repetitions. Within a repetition
      the baseline and every candidate run once each, one after the other, and the order is rotated from one
      repetition to the next (interleaving), so that a slow phase of a noisy machine hits all of them alike.
      Reported times are medians over the repetitions. On CUDA, `torch.cuda.synchronize()` is called before
      starting and after stopping every timer.
    * Latency is reported at batch 1 (`latency_ms`), throughput (utterances/s) at larger batches.

Workloads
    `trained`: a trained HuBERT-EE folder (`--model`) on a test set (`--dataset`) at the given thresholds:
        measured speedup, WER of both models, mean exit layer.
    `forced`: HuBERT-base / HuBERT-large architectures with random weights on random `--seconds` clips, with the
        exit decisions FORCED to a layer distribution (`--exit-distribution`), so the speed of the early-exit
        machinery can be judged independently of what a trained model happens to decide.

Forcing exits
    `hubert_ee.forced_exits` (see there) makes each row leave at a given layer without changing the model's code;
    the model's real criterion still runs, so its cost stays in the timing.

Ideal speedup
    From measured component costs on the same device/dtype: front end (`model._embed`: feature encoder, projection,
    positional convolution, prologue), one encoder layer, one exit branch, and the final head
    (`model._final_head`). A row exiting after layer k costs front end + k layers + every branch consulted up to and
    including the exit; a row reaching the end costs front end + all layers + all branches + head. The plain model
    costs front end + all layers + head.
    * Batch 1: ideal = cost(plain) / mean over utterances of cost(exit layer of the utterance).
    * Batch B: batch compaction means that layer l runs on the rows whose exit is >= l, a branch at exit e on the
      rows still running there, the head on the rows reaching the end. Layers, branches and the head are measured
      AT THE ROW COUNTS THAT OCCUR (not assumed linear in rows); a row count that was not measured falls back to
      linear scaling from the nearest measured one. ideal = cost(plain, B rows) / cost(compacted batch).
    The exit criterion, the host synchronisation per exit and the compaction copies are NOT in the ideal: they are
    what `efficiency = measured speedup / ideal speedup` charges to the implementation.
    The components are timed in the same interleaved repetitions as the full forwards (each component call is
    repeated inside its timer until the timer spans `--component-min-ms`), so a busy phase of a shared machine
    affects both alike. Check `components_sum_ms` (front end + layers + head) against `baseline_ms` in the
    overhead rows: on CPU they agree; on a GPU that is launch-bound (small batches, fp16/bf16) a component timed
    alone costs its host launch time, which overlaps with device work inside a real forward, so the sum exceeds the
    measured forward and the ideal there is only indicative.

Overhead
    HuBERT-EE with exits enabled but never taken (confidence criterion, threshold 2.0: confidence never exceeds 1)
    against `HubertForCTC`, at every batch size: every branch is computed and every criterion evaluated, nothing is
    saved. Goal: at most 3 %. Reported twice: the ratio of the two medians (`overhead_pct`) and the median of each
    repetition's own ratio (`overhead_paired_pct`, steadier on a shared machine). `--overhead-detail` also times
    `early_exit=False` (no branches at all), which isolates the cost of the model's own layer loop from that of the
    branches.

Compiling (`--compile MODE`, `--compile-backend NAME`)
    `torch.compile` with the same options wraps `HubertForCTC`, HuBERT-EE and every timed component, so speedup,
    ideal and efficiency compare compiled with compiled. The exit loop compiles to one graph per stretch between
    two exit decisions; on CUDA, `--compile default --compile-backend cudagraphs` (or `--compile reduce-overhead`)
    replays each stretch as one CUDA graph, which takes the per-kernel host launches out of an exit's cost.
    Compilation happens in the warm-up (at least 3 repetitions then); the trained workload runs eagerly.

Profiling (`--profile OUT.txt`)
    Times, interleaved, variants that take the never-exit path apart (see `overhead_breakdown`: branches only,
    plus the per-exit device->host sync, plus the criterion; the positional convolution's weight norm folded
    into a plain weight; on CUDA also the host time to issue each forward), then writes
    torch.profiler tables of both models.

This module imports only torch, transformers, numpy, the standard library and the model files at top level, so it
runs on a GPU machine without datasets/jiwer/soundfile; the `trained` workload imports `.data`, `.metrics` and
`.export` when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import transformers
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import HubertConfig, HubertForCTC

from configuration_hubert_ee import HubertEEConfig
from modeling_hubert_ee import HubertEEExitBranch, HubertEEForCTC

from .forced_exits import forced_exit_targets, install_forced_exits, prepare_forced_targets
from .outputs import output_file, write_text


SAMPLING_RATE = 16000
OVERHEAD_GOAL_PCT = 3.0
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

NEVER_EXIT_SETTINGS = {"early_exit": True, "exit_criterion": "confidence", "exit_threshold": 2.0}

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}

# Random-weight architectures of the `forced` workload. Dropouts are irrelevant (eval mode) but zeroed anyway.
_COMMON = dict(vocab_size=32, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
               feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0)
ARCHS: dict[str, dict] = {
    # facebook/hubert-base-ls960 shape: post-norm encoder, group-norm feature encoder without conv bias.
    "base": dict(_COMMON, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 do_stable_layer_norm=False, feat_extract_norm="group", conv_bias=False, exit_layers=[4, 8]),
    # facebook/hubert-large-ls960-ft shape: stable-layer-norm (pre-norm) encoder, layer-norm feature encoder.
    "large": dict(_COMMON, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True, exit_layers=[8, 16]),
    # For tests and smoke runs only: a few milliseconds per call.
    "tiny": dict(_COMMON, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
                 conv_dim=(16, 16, 16), conv_stride=(5, 4, 2), conv_kernel=(10, 8, 2), num_conv_pos_embeddings=16,
                 num_conv_pos_embedding_groups=2, feat_extract_norm="layer", exit_layers=[1, 2, 3]),
}
# Default forced distributions, per architecture: one mixed, and everyone at each exit ("final" = last layer).
DEFAULT_DISTRIBUTIONS = {
    "base": ["4:0.25,8:0.25,final:0.5", "4:1", "8:1"],
    "large": ["8:0.25,16:0.25,final:0.5", "8:1", "16:1"],
    "tiny": ["1:0.25,2:0.25,final:0.5", "1:1"],
}
# Keys every result row carries, besides latency_ms/baseline_latency_ms (batch 1) or throughput/baseline_throughput.
ROW_KEYS = ("device", "dtype", "batch_size", "workload", "arch", "exit_distribution", "speedup", "ideal_speedup",
            "efficiency")


# ---------------------------------------------------------------------------------------------- small helpers

def _csv(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [item.strip() for item in value if str(item).strip()]


def _dtype_name(name: str) -> str:
    name = DTYPE_ALIASES.get(name.lower(), name.lower())
    if name not in DTYPES:
        raise ValueError(f"Unknown dtype {name!r}; choose among {sorted(DTYPES)}.")
    return name


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """Median over repetitions of each repetition's own candidate/baseline time ratio (both timed in the same
    interleaved repetition): a shared machine's slow and fast phases cancel within a repetition, which the ratio
    of the two medians does not guarantee."""
    if len(candidate) != len(baseline) or not candidate:
        raise ValueError(f"paired timings need the same non-zero number of repetitions, got {len(candidate)} "
                         f"and {len(baseline)}")
    return _median([c / b for c, b in zip(candidate, baseline)])


def overhead_fields(never_times: Sequence[float], baseline_times: Sequence[float]) -> dict:
    """The never-taken overhead row's timing fields from the interleaved times of exits-never-taken and of
    `HubertForCTC`: medians, the overhead as the ratio of medians and as the paired ratio, and the goal."""
    never, base = _median(never_times), _median(baseline_times)
    overhead_pct = (never / base - 1) * 100
    return {"ee_ms": _round(never * 1e3), "baseline_ms": _round(base * 1e3), "overhead_pct": _round(overhead_pct, 2),
            "overhead_paired_pct": _round((paired_ratio(never_times, baseline_times) - 1) * 100, 2),
            "goal_pct": OVERHEAD_GOAL_PCT, "meets_goal": bool(overhead_pct <= OVERHEAD_GOAL_PCT)}


def _round(value, digits=4):
    return None if value is None else round(float(value), digits)


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr (lazy import), or a silent stand-in."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            pass
    return types.SimpleNamespace(update=lambda n=1: None, close=lambda: None, set_postfix_str=lambda s: None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call of `fn`; on CUDA, synchronised before the timer starts and before it stops."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def interleaved_times(
    cases: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    warmup: int,
    progress=None,
) -> dict[str, list[float]]:
    """Run every case once per repetition, rotating the order each repetition; warm-up repetitions are dropped.

    Returns seconds per call, per case, `repeats` values each.
    """
    names = list(cases)
    times = {name: [] for name in names}
    for repetition in range(warmup + repeats):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed = time_call(cases[name], device)
            if repetition >= warmup:
                times[name].append(elapsed)
            if progress is not None:
                progress.update(1)
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


# ---------------------------------------------------------------------------------------------- distributions

def parse_distribution(spec: str, num_layers: int, exit_layers: Sequence[int] | None = None) -> dict[int, float]:
    """`"4:0.25,8:0.25,12:0.5"` -> {4: 0.25, 8: 0.25, 12: 0.5}: share of utterances leaving after each layer.

    `final` (or `last`) names the last layer (`num_layers`, the final head). Shares are normalised to sum to 1.
    With `exit_layers` given, every layer must be an exit layer or the last layer.
    """
    shares: dict[int, float] = {}
    for part in _csv(spec):
        layer_text, _, share_text = part.partition(":")
        layer_text = layer_text.strip().lower()
        layer = num_layers if layer_text in ("final", "last") else int(layer_text)
        share = float(share_text) if share_text.strip() else 1.0
        if share < 0:
            raise ValueError(f"Negative share {share} for layer {layer} in exit distribution {spec!r}.")
        shares[layer] = shares.get(layer, 0.0) + share
    total = sum(shares.values())
    if not shares or total <= 0:
        raise ValueError(f"Exit distribution {spec!r} gives no positive share.")
    allowed = None if exit_layers is None else set(exit_layers) | {num_layers}
    for layer in shares:
        if not 1 <= layer <= num_layers or (allowed is not None and layer not in allowed):
            where = sorted(allowed) if allowed is not None else f"[1, {num_layers}]"
            raise ValueError(f"Exit distribution {spec!r} names layer {layer}, but exits are at {where}.")
    return {layer: shares[layer] / total for layer in sorted(shares) if shares[layer] > 0}


def format_distribution(distribution: dict[int, float]) -> str:
    return ",".join(f"{layer}:{share:g}" for layer, share in sorted(distribution.items()))


def allocate_rows(distribution: dict[int, float], batch_size: int) -> list[int]:
    """Target exit layer per row of a batch: the counts nearest to the shares (largest remainder), rows ordered
    by layer."""
    quotas = {layer: share * batch_size for layer, share in distribution.items()}
    counts = {layer: int(math.floor(quota)) for layer, quota in quotas.items()}
    remaining = batch_size - sum(counts.values())
    for layer in sorted(quotas, key=lambda layer: (-(quotas[layer] - counts[layer]), layer))[:remaining]:
        counts[layer] += 1
    return [layer for layer in sorted(counts) for _ in range(counts[layer])]


# ---------------------------------------------------------------------------------------------- ideal speedup

def lookup_cost(table: dict, component: str, rows: int) -> float:
    """Seconds of `component` at `rows` rows: measured, else linear in rows from the nearest measured count."""
    measured = table[component]
    if rows <= 0:
        return 0.0
    if rows in measured:
        return measured[rows]
    nearest = min(measured, key=lambda count: (abs(count - rows), -count))
    return measured[nearest] * rows / nearest


def plain_cost(table: dict, num_layers: int, batch_size: int) -> float:
    """Plain `HubertForCTC`: front end + every layer + head, all on `batch_size` rows."""
    return (lookup_cost(table, "embed", batch_size) + num_layers * lookup_cost(table, "layer", batch_size)
            + lookup_cost(table, "head", batch_size))


def early_exit_cost(table: dict, num_layers: int, exit_layers: Sequence[int], targets: Sequence[int]) -> float:
    """Ideal cost of one batch whose rows leave after `targets` (one layer per row), with batch compaction."""
    targets = list(targets)
    cost = lookup_cost(table, "embed", len(targets))
    for layer in range(1, num_layers + 1):
        cost += lookup_cost(table, "layer", sum(target >= layer for target in targets))
        if layer in exit_layers:
            cost += lookup_cost(table, "branch", sum(target >= layer for target in targets))
    return cost + lookup_cost(table, "head", sum(target == num_layers for target in targets))


def ideal_speedup(table: dict, num_layers: int, exit_layers: Sequence[int], distribution: dict[int, float],
                  batch_size: int) -> float:
    """Ideal speedup of a forced exit distribution (see the module docstring).

    `table[component][rows]` holds seconds for components `embed`, `layer`, `branch`, `head`. Batch 1: the plain
    cost over the share-weighted mean per-utterance cost. Batch B: the rows are allocated with `allocate_rows`
    and the compacted batch is costed.
    """
    if batch_size == 1:
        mean = sum(share * early_exit_cost(table, num_layers, exit_layers, [layer])
                   for layer, share in distribution.items())
        return plain_cost(table, num_layers, 1) / mean
    targets = allocate_rows(distribution, batch_size)
    return plain_cost(table, num_layers, batch_size) / early_exit_cost(table, num_layers, exit_layers, targets)


def needed_row_counts(num_layers: int, exit_layers: Sequence[int], targets: Sequence[int]) -> set[int]:
    """Row counts at which layers/branches/head run for a batch with these targets (for measuring)."""
    counts = {sum(target >= layer for target in targets) for layer in list(exit_layers) + [num_layers]}
    counts |= {sum(target > layer for target in targets) for layer in exit_layers}
    counts.add(sum(target == num_layers for target in targets))
    counts.add(len(targets))
    return {count for count in counts if count > 0}


# ---------------------------------------------------------------------------------------------- models

def arch_config_kwargs(arch: str, arch_config: str | None = None) -> dict:
    """HubertEEConfig kwargs of a named architecture; `arch_config` (JSON text or a JSON file) defines `custom`
    or overrides fields of the named ones."""
    extra = {}
    if arch_config:
        text = Path(arch_config).read_text() if os.path.exists(arch_config) else arch_config
        extra = json.loads(text)
    if arch == "custom":
        if not extra:
            raise ValueError("--archs custom needs --arch-config with the HubertEEConfig fields.")
        return dict(_COMMON, **extra)
    if arch not in ARCHS:
        raise ValueError(f"Unknown architecture {arch!r}; choose among {sorted(ARCHS)} (or custom).")
    return {**ARCHS[arch], **extra}


def hubert_config_from(config: HubertEEConfig) -> HubertConfig:
    """The plain `HubertConfig` with the same architecture fields (the early-exit fields dropped)."""
    ee_only = {"exit_layers", "exit_branch", "exit_criterion", "exit_threshold", "exit_patience", "early_exit",
               "exit_training_strategy", "exit_loss_weight", "distill_weight", "distill_temperature", "auto_map",
               "model_type", "architectures", "transformers_version"}
    values = {key: value for key, value in config.to_dict().items() if key not in ee_only}
    plain = HubertConfig.from_dict(values)
    plain._attn_implementation = config._attn_implementation
    return plain


def baseline_from(model: HubertEEForCTC) -> HubertForCTC:
    """`HubertForCTC` carrying `model`'s backbone and final head (`strict=False`: the branches stay out)."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    with torch.device(device):
        baseline = HubertForCTC(hubert_config_from(model.config))
    result = baseline.load_state_dict(model.state_dict(), strict=False)
    missing = [key for key in result.missing_keys if "masked_spec_embed" not in key]
    unexpected = [key for key in result.unexpected_keys if not key.startswith("exit_branches.")]
    if missing or unexpected:
        raise RuntimeError(f"HubertForCTC does not match the HuBERT-EE backbone: missing {missing[:8]}, "
                           f"unexpected {unexpected[:8]}")
    return baseline.to(device=device, dtype=dtype).eval()


def build_forced_model(arch: str, branch: str, device: torch.device, dtype: torch.dtype, seed: int = 0,
                       exit_layers: Sequence[int] | None = None, arch_config: str | None = None) -> HubertEEForCTC:
    kwargs = arch_config_kwargs(arch, arch_config)
    if exit_layers:
        kwargs["exit_layers"] = list(exit_layers)
    config = HubertEEConfig(**kwargs, exit_branch=branch)
    torch.manual_seed(seed)
    with torch.device(device):
        model = HubertEEForCTC(config)
    return install_forced_exits(model.to(dtype=dtype).eval())


def _branch_of_type(model: HubertEEForCTC, branch_type: str) -> HubertEEExitBranch:
    """One exit branch of `branch_type` for `model`: the model's own if it has that type, else a random one."""
    if model.config.exit_branch == branch_type and len(model.exit_branches):
        return next(iter(model.exit_branches.values()))
    config = copy.deepcopy(model.config)
    config.exit_branch = branch_type
    parameter = next(model.parameters())
    with torch.device(parameter.device):
        branch = HubertEEExitBranch(config)
    return branch.to(dtype=parameter.dtype).eval()


COMPONENT_PREFIX = "component:"


@torch.inference_mode()
def component_cases(model: HubertEEForCTC, input_values: torch.Tensor, row_counts: set[int], min_seconds: float,
                    branch_types: Sequence[str] = ("transformer", "linear"),
                    compile_fn: Callable[[Callable], Callable] = lambda fn: fn) -> dict[str, tuple[Callable, int]]:
    """Timed pieces of the model on `input_values`' device and dtype: `embed` at the full batch; `layer` (one
    encoder layer), `branch_<type>` (one exit branch of each type), `head` (`_final_head`) and `criterion` (the
    confidence criterion, with its device->host copy) at every count in `row_counts`. Returns
    {"component:<name>:<rows>": (callable running the piece `inner` times, inner)}, to be timed interleaved with
    the full forwards (so that a busy phase of the machine affects both alike). `compile_fn` wraps each piece as
    `--compile` wraps the models, so that the ideal is built from pieces run the way the forwards run them."""
    device = input_values.device
    batch_size = input_values.shape[0]
    hidden_states, frame_mask = model._embed(input_values, None)
    mask = model._attention_mask(hidden_states, frame_mask)
    layer = model.hubert.encoder.layers[0]
    branches = {branch_type: _branch_of_type(model, branch_type) for branch_type in branch_types}
    settings = model._resolve_settings({})
    decision = type(model)._exit_decision
    calls = {("embed", batch_size): lambda: model._embed(input_values, None)}
    for rows in sorted(row_counts | {batch_size}):
        h = hidden_states[:rows].contiguous()
        m = mask[:rows] if mask is not None else None
        logits = model._final_head(h)
        calls[("layer", rows)] = lambda h=h, m=m: layer(h, attention_mask=m)
        for branch_type, branch in branches.items():
            calls[(f"branch_{branch_type}", rows)] = lambda h=h, m=m, branch=branch: branch(h, m)
        calls[("head", rows)] = lambda h=h: model._final_head(h)
        # valid=None: the forced workload has no padding, and that is what the model passes then
        calls[("criterion", rows)] = lambda logits=logits: decision(model, logits, None, settings, {}).cpu()
    return {f"{COMPONENT_PREFIX}{name}:{rows}": repeated(compile_fn(fn), device, min_seconds)
            for (name, rows), fn in calls.items()}


class KernelCounter(TorchDispatchMode):
    """Counts the tensor ops that compute something: not views, and not ops that hand back one of their inputs
    untouched (dropout in eval mode), which launch nothing either. In-place ops return their input too but do
    compute, so they count."""

    def __init__(self):
        super().__init__()
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        passthrough = not func._schema.is_mutable and any(out is arg for arg in args)
        if not func.is_view and not passthrough:
            self.kernels += 1
        return out


class HostTransferCounter(TorchFunctionMode):
    """Counts the places where the host reads tensor values (`tolist`, `item`, `cpu`, `numpy`, `bool(...)`,
    `int(...)`, `float(...)`, an index) and where it builds a tensor from host data for a device
    (`torch.tensor(..., device=...)`, `torch.as_tensor(..., device=...)`). On a GPU each read waits for the device
    to finish everything queued, and a copy from pageable host memory waits likewise; on the CPU neither costs
    anything, but they are counted alike, so a CPU test can check how many waits a GPU forward will have."""

    READS = frozenset({torch.Tensor.tolist, torch.Tensor.item, torch.Tensor.cpu, torch.Tensor.numpy,
                       torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__})
    FROM_HOST = frozenset({torch.tensor, torch.as_tensor})

    def __init__(self):
        super().__init__()
        self.reads = 0
        self.host_to_device = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.READS:
            self.reads += 1
        elif func in self.FROM_HOST and kwargs.get("device") is not None:
            self.host_to_device += 1
        return func(*args, **kwargs)


@torch.inference_mode()
def host_transfers(call: Callable[[], object]) -> dict[str, int]:
    """`HostTransferCounter` counts of one `call()`: {"reads": ..., "host_to_device": ...}."""
    with HostTransferCounter() as counter:
        call()
    return {"reads": counter.reads, "host_to_device": counter.host_to_device}


@torch.inference_mode()
def dispatched_ops(model: HubertEEForCTC, input_values: torch.Tensor,
                   branch_types: Sequence[str] = ("transformer", "linear")) -> dict[str, int]:
    """`KernelCounter` counts of one encoder layer, each branch type, the criterion (with the device->host copy of
    its decision, which is no op on the CPU) and the head, on one row of `input_values`. Each counted op is a
    kernel launch on a GPU, so where a GPU is launch-bound (batch 1, small models) these counts, not FLOPs, set the
    cost of an exit against a layer."""
    hidden_states, _ = model._embed(input_values[:1], None)
    logits = model._final_head(hidden_states)
    layer = model.hubert.encoder.layers[0]
    settings = model._resolve_settings({})
    pieces = {"layer": lambda: layer(hidden_states, attention_mask=None),
              "criterion": lambda: type(model)._exit_decision(model, logits, None, settings, {}).cpu(),
              "head": lambda: model._final_head(hidden_states)}
    for branch_type in branch_types:
        branch = _branch_of_type(model, branch_type)
        pieces[f"branch_{branch_type}"] = lambda branch=branch: branch(hidden_states, None)
    counts = {}
    for name, piece in pieces.items():
        with KernelCounter() as counter:
            piece()
        counts[name] = counter.kernels
    return counts


def component_table(medians: dict[str, float], cases: dict[str, tuple[Callable, int]], branch: str
                    ) -> dict[str, dict[int, float]]:
    """{component: {rows: seconds per call}} from the medians of `component_cases` timings; `branch` is the
    model's own branch type (copied to the `branch` entry used by the ideal-speedup formulas)."""
    table: dict[str, dict[int, float]] = {}
    for key, (_, inner) in cases.items():
        name, rows = key[len(COMPONENT_PREFIX):].rsplit(":", 1)
        table.setdefault(name, {})[int(rows)] = medians[key] / inner
    table["branch"] = dict(table[f"branch_{branch}"])
    return table


def measure_components(model: HubertEEForCTC, input_values: torch.Tensor, row_counts: set[int], repeats: int,
                       warmup: int, min_seconds: float, branch_types: Sequence[str] = ("transformer", "linear"),
                       ) -> dict[str, dict[int, float]]:
    """`component_table` of `component_cases` timed on their own (medians of `repeats`, interleaved)."""
    cases = component_cases(model, input_values, row_counts, min_seconds, branch_types)
    with torch.inference_mode():
        times = interleaved_times({key: fn for key, (fn, _) in cases.items()}, input_values.device, repeats, warmup)
    return component_table({key: _median(values) for key, values in times.items()}, cases, model.config.exit_branch)


# ---------------------------------------------------------------------------------------------- forced workload

def _forced_cases(model, baseline, input_values, distributions, overhead_detail, first_outputs,
                  compile_fn=lambda fn: fn):
    """The callables timed together at one batch size: baseline, never-exit, optional no-exit, forced ones.

    The first call of each (a warm-up call when `--warmup` >= 1, so its extra host sync is not recorded) is
    checked or kept: forced calls must leave exactly at their targets, and the first logits of the baseline and
    of the never-exit call are kept in `first_outputs` to compare their logits. `compile_fn` (`compiler`) wraps
    both models alike.
    """
    batch_size = input_values.shape[0]
    run_model, run_baseline = compile_fn(model), compile_fn(baseline)

    def first_call_hook(name, fn, check=None):
        def call():
            output = fn()
            if name not in first_outputs:
                # a copy: under a CUDA-graph compile, later replays reuse the memory of a graph's outputs
                first_outputs[name] = output.logits.clone()
                if check is not None:
                    check(output)
            return output
        return call

    def forced(targets):
        prepared = prepare_forced_targets(model, targets, input_values.device)  # no host->device copy when timed

        def call():
            with forced_exit_targets(model, prepared):
                return run_model(input_values)

        def check(output):
            landed = output.exit_layer.tolist()
            if landed != list(targets):
                raise RuntimeError(f"Forced exits went wrong: asked {list(targets)}, got {landed}.")
        return call, check

    cases = {
        "baseline": first_call_hook("baseline", lambda: run_baseline(input_values)),
        "never": first_call_hook("never", lambda: run_model(input_values, **NEVER_EXIT_SETTINGS)),
    }
    if overhead_detail:
        cases["no_exit"] = lambda: run_model(input_values, early_exit=False)
    plans = {}  # distribution name -> {case name: weight}: how the candidate time is put together
    if batch_size == 1:
        layers = sorted({layer for distribution in distributions.values() for layer in distribution})
        for layer in layers:
            cases[f"at_{layer}"] = first_call_hook(f"at_{layer}", *forced([layer]))
        for name, distribution in distributions.items():
            plans[name] = {f"at_{layer}": share for layer, share in distribution.items()}
    else:
        for name, distribution in distributions.items():
            cases[f"dist_{name}"] = first_call_hook(f"dist_{name}", *forced(allocate_rows(distribution, batch_size)))
            plans[name] = {f"dist_{name}": 1.0}
    return cases, plans


def compiler(args) -> Callable[[Callable], Callable]:
    """`--compile`: the wrapper applied alike to both models and to every timed component (identity when off)."""
    mode = args.compile
    if mode == "off":
        return lambda fn: fn
    options = {"backend": args.compile_backend}
    if mode != "default":
        options["mode"] = mode

    def wrap(fn):
        compiled = torch.compile(fn, **options)

        def call(*call_args, **call_kwargs):
            # every call is a fresh iteration: CUDA-graph trees may then reuse the previous call's output memory
            torch.compiler.cudagraph_mark_step_begin()
            return compiled(*call_args, **call_kwargs)
        return call
    return wrap


def run_forced(args, device: torch.device, dtype_name: str, arch: str, branch: str, log) -> dict:
    """Forced workload for one (device, dtype, arch, branch): rows, branch costs and overhead."""
    dtype = DTYPES[dtype_name]
    model = build_forced_model(arch, branch, device, dtype, seed=args.seed, exit_layers=_ints(args.exit_layers),
                               arch_config=args.arch_config)
    baseline = baseline_from(model)
    config = model.config
    num_layers = config.num_hidden_layers
    specs = _csv(args.exit_distribution) if args.exit_distribution else DEFAULT_DISTRIBUTIONS.get(arch, ["final:1"])
    distributions = {}
    for spec in specs:
        try:
            distribution = parse_distribution(spec, num_layers, config.exit_layers)
        except ValueError as error:
            log(f"note: {arch}: skipping exit distribution {spec!r}: {error}")
            continue
        distributions[format_distribution(distribution)] = distribution
    samples = int(round(args.seconds * SAMPLING_RATE))
    generator = torch.Generator().manual_seed(args.seed)
    min_seconds = args.component_min_ms / 1000.0
    out = {"rows": [], "branch_cost": [], "overhead": [], "components": []}
    common = {"device": device.type, "dtype": dtype_name, "arch": arch, "branch": branch,
              "num_hidden_layers": num_layers, "exit_layers": list(config.exit_layers), "seconds": args.seconds}
    compile_fn = compiler(args)
    if args.compile != "off":
        common["compile"] = f"{args.compile}/{args.compile_backend}"
    for batch_size in _ints(args.batch_sizes):
        input_values = torch.randn(batch_size, samples, generator=generator).to(device=device, dtype=dtype)
        label = f"{device.type}/{dtype_name}/{arch}/{branch}/b{batch_size}"
        row_counts = {batch_size}
        for distribution in distributions.values():
            if batch_size > 1:
                row_counts |= needed_row_counts(num_layers, config.exit_layers, allocate_rows(distribution, batch_size))
        components = component_cases(model, input_values, row_counts, min_seconds, compile_fn=compile_fn)
        op_counts = dispatched_ops(model, input_values)
        transfers = {"hubert_ee": host_transfers(functools.partial(model, input_values, **NEVER_EXIT_SETTINGS)),
                     "baseline": host_transfers(functools.partial(baseline, input_values))}
        with torch.inference_mode():
            first_outputs = {}
            cases, plans = _forced_cases(model, baseline, input_values, distributions, args.overhead_detail,
                                         first_outputs, compile_fn)
            cases.update({key: fn for key, (fn, _) in components.items()})
            bar = _progress((args.warmup + args.repeats) * len(cases), label, args.progress)
            times = interleaved_times(cases, device, args.repeats, args.warmup, bar)
            bar.close()
            logit_diff = float((first_outputs["baseline"].float() - first_outputs["never"].float()).abs().max())
            first_outputs.clear()
        medians = {name: _median(values) for name, values in times.items()}
        table = component_table(medians, components, branch)
        out["components"].append({**common, "batch_size": batch_size,
                                  "seconds_by_rows": {key: {str(rows): value for rows, value in per.items()}
                                                      for key, per in table.items()}})
        base = medians["baseline"]
        for name, plan in plans.items():
            candidate_time = sum(share * medians[case] for case, share in plan.items())
            distribution = distributions[name]
            speedup = base / candidate_time
            ideal = ideal_speedup(table, num_layers, config.exit_layers, distribution, batch_size)
            row = {**common, "workload": "forced", "batch_size": batch_size, "exit_distribution": name,
                   "mean_exit_layer": _round(sum(layer * share for layer, share in distribution.items())),
                   "speedup": _round(speedup), "ideal_speedup": _round(ideal), "efficiency": _round(speedup / ideal),
                   "repeats": args.repeats}
            if batch_size > 1:
                realised = allocate_rows(distribution, batch_size)
                row["rows_per_exit"] = {str(layer): realised.count(layer) for layer in sorted(set(realised))}
            row.update(_speed_fields(batch_size, candidate_time, base))
            out["rows"].append(row)
        layer_cost = table["layer"][1] if 1 in table["layer"] else table["layer"][batch_size]
        rows_for_cost = 1 if 1 in table["layer"] else batch_size
        branch_cost = {**common, "batch_size": batch_size, "rows": rows_for_cost,
                       "embed_ms": _round(table["embed"][batch_size] * 1e3),
                       "layer_ms": _round(layer_cost * 1e3),
                       "head_ms": _round(table["head"][rows_for_cost] * 1e3),
                       "criterion_ms": _round(table["criterion"][rows_for_cost] * 1e3),
                       "criterion_fraction_of_layer": _round(table["criterion"][rows_for_cost] / layer_cost),
                       "dispatched_ops": op_counts, "branches": {}}
        for key in table:
            if key.startswith("branch_"):
                seconds = table[key][rows_for_cost]
                branch_cost["branches"][key[len("branch_"):]] = {"ms": _round(seconds * 1e3),
                                                                 "fraction_of_layer": _round(seconds / layer_cost)}
        out["branch_cost"].append(branch_cost)
        overhead = {**common, "workload": "forced", "batch_size": batch_size,
                    "criterion": NEVER_EXIT_SETTINGS["exit_criterion"],
                    "threshold": NEVER_EXIT_SETTINGS["exit_threshold"],
                    **overhead_fields(times["never"], times["baseline"]),
                    "ideal_overhead_pct": _round(100 * len(config.exit_layers)
                                                 * table["branch"][batch_size]
                                                 / plain_cost(table, num_layers, batch_size), 2),
                    "components_sum_ms": _round(plain_cost(table, num_layers, batch_size) * 1e3),
                    "max_abs_logit_diff": _round(logit_diff, 6), "host_transfers": transfers,
                    "repeats": args.repeats}
        if "no_exit" in medians:
            overhead["no_exit_ms"] = _round(medians["no_exit"] * 1e3)
            overhead["no_exit_overhead_pct"] = _round((medians["no_exit"] / base - 1) * 100, 2)
        out["overhead"].append(overhead)
        log(f"{label}: baseline {base * 1e3:.1f} ms/batch, never-exit overhead {overhead['overhead_pct']:+.2f} %"
            + "".join(f"; {row['exit_distribution']}: x{row['speedup']:.3f} (ideal x{row['ideal_speedup']:.3f})"
                      for row in out["rows"] if row["batch_size"] == batch_size))
    del model, baseline
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _host_reads_cell(transfers: dict | None) -> str:
    """"2 / 0": host reads per forward of HuBERT-EE and of the baseline (absent from reports written before they
    were counted)."""
    if not transfers:
        return "-"
    return f"{transfers['hubert_ee']['reads']} / {transfers['baseline']['reads']}"


def _speed_fields(batch_size: int, candidate_seconds: float, baseline_seconds: float) -> dict:
    fields = {"batch_time_ms": _round(candidate_seconds * 1e3),
              "baseline_batch_time_ms": _round(baseline_seconds * 1e3)}
    if batch_size == 1:
        fields.update(latency_ms=_round(candidate_seconds * 1e3), baseline_latency_ms=_round(baseline_seconds * 1e3))
    else:
        fields.update(throughput=_round(batch_size / candidate_seconds),
                      baseline_throughput=_round(batch_size / baseline_seconds))
    return fields


def _ints(value) -> list[int]:
    return [int(item) for item in _csv(value)]


# ---------------------------------------------------------------------------------------------- trained workload

def default_model() -> str | None:
    """`hubert_ee.DEFAULT_MODEL` when the package defines it."""
    package = __package__ or "hubert_ee"
    try:
        return getattr(importlib.import_module(package), "DEFAULT_MODEL", None)
    except ImportError:
        return None


def run_trained(args, device: torch.device, dtype_name: str, log) -> dict:
    """Trained workload: a HuBERT-EE folder on a test set at each threshold, against HubertForCTC."""
    from .data import load_speech_dataset
    from .export import load_processor
    from .metrics import word_error_rate

    dtype = DTYPES[dtype_name]
    model = HubertEEForCTC.from_pretrained(args.model).to(device=device, dtype=dtype).eval()
    baseline = baseline_from(model)
    processor = load_processor(args.model)
    dataset = load_speech_dataset(args.dataset, split=args.split, max_samples=args.max_samples)
    audio = [np.asarray(example["audio"], dtype=np.float32) for example in dataset]
    references = [str(example["text"]) for example in dataset]
    criterion = args.exit_criterion or model.config.exit_criterion
    thresholds = [float(value) for value in _csv(args.thresholds)] or [model.config.exit_threshold]
    config = model.config
    num_layers = config.num_hidden_layers
    mean_seconds = float(np.mean([len(clip) for clip in audio])) / SAMPLING_RATE
    out = {"rows": [], "branch_cost": [], "overhead": [], "components": []}
    common = {"device": device.type, "dtype": dtype_name, "workload": "trained", "arch": str(args.model),
              "branch": config.exit_branch, "num_hidden_layers": num_layers, "exit_layers": list(config.exit_layers),
              "dataset": str(args.dataset), "utterances": len(audio), "criterion": criterion}

    def settings_for(threshold):
        # early_exit=True: a calibrated config may store early_exit=False (no setting met its budget), and a
        # threshold asked for here must still be measured.
        if criterion == "patience":
            return {"early_exit": True, "exit_criterion": criterion, "exit_patience": int(threshold)}
        return {"early_exit": True, "exit_criterion": criterion, "exit_threshold": threshold}

    def decode(logits, lengths):
        ids = logits.argmax(-1)
        frames = torch.arange(ids.shape[1], device=ids.device)[None, :] >= lengths[:, None]
        return processor.batch_decode(ids.masked_fill(frames, config.pad_token_id).cpu().numpy())

    for batch_size in _ints(args.batch_sizes):
        batches = []
        for start in range(0, len(audio), batch_size):
            clips = audio[start:start + batch_size]
            features = processor(clips, sampling_rate=SAMPLING_RATE, padding=True, return_tensors="pt")
            input_values = features["input_values"].to(device=device, dtype=dtype)
            mask = features.get("attention_mask")
            mask = mask.to(device) if mask is not None else None
            sample_lengths = mask.sum(-1) if mask is not None else torch.full((len(clips),), input_values.shape[1],
                                                                              device=device)
            lengths = model.frame_lengths(sample_lengths)
            batches.append((input_values, mask, lengths))
        cases = {"baseline": lambda x, m: baseline(x, attention_mask=m)}
        for threshold in thresholds:
            settings = settings_for(threshold)
            cases[f"t={threshold:g}"] = lambda x, m, settings=settings: model(x, attention_mask=m, **settings)
        cases["never"] = lambda x, m: model(x, attention_mask=m, **NEVER_EXIT_SETTINGS)
        totals = {name: [] for name in cases}
        hypotheses = {name: [] for name in cases}
        exit_layers = {name: [] for name in cases}
        label = f"trained {device.type}/{dtype_name}/b{batch_size}"
        bar = _progress((args.warmup + args.repeats) * len(cases) * len(batches), label, args.progress)
        with torch.inference_mode():
            names = list(cases)
            for repetition in range(args.warmup + args.repeats):
                elapsed = dict.fromkeys(names, 0.0)
                for index, (input_values, mask, lengths) in enumerate(batches):
                    shift = (repetition + index) % len(names)
                    for name in names[shift:] + names[:shift]:
                        result = {}
                        elapsed[name] += time_call(lambda: result.setdefault("out", cases[name](input_values, mask)),
                                                   device)
                        bar.update(1)
                        if repetition == 0:
                            output = result["out"]
                            hypotheses[name] += decode(output.logits, lengths)
                            if name != "baseline":
                                exit_layers[name] += output.exit_layer.tolist()
                if repetition >= args.warmup:
                    for name in names:
                        totals[name].append(elapsed[name])
        bar.close()
        medians = {name: _median(values) for name, values in totals.items()}
        base = medians["baseline"]
        baseline_wer = word_error_rate(references, hypotheses["baseline"])
        # Component costs on a clip of the mean length, at every row count compaction can leave: on a GPU a small
        # model is launch-bound and its cost is far from linear in rows, so no count is extrapolated.
        probe = torch.randn(min(batch_size, len(audio)), max(int(mean_seconds * SAMPLING_RATE), 400),
                            generator=torch.Generator().manual_seed(args.seed)).to(device=device, dtype=dtype)
        with torch.inference_mode():
            table = measure_components(model, probe, set(range(1, probe.shape[0] + 1)), args.repeats,
                                       1, args.component_min_ms / 1000.0,
                                       branch_types=(config.exit_branch,))
        for name in names:
            if name == "baseline":
                continue
            layers = exit_layers[name]
            counts = {layer: layers.count(layer) / len(layers) for layer in sorted(set(layers))}
            if batch_size == 1:
                ideal = ideal_speedup(table, num_layers, config.exit_layers, counts, 1)
            else:
                plain = sum(plain_cost(table, num_layers, min(batch_size, len(layers) - start))
                            for start in range(0, len(layers), batch_size))
                compacted = sum(early_exit_cost(table, num_layers, config.exit_layers, layers[start:start + batch_size])
                                for start in range(0, len(layers), batch_size))
                ideal = plain / compacted
            speedup = base / medians[name]
            row = {**common, "batch_size": batch_size, "threshold": name,
                   "exit_distribution": format_distribution(counts),
                   "mean_exit_layer": _round(float(np.mean(layers))),
                   "wer": _round(word_error_rate(references, hypotheses[name]), 3),
                   "baseline_wer": _round(baseline_wer, 3),
                   "speedup": _round(speedup), "ideal_speedup": _round(ideal), "efficiency": _round(speedup / ideal),
                   "repeats": args.repeats}
            if batch_size == 1:  # mean latency per utterance
                row.update(latency_ms=_round(medians[name] / len(audio) * 1e3),
                           baseline_latency_ms=_round(base / len(audio) * 1e3))
            else:
                row.update(throughput=_round(len(audio) / medians[name]),
                           baseline_throughput=_round(len(audio) / base))
            if name == "never":
                out["overhead"].append({**common, "batch_size": batch_size,
                                        **overhead_fields(totals[name], totals["baseline"])})
            else:
                out["rows"].append(row)
        log(f"{label}: baseline WER {baseline_wer:.2f} %; "
            + "; ".join(f"{row['threshold']}: x{row['speedup']:.3f}, WER {row['wer']:.2f} %, mean exit "
                        f"{row['mean_exit_layer']:.2f}" for row in out["rows"] if row["batch_size"] == batch_size))
    return out


# ---------------------------------------------------------------------------------------------- profiling

@contextlib.contextmanager
def _decision_replaced(model, decision):
    """Temporarily replace the model's `_exit_decision` (profiling experiments only)."""
    previous = model.__dict__.get("_exit_decision")
    model._exit_decision = types.MethodType(decision, model)
    try:
        yield
    finally:
        if previous is None:
            del model._exit_decision
        else:
            model._exit_decision = previous


def _fold_weight_norm(model):
    """A copy of `model` whose positional-convolution weight norm is folded into a plain weight."""
    from torch.nn.utils import parametrize

    parameter = next(model.parameters())
    with torch.device(parameter.device):  # (a parametrized module does not survive copy.deepcopy)
        folded = type(model)(copy.deepcopy(model.config))
    folded.load_state_dict(model.state_dict())
    folded = folded.to(dtype=parameter.dtype).eval()
    conv = folded.hubert.encoder.pos_conv_embed.conv
    if parametrize.is_parametrized(conv, "weight"):
        parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
    return folded


def overhead_breakdown(model, baseline, input_values, repeats: int, warmup: int, progress=None) -> dict[str, float]:
    """Median seconds per call of variants that take the never-exit path apart (interleaved):

    `baseline` (HubertForCTC), `baseline_wn_folded` (a copy whose weight-normed positional convolution weight is
    computed once, `parametrize.remove_parametrizations(..., leave_parametrized=True)`, instead of at every call),
    `ee_no_exit` (early_exit=False: the model's own layer loop, no branch), `ee_branches_only` (branches run, the
    decision is a host-side all-False tensor: no criterion, no device->host sync), `ee_branches_sync` (adds the
    per-exit sync: the decision is an all-False device tensor), `ee_never` (adds the real confidence criterion:
    the real never-exit path), `ee_never_wn_folded`. (`parametrize.cached()` around each call would not help:
    the weight is read once per forward anyway.)
    """
    device = input_values.device
    folded_model, folded_baseline = _fold_weight_norm(model), _fold_weight_norm(baseline)

    def host_false(self, logits, valid, settings, state):
        return torch.zeros(logits.shape[0], dtype=torch.bool)

    def device_false(self, logits, valid, settings, state):
        return torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)

    def with_decision(decision):
        def call():
            with _decision_replaced(model, decision):
                return model(input_values, **NEVER_EXIT_SETTINGS)
        return call

    cases = {
        "baseline": lambda: baseline(input_values),
        "baseline_wn_folded": lambda: folded_baseline(input_values),
        "ee_no_exit": lambda: model(input_values, early_exit=False),
        "ee_branches_only": with_decision(host_false),
        "ee_branches_sync": with_decision(device_false),
        "ee_never": lambda: model(input_values, **NEVER_EXIT_SETTINGS),
        "ee_never_wn_folded": lambda: folded_model(input_values, **NEVER_EXIT_SETTINGS),
    }
    with torch.inference_mode():
        times = interleaved_times(cases, device, repeats, warmup, progress)
        medians = {name: _median(values) for name, values in times.items()}
        if device.type == "cuda":  # host time to issue a forward (no sync at the end): its CPU-side cost
            for name in ("baseline", "ee_no_exit", "ee_never"):
                issue = []
                for _ in range(repeats):
                    _sync(device)
                    start = time.perf_counter()
                    cases[name]()
                    issue.append(time.perf_counter() - start)
                    _sync(device)
                medians[f"{name}_host_issue"] = _median(issue)
    return medians


def profile_overhead(args, device: torch.device, dtype_name: str, arch: str, branch: str, batch_size: int,
                     log) -> str:
    """Where the never-exit path loses time against HubertForCTC (diagnostic, `--profile`): the interleaved
    `overhead_breakdown`, then torch.profiler tables of both models, with device-busy time per call on CUDA."""
    from torch.profiler import ProfilerActivity, profile

    dtype = DTYPES[dtype_name]
    model = build_forced_model(arch, branch, device, dtype, seed=args.seed, exit_layers=_ints(args.exit_layers),
                               arch_config=args.arch_config)
    baseline = baseline_from(model)
    input_values = torch.randn(batch_size, int(args.seconds * SAMPLING_RATE)).to(device=device, dtype=dtype)
    title = f"{device.type}/{dtype_name}/{arch}/{branch}/b{batch_size}, {args.seconds:g} s clips"
    breakdown = overhead_breakdown(model, baseline, input_values, args.repeats, args.warmup)
    base = breakdown["baseline"]
    text = [f"# Never-exit overhead breakdown ({title}; medians of {args.repeats}, interleaved)\n"]
    text += [f"{name:<20} {seconds * 1e3:10.3f} ms  {100 * (seconds / base - 1):+8.2f} % vs HubertForCTC"
             for name, seconds in breakdown.items()]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    calls = max(1, min(args.repeats, 10))
    for name, fn in (("HubertForCTC", lambda: baseline(input_values)),
                     ("HubertEEForCTC, exits never taken", lambda: model(input_values, **NEVER_EXIT_SETTINGS))):
        with torch.inference_mode():
            for _ in range(max(1, args.warmup)):
                fn()
            _sync(device)
            start = time.perf_counter()
            with profile(activities=activities) as prof:
                for _ in range(calls):
                    fn()
                _sync(device)
            wall = (time.perf_counter() - start) / calls
        averages = prof.key_averages()
        header = f"\n## {name} ({title}, {calls} calls; profiled wall {wall * 1e3:.3f} ms/call)"
        if device.type == "cuda":  # kernel time only (operator rows would count the same kernels twice)
            kernels = [event for event in prof.events() if event.device_type == torch.autograd.DeviceType.CUDA]
            busy = sum(event.time_range.elapsed_us() for event in kernels) / calls / 1e3
            header += (f"; {len(kernels) / calls:.0f} kernels/call, device busy {busy:.3f} ms/call, "
                       f"idle {wall * 1e3 - busy:.3f} ms/call (under the profiler)")
        table = None
        for sort_by in (("self_device_time_total", "self_cuda_time_total") if device.type == "cuda" else ()) + (
                "self_cpu_time_total",):
            try:
                table = averages.table(sort_by=sort_by, row_limit=args.profile_rows)
                break
            except (AttributeError, KeyError, ValueError, RuntimeError):
                continue
        text.append(header + "\n\n" + (table or ""))
    log("\n".join(text))
    return "\n".join(text)


# ---------------------------------------------------------------------------------------------- reporting

def plot_efficiency(rows: Sequence[dict], path: str | Path) -> Path:
    """PNG: measured speedup against ideal speedup, one panel per device, a marker per (workload / arch, dtype)
    and a colour per batch size; the diagonal is efficiency 1, the dashed lines the 0.9 and 0.8 goals."""
    from .plots import pyplot, save_figure

    plt = pyplot()
    rows = [row for row in rows if row.get("ideal_speedup") and row.get("speedup")]
    if not rows:
        raise ValueError("no benchmark rows with a speedup and an ideal speedup to plot")

    def group(row):
        return row["workload"] if row["workload"] == "trained" else row["arch"], row["dtype"]

    devices = sorted({row["device"] for row in rows})
    figure, axes = plt.subplots(1, len(devices), figsize=(6 * len(devices), 5), squeeze=False)
    markers = "osD^v<>pXh*"
    batch_sizes = sorted({row["batch_size"] for row in rows})
    colours = plt.get_cmap("viridis")([index / max(len(batch_sizes) - 1, 1) for index in range(len(batch_sizes))])
    for axis, device in zip(axes[0], devices):
        mine = [row for row in rows if row["device"] == device]
        top = max(max(row["ideal_speedup"], row["speedup"]) for row in mine) * 1.05
        low = min(min(row["ideal_speedup"], row["speedup"]) for row in mine) * 0.95
        for factor, style in ((1.0, "-"), (0.9, "--"), (0.8, ":")):
            axis.plot([low, top], [low * factor, top * factor], style, color="grey", linewidth=0.8,
                      label=f"efficiency {factor:g}")
        for group_index, (name, dtype) in enumerate(sorted({group(row) for row in mine})):
            for batch_index, batch_size in enumerate(batch_sizes):
                points = [row for row in mine if row["batch_size"] == batch_size and group(row) == (name, dtype)]
                if points:
                    axis.scatter([row["ideal_speedup"] for row in points], [row["speedup"] for row in points],
                                 marker=markers[group_index % len(markers)], color=colours[batch_index], s=28,
                                 label=f"{name} {dtype}, batch {batch_size}")
        axis.set_xlim(low, top)
        axis.set_ylim(low, top)
        axis.set_xlabel("ideal speedup (from component costs)")
        axis.set_ylabel("measured speedup over HubertForCTC")
        axis.set_title(device)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, ncol=2)
    return save_figure(figure, path)


def _fmt(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(report: dict) -> str:
    """Readable tables of a report (`rows`, `branch_cost`, `overhead`)."""
    lines = [f"# HuBERT-EE benchmark ({report['meta']['created']})", ""]
    meta = report["meta"]
    lines.append(f"torch {meta['torch']}, transformers {meta['transformers']}; devices: "
                 + "; ".join(f"{key}: {value}" for key, value in meta["device_names"].items())
                 + f"; {meta['repeats']} repeats after {meta['warmup']} warm-up, medians, interleaved.")
    lines.append("")
    forced = [row for row in report["rows"] if row["workload"] == "forced"]
    if forced:
        lines += ["## Forced exits (random weights)", "",
                  "| device | dtype | arch | branch | batch | exit distribution | mean exit | latency ms / thru utt/s "
                  "| baseline | speedup | ideal | efficiency |",
                  "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
        for row in forced:
            value, base = ((row["latency_ms"], row["baseline_latency_ms"]) if row["batch_size"] == 1
                           else (row["throughput"], row["baseline_throughput"]))
            unit = " ms" if row["batch_size"] == 1 else " utt/s"
            lines.append(f"| {row['device']} | {row['dtype']} | {row['arch']} | {row['branch']} | {row['batch_size']} "
                         f"| {row['exit_distribution']} | {_fmt(row['mean_exit_layer'], 2)} | {_fmt(value, 2)}{unit} "
                         f"| {_fmt(base, 2)}{unit} | {_fmt(row['speedup'])} | {_fmt(row['ideal_speedup'])} "
                         f"| {_fmt(row['efficiency'])} |")
        lines.append("")
    trained = [row for row in report["rows"] if row["workload"] == "trained"]
    if trained:
        lines += ["## Trained model", "",
                  "| device | dtype | batch | threshold | mean exit | WER % | baseline WER % | latency ms / thru utt/s "
                  "| baseline | speedup | ideal | efficiency |",
                  "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in trained:
            value, base = ((row["latency_ms"], row["baseline_latency_ms"]) if row["batch_size"] == 1
                           else (row["throughput"], row["baseline_throughput"]))
            lines.append(f"| {row['device']} | {row['dtype']} | {row['batch_size']} | {row['threshold']} "
                         f"| {_fmt(row['mean_exit_layer'], 2)} | {_fmt(row['wer'], 2)} "
                         f"| {_fmt(row['baseline_wer'], 2)} | {_fmt(value, 2)} | {_fmt(base, 2)} "
                         f"| {_fmt(row['speedup'])} | {_fmt(row['ideal_speedup'])} "
                         f"| {_fmt(row['efficiency'])} |")
        lines.append("")
    if report["overhead"]:
        lines += [f"## Overhead: exits enabled, never taken (goal <= {OVERHEAD_GOAL_PCT:g} %)", "",
                  "| device | dtype | workload | arch | branch | batch | HuBERT-EE ms | HubertForCTC ms | overhead % "
                  "| paired overhead % | ideal (branches only) % | early_exit=False overhead % | components sum ms "
                  "| host reads: EE / plain |",
                  "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in report["overhead"]:
            lines.append(f"| {row['device']} | {row['dtype']} | {row['workload']} | {row['arch']} | {row['branch']} "
                         f"| {row['batch_size']} | {_fmt(row['ee_ms'], 2)} | {_fmt(row['baseline_ms'], 2)} "
                         f"| {_fmt(row['overhead_pct'], 2)} | {_fmt(row.get('overhead_paired_pct'), 2)} "
                         f"| {_fmt(row.get('ideal_overhead_pct'), 2)} "
                         f"| {_fmt(row.get('no_exit_overhead_pct'), 2)} | {_fmt(row.get('components_sum_ms'), 2)} "
                         f"| {_host_reads_cell(row.get('host_transfers'))} |")
        lines.append("")
    if report["branch_cost"]:
        types_seen = sorted({name for row in report["branch_cost"] for name in row["branches"]})
        lines += ["## Component costs (one encoder layer = 1)", "",
                  "| device | dtype | arch | batch | rows | layer ms | front end ms | head ms | criterion (x layer) | "
                  + " | ".join(f"{name} branch (x layer)" for name in types_seen)
                  + " | ops: layer / criterion / " + " / ".join(types_seen) + " |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(types_seen) + 1)]
        seen = set()
        for row in report["branch_cost"]:
            key = (row["device"], row["dtype"], row["arch"], row["batch_size"])
            if key in seen:
                continue
            seen.add(key)
            cells = [f"{_fmt(row['branches'][name]['fraction_of_layer'])}" if name in row["branches"] else "-"
                     for name in types_seen]
            ops = row.get("dispatched_ops")  # absent from reports written before it was counted
            cells.append(" / ".join(str(ops.get(name, "-")) for name in
                                    ["layer", "criterion"] + [f"branch_{t}" for t in types_seen]) if ops else "-")
            lines.append(f"| {row['device']} | {row['dtype']} | {row['arch']} | {row['batch_size']} | {row['rows']} "
                         f"| {_fmt(row['layer_ms'], 2)} | {_fmt(row['embed_ms'], 2)} | {_fmt(row['head_ms'], 3)} "
                         f"| {_fmt(row['criterion_fraction_of_layer'])} | " + " | ".join(cells) + " |")
        lines.append("")
    for note in report.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `hubert-ee benchmark` options."""
    parser.add_argument("--workloads", default="trained,forced",
                        help="comma-separated among trained,forced (default: both; trained is skipped without a "
                             "model)")
    parser.add_argument("--json", metavar="OUT", type=output_file, help="write the report as JSON here")
    parser.add_argument("--markdown", metavar="OUT.md", type=output_file, help="write the tables as Markdown here")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, or auto: CPU, plus CUDA when present (comma-separated list allowed)")
    parser.add_argument("--dtypes", default=None,
                        help="comma-separated among fp32,fp16,bf16 (default: fp32 on CPU; fp32,fp16,bf16 on CUDA)")
    parser.add_argument("--batch-sizes", default="1,8,16", help="comma-separated (default: 1,8,16)")
    parser.add_argument("--repeats", type=int, default=10, help="recorded repetitions; medians are reported "
                                                                "(default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded warm-up repetitions (default: 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (torch.set_num_threads; default: torch's). On a shared, busy CPU "
                             "fewer threads than cores avoids OpenMP oversubscription stalls")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="torch.backends.cudnn.benchmark = True (cuDNN picks its convolution algorithms by "
                             "timing them; both models alike)")
    parser.add_argument("--plot", metavar="OUT.png", type=output_file,
                        help="write measured against ideal speedup as a PNG")
    parser.add_argument("--plot-from", nargs="+", metavar="REPORT.json", default=None,
                        help="benchmark nothing: plot the rows of these earlier --json reports into --plot")
    parser.add_argument("--overlap-exit-decisions", choices=("auto", "on", "off"), default="auto",
                        help="queue the layer after an exit before waiting for the exit's decision (HubertEEForCTC."
                             "_overlap_exit_decisions; auto: the model's default)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bars")
    forced = parser.add_argument_group("forced workload (random weights, forced exit layers)")
    forced.add_argument("--archs", default="base,large", help=f"comma-separated among {','.join(ARCHS)},custom "
                                                              "(default: base,large)")
    forced.add_argument("--branch", default="transformer",
                        help="exit branch type(s), comma-separated among transformer,linear (default: transformer)")
    forced.add_argument("--exit-layers", default=None,
                        help="exit layers for every arch, e.g. 4,8 (default: base 4,8; large 8,16)")
    forced.add_argument("--exit-distribution", action="append", default=None, metavar="LAYER:SHARE,...",
                        help="share of utterances leaving after each layer, e.g. 4:0.25,8:0.25,12:0.5 ('final' = "
                             "the last layer); repeat the option for several (default per arch: a mixed one and "
                             "all-at-each-exit). Distributions naming layers that are not exits of an arch are skipped "
                             "for it.")
    forced.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds (default: 10)")
    forced.add_argument("--overhead-detail", action="store_true",
                        help="also time early_exit=False, separating the layer loop's cost from the branches'")
    forced.add_argument("--component-min-ms", type=float, default=20.0,
                        help="each component timer (front end, one layer, one branch, head, criterion: timed "
                             "interleaved with the full forwards) spans at least this long, calling the component "
                             "several times (default: 20)")
    forced.add_argument("--compile", default="off", choices=COMPILE_MODES, metavar="MODE",
                        help="torch.compile both models and every timed component alike: off (default), or a "
                             "torch.compile mode: " + ", ".join(COMPILE_MODES[1:]) + " (on CUDA, reduce-overhead "
                             "replays each piece between two exit decisions as one CUDA graph). Compilation happens "
                             "in the warm-up, which is raised to at least 3 repetitions")
    forced.add_argument("--compile-backend", default="inductor", metavar="NAME",
                        help="torch.compile backend with --compile (default: inductor; e.g. cudagraphs, aot_eager)")
    forced.add_argument("--arch-config", default=None, help=argparse.SUPPRESS)  # JSON: 'custom' arch / overrides
    forced.add_argument("--profile", metavar="OUT.txt", default=None, type=output_file,
                        help="instead of benchmarking, write torch.profiler tables of HubertForCTC and of HuBERT-EE "
                             "with exits never taken (first arch, branch, dtype, device and batch size)")
    forced.add_argument("--profile-rows", type=int, default=30, help=argparse.SUPPRESS)
    trained = parser.add_argument_group("trained workload")
    trained.add_argument("--model", default=None,
                         help="trained HuBERT-EE folder or Hub id (default: hubert_ee.DEFAULT_MODEL if defined)")
    trained.add_argument("--dataset", default=None, help="test set (folder or Hub id, see load_speech_dataset)")
    trained.add_argument("--split", default="test", help="dataset split (default: test)")
    trained.add_argument("--max-samples", type=int, default=64, help="utterances used (default: 64)")
    trained.add_argument("--thresholds", default=None,
                         help="comma-separated exit thresholds (patience values for the patience criterion; "
                              "default: the config's)")
    trained.add_argument("--exit-criterion", default=None, choices=("confidence", "entropy", "patience"),
                         help="default: the config's")
    return parser


def _devices(spec: str) -> list[torch.device]:
    devices = []
    for name in _csv(spec):
        if name == "auto":
            devices.append(torch.device("cpu"))
            if torch.cuda.is_available():
                devices.append(torch.device("cuda"))
        elif name.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit("error: --device cuda, but CUDA is not available")
        else:
            devices.append(torch.device(name))
    return list(dict.fromkeys(devices))


def _dtypes_for(device: torch.device, spec: str | None) -> list[str]:
    if spec:
        return [_dtype_name(name) for name in _csv(spec)]
    return ["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32"]


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by parsed `add_arguments` options; 0 on success."""
    previous = HubertEEForCTC._overlap_exit_decisions
    if args.overlap_exit_decisions != "auto":
        HubertEEForCTC._overlap_exit_decisions = args.overlap_exit_decisions == "on"
    try:
        with _recompile_limits_raised(args.compile != "off"):
            return _run(args)
    finally:
        HubertEEForCTC._overlap_exit_decisions = previous


@contextlib.contextmanager
def _recompile_limits_raised(compiling: bool):
    """With `--compile`, dynamo compiles one graph per stretch of the exit loop between two host reads, and one
    variant per exit path and batch shape. The benchmark runs many of both, so its recompile limits are raised
    far above them for the run: past a limit dynamo falls back to eager mode, which the timings would not show."""
    if not compiling:
        yield
        return
    import torch._dynamo

    names = ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit")
    config = torch._dynamo.config
    with config.patch(**{name: max(getattr(config, name), 512) for name in names if hasattr(config, name)}):
        yield


def _run(args: argparse.Namespace) -> int:
    def log(message):
        print(message, flush=True)

    if args.plot_from:
        if not args.plot:
            raise SystemExit("error: --plot-from needs --plot OUT.png")
        rows = []
        for file in args.plot_from:
            try:
                rows += json.loads(Path(file).read_text())["rows"]
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
                raise SystemExit(f"error: --plot-from {file}: not a benchmark --json report ({error})") from error
        try:
            log(f"wrote {plot_efficiency(rows, args.plot)}")
        except ValueError as error:
            raise SystemExit(f"error: --plot-from: {error}") from error
        return 0

    if args.compile not in ("off", "default") and args.compile_backend != "inductor":
        raise SystemExit(f"error: --compile {args.compile} is a mode of the inductor backend; with "
                         f"--compile-backend {args.compile_backend} use --compile default")
    if args.compile != "off":
        args.warmup = max(args.warmup, 3)  # compiling, then (CUDA graphs) recording, then replaying
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    devices = _devices(args.device)
    workloads = _csv(args.workloads)
    unknown = set(workloads) - {"trained", "forced"}
    if unknown:
        raise SystemExit(f"error: unknown workload(s) {sorted(unknown)}; choose among trained,forced")
    archs = _csv(args.archs)
    branches = _csv(args.branch)
    for branch in branches:
        if branch not in ("transformer", "linear"):
            raise SystemExit(f"error: --branch {branch!r}: choose among transformer,linear")

    if args.profile:
        device = devices[-1]
        text = profile_overhead(args, device, _dtypes_for(device, args.dtypes)[0], archs[0], branches[0],
                                _ints(args.batch_sizes)[0], log)
        write_text(args.profile, text + "\n")
        return 0

    report = {
        "meta": {
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
            "device_names": {device.type: (torch.cuda.get_device_name(device) if device.type == "cuda"
                                           else platform.processor() or platform.machine()) for device in devices},
            "repeats": args.repeats, "warmup": args.warmup, "seconds": args.seconds,
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "overlap_exit_decisions": args.overlap_exit_decisions,
            "compile": args.compile,
            "argv": sys.argv[1:],
        },
        "rows": [], "branch_cost": [], "overhead": [], "components": [], "notes": [],
    }

    def note(message):
        report["notes"].append(message)
        log(f"note: {message}")

    if args.compile != "off":
        note(f"forced workload compiled: torch.compile(mode={args.compile!r}, backend={args.compile_backend!r}) "
             "on HubertForCTC, HuBERT-EE and every timed component alike; the trained workload runs eagerly")
    if any(device.type == "cuda" for device in devices) and not torch.backends.cudnn.benchmark:
        note("CUDA without --cudnn-benchmark: cuDNN's default convolution algorithms can make the fp16/bf16 front "
             "end dominate the forward (both models alike), which hides what the exits save")
    if "trained" in workloads:
        model_path = args.model or default_model()
        if not model_path:
            note("trained workload skipped: no --model given and hubert_ee.DEFAULT_MODEL is not defined")
        elif not args.dataset:
            note("trained workload skipped: no --dataset given")
        else:
            for device in devices:
                for dtype_name in _dtypes_for(device, args.dtypes):
                    args.model = model_path
                    _merge(report, run_trained(args, device, dtype_name, log))
    if "forced" in workloads:
        for device in devices:
            for dtype_name in _dtypes_for(device, args.dtypes):
                for arch in archs:
                    for branch in branches:
                        _merge(report, run_forced(args, device, dtype_name, arch, branch, log))

    if args.plot:
        if report["rows"]:
            log(f"wrote {plot_efficiency(report['rows'], args.plot)}")
        else:
            note("no plot: the run produced no speedup rows")
    markdown = to_markdown(report)
    print(markdown)
    if args.json:
        write_text(args.json, json.dumps(report, indent=2) + "\n")
    if args.markdown:
        write_text(args.markdown, markdown)
    return 0


def _merge(report: dict, part: dict) -> None:
    for key in ("rows", "branch_cost", "overhead", "components"):
        report[key].extend(part.get(key, []))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hubert-ee benchmark",
        description="Latency/throughput of HuBERT-EE against HubertForCTC on the same weights: a trained model on a "
                    "test set, and forced exit distributions on HuBERT-base/large shapes; ideal speedup, efficiency, "
                    "branch costs and the overhead of exits that are never taken.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
