"""HubertEEForCTC.from_pretrained (directly and through AutoModelForCTC with trust_remote_code) on damaged model
folders: missing, unexpected or misshapen weights, and weight files cut short; each fails naming what is wrong."""

from __future__ import annotations

import shutil

import pytest
import soundfile as sf
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCTC

from hubert_ee.cli import main
from hubert_ee.loading import load_early_exit_model
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import edit_config_json, noise, saved_tiny_model, tiny_model

RATE = 16000


def test_safetensors_missing_a_branch_key_fails_naming_it(tmp_path):
    folder = saved_tiny_model(tmp_path, exit_branch="linear")
    weights = load_file(folder / "model.safetensors")
    del weights["exit_branches.2.head.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    for load in (lambda: HubertEEForCTC.from_pretrained(folder),
                 lambda: AutoModelForCTC.from_pretrained(folder, trust_remote_code=True)):
        with pytest.raises(ValueError, match=r"lacks exit-branch weights .*\['exit_branches\.2\.head\.weight'\]"):
            load()


def test_branch_architecture_changed_to_transformer_fails_naming_keys(tmp_path):
    folder = saved_tiny_model(tmp_path, exit_branch="linear")
    edit_config_json(folder, exit_branch="transformer")
    with pytest.raises(ValueError, match=r"exit_branches\.1\.layer\.attention\.k_proj\.bias"):
        HubertEEForCTC.from_pretrained(folder)


def test_branch_architecture_changed_to_linear_fails_naming_keys(tmp_path):
    """Transformer-branch weights under a config saying "linear": the heads load, the branch layers are dropped and
    the exits silently compute something else. transformers only logs UNEXPECTED keys."""
    folder = saved_tiny_model(tmp_path, exit_branch="transformer")
    edit_config_json(folder, exit_branch="linear")
    with pytest.raises(ValueError, match=r"has exit-branch weights that the configured exit_branch='linear' has no "
                                         r"place for .*exit_branches\.1\.layer\."):
        HubertEEForCTC.from_pretrained(folder)


def _cut_short(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: keep if keep >= 0 else len(data) + keep])


@pytest.mark.parametrize("keep", [0, 5, 100, -1], ids=["empty", "in-length", "in-header", "last-byte"])
def test_truncated_weights_name_the_file_and_say_it_is_incomplete(tmp_path, hub_folder, keep, capsys):
    """An interrupted download or copy: safetensors' own error ("incomplete metadata") names no file."""
    folder = tmp_path / "cut"
    shutil.copytree(hub_folder, folder)
    _cut_short(folder / "model.safetensors", keep)
    # the model code reads no files itself, so it names the checkpoint; the tooling's loader names the file
    message = rf"of {folder} is incomplete or damaged \(.*\); was its download or copy interrupted"
    for load in (lambda: HubertEEForCTC.from_pretrained(folder),
                 lambda: AutoModelForCTC.from_pretrained(folder, trust_remote_code=True)):
        with pytest.raises(OSError, match=message):
            load()
    with pytest.raises(OSError, match=rf"^{folder / 'model.safetensors'} is incomplete or damaged \(.*\); was its"):
        load_early_exit_model(folder)
    audio = tmp_path / "a.wav"
    sf.write(audio, noise(0.5), RATE)
    for command in (["transcribe", "--model", str(folder), str(audio)],
                    ["evaluate", "--model", str(folder), "--dataset", str(tmp_path), "--json", str(tmp_path / "e.json")],
                    ["train", "--model", str(folder), "--dataset", str(tmp_path), "--output", str(tmp_path / "run")]):
        assert main(command) == 2, command
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and error.startswith("hubert-ee ") and ": error: " in error and "is incomplete" in error, (command, error)


def test_a_truncated_shard_is_named(tmp_path):
    folder = tmp_path / "sharded"
    tiny_model().save_pretrained(folder, max_shard_size="20KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    _cut_short(shards[1], shards[1].stat().st_size // 2)
    with pytest.raises(OSError, match=rf"^{shards[1]} is incomplete or damaged"):
        load_early_exit_model(folder)


@pytest.mark.parametrize("field,value", [("hidden_size", 64), ("vocab_size", 40)])
def test_shape_mismatch_fails_naming_keys(tmp_path, field, value):
    folder = saved_tiny_model(tmp_path, exit_branch="linear")
    edit_config_json(folder, **{field: value})
    with pytest.raises(ValueError, match=r"do not fit the shapes its config asks for") as raised:
        HubertEEForCTC.from_pretrained(folder)
    assert "exit_branches.1.head.weight (checkpoint (32, 32), model (" in str(raised.value)
