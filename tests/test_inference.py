"""Tests of hubert_ee.inference: featurizing audio, and the one greedy CTC decode (padding frames blanked)."""

import numpy as np
import pytest
import torch
from transformers import HubertConfig, HubertForCTC

from configuration_hubert_ee import HubertEEConfig
from hubert_ee.inference import decode, featurize, frame_lengths, greedy_decode, greedy_ids
from hubert_ee.text import build_processor
from modeling_hubert_ee import HubertEEForCTC

TINY = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
            conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
            feat_extract_norm="layer", pad_token_id=0)


@pytest.fixture(scope="module")
def processor():
    return build_processor()


def _models(vocab_size):
    torch.manual_seed(0)
    return [HubertForCTC(HubertConfig(vocab_size=vocab_size, **TINY)).eval(),
            HubertEEForCTC(HubertEEConfig(vocab_size=vocab_size, exit_layers=[1], **TINY)).eval()]


def test_featurize_pads_and_masks(processor):
    values, mask = featurize(processor, [np.ones(400), np.ones(200)], "cpu")
    assert values.shape == (2, 400) and mask.sum(-1).tolist() == [400, 200]


@pytest.mark.parametrize("kind", [0, 1], ids=["HubertForCTC", "HubertEEForCTC"])
def test_padding_frames_are_blanked_for_either_model(processor, kind):
    """The frames past a row's valid length get the fill id; the valid ones keep the argmax."""
    model = _models(len(processor.tokenizer))[kind]
    values, mask = featurize(processor, [np.random.default_rng(0).standard_normal(800), np.ones(300)], "cpu")
    lengths = frame_lengths(model, mask).tolist()
    assert lengths[0] > lengths[1]
    logits = torch.zeros(2, lengths[0], len(processor.tokenizer))
    logits[..., 5] = 1.0  # every frame says token 5
    ids = greedy_ids(model, logits, mask, fill=-100)
    assert (ids[1, lengths[1]:] == -100).all() and (ids[1, : lengths[1]] == 5).all() and (ids[0] == 5).all()
    assert (greedy_ids(model, logits, mask)[1, lengths[1]:] == 0).all()  # default fill: the pad (blank) id


def test_greedy_decode_merges_repeats_and_drops_padding(processor):
    model = _models(len(processor.tokenizer))[1]
    tokenizer = processor.tokenizer
    a, b = tokenizer.convert_tokens_to_ids(["A", "B"])
    values, mask = featurize(processor, [np.ones(800), np.ones(300)], "cpu")
    lengths = frame_lengths(model, mask).tolist()
    logits = torch.zeros(2, lengths[0], len(tokenizer))
    logits[:, :, a] = 1.0
    logits[1, lengths[1]:, b] = 2.0  # padding frames of row 1 say B: they must not reach the text
    assert greedy_decode(model, processor, logits, mask) == ["A", "A"]
    assert decode(processor, torch.tensor([[a, a, 0, b]])) == ["AB"]
