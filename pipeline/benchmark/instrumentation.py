# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""Counting what a forward launches and where it waits: tensor ops (each a kernel launch on a GPU) and host reads.

Both counters work on the CPU and count what a GPU forward would do, so CPU tests can hold the model to its kernel
and synchronisation budget (`tests/test_modeling.py`), and the benchmark reports the counts beside its times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from .models import branch_of_type

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
def dispatched_ops(model, input_values: torch.Tensor,
                   branch_types: Sequence[str] = ("transformer", "linear")) -> dict[str, int]:
    """`KernelCounter` counts of one encoder layer, each branch type, the criterion (with the device->host copy of
    its decision, which is no op on the CPU) and the head, on one row of `input_values`. Each counted op is a
    kernel launch on a GPU, so where a GPU is launch-bound (batch 1, small models) these counts, not FLOPs, set the
    cost of an exit against a layer."""
    hidden_states, _ = model.embed(input_values[:1])
    logits = model.final_head(hidden_states)
    layer = model.encoder.layers[0]
    settings = model.exit_setting()
    pieces = {"layer": lambda: layer(hidden_states, attention_mask=None),
              "criterion": lambda: model.exit_decision(logits, None, settings, {}).cpu(),
              "head": lambda: model.final_head(hidden_states)}
    for branch_type in branch_types:
        branch = branch_of_type(model, branch_type)
        pieces[f"branch_{branch_type}"] = lambda branch=branch: branch(hidden_states, None)
    counts = {}
    for name, piece in pieces.items():
        with KernelCounter() as counter:
            piece()
        counts[name] = counter.kernels
    return counts
