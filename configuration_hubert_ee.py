# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""HuBERT-EE configuration: a `HubertConfig` plus the early-exit fields (`configuration_early_exit`).

This file travels to the Hub beside the weights and is executed by `trust_remote_code`: it imports only
`transformers` and its sibling `configuration_early_exit`, and does nothing but describe the model.
"""

from transformers import HubertConfig


try:  # loaded as part of a package: transformers' dynamic module cache (`trust_remote_code`)
    from .configuration_early_exit import (
        EXIT_BRANCHES, EXIT_CRITERIA, EXIT_TRAINING_STRATEGIES, EarlyExitConfigMixin, ExitSetting, default_exit_layers,
    )
except ImportError:  # loaded as a top-level module (installed by setup.py, or run from the repository root)
    from configuration_early_exit import (
        EXIT_BRANCHES, EXIT_CRITERIA, EXIT_TRAINING_STRATEGIES, EarlyExitConfigMixin, ExitSetting, default_exit_layers,
    )


class HubertEEConfig(EarlyExitConfigMixin, HubertConfig):
    r"""
    Configuration of [`HubertEEForCTC`]: every [`HubertConfig`] field (so any HuBERT CTC checkpoint's
    `config.json` loads into it) plus the early-exit fields of [`EarlyExitConfigMixin`] (`exit_layers`,
    `exit_branch`, `exit_criterion`, `exit_threshold`, `exit_patience`, `early_exit`, `exit_training_strategy`,
    `exit_loss_weight`, `distill_weight`, `distill_temperature`, `output_exit_logits`).
    """

    model_type = "hubert_ee"
    backbone_config_class = HubertConfig
    modeling_module = "modeling_hubert_ee"
    pipeline_class_name = "HubertEEAutomaticSpeechRecognitionPipeline"


__all__ = [
    "EXIT_BRANCHES", "EXIT_CRITERIA", "EXIT_TRAINING_STRATEGIES", "ExitSetting", "HubertEEConfig",
    "default_exit_layers",
]
