# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""HuBERT-EE: early-exit HuBERT for CTC speech recognition (Yoon, Woo & Kim, arXiv 2204.06328).

`HubertEEForCTC` is `HubertForCTC` (same `hubert.*` backbone and `lm_head` final head, reused from transformers)
plus small CTC exit branches after chosen encoder layers. What early exit adds (the branches, the exit loop with
batch compaction, the criteria, the losses, the input checks) lives once in `modeling_early_exit`, shared with
`Wav2Vec2EEForCTC`; this file says how HuBERT embeds audio and where its encoder is.

This file travels to the Hub beside the weights and is executed by `trust_remote_code`: it imports only torch,
transformers and its siblings `configuration_hubert_ee` and `modeling_early_exit` (which transformers copies with
it, because they are imported relatively), and does nothing but build and run the model.
"""

from torch import nn
from transformers import HubertForCTC
from transformers.models.hubert.modeling_hubert import (
    HubertEncoderLayer,
    HubertEncoderLayerStableLayerNorm,
    HubertModel,
    HubertPreTrainedModel,
)


try:  # loaded as part of a package: transformers' dynamic module cache (`trust_remote_code`)
    from .configuration_hubert_ee import HubertEEConfig
    from .modeling_early_exit import (
        EarlyExitAutomaticSpeechRecognitionPipeline, EarlyExitCTCOutput, EarlyExitForCTCMixin, EarlyExitGenerateOutput,
        ExitBranch, frames_from_samples,
    )
except ImportError:  # loaded as a top-level module (installed by setup.py, or run from the repository root)
    from configuration_hubert_ee import HubertEEConfig
    from modeling_early_exit import (
        EarlyExitAutomaticSpeechRecognitionPipeline, EarlyExitCTCOutput, EarlyExitForCTCMixin, EarlyExitGenerateOutput,
        ExitBranch, frames_from_samples,
    )


class HubertEEAutomaticSpeechRecognitionPipeline(EarlyExitAutomaticSpeechRecognitionPipeline):
    """The `automatic-speech-recognition` pipeline of a HuBERT-EE folder (see the parent class)."""


class HubertEEForCTC(EarlyExitForCTCMixin, HubertPreTrainedModel):
    """`HubertForCTC` with early-exit CTC branches; see `EarlyExitForCTCMixin` and [`HubertEEConfig`]."""

    config: HubertEEConfig
    config_class = HubertEEConfig
    plain_ctc_class = HubertForCTC
    encoder_layer_classes = (HubertEncoderLayer, HubertEncoderLayerStableLayerNorm)
    backbone_name = "HuBERT"
    asr_pipeline_class = HubertEEAutomaticSpeechRecognitionPipeline

    def __init__(self, config: HubertEEConfig, exit_branches_are_new: bool = False):
        super().__init__(config)
        self.hubert = HubertModel(config)
        self.dropout = nn.Dropout(config.final_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.add_exit_branches(exit_branches_are_new)

    def embed_features(self, input_values, frame_mask, mask_time_indices):
        """`HubertModel.forward` up to its encoder: front end, feature projection, SpecAugment in training."""
        extract_features = self.hubert.feature_extractor(input_values).transpose(1, 2)
        hidden_states = self.hubert.feature_projection(extract_features)
        # SpecAugment exists only as this method of the backbone (no public function); it is called, not copied.
        return self.hubert._mask_hidden_states(hidden_states, mask_time_indices=mask_time_indices)


# The names the first release exported.
HubertEEExitBranch = ExitBranch
HubertEECTCOutput = EarlyExitCTCOutput
HubertEEGenerateOutput = EarlyExitGenerateOutput

HubertEEConfig.register_for_auto_class()
HubertEEForCTC.register_for_auto_class("AutoModelForCTC")

__all__ = [
    "HubertEEForCTC", "HubertEECTCOutput", "HubertEEGenerateOutput", "HubertEEExitBranch",
    "HubertEEAutomaticSpeechRecognitionPipeline", "frames_from_samples",
]
