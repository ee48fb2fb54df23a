"""Wav2Vec2EEForCTC: the early-exit core on a wav2vec2 backbone. With early exit off it is `Wav2Vec2ForCTC` bit for
bit (post-norm and stable-layer-norm, with and without an attention mask, attention adapters included), it converts
wav2vec2 CTC checkpoints (the Hub's older key layout too). Its exits are tested with HuBERT-EE's in
test_modeling.py (`backbone` parameters)."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCTC, Wav2Vec2Config, Wav2Vec2ForCTC

import hubert_ee  # noqa: F401  (registers the Auto classes locally)
from configuration_wav2vec2_ee import Wav2Vec2EEConfig
from hubert_ee.export import convert_checkpoint
from modeling_wav2vec2_ee import Wav2Vec2EEForCTC
from tests.conftest import padded_batch, tiny_hubert_kwargs, tiny_model

LENGTHS = [4000, 2600, 3300, 1800]


def plain_wav2vec2(seed=0, **overrides) -> Wav2Vec2ForCTC:
    torch.manual_seed(seed)
    return Wav2Vec2ForCTC(Wav2Vec2Config(**tiny_hubert_kwargs(**overrides))).eval()


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("variant", [{}, {"do_stable_layer_norm": True}, {"do_stable_layer_norm": True,
                                                                          "adapter_attn_dim": 8}],
                         ids=["post-norm", "stable-layer-norm", "attention-adapters"])
def test_early_exit_off_is_wav2vec2_for_ctc_bit_for_bit(variant, with_mask):
    plain = plain_wav2vec2(**variant)
    model = convert_checkpoint(plain, exit_layers=[1, 2, 3]).eval()
    assert isinstance(model, Wav2Vec2EEForCTC) and model.config.model_type == "wav2vec2_ee"
    input_values, attention_mask = padded_batch(LENGTHS)
    mask = attention_mask if with_mask else None
    with torch.no_grad():
        expected = plain(input_values, attention_mask=mask).logits
        got = model(input_values, attention_mask=mask, early_exit=False)
    assert torch.equal(got.logits, expected)
    assert got.exit_layer.tolist() == [4] * len(LENGTHS)
    generated = model.generate(input_values, mask, early_exit=False)
    assert torch.equal(generated.logits, expected)


def test_hub_key_layout_and_adapters_convert_from_a_folder(tmp_path):
    """A checkpoint as older Hub uploads store it (`weight_g`/`weight_v` for the weight-normed positional
    convolution), with attention adapters in its layers, converts as the loaded model does."""
    plain = plain_wav2vec2(do_stable_layer_norm=True, adapter_attn_dim=8)
    plain.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    renamed = {key.replace("parametrizations.weight.original0", "weight_g")
               .replace("parametrizations.weight.original1", "weight_v"): value for key, value in weights.items()}
    assert renamed.keys() != weights.keys() and any("adapter_layer" in key for key in renamed)
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = convert_checkpoint(tmp_path, exit_layers=[2], exit_branch="transformer").eval()
    assert type(model) is Wav2Vec2EEForCTC and list(model.exit_branches) == ["2"]
    assert model.exit_branches["2"].layer.adapter_layer is not None  # the branch layer is the backbone's variant
    input_values, attention_mask = padded_batch(LENGTHS)
    with torch.no_grad():
        expected = plain(input_values, attention_mask=attention_mask).logits
        assert torch.equal(model(input_values, attention_mask=attention_mask, early_exit=False).logits, expected)
    # new branches start as the next backbone layer and the final head
    torch.testing.assert_close(model.exit_branches["2"].head.weight, plain.lm_head.weight)


def test_saved_model_reloads_through_the_auto_classes(tmp_path):
    model = tiny_model("wav2vec2", exit_branch="linear")
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is Wav2Vec2EEConfig
    loaded = AutoModelForCTC.from_pretrained(tmp_path).eval()
    assert type(loaded) is Wav2Vec2EEForCTC
    input_values, attention_mask = padded_batch(LENGTHS)
    for settings in ({"early_exit": False}, {"exit_threshold": 0.9}, {"exit_criterion": "patience"}):
        expected, got = model.generate(input_values, attention_mask, **settings), loaded.generate(
            input_values, attention_mask, **settings)
        assert torch.equal(expected.exit_layer, got.exit_layer) and torch.equal(expected.logits, got.logits)


def test_a_checkpoint_of_the_other_backbone_is_refused_naming_it(tmp_path):
    tiny_model("hubert").save_pretrained(tmp_path / "hubert")
    with pytest.raises(ValueError, match=r"not a wav2vec2 checkpoint .*wav2vec2\.encoder"):
        Wav2Vec2EEForCTC.from_pretrained(tmp_path / "hubert")


def test_the_sequence_shortening_adapter_is_refused_naming_why():
    with pytest.raises(ValueError, match="add_adapter.*frame rate"):
        Wav2Vec2EEConfig(**tiny_hubert_kwargs(add_adapter=True))
