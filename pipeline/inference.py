"""Inference: audio to model inputs, and model outputs to text.

`featurize` turns float arrays into padded `input_values` and the sample-level `attention_mask`. Greedy CTC
decoding is one rule everywhere: argmax per frame, the frames beyond each row's valid length (padding) set to the
pad (blank) id, then `processor.batch_decode` merges repeats and drops blanks (`greedy_ids`, `decode`,
`greedy_decode`). Early-exit models and plain CTC models (`HubertForCTC`, `Wav2Vec2ForCTC`) are accepted.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from modeling_early_exit import frames_from_samples

__all__ = ["featurize", "frame_lengths", "greedy_ids", "decode", "greedy_decode"]


def featurize(processor, audios: Sequence[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised, padded `input_values` and the sample-level `attention_mask`, on `device`."""
    feature_extractor = getattr(processor, "feature_extractor", processor)
    features = feature_extractor(
        [np.asarray(audio, dtype=np.float32) for audio in audios],
        sampling_rate=feature_extractor.sampling_rate,
        return_tensors="pt",
        padding=True,
        return_attention_mask=True,
    )
    return features["input_values"].to(device), features["attention_mask"].to(device)


def frame_lengths(model, attention_mask: torch.Tensor) -> torch.Tensor:
    """Valid frames per row of a batch with this sample-level `attention_mask` (a long tensor on its device), for
    early-exit and plain CTC models alike (the front end's arithmetic reads only the config)."""
    return frames_from_samples(model.config, attention_mask.sum(-1))


def greedy_ids(model, logits: torch.Tensor, attention_mask: torch.Tensor | None, fill: int | None = None
               ) -> torch.Tensor:
    """Per-frame argmax ids of `logits` (`[batch, frames, vocab]`), padding frames set to `fill` (default: the
    model's pad/blank id, which decoding drops)."""
    ids = logits.argmax(-1)
    if attention_mask is None:
        return ids
    lengths = frame_lengths(model, attention_mask).to(ids.device)
    padding = torch.arange(ids.shape[1], device=ids.device)[None, :] >= lengths[:, None]
    return ids.masked_fill(padding, model.config.pad_token_id if fill is None else fill)


def decode(processor, ids) -> list[str]:
    """CTC-decode rows of frame ids (repeats merged, blanks dropped) with the processor's tokenizer."""
    tokenizer = getattr(processor, "tokenizer", processor)
    if isinstance(ids, torch.Tensor):
        ids = ids.cpu().tolist()
    return tokenizer.batch_decode(ids)


def greedy_decode(model, processor, logits: torch.Tensor, attention_mask: torch.Tensor | None) -> list[str]:
    """Greedy CTC transcripts of a batch of `logits`, padding frames left out."""
    return decode(processor, greedy_ids(model, logits, attention_mask))


