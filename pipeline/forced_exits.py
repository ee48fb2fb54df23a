# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""Forced exits: make each row of a batch leave an early-exit model at a chosen layer, without changing the model.

Used where the speed of the early-exit machinery must be judged apart from what a model happens to decide: the
`forced` workload of `hubert-ee benchmark` (a layer distribution on random weights) and `hubert-ee evaluate`'s
oracle timing (each utterance at the shallowest exit whose transcript equals the final head's).

Within `forced_exit_targets(model, targets)`, the model's public hook `exit_decider` is a `ForcedExits`: the exit
loop calls it at each exit with the exit's layer, and it answers `target_layer == layer` per row. The per-row
targets are stored in the per-forward criterion `state` at a forward's first exit (an empty `state`), because the
model compacts that state together with the batch when rows leave, so the targets stay aligned with the rows still
running. The model's real criterion also runs on the branch logits and its answer is discarded, so the measured
time includes the criterion's cost as a real deployment pays it. Rows whose target is the last layer are answered
by the final head.

Imports only torch and the model file, like `benchmark`, so it runs on a GPU machine without the data stack.
"""

from __future__ import annotations

import contextlib

import torch

from modeling_early_exit import EarlyExitForCTCMixin


class ForcedExits:
    """An `exit_decider` sending row i of each batch out after layer `targets[i]` (a long tensor, one per row)."""

    STATE_KEY = "forced_target_layer"

    def __init__(self, model: EarlyExitForCTCMixin, targets: torch.Tensor):
        self.model = model
        self.targets = targets

    def __call__(self, layer, logits, valid, settings, state):
        if self.STATE_KEY not in state:  # the first exit of this forward: state is fresh
            if len(self.targets) != logits.shape[0]:
                raise ValueError(f"{len(self.targets)} forced targets for a batch of {logits.shape[0]} rows.")
            state[self.STATE_KEY] = self.targets.to(logits.device)
        self.model.exit_decision(logits, valid, settings, {})  # pay for the real criterion; its answer is discarded
        return state[self.STATE_KEY] == layer


def prepare_forced_targets(model: EarlyExitForCTCMixin, targets, device: torch.device | str) -> torch.Tensor:
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
def exit_decider_set(model: EarlyExitForCTCMixin, decider):
    """Within the block, `model.exit_decider` is `decider`; the previous one is restored after it."""
    previous, model.exit_decider = model.exit_decider, decider
    try:
        yield
    finally:
        model.exit_decider = previous


@contextlib.contextmanager
def forced_exit_targets(model: EarlyExitForCTCMixin, targets):
    """Within the block, row i of the next batches leaves after layer `targets[i]` (an exit layer, or
    `num_hidden_layers` for the final head). `targets`: a sequence of ints, checked here, or a long tensor
    from `prepare_forced_targets`, used as it is (checking it again would read it back from the device)."""
    if not (isinstance(targets, torch.Tensor) and targets.dtype == torch.long):
        targets = prepare_forced_targets(model, targets, "cpu")
    with exit_decider_set(model, ForcedExits(model, targets)):
        yield
