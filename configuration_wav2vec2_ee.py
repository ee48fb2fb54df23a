# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""Wav2Vec2-EE configuration: a `Wav2Vec2Config` plus the early-exit fields (`configuration_early_exit`).

This file travels to the Hub beside the weights and is executed by `trust_remote_code`: it imports only
`transformers` and its sibling `configuration_early_exit`, and does nothing but describe the model.
"""

from transformers import Wav2Vec2Config


try:  # loaded as part of a package: transformers' dynamic module cache (`trust_remote_code`)
    from .configuration_early_exit import EarlyExitConfigMixin
except ImportError:  # loaded as a top-level module (installed by setup.py, or run from the repository root)
    from configuration_early_exit import EarlyExitConfigMixin


class Wav2Vec2EEConfig(EarlyExitConfigMixin, Wav2Vec2Config):
    r"""
    Configuration of [`Wav2Vec2EEForCTC`]: every [`Wav2Vec2Config`] field (so any wav2vec2 CTC checkpoint's
    `config.json`, e.g. facebook/wav2vec2-base-960h's, loads into it) plus the early-exit fields of
    [`EarlyExitConfigMixin`]. Attention adapters (`adapter_attn_dim`, as in MMS checkpoints) live inside each encoder
    layer and are kept; the sequence-shortening adapter after the encoder (`add_adapter=True`) is refused, because
    the exits sit inside the encoder, at a frame rate that adapter changes before the final head.
    """

    model_type = "wav2vec2_ee"
    backbone_config_class = Wav2Vec2Config
    modeling_module = "modeling_wav2vec2_ee"
    pipeline_class_name = "Wav2Vec2EEAutomaticSpeechRecognitionPipeline"

    def validate_exit_settings(self, **overrides) -> None:
        """[`EarlyExitConfigMixin.validate_exit_settings`], and no sequence-shortening adapter (`add_adapter`)."""
        if self.add_adapter:
            raise ValueError(
                "`add_adapter` is True, but Wav2Vec2-EE needs it False: that adapter shortens the frames after the "
                "encoder, and the exit branches inside the encoder would answer at another frame rate than the final head."
            )
        super().validate_exit_settings(**overrides)


__all__ = ["Wav2Vec2EEConfig"]
