# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""A benchmark report's result fields, its Markdown tables and its efficiency plot.

A report is a dict: `meta`, `rows` (one per workload, exit distribution or threshold, and batch size: speedup,
ideal speedup, efficiency, latency or throughput of both models), `overhead` (exits enabled but never taken, against
`HubertForCTC`), `branch_cost` and `components` (measured component costs) and `notes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..timing import format_speedup, median, paired_ratio, paired_speedup, speedup_verdict


OVERHEAD_GOAL_PCT = 3.0
# Keys every result row carries, besides latency_ms/baseline_latency_ms (batch 1) or throughput/baseline_throughput.
ROW_KEYS = ("device", "dtype", "batch_size", "workload", "arch", "exit_distribution", "speedup", "speedup_interval",
            "speedup_reliable", "speedup_note", "ideal_speedup", "efficiency")


def round_or_none(value, digits=4):
    return None if value is None else round(float(value), digits)


def overhead_fields(never_times: Sequence[float], baseline_times: Sequence[float]) -> dict:
    """The never-taken overhead row's timing fields from the interleaved times of exits-never-taken and of
    `HubertForCTC`: medians, the overhead as the ratio of medians and as the paired ratio, and the goal."""
    never, base = median(never_times), median(baseline_times)
    overhead_pct = (never / base - 1) * 100
    return {"ee_ms": round_or_none(never * 1e3), "baseline_ms": round_or_none(base * 1e3),
            "overhead_pct": round_or_none(overhead_pct, 2),
            "overhead_paired_pct": round_or_none((paired_ratio(never_times, baseline_times) - 1) * 100, 2),
            "goal_pct": OVERHEAD_GOAL_PCT, "meets_goal": bool(overhead_pct <= OVERHEAD_GOAL_PCT)}


def speedup_fields(baseline_times: Sequence[float], candidate_times: Sequence[float], ideal: float) -> dict:
    """A row's speedup over its paired repetitions (the same work each repetition: no cost model needed to take
    the mix of work out), its 95 % interval, its verdict against the ideal (`hubert_ee.timing`), the ideal and the
    efficiency."""
    measured = paired_speedup(baseline_times, candidate_times)
    speedup = measured["speedup"]
    return {"speedup": round_or_none(speedup),
            "speedup_interval": [round_or_none(value) for value in measured["speedup_interval"]],
            **speedup_verdict(measured, ideal), "ideal_speedup": round_or_none(ideal),
            "efficiency": round_or_none(speedup / ideal)}


def speed_fields(batch_size: int, candidate_seconds: float, baseline_seconds: float) -> dict:
    """Batch times of both models, and latency (batch 1) or throughput (larger batches)."""
    fields = {"batch_time_ms": round_or_none(candidate_seconds * 1e3),
              "baseline_batch_time_ms": round_or_none(baseline_seconds * 1e3)}
    if batch_size == 1:
        fields.update(latency_ms=round_or_none(candidate_seconds * 1e3),
                      baseline_latency_ms=round_or_none(baseline_seconds * 1e3))
    else:
        fields.update(throughput=round_or_none(batch_size / candidate_seconds),
                      baseline_throughput=round_or_none(batch_size / baseline_seconds))
    return fields


# ---------------------------------------------------------------------------------------------- plot

def plot_efficiency(rows: Sequence[dict], path: str | Path) -> Path:
    """PNG: measured speedup against ideal speedup, one panel per device, a marker per (workload / arch, dtype)
    and a colour per batch size; the diagonal is efficiency 1, the dashed lines the 0.9 and 0.8 goals."""
    from ..plots import pyplot, save_figure

    plt = pyplot()
    rows = [row for row in rows if row.get("ideal_speedup") and row.get("speedup")]
    if not rows:
        raise ValueError("no benchmark rows with a speedup and an ideal speedup to plot")
    devices = sorted({row["device"] for row in rows})
    figure, axes = plt.subplots(1, len(devices), figsize=(6 * len(devices), 5), squeeze=False)
    batch_sizes = sorted({row["batch_size"] for row in rows})
    colours = plt.get_cmap("viridis")([index / max(len(batch_sizes) - 1, 1) for index in range(len(batch_sizes))])
    for axis, device in zip(axes[0], devices):
        _plot_device(axis, [row for row in rows if row["device"] == device], batch_sizes, colours)
        axis.set_title(device)
    return save_figure(figure, path)


def _plot_group(row) -> tuple[str, str]:
    return row["workload"] if row["workload"] == "trained" else row["arch"], row["dtype"]


def _plot_device(axis, rows: list[dict], batch_sizes: list[int], colours) -> None:
    """One device's panel: the efficiency lines, then a marker per group and a colour per batch size."""
    markers = "osD^v<>pXh*"
    top = max(max(row["ideal_speedup"], row["speedup"]) for row in rows) * 1.05
    low = min(min(row["ideal_speedup"], row["speedup"]) for row in rows) * 0.95
    for factor, style in ((1.0, "-"), (0.9, "--"), (0.8, ":")):
        axis.plot([low, top], [low * factor, top * factor], style, color="grey", linewidth=0.8,
                  label=f"efficiency {factor:g}")
    for group_index, (name, dtype) in enumerate(sorted({_plot_group(row) for row in rows})):
        for batch_index, batch_size in enumerate(batch_sizes):
            points = [row for row in rows if row["batch_size"] == batch_size and _plot_group(row) == (name, dtype)]
            if points:
                axis.scatter([row["ideal_speedup"] for row in points], [row["speedup"] for row in points],
                             marker=markers[group_index % len(markers)], color=colours[batch_index], s=28,
                             label=f"{name} {dtype}, batch {batch_size}")
    axis.set_xlim(low, top)
    axis.set_ylim(low, top)
    axis.set_xlabel("ideal speedup (from component costs)")
    axis.set_ylabel("measured speedup over HubertForCTC")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6, ncol=2)


# ---------------------------------------------------------------------------------------------- markdown

def _fmt(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _speedup_cell(row: dict) -> str:
    """The speedup with its interval (`timing.format_speedup`); reports written before intervals: the bare figure."""
    return format_speedup(row) if row.get("speedup") is not None else "-"


def _host_reads_cell(transfers: dict | None) -> str:
    """"2 / 0": host reads per forward of HuBERT-EE and of the baseline ("-" in reports that lack the counts)."""
    if not transfers:
        return "-"
    return f"{transfers['hubert_ee']['reads']} / {transfers['baseline']['reads']}"


def _speed_cells(row: dict) -> tuple:
    """Latency (batch 1) or throughput of HuBERT-EE and of the baseline."""
    if row["batch_size"] == 1:
        return row["latency_ms"], row["baseline_latency_ms"]
    return row["throughput"], row["baseline_throughput"]


def to_markdown(report: dict) -> str:
    """Readable tables of a report (`rows`, `branch_cost`, `overhead`)."""
    meta = report["meta"]
    lines = [f"# HuBERT-EE benchmark ({meta['created']})", "",
             f"torch {meta['torch']}, transformers {meta['transformers']}; devices: "
             + "; ".join(f"{key}: {value}" for key, value in meta["device_names"].items())
             + f"; {meta['repeats']} repeats after {meta['warmup']} warm-up, interleaved; times are medians, speedups "
               "the ratio of summed paired times ± the larger half of their 95 % bootstrap interval over the "
               "repetitions, marked unreliable when the interval is wide, the repetitions fewer than 3 or the "
               "speedup above the ideal.", ""]
    lines += _forced_table([row for row in report["rows"] if row["workload"] == "forced"])
    lines += _trained_table([row for row in report["rows"] if row["workload"] == "trained"])
    lines += _overhead_table(report["overhead"])
    lines += _component_table(report["branch_cost"])
    lines += [f"- {note}" for note in report.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def _forced_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["## Forced exits (random weights)", "",
             "| device | dtype | arch | branch | batch | exit distribution | mean exit | latency ms / thru utt/s "
             "| baseline | speedup | ideal | efficiency |",
             "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        value, base = _speed_cells(row)
        unit = " ms" if row["batch_size"] == 1 else " utt/s"
        lines.append(f"| {row['device']} | {row['dtype']} | {row['arch']} | {row['branch']} | {row['batch_size']} "
                     f"| {row['exit_distribution']} | {_fmt(row['mean_exit_layer'], 2)} | {_fmt(value, 2)}{unit} "
                     f"| {_fmt(base, 2)}{unit} | {_speedup_cell(row)} | {_fmt(row['ideal_speedup'])} "
                     f"| {_fmt(row['efficiency'])} |")
    return lines + [""]


def _trained_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["## Trained model", "",
             "| device | dtype | batch | threshold | mean exit | WER % | baseline WER % | latency ms / thru utt/s "
             "| baseline | speedup | ideal | efficiency |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        value, base = _speed_cells(row)
        lines.append(f"| {row['device']} | {row['dtype']} | {row['batch_size']} | {row['threshold']} "
                     f"| {_fmt(row['mean_exit_layer'], 2)} | {_fmt(row['wer'], 2)} "
                     f"| {_fmt(row['baseline_wer'], 2)} | {_fmt(value, 2)} | {_fmt(base, 2)} "
                     f"| {_speedup_cell(row)} | {_fmt(row['ideal_speedup'])} "
                     f"| {_fmt(row['efficiency'])} |")
    return lines + [""]


def _overhead_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = [f"## Overhead: exits enabled, never taken (goal <= {OVERHEAD_GOAL_PCT:g} %)", "",
             "| device | dtype | workload | arch | branch | batch | HuBERT-EE ms | HubertForCTC ms | overhead % "
             "| paired overhead % | ideal (branches only) % | early_exit=False overhead % | components sum ms "
             "| host reads: EE / plain |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['device']} | {row['dtype']} | {row['workload']} | {row['arch']} | {row['branch']} "
                     f"| {row['batch_size']} | {_fmt(row['ee_ms'], 2)} | {_fmt(row['baseline_ms'], 2)} "
                     f"| {_fmt(row['overhead_pct'], 2)} | {_fmt(row.get('overhead_paired_pct'), 2)} "
                     f"| {_fmt(row.get('ideal_overhead_pct'), 2)} "
                     f"| {_fmt(row.get('no_exit_overhead_pct'), 2)} | {_fmt(row.get('components_sum_ms'), 2)} "
                     f"| {_host_reads_cell(row.get('host_transfers'))} |")
    return lines + [""]


def _component_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    types_seen = sorted({name for row in rows for name in row["branches"]})
    lines = ["## Component costs (one encoder layer = 1)", "",
             "| device | dtype | arch | batch | rows | layer ms | front end ms | head ms | criterion (x layer) | "
             + " | ".join(f"{name} branch (x layer)" for name in types_seen)
             + " | ops: layer / criterion / " + " / ".join(types_seen) + " |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(types_seen) + 1)]
    seen = set()
    for row in rows:
        key = (row["device"], row["dtype"], row["arch"], row["batch_size"])
        if key in seen:
            continue
        seen.add(key)
        cells = [f"{_fmt(row['branches'][name]['fraction_of_layer'])}" if name in row["branches"] else "-"
                 for name in types_seen]
        ops = row.get("dispatched_ops")  # absent from reports that lack the counts
        cells.append(" / ".join(str(ops.get(name, "-")) for name in
                                ["layer", "criterion"] + [f"branch_{t}" for t in types_seen]) if ops else "-")
        lines.append(f"| {row['device']} | {row['dtype']} | {row['arch']} | {row['batch_size']} | {row['rows']} "
                     f"| {_fmt(row['layer_ms'], 2)} | {_fmt(row['embed_ms'], 2)} | {_fmt(row['head_ms'], 3)} "
                     f"| {_fmt(row['criterion_fraction_of_layer'])} | " + " | ".join(cells) + " |")
    return lines + [""]
