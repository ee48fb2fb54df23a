# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""`--profile`: where the never-exit path loses time against `HubertForCTC`.

Times, interleaved, variants that take the never-exit path apart (`overhead_breakdown`: branches only, plus the
per-exit device->host sync, plus the criterion; the positional convolution's weight norm folded into a plain weight;
on CUDA also the host time to issue each forward), then writes torch.profiler tables of both models.
"""

from __future__ import annotations

import copy
import time

import torch

from ..forced_exits import exit_decider_set
from .models import DTYPES, NEVER_EXIT, SAMPLING_RATE, baseline_from, build_forced_model, with_overlap
from ..timing import interleaved_times, median, sync


def _fold_weight_norm(model):
    """A copy of `model` whose positional-convolution weight norm is folded into a plain weight."""
    from torch.nn.utils import parametrize

    parameter = next(model.parameters())
    with torch.device(parameter.device):  # (a parametrized module does not survive copy.deepcopy)
        folded = type(model)(copy.deepcopy(model.config))
    folded.load_state_dict(model.state_dict())
    folded = folded.to(dtype=parameter.dtype).eval()
    if hasattr(model, "overlap_exit_decisions"):  # a per-instance switch: the copy runs the way `model` runs
        folded.overlap_exit_decisions = model.overlap_exit_decisions
    conv = folded.base_model.encoder.pos_conv_embed.conv
    if parametrize.is_parametrized(conv, "weight"):
        parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
    return folded


def _host_false(layer, logits, valid, settings, state):
    """An exit decision that no row leaves, made on the host: no criterion and no device->host wait."""
    return torch.zeros(logits.shape[0], dtype=torch.bool)


def _device_false(layer, logits, valid, settings, state):
    """An exit decision that no row leaves, on the device: the per-exit wait without the criterion."""
    return torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)


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

    def with_decider(decider):
        def call():
            with exit_decider_set(model, decider):
                return model(input_values, exit_setting=NEVER_EXIT)
        return call

    cases = {
        "baseline": lambda: baseline(input_values),
        "baseline_wn_folded": lambda: folded_baseline(input_values),
        "ee_no_exit": lambda: model(input_values, early_exit=False),
        "ee_branches_only": with_decider(_host_false),
        "ee_branches_sync": with_decider(_device_false),
        "ee_never": lambda: model(input_values, exit_setting=NEVER_EXIT),
        "ee_never_wn_folded": lambda: folded_model(input_values, exit_setting=NEVER_EXIT),
    }
    with torch.inference_mode():
        times = interleaved_times(cases, device, repeats, warmup, progress)
        medians = {name: median(values) for name, values in times.items()}
        if device.type == "cuda":  # host time to issue a forward (no sync at the end): its CPU-side cost
            for name in ("baseline", "ee_no_exit", "ee_never"):
                medians[f"{name}_host_issue"] = _host_issue_seconds(cases[name], device, repeats)
    return medians


def _host_issue_seconds(call, device, repeats: int) -> float:
    """Median seconds the host takes to issue `call()` on an idle device (the timer stops before the device is
    waited for)."""
    issue = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        call()
        issue.append(time.perf_counter() - start)
        sync(device)
    return median(issue)


def profile_overhead(args, device: torch.device, dtype_name: str, arch: str, branch: str, batch_size: int,
                     log) -> str:
    """Where the never-exit path loses time against HubertForCTC (diagnostic, `--profile`): the interleaved
    `overhead_breakdown`, then torch.profiler tables of both models, with device-busy time per call on CUDA."""
    dtype = DTYPES[dtype_name]
    model = build_forced_model(arch, branch, device, dtype, seed=args.seed, exit_layers=args.exit_layers,
                               arch_config=args.arch_config)
    model = with_overlap(model, args.overlap_exit_decisions)
    baseline = baseline_from(model)
    input_values = torch.randn(batch_size, int(args.seconds * SAMPLING_RATE)).to(device=device, dtype=dtype)
    title = f"{device.type}/{dtype_name}/{arch}/{branch}/b{batch_size}, {args.seconds:g} s clips"
    breakdown = overhead_breakdown(model, baseline, input_values, args.repeats, args.warmup)
    base = breakdown["baseline"]
    text = [f"# Never-exit overhead breakdown ({title}; medians of {args.repeats}, interleaved)\n"]
    text += [f"{name:<20} {seconds * 1e3:10.3f} ms  {100 * (seconds / base - 1):+8.2f} % vs HubertForCTC"
             for name, seconds in breakdown.items()]
    for name, fn in (("HubertForCTC", lambda: baseline(input_values)),
                     ("HubertEEForCTC, exits never taken", lambda: model(input_values, exit_setting=NEVER_EXIT))):
        text.append(_profiler_section(args, name, fn, device, title))
    log("\n".join(text))
    return "\n".join(text)


def _profiler_section(args, name: str, fn, device: torch.device, title: str) -> str:
    """A torch.profiler table of `fn` (after warm-up calls), headed by its wall time and, on CUDA, its kernels'
    busy and idle time per call."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    calls = max(1, min(args.repeats, 10))
    with torch.inference_mode():
        for _ in range(max(1, args.warmup)):
            fn()
        sync(device)
        start = time.perf_counter()
        with profile(activities=activities) as prof:
            for _ in range(calls):
                fn()
            sync(device)
        wall = (time.perf_counter() - start) / calls
    header = f"\n## {name} ({title}, {calls} calls; profiled wall {wall * 1e3:.3f} ms/call)"
    if device.type == "cuda":  # kernel time only (operator rows would count the same kernels twice)
        kernels = [event for event in prof.events() if event.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(event.time_range.elapsed_us() for event in kernels) / calls / 1e3
        header += (f"; {len(kernels) / calls:.0f} kernels/call, device busy {busy:.3f} ms/call, "
                   f"idle {wall * 1e3 - busy:.3f} ms/call (under the profiler)")
    averages = prof.key_averages()
    table = None
    for sort_by in (("self_device_time_total", "self_cuda_time_total") if device.type == "cuda" else ()) + (
            "self_cpu_time_total",):
        try:
            table = averages.table(sort_by=sort_by, row_limit=args.profile_rows)
            break
        except (AttributeError, KeyError, ValueError, RuntimeError):
            continue
    return header + "\n\n" + (table or "")
