# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""The processor of a HuBERT-EE folder that carries an n-gram language model (`language_model/`).

transformers' `Wav2Vec2ProcessorWithLM.from_pretrained` fails in transformers 5.25 (it calls a `ProcessorMixin`
method that no longer exists), so `AutoProcessor.from_pretrained(folder, trust_remote_code=True)` loads this
subclass instead (the folder's `processor_config.json` names it in `auto_map`). It reads the feature extractor and
tokenizer as `Wav2Vec2Processor` does and the pyctcdecode decoder from the folder, and is otherwise
`Wav2Vec2ProcessorWithLM` (`batch_decode` with beam search, `decoder`, `language_model`). Its name ends in `WithLM`,
which is what makes `pipeline("automatic-speech-recognition")` load the decoder and decode as `ctc_with_lm`.
pyctcdecode and kenlm are imported only when an LM is loaded.
"""

from __future__ import annotations

import os

from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor, Wav2Vec2ProcessorWithLM

try:
    from .modeling_early_exit import LM_BEAM_WIDTH
except ImportError:  # loaded as a top-level module (installed by setup.py, or run from the repository root)
    from modeling_early_exit import LM_BEAM_WIDTH


def plain_processor(pretrained_model_name_or_path, **kwargs) -> Wav2Vec2Processor:
    """The folder's feature extractor and tokenizer as a `Wav2Vec2Processor` (no LM, no remote code)."""
    return Wav2Vec2Processor(
        feature_extractor=Wav2Vec2FeatureExtractor.from_pretrained(pretrained_model_name_or_path, **kwargs),
        tokenizer=Wav2Vec2CTCTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs))


class EarlyExitProcessorWithLM(Wav2Vec2ProcessorWithLM):
    """`Wav2Vec2ProcessorWithLM` whose `from_pretrained` works in the tested transformers range, and whose
    `decode` and `batch_decode` search `LM_BEAM_WIDTH` beams unless told otherwise, as the pipeline does."""

    def batch_decode(self, logits, pool=None, num_processes=None, beam_width=None, **kwargs):
        return super().batch_decode(logits, pool, num_processes,
                                    beam_width=LM_BEAM_WIDTH if beam_width is None else beam_width, **kwargs)

    def decode(self, logits, beam_width=None, **kwargs):
        return super().decode(logits, beam_width=LM_BEAM_WIDTH if beam_width is None else beam_width, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """The feature extractor and tokenizer of `pretrained_model_name_or_path` (a folder or Hub id) and its
        `language_model/` decoder; `alpha`, `beta` and `unk_score_offset` override the stored ones."""
        from pyctcdecode import BeamSearchDecoderCTC

        overrides = {name: float(kwargs.pop(name)) for name in ("alpha", "beta", "unk_score_offset")
                     if kwargs.get(name) is not None}
        kwargs.pop("trust_remote_code", None)
        kwargs.pop("_from_auto", None)
        plain = plain_processor(pretrained_model_name_or_path, **kwargs)
        if os.path.isdir(pretrained_model_name_or_path):
            decoder = BeamSearchDecoderCTC.load_from_dir(str(pretrained_model_name_or_path))
        else:
            patterns = [os.path.join(BeamSearchDecoderCTC._LANGUAGE_MODEL_SERIALIZED_DIRECTORY, "*"),
                        BeamSearchDecoderCTC._ALPHABET_SERIALIZED_FILENAME]
            decoder = BeamSearchDecoderCTC.load_from_hf_hub(pretrained_model_name_or_path, allow_patterns=patterns)
        if overrides:
            decoder.reset_params(**overrides)
        return cls(feature_extractor=plain.feature_extractor, tokenizer=plain.tokenizer, decoder=decoder)


__all__ = ["EarlyExitProcessorWithLM", "plain_processor"]
