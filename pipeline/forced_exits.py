# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""Forced exits: make each row of a batch leave `HubertEEForCTC` at a chosen layer, without changing the model.

Used where the speed of the early-exit machinery must be judged apart from what a model happens to decide: the
`forced` workload of `hubert-ee benchmark` (a layer distribution on random weights) and `hubert-ee evaluate`'s
oracle timing (each utterance at the shallowest exit whose transcript equals the final head's).

`install_forced_exits(model)` binds a replacement of `HubertEEForCTC._exit_decision` on the instance. Before a
call, `forced_exit_targets(model, targets)` gives each row of the batch a target layer. The model calls
`_exit_decision(logits, valid, settings, state)` once per exit layer, in increasing layer order, with a `state`
dict that is fresh for every forward and that the model compacts together with the batch
(`state = {key: value[staying] ...}`) when rows leave. The replacement stores the per-row targets in `state`
on its first call of a forward (an empty `state` marks the first call), so the targets stay aligned with the
rows still running, and counts its calls in a closure to know which exit layer it is at (call i is
`config.exit_layers[i]`). It returns `target_layer == current_layer`. By default it also runs the model's real
criterion on the branch logits and discards the answer, so the measured time includes the criterion's cost as a
real deployment pays it (`include_criterion=False` leaves it out). Rows whose target is the last layer are
answered by the final head.

Imports only torch and the model file, like `benchmark`, so it runs on a GPU machine without the data stack.
"""

from __future__ import annotations

import contextlib
import types

import torch

from modeling_hubert_ee import HubertEEForCTC


def install_forced_exits(model: HubertEEForCTC, include_criterion: bool = True) -> HubertEEForCTC:
    """Let `forced_exit_targets` dictate where each row leaves, without changing the model's code (see the
    module docstring). With no targets set, the model's own decision is used."""
    if getattr(model, "_forced_exit_holder", None) is not None:
        return model
    original = type(model)._exit_decision
    holder = types.SimpleNamespace(targets=None, calls=0, include_criterion=include_criterion)

    def _exit_decision(self, logits, valid, settings, state):
        if holder.targets is None:
            return original(self, logits, valid, settings, state)
        if "forced_target_layer" not in state:  # the first exit of this forward: state is fresh
            if len(holder.targets) != logits.shape[0]:
                raise ValueError(f"{len(holder.targets)} forced targets for a batch of {logits.shape[0]} rows.")
            holder.calls = 0
            state["forced_target_layer"] = holder.targets.to(logits.device)
        exit_layers = sorted(self.config.exit_layers)
        layer = exit_layers[holder.calls]
        holder.calls += 1
        if holder.include_criterion:  # pay for the real criterion; its answer is discarded
            original(self, logits, valid, settings, {})
        return state["forced_target_layer"] == layer

    model._exit_decision = types.MethodType(_exit_decision, model)
    model._forced_exit_holder = holder
    return model


def prepare_forced_targets(model: HubertEEForCTC, targets, device: torch.device | str) -> torch.Tensor:
    """Forced exit layers (one per row: an exit layer, or `num_hidden_layers` for the final head), checked and
    put on `device` once. Hand the result to `forced_exit_targets` from outside timed code: a list or a CPU
    tensor is copied to the GPU inside every forward, and that copy from pageable memory waits for the GPU like
    an extra host synchronisation, which would be charged to early exit."""
    targets = targets.tolist() if isinstance(targets, torch.Tensor) else [int(target) for target in targets]
    allowed = set(model.config.exit_layers) | {model.config.num_hidden_layers}
    bad = sorted(set(targets) - allowed)
    if bad:
        raise ValueError(f"Forced exit layer(s) {bad} are not exits of this model ({sorted(allowed)}).")
    return torch.tensor(targets, dtype=torch.long, device=device)


@contextlib.contextmanager
def forced_exit_targets(model: HubertEEForCTC, targets):
    """Within the block, row i of the next batches leaves after layer `targets[i]` (an exit layer, or
    `num_hidden_layers` for the final head). `targets`: a sequence of ints, checked here, or a long tensor
    from `prepare_forced_targets`, used as it is (checking it again would read it back from the device)."""
    holder = install_forced_exits(model)._forced_exit_holder
    if not (isinstance(targets, torch.Tensor) and targets.dtype == torch.long):
        targets = prepare_forced_targets(model, targets, "cpu")
    previous, holder.targets = holder.targets, targets
    try:
        yield
    finally:
        holder.targets = previous
