# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""The cost model: what early exit should save, from the measured cost of each part of the model.

`hubert-ee benchmark` gives its ideal speedup (the exits cost nothing but their branches) and `hubert-ee evaluate`
the expected speedup of each sweep row (the exits cost their branch and criterion), from the exit layer of each
utterance.

Components are timed on the same device and dtype as the forwards: the front end (`model.embed`), one encoder
layer, one exit branch, the final head (`model.final_head`), and the criterion. A row exiting after layer k costs
front end + k layers + every branch consulted up to and including the exit; a row reaching the end costs front end +
all layers + all branches + head. The plain model costs front end + all layers + head.

* Batch 1: ideal = cost(plain) / mean over utterances of cost(exit layer of the utterance).
* Batch B: batch compaction means that layer l runs on the rows whose exit is >= l, a branch at exit e on the rows
  still running there, the head on the rows reaching the end. Components are measured AT THE ROW COUNTS THAT OCCUR
  (not assumed linear in rows); a row count that was not measured falls back to linear scaling from the nearest
  measured one. ideal = cost(plain, B rows) / cost(compacted batch).

The exit criterion, the host synchronisation per exit and the compaction copies are NOT in the ideal: they are what
`efficiency = measured speedup / ideal speedup` charges to the implementation. `evaluate`'s expected speedup counts
the criterion (`exit_parts=("branch", "criterion")`) and batches of utterances of different lengths: each part's
cost scales with the frames of the longest row it runs on (compaction cuts the padding beyond it), linearly from the
frames it was measured at (`frames=`).

Exit distributions (`"4:0.25,8:0.25,final:0.5"`: the share of utterances leaving after each layer) are parsed and
turned into per-row target layers here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .timing import interleaved_times, median, repeated

COMPONENT_PREFIX = "component:"

# ---------------------------------------------------------------------------------------------- distributions

def parse_distribution(spec: str, num_layers: int, exit_layers: Sequence[int] | None = None) -> dict[int, float]:
    """`"4:0.25,8:0.25,12:0.5"` -> {4: 0.25, 8: 0.25, 12: 0.5}: share of utterances leaving after each layer.

    `final` (or `last`) names the last layer (`num_layers`, the final head). Shares are normalised to sum to 1.
    With `exit_layers` given, every layer must be an exit layer or the last layer.
    """
    shares: dict[int, float] = {}
    for part in [item.strip() for item in spec.split(",") if item.strip()]:
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


def _scaled(table: dict, component: str, rows: Sequence[int], frames: tuple[Sequence[int], int] | None) -> float:
    """Seconds of `component` on the rows `rows` (indices into the batch); with `frames` = (frames of each row,
    frames the table was measured at), scaled by the frames of the longest of those rows."""
    seconds = lookup_cost(table, component, len(rows))
    if frames is None or not rows:
        return seconds
    row_frames, measured_frames = frames
    return seconds * max(row_frames[row] for row in rows) / measured_frames


def plain_cost(table: dict, num_layers: int, batch_size: int, frames: tuple[Sequence[int], int] | None = None
               ) -> float:
    """Plain `HubertForCTC`: front end + every layer + head, all on `batch_size` rows (padded to the longest, with
    `frames`)."""
    rows = range(batch_size)
    return (_scaled(table, "embed", rows, frames) + num_layers * _scaled(table, "layer", rows, frames)
            + _scaled(table, "head", rows, frames))


def early_exit_cost(table: dict, num_layers: int, exit_layers: Sequence[int], targets: Sequence[int],
                    frames: tuple[Sequence[int], int] | None = None, exit_parts: Sequence[str] = ("branch",)
                    ) -> float:
    """Cost of one batch whose rows leave after `targets` (one layer per row), with batch compaction: each exit
    costs `exit_parts` on the rows still running there. `frames`: see `_scaled`."""
    targets = list(targets)
    rows = range(len(targets))
    cost = _scaled(table, "embed", rows, frames)
    for layer in range(1, num_layers + 1):
        running = [row for row in rows if targets[row] >= layer]
        cost += _scaled(table, "layer", running, frames)
        if layer in exit_layers:
            cost += sum(_scaled(table, part, running, frames) for part in exit_parts)
    return cost + _scaled(table, "head", [row for row in rows if targets[row] == num_layers], frames)


def expected_batch_costs(table: dict, measured_frames: int, num_layers: int, exit_layers: Sequence[int],
                         batches: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[tuple[float, float]]:
    """`(full depth, early exit)` cost of each batch `(targets, frames per row)`, exits costing branch and
    criterion: what `evaluate` expects its baseline (`early_exit=False`) and a setting to take on that batch."""
    return [(plain_cost(table, num_layers, len(targets), (frames, measured_frames)),
             early_exit_cost(table, num_layers, exit_layers, targets, (frames, measured_frames),
                             ("branch", "criterion")))
            for targets, frames in batches]

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

def ideal_speedup_of_layers(table: dict, num_layers: int, exit_layers: Sequence[int], layers: Sequence[int],
                            batch_size: int) -> float:
    """Ideal speedup of a data set whose utterances left at `layers` (in order), run in batches of `batch_size`."""
    if batch_size == 1:
        counts = {layer: layers.count(layer) / len(layers) for layer in sorted(set(layers))}
        return ideal_speedup(table, num_layers, exit_layers, counts, 1)
    starts = range(0, len(layers), batch_size)
    plain = sum(plain_cost(table, num_layers, min(batch_size, len(layers) - start)) for start in starts)
    compacted = sum(early_exit_cost(table, num_layers, exit_layers, layers[start:start + batch_size])
                    for start in starts)
    return plain / compacted

def needed_row_counts(num_layers: int, exit_layers: Sequence[int], targets: Sequence[int]) -> set[int]:
    """Row counts at which layers/branches/head run for a batch with these targets (for measuring)."""
    counts = {sum(target >= layer for target in targets) for layer in list(exit_layers) + [num_layers]}
    counts |= {sum(target > layer for target in targets) for layer in exit_layers}
    counts.add(sum(target == num_layers for target in targets))
    counts.add(len(targets))
    return {count for count in counts if count > 0}

# ---------------------------------------------------------------------------------------------- component costs

@torch.inference_mode()
def component_cases(model, input_values: torch.Tensor, row_counts: set[int], min_seconds: float,
                    branches: dict[str, torch.nn.Module] | None = None,
                    compile_fn: Callable[[Callable], Callable] = lambda fn: fn) -> dict[str, tuple[Callable, int]]:
    """Timed pieces of the model on `input_values`' device and dtype: `embed` at the full batch; `layer` (one
    encoder layer), `branch_<type>` (one exit branch of each type in `branches`, type -> branch; default: the
    model's own), `head` (`final_head`) and `criterion` (the config's criterion, with its device->host copy) at
    every count in `row_counts`. Returns
    {"component:<name>:<rows>": (callable running the piece `inner` times, inner)}, to be timed interleaved with
    the full forwards (so that a busy phase of the machine affects both alike). `compile_fn` wraps each piece as
    `--compile` wraps the models, so that the ideal is built from pieces run the way the forwards run them."""
    device = input_values.device
    batch_size = input_values.shape[0]
    hidden_states, _ = model.embed(input_values)  # no padding: no attention mask, as the model runs it then
    layer = model.encoder.layers[0]
    if branches is None:
        branches = {model.config.exit_branch: next(iter(model.exit_branches.values()))}
    settings = model.exit_setting()
    calls = {("embed", batch_size): lambda: model.embed(input_values)}
    for rows in sorted(row_counts | {batch_size}):
        h = hidden_states[:rows].contiguous()
        logits = model.final_head(h)
        calls[("layer", rows)] = lambda h=h: layer(h, attention_mask=None)
        for branch_type, branch in branches.items():
            calls[(f"branch_{branch_type}", rows)] = lambda h=h, branch=branch: branch(h, None)
        calls[("head", rows)] = lambda h=h: model.final_head(h)
        # valid=None: the forced workload has no padding, and that is what the model passes then
        calls[("criterion", rows)] = lambda logits=logits: model.exit_decision(logits, None, settings, {}).cpu()
    return {f"{COMPONENT_PREFIX}{name}:{rows}": repeated(compile_fn(fn), device, min_seconds)
            for (name, rows), fn in calls.items()}

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


def measure_components(model, input_values: torch.Tensor, row_counts: set[int], repeats: int,
                       warmup: int, min_seconds: float, branches: dict[str, torch.nn.Module] | None = None,
                       ) -> dict[str, dict[int, float]]:
    """`component_table` of `component_cases` timed on their own (medians of `repeats`, interleaved)."""
    cases = component_cases(model, input_values, row_counts, min_seconds, branches)
    with torch.inference_mode():
        times = interleaved_times({key: fn for key, (fn, _) in cases.items()}, input_values.device, repeats, warmup)
    return component_table({key: median(values) for key, values in times.items()}, cases, model.config.exit_branch)
