"""HubertEEConfig: defaults, validation of every early-exit field (in Python and in a hand-edited config.json, through
every loader), and round trips."""

import json
import shutil

import pytest
from transformers import AutoConfig, HubertConfig

from configuration_hubert_ee import HubertEEConfig, default_exit_layers
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import edit_config_json, saved_tiny_model, tiny_config


def test_defaults_and_model_type():
    config = HubertEEConfig()
    assert config.model_type == "hubert_ee"
    assert isinstance(config, HubertConfig)
    assert config.exit_layers == [2, 4, 6, 8, 10]
    assert (config.exit_branch, config.exit_criterion, config.exit_training_strategy) == (
        "transformer", "confidence", "two-stage",
    )
    assert config.early_exit is True and config.exit_patience == 2


@pytest.mark.parametrize("layers,expected", [(1, []), (2, [1]), (4, [1, 2, 3]), (12, [2, 4, 6, 8, 10]),
                                             (24, [4, 8, 12, 16, 20]), (48, [8, 16, 24, 32, 40])])
def test_default_exit_layers_spread_over_depth(layers, expected):
    assert default_exit_layers(layers) == expected
    assert HubertEEConfig(num_hidden_layers=layers, num_attention_heads=12).exit_layers == expected


@pytest.mark.parametrize(
    "field,value,fragment",
    [
        ("exit_layers", [0, 2], "out of range"),
        ("exit_layers", [2, 4], "out of range"),  # 4 == num_hidden_layers: the final head's place
        ("exit_layers", [3, 1], "strictly increasing"),
        ("exit_layers", [1, 1], "strictly increasing"),
        ("exit_layers", "1,2", "list of integer"),
        ("exit_branch", "mlp", "['transformer', 'linear']"),
        ("exit_criterion", "margin", "['confidence', 'entropy', 'patience']"),
        ("exit_training_strategy", "frozen", "['two-stage', 'joint', 'distill', 'joint-distill']"),
        ("exit_threshold", -0.1, "non-negative"),
        ("exit_patience", 0, ">= 1"),
        ("exit_patience", 1.5, ">= 1"),
        ("early_exit", "yes", "True or False"),
        ("distill_weight", 1.5, "[0, 1]"),
        ("distill_temperature", 0, "positive"),
        ("exit_loss_weight", -1, "non-negative"),
    ],
)
def test_invalid_fields_raise_value_error_naming_field_value_and_allowed(field, value, fragment):
    with pytest.raises(ValueError) as error:
        tiny_config(**{field: value})
    message = str(error.value)
    assert f"`{field}`" in message and repr(value) in message and fragment in message


def test_hand_edited_config_json_is_validated(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["exit_criterion"] = "vibes"
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="`exit_criterion` is 'vibes'"):
        HubertEEConfig.from_pretrained(tmp_path)


def test_roundtrip_and_plain_hubert_config_loads(tmp_path):
    config = tiny_config(exit_layers=[2], exit_branch="linear", exit_threshold=0.5)
    config.save_pretrained(tmp_path / "ee")
    again = HubertEEConfig.from_pretrained(tmp_path / "ee")
    assert again.exit_layers == [2] and again.exit_branch == "linear" and again.exit_threshold == 0.5
    HubertConfig(num_hidden_layers=6, num_attention_heads=12).save_pretrained(tmp_path / "plain")
    converted = HubertEEConfig.from_pretrained(tmp_path / "plain", exit_layers=[3])
    assert converted.exit_layers == [3] and converted.num_hidden_layers == 6
    assert converted.model_type == "hubert_ee" and converted.to_dict()["model_type"] == "hubert_ee"


def test_validate_overrides_do_not_change_config():
    config = tiny_config()
    config.validate_exit_settings(exit_threshold=3.0, exit_criterion="entropy")
    assert config.exit_threshold == 0.9 and config.exit_criterion == "confidence"
    with pytest.raises(ValueError, match="exit_patience"):
        config.validate_exit_settings(exit_patience=0)


INVALID_FIELDS = [
    ("exit_layers", [0, 2]), ("exit_layers", [4]), ("exit_layers", [3, 1]), ("exit_layers", "1,2"),
    ("exit_branch", "mlp"), ("exit_criterion", "vibes"), ("exit_training_strategy", "frozen"),
    ("exit_threshold", -0.5), ("exit_threshold", "high"), ("exit_patience", 0), ("exit_patience", 1.5),
    ("early_exit", "yes"), ("exit_loss_weight", -1), ("distill_weight", 1.5), ("distill_temperature", 0),
    ("ctc_loss_reduction", "avg"),
]  # fmt: skip


@pytest.fixture(scope="module")
def valid_folder(tmp_path_factory):
    return saved_tiny_model(tmp_path_factory.mktemp("config"), exit_branch="linear")


@pytest.mark.parametrize("field,value", INVALID_FIELDS, ids=[f"{f}={v!r}" for f, v in INVALID_FIELDS])
def test_hand_edited_config_json_names_the_field(tmp_path, valid_folder, monkeypatch, field, value):
    folder = tmp_path / "edited"
    shutil.copytree(valid_folder, folder)
    edit_config_json(folder, **{field: value})
    message = f"`{field}` is {value!r}"
    with pytest.raises(ValueError, match=None) as raised:
        HubertEEForCTC.from_pretrained(folder)
    assert message in str(raised.value)
    # the copy of configuration_hubert_ee.py in the folder (trust_remote_code), not this process's registered class
    import transformers.dynamic_module_utils as dynamic_module_utils
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.delitem(CONFIG_MAPPING._extra_content, "hubert_ee", raising=False)  # local registration wins else
    with pytest.raises(ValueError, match=None) as raised:
        AutoConfig.from_pretrained(folder, trust_remote_code=True)
    assert message in str(raised.value)
    assert "transformers_modules" in "".join(str(frame.path) for frame in raised.traceback)


def test_config_json_that_is_not_json(tmp_path, valid_folder):
    folder = tmp_path / "broken"
    shutil.copytree(valid_folder, folder)
    (folder / "config.json").write_text('{"model_type": "hubert_ee", ')
    with pytest.raises(OSError, match="is not a valid JSON file"):
        HubertEEForCTC.from_pretrained(folder)
