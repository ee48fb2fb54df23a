# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""Wav2Vec2-EE: early-exit wav2vec2 for CTC speech recognition, HuBERT-EE's method on `Wav2Vec2ForCTC` checkpoints.

`Wav2Vec2EEForCTC` is `Wav2Vec2ForCTC` (same `wav2vec2.*` backbone and `lm_head` final head, reused from
transformers) plus small CTC exit branches after chosen encoder layers. What early exit adds lives once in
`modeling_early_exit`, shared with `HubertEEForCTC`; this file says how wav2vec2 embeds audio and where its encoder is.

This file travels to the Hub beside the weights and is executed by `trust_remote_code`: it imports only torch,
transformers and its siblings `configuration_wav2vec2_ee` and `modeling_early_exit` (which transformers copies
with it, because they are imported relatively), and does nothing but build and run the model.
"""

from torch import nn
from transformers import Wav2Vec2ForCTC
from transformers.models.wav2vec2.modeling_wav2vec2 import (
    Wav2Vec2EncoderLayer,
    Wav2Vec2EncoderLayerStableLayerNorm,
    Wav2Vec2Model,
    Wav2Vec2PreTrainedModel,
)


try:  # loaded as part of a package: transformers' dynamic module cache (`trust_remote_code`)
    from .configuration_wav2vec2_ee import Wav2Vec2EEConfig
    from .modeling_early_exit import EarlyExitAutomaticSpeechRecognitionPipeline, EarlyExitForCTCMixin
except ImportError:  # loaded as a top-level module (installed by setup.py, or run from the repository root)
    from configuration_wav2vec2_ee import Wav2Vec2EEConfig
    from modeling_early_exit import EarlyExitAutomaticSpeechRecognitionPipeline, EarlyExitForCTCMixin


class Wav2Vec2EEAutomaticSpeechRecognitionPipeline(EarlyExitAutomaticSpeechRecognitionPipeline):
    """The `automatic-speech-recognition` pipeline of a Wav2Vec2-EE folder (see the parent class)."""


class Wav2Vec2EEForCTC(EarlyExitForCTCMixin, Wav2Vec2PreTrainedModel):
    """`Wav2Vec2ForCTC` with early-exit CTC branches; see `EarlyExitForCTCMixin` and [`Wav2Vec2EEConfig`]."""

    config: Wav2Vec2EEConfig
    config_class = Wav2Vec2EEConfig
    plain_ctc_class = Wav2Vec2ForCTC
    encoder_layer_classes = (Wav2Vec2EncoderLayer, Wav2Vec2EncoderLayerStableLayerNorm)
    backbone_name = "wav2vec2"
    asr_pipeline_class = Wav2Vec2EEAutomaticSpeechRecognitionPipeline

    def __init__(self, config: Wav2Vec2EEConfig, exit_branches_are_new: bool = False):
        super().__init__(config)
        self.wav2vec2 = Wav2Vec2Model(config)
        self.dropout = nn.Dropout(config.final_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.add_exit_branches(exit_branches_are_new)

    def embed_features(self, input_values, frame_mask, mask_time_indices):
        """`Wav2Vec2Model.forward` up to its encoder: front end, feature projection, SpecAugment in training."""
        extract_features = self.wav2vec2.feature_extractor(input_values).transpose(1, 2)
        hidden_states, _ = self.wav2vec2.feature_projection(extract_features)
        # SpecAugment exists only as this method of the backbone (no public function); it is called, not copied.
        return self.wav2vec2._mask_hidden_states(hidden_states, mask_time_indices=mask_time_indices,
                                                 attention_mask=frame_mask)


Wav2Vec2EEConfig.register_for_auto_class()
Wav2Vec2EEForCTC.register_for_auto_class("AutoModelForCTC")

__all__ = ["Wav2Vec2EEForCTC", "Wav2Vec2EEAutomaticSpeechRecognitionPipeline"]
