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


@pytest.mark.parametrize("branch", ["linear", "transformer"])
def test_a_hubert_ee_checkpoint_takes_other_exits_keeping_those_that_stay(tmp_path, branch):
    """Other exit layers (or another branch type) on a HuBERT-EE folder: backbone and head as saved, each branch that
    stays (same layer and type) as trained, the new ones started from the backbone (layer after them + final head)."""
    torch.manual_seed(0)
    saved = tiny_model(exit_layers=[1, 2], exit_branch="linear")
    for parameter in saved.exit_branches.parameters():  # trained branches: unlike a fresh start from the backbone
        parameter.data.normal_()
    saved.save_pretrained(tmp_path)
    model = convert_checkpoint(tmp_path, exit_layers=[2, 3], exit_branch=branch, exit_training_strategy="joint")
    assert model.config.exit_layers == [2, 3] and model.config.exit_branch == branch
    for name, value in saved.state_dict().items():
        if not name.startswith("exit_branches."):
            torch.testing.assert_close(model.state_dict()[name], value, msg=name)
    kept = torch.equal(model.exit_branches["2"].head.weight, saved.exit_branches["2"].head.weight)
    assert kept == (branch == "linear")
    torch.testing.assert_close(model.exit_branches["3"].head.weight, saved.lm_head.weight)  # new: the final head
    assert all(parameter.requires_grad for parameter in model.parameters() if parameter.dim() > 1
               and not any(parameter is p for p in model.hubert.feature_extractor.parameters()))
    input_values, attention_mask = padded_batch([4000, 2600])
    with torch.no_grad():
        torch.testing.assert_close(model.generate(input_values, attention_mask, early_exit=False).logits,
                                   saved.generate(input_values, attention_mask, early_exit=False).logits)
    unchanged = convert_checkpoint(tmp_path, exit_layers=[1, 2])  # the same exits: the checkpoint as saved
    torch.testing.assert_close(unchanged.exit_branches["1"].head.weight, saved.exit_branches["1"].head.weight)
