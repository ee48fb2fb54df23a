"""hubert_ee.export: converting a HuBERT CTC checkpoint (also one already loaded), and saving a Hub folder over an
earlier one."""

import pytest
import torch
from transformers import HubertConfig, HubertForCTC

from hubert_ee.export import convert_checkpoint, save_hub_folder
from hubert_ee.text import build_processor
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import padded_batch, tiny_hubert_kwargs, tiny_model


def test_convert_a_loaded_hubert_for_ctc(tmp_path):
    """`convert_checkpoint(model)` converts the object as `convert_checkpoint(folder)` converts its checkpoint."""
    torch.manual_seed(0)
    source = HubertForCTC(HubertConfig(**tiny_hubert_kwargs())).eval()
    source.save_pretrained(tmp_path)
    from_object = convert_checkpoint(source, exit_layers=[1, 3], exit_branch="linear").eval()
    from_folder = convert_checkpoint(tmp_path, exit_layers=[1, 3], exit_branch="linear").eval()
    assert isinstance(from_object, HubertEEForCTC) and from_object.config.exit_layers == [1, 3]
    assert from_object.state_dict().keys() == from_folder.state_dict().keys()
    for key, value in from_folder.state_dict().items():
        torch.testing.assert_close(from_object.state_dict()[key], value, msg=key)
    input_values, attention_mask = padded_batch([4000, 2600])
    with torch.no_grad():
        expected = source(input_values, attention_mask=attention_mask).logits
        got = from_object(input_values, attention_mask=attention_mask, early_exit=False).logits
    torch.testing.assert_close(got, expected)


def test_convert_refuses_other_objects_naming_them():
    with pytest.raises(TypeError, match="not a int"):
        convert_checkpoint(42)
    torch.manual_seed(0)
    from tests.conftest import tiny_config

    with pytest.raises(TypeError, match="HuBERT-EE already"):
        convert_checkpoint(HubertEEForCTC(tiny_config()))


def test_saving_over_an_earlier_model_leaves_no_stale_weights(tmp_path):
    """A sharded save over an unsharded one (or the reverse) must load the new weights, not the old file."""
    processor = build_processor()
    folder = tmp_path / "model"
    small = tiny_model()
    save_hub_folder(small, processor, folder, max_shard_size="100GB")  # one model.safetensors
    torch.manual_seed(1)
    bigger = tiny_model(num_hidden_layers=3, exit_layers=[1, 2])
    save_hub_folder(bigger, processor, folder, max_shard_size="20KB")  # several shards + index
    assert not (folder / "model.safetensors").exists()
    loaded = HubertEEForCTC.from_pretrained(folder)
    assert loaded.config.num_hidden_layers == 3
    for name, tensor in bigger.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
