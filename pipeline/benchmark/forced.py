# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""The `forced` workload: HuBERT-base / HuBERT-large architectures with random weights on random clips, with the
exit decisions FORCED to a layer distribution (`hubert_ee.forced_exits`), so the speed of the early-exit machinery
can be judged independently of what a trained model happens to decide. The model's real criterion still runs, so
its cost stays in the timing.

Per (device, dtype, arch, branch) and batch size it times, interleaved: `HubertForCTC`, HuBERT-EE with exits never
taken, optionally `early_exit=False`, the forced distributions, and every component of the cost model; then builds
the speedup rows, the component-cost row and the never-taken overhead row.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from ..forced_exits import forced_exit_targets, prepare_forced_targets
from ..cost_model import (
    allocate_rows,
    component_cases,
    component_table,
    format_distribution,
    ideal_speedup,
    needed_row_counts,
    parse_distribution,
    plain_cost,
)
from .instrumentation import dispatched_ops, host_transfers
from .models import (
    DTYPES,
    NEVER_EXIT,
    SAMPLING_RATE,
    baseline_from,
    branch_of_type,
    build_forced_model,
    compiler,
    with_overlap,
)
from .report import overhead_fields, round_or_none, speed_fields, speedup_fields
from ..timing import interleaved_times, median, progress_bar


# Default forced distributions, per architecture: one mixed, and everyone at each exit ("final" = last layer).
DEFAULT_DISTRIBUTIONS = {
    "base": ["4:0.25,8:0.25,final:0.5", "4:1", "8:1"],
    "large": ["8:0.25,16:0.25,final:0.5", "8:1", "16:1"],
    "tiny": ["1:0.25,2:0.25,final:0.5", "1:1"],
}


def forced_cases(model, baseline, input_values, distributions, overhead_detail, first_outputs,
                 compile_fn=lambda fn: fn):
    """The callables timed together at one batch size: baseline, never-exit, optional no-exit, forced ones.

    The first call of each (a warm-up call when `--warmup` >= 1, so its extra host sync is not recorded) is
    checked or kept: forced calls must leave exactly at their targets, and the first logits of the baseline and
    of the never-exit call are kept in `first_outputs` to compare their logits. `compile_fn` (`models.compiler`)
    wraps both models alike. Returns `(cases, plans)`: plans say, per distribution, which cases make up its time
    and with which weight.
    """
    batch_size = input_values.shape[0]
    run_model, run_baseline = compile_fn(model), compile_fn(baseline)
    first_call = functools.partial(_first_call_kept, first_outputs)
    cases = {
        "baseline": first_call("baseline", lambda: run_baseline(input_values)),
        "never": first_call("never", lambda: run_model(input_values, exit_setting=NEVER_EXIT)),
    }
    if overhead_detail:
        cases["no_exit"] = lambda: run_model(input_values, early_exit=False)
    plans = {}
    if batch_size == 1:
        layers = sorted({layer for distribution in distributions.values() for layer in distribution})
        for layer in layers:
            cases[f"at_{layer}"] = first_call(f"at_{layer}", *_forced_call(model, run_model, input_values, [layer]))
        for name, distribution in distributions.items():
            plans[name] = {f"at_{layer}": share for layer, share in distribution.items()}
    else:
        for name, distribution in distributions.items():
            targets = allocate_rows(distribution, batch_size)
            cases[f"dist_{name}"] = first_call(f"dist_{name}", *_forced_call(model, run_model, input_values, targets))
            plans[name] = {f"dist_{name}": 1.0}
    return cases, plans


def _first_call_kept(first_outputs: dict, name: str, fn: Callable, check: Callable | None = None) -> Callable:
    """`fn`, whose first output's logits are kept in `first_outputs[name]` and checked with `check`."""
    def call():
        output = fn()
        if name not in first_outputs:
            # a copy: under a CUDA-graph compile, later replays reuse the memory of a graph's outputs
            first_outputs[name] = output.logits.clone()
            if check is not None:
                check(output)
        return output
    return call


def _forced_call(model, run_model, input_values, targets) -> tuple[Callable, Callable]:
    """A forward whose rows leave at `targets`, and the check that they did."""
    prepared = prepare_forced_targets(model, targets, input_values.device)  # no host->device copy when timed

    def call():
        with forced_exit_targets(model, prepared):
            return run_model(input_values)

    def check(output):
        landed = output.exit_layer.tolist()
        if landed != list(targets):
            raise RuntimeError(f"Forced exits went wrong: asked {list(targets)}, got {landed}.")
    return call, check


def run_forced(args, device: torch.device, dtype_name: str, arch: str, branch: str, log) -> dict:
    """Forced workload for one (device, dtype, arch, branch): rows, branch costs and overhead. `args`: the parsed
    options, with list options already split (see `cli.run`)."""
    model = build_forced_model(arch, branch, device, DTYPES[dtype_name], seed=args.seed,
                               exit_layers=args.exit_layers, arch_config=args.arch_config)
    model = with_overlap(model, args.overlap_exit_decisions)
    baseline = baseline_from(model)
    config = model.config
    distributions = _distributions(args.exit_distribution or DEFAULT_DISTRIBUTIONS.get(arch, ["final:1"]),
                                   config, arch, log)
    samples = int(round(args.seconds * SAMPLING_RATE))
    generator = torch.Generator().manual_seed(args.seed)
    out = {"rows": [], "branch_cost": [], "overhead": [], "components": []}
    common = {"device": device.type, "dtype": dtype_name, "arch": arch, "branch": branch,
              "num_hidden_layers": config.num_hidden_layers, "exit_layers": list(config.exit_layers),
              "seconds": args.seconds}
    if args.compile != "off":
        common["compile"] = f"{args.compile}/{args.compile_backend}"
    for batch_size in args.batch_sizes:
        input_values = torch.randn(batch_size, samples, generator=generator).to(device=device, dtype=DTYPES[dtype_name])
        label = f"{device.type}/{dtype_name}/{arch}/{branch}/b{batch_size}"
        measured = _measure_batch(args, model, baseline, input_values, distributions, label)
        rows = _speed_rows(measured, distributions, config, common, batch_size, args.repeats)
        out["rows"] += rows
        out["components"].append(_components_row(measured["table"], common, batch_size))
        out["branch_cost"].append(_branch_cost_row(measured, common, batch_size))
        overhead = _overhead_row(measured, config, common, batch_size, args.repeats)
        out["overhead"].append(overhead)
        log(f"{label}: baseline {measured['medians']['baseline'] * 1e3:.1f} ms/batch, never-exit overhead "
            f"{overhead['overhead_pct']:+.2f} %"
            + "".join(f"; {row['exit_distribution']}: x{row['speedup']:.3f} (ideal x{row['ideal_speedup']:.3f})"
                      for row in rows))
    del model, baseline
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _distributions(specs, config, arch: str, log) -> dict[str, dict[int, float]]:
    """The exit distributions of `specs` that fit this architecture, by their canonical text; the others are
    skipped with a note."""
    distributions = {}
    for spec in [spec.strip() for spec in specs if spec.strip()]:
        try:
            distribution = parse_distribution(spec, config.num_hidden_layers, config.exit_layers)
        except ValueError as error:
            log(f"note: {arch}: skipping exit distribution {spec!r}: {error}")
            continue
        distributions[format_distribution(distribution)] = distribution
    return distributions


def _measure_batch(args, model, baseline, input_values, distributions, label) -> dict:
    """Everything measured at one batch size: interleaved times (`times`, `medians`), the component cost `table`,
    the plans that make up each distribution's time, op counts, host transfers and the never-exit logits' largest
    difference from the baseline's."""
    batch_size = input_values.shape[0]
    config = model.config
    row_counts = {batch_size}
    for distribution in distributions.values():
        if batch_size > 1:
            targets = allocate_rows(distribution, batch_size)
            row_counts |= needed_row_counts(config.num_hidden_layers, config.exit_layers, targets)
    compile_fn = compiler(args.compile, args.compile_backend)
    branches = {branch_type: branch_of_type(model, branch_type) for branch_type in ("transformer", "linear")}
    components = component_cases(model, input_values, row_counts, args.component_min_ms / 1000.0, branches,
                                 compile_fn=compile_fn)
    never = functools.partial(model, input_values, exit_setting=NEVER_EXIT)
    measured = {"op_counts": dispatched_ops(model, input_values),
                "transfers": {"hubert_ee": host_transfers(never),
                              "baseline": host_transfers(functools.partial(baseline, input_values))}}
    with torch.inference_mode():
        first_outputs = {}
        cases, measured["plans"] = forced_cases(model, baseline, input_values, distributions, args.overhead_detail,
                                                first_outputs, compile_fn)
        cases.update({key: fn for key, (fn, _) in components.items()})
        bar = progress_bar((args.warmup + args.repeats) * len(cases), label, args.progress)
        measured["times"] = interleaved_times(cases, input_values.device, args.repeats, args.warmup, bar)
        bar.close()
        difference = (first_outputs["baseline"].float() - first_outputs["never"].float()).abs().max()
        measured["logit_diff"] = float(difference)
        first_outputs.clear()
    measured["medians"] = {name: median(values) for name, values in measured["times"].items()}
    measured["table"] = component_table(measured["medians"], components, config.exit_branch)
    return measured


def _speed_rows(measured: dict, distributions: dict, config, common: dict, batch_size: int, repeats: int
                ) -> list[dict]:
    """One row per distribution: its measured and ideal speedup over the baseline, and its efficiency."""
    medians, times = measured["medians"], measured["times"]
    base = medians["baseline"]
    rows = []
    for name, plan in measured["plans"].items():
        candidate_time = sum(share * medians[case] for case, share in plan.items())
        candidate_times = [sum(share * times[case][repetition] for case, share in plan.items())
                           for repetition in range(len(times["baseline"]))]
        distribution = distributions[name]
        ideal = ideal_speedup(measured["table"], config.num_hidden_layers, config.exit_layers, distribution,
                              batch_size)
        row = {**common, "workload": "forced", "batch_size": batch_size, "exit_distribution": name,
               "mean_exit_layer": round_or_none(sum(layer * share for layer, share in distribution.items())),
               **speedup_fields(times["baseline"], candidate_times, ideal), "repeats": repeats}
        if batch_size > 1:
            realised = allocate_rows(distribution, batch_size)
            row["rows_per_exit"] = {str(layer): realised.count(layer) for layer in sorted(set(realised))}
        row.update(speed_fields(batch_size, candidate_time, base))
        rows.append(row)
    return rows


def _components_row(table: dict, common: dict, batch_size: int) -> dict:
    seconds_by_rows = {key: {str(rows): value for rows, value in per.items()} for key, per in table.items()}
    return {**common, "batch_size": batch_size, "seconds_by_rows": seconds_by_rows}


def _branch_cost_row(measured: dict, common: dict, batch_size: int) -> dict:
    """Component costs at batch 1 when measured there (else at the batch size), relative to one encoder layer."""
    table = measured["table"]
    rows = 1 if 1 in table["layer"] else batch_size
    layer_cost = table["layer"][rows]
    row = {**common, "batch_size": batch_size, "rows": rows,
           "embed_ms": round_or_none(table["embed"][batch_size] * 1e3),
           "layer_ms": round_or_none(layer_cost * 1e3),
           "head_ms": round_or_none(table["head"][rows] * 1e3),
           "criterion_ms": round_or_none(table["criterion"][rows] * 1e3),
           "criterion_fraction_of_layer": round_or_none(table["criterion"][rows] / layer_cost),
           "dispatched_ops": measured["op_counts"], "branches": {}}
    for key in table:
        if key.startswith("branch_"):
            seconds = table[key][rows]
            row["branches"][key[len("branch_"):]] = {"ms": round_or_none(seconds * 1e3),
                                                     "fraction_of_layer": round_or_none(seconds / layer_cost)}
    return row


def _overhead_row(measured: dict, config, common: dict, batch_size: int, repeats: int) -> dict:
    """Exits enabled but never taken against the baseline, with what the components say it should cost."""
    table, times, medians = measured["table"], measured["times"], measured["medians"]
    plain = plain_cost(table, config.num_hidden_layers, batch_size)
    row = {**common, "workload": "forced", "batch_size": batch_size,
           "criterion": NEVER_EXIT.criterion, "threshold": NEVER_EXIT.threshold,
           **overhead_fields(times["never"], times["baseline"]),
           "ideal_overhead_pct": round_or_none(100 * len(config.exit_layers) * table["branch"][batch_size] / plain, 2),
           "components_sum_ms": round_or_none(plain * 1e3),
           "max_abs_logit_diff": round_or_none(measured["logit_diff"], 6), "host_transfers": measured["transfers"],
           "repeats": repeats}
    if "no_exit" in medians:
        row["no_exit_ms"] = round_or_none(medians["no_exit"] * 1e3)
        row["no_exit_overhead_pct"] = round_or_none((medians["no_exit"] / medians["baseline"] - 1) * 100, 2)
    return row
