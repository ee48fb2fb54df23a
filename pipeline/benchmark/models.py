# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""The models a benchmark compares: HuBERT-EE and `HubertForCTC` carrying the same weights, the random-weight
architectures of the forced workload, dtypes, and how `--compile` and `--overlap-exit-decisions` apply to them."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from configuration_early_exit import ExitSetting
from configuration_hubert_ee import HubertEEConfig
from modeling_early_exit import ExitBranch
from modeling_hubert_ee import HubertEEForCTC

SAMPLING_RATE = 16000
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Exits enabled but never taken: a confidence never exceeds 1, so every branch and criterion runs and none exits.
NEVER_EXIT = ExitSetting(criterion="confidence", threshold=2.0)

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

def dtype_name(name: str) -> str:
    """The canonical name (fp32, fp16, bf16) of a dtype name or alias."""
    name = DTYPE_ALIASES.get(name.lower(), name.lower())
    if name not in DTYPES:
        raise ValueError(f"Unknown dtype {name!r}; choose among {sorted(DTYPES)}.")
    return name

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

def baseline_from(model):
    """The backbone's plain CTC model (`HubertForCTC`, `Wav2Vec2ForCTC`) carrying `model`'s backbone and final head
    (`strict=False`: the branches stay out)."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    with torch.device(device):
        baseline = model.plain_ctc_class(model.config.backbone_config())
    result = baseline.load_state_dict(model.state_dict(), strict=False)
    missing = [key for key in result.missing_keys if "masked_spec_embed" not in key]
    unexpected = [key for key in result.unexpected_keys if not key.startswith("exit_branches.")]
    if missing or unexpected:
        raise RuntimeError(f"{type(baseline).__name__} does not match the early-exit backbone: missing {missing[:8]}, "
                           f"unexpected {unexpected[:8]}")
    return baseline.to(device=device, dtype=dtype).eval()

def build_forced_model(arch: str, branch: str, device: torch.device, dtype: torch.dtype, seed: int = 0,
                       exit_layers: Sequence[int] | None = None, arch_config: str | None = None) -> HubertEEForCTC:
    """A random-weight HuBERT-EE of a named architecture, in eval mode on `device` and `dtype`."""
    kwargs = arch_config_kwargs(arch, arch_config)
    if exit_layers:
        kwargs["exit_layers"] = list(exit_layers)
    config = HubertEEConfig(**kwargs, exit_branch=branch)
    torch.manual_seed(seed)
    with torch.device(device):
        model = HubertEEForCTC(config)
    return model.to(dtype=dtype).eval()

def with_overlap(model, choice: str):
    """`--overlap-exit-decisions`: "on"/"off" set this model's `overlap_exit_decisions`; "auto" keeps its default."""
    if choice != "auto":
        model.overlap_exit_decisions = choice == "on"
    return model

def branch_of_type(model, branch_type: str) -> ExitBranch:
    """One exit branch of `branch_type` for `model`: the model's own if it has that type, else a random one."""
    if model.config.exit_branch == branch_type and len(model.exit_branches):
        return next(iter(model.exit_branches.values()))
    config = copy.deepcopy(model.config)
    config.exit_branch = branch_type
    parameter = next(model.parameters())
    with torch.device(parameter.device):
        branch = ExitBranch(config, model.encoder_layer_classes)
    return branch.to(dtype=parameter.dtype).eval()

def compiler(mode: str, backend: str) -> Callable[[Callable], Callable]:
    """`--compile MODE --compile-backend NAME`: the wrapper applied alike to both models and to every timed
    component (identity when `mode` is "off")."""
    if mode == "off":
        return lambda fn: fn
    options = {"backend": backend}
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
