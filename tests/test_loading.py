"""Tests of hubert_ee.loading: model specs, the local-path rule, devices, and loading a model with its processor
(whose tokenizer must match the model's vocabulary)."""

import json
import shutil
import subprocess
import sys

import pytest
import soundfile as sf
from transformers import AutoProcessor

from hubert_ee import loading
from hubert_ee.arguments import UsageError
from hubert_ee.cli import main
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import noise


@pytest.mark.parametrize("spec", ["./model", "~/model", "/abs/model", "a/b/c", "models\\x", "runs/", "data.csv",
                                  "clips/a.wav", "corpus.parquet"])
def test_paths_are_local(spec):
    assert loading.is_local_path(spec)


@pytest.mark.parametrize("spec", ["hubert-ee", "facebook/hubert-large-ls960-ft", "openslr/librispeech_asr"])
def test_hub_ids_are_not_local(spec):
    assert not loading.is_local_path(spec)


def test_the_default_model_is_used_without_model_and_its_absence_is_a_usage_error(monkeypatch):
    import hubert_ee

    assert loading.resolve_model_spec("me/model") == "me/model"
    monkeypatch.setattr(hubert_ee, "DEFAULT_MODEL", "some/folder")
    assert loading.resolve_model_spec(None) == "some/folder"
    monkeypatch.setattr(hubert_ee, "DEFAULT_MODEL", None)
    with pytest.raises(UsageError, match="no --model given"):
        loading.resolve_model_spec(None)


def test_resolve_device():
    import torch

    assert loading.resolve_device("cpu") == torch.device("cpu")
    assert loading.resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert loading.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_missing_model_folder_is_named_not_tried_on_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"model folder {tmp_path / 'nope'} does not exist"):
        loading.load_model_and_processor(tmp_path / "nope", "cpu")


def test_a_folder_without_processor_files_says_which_files_are_needed(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json, tokenizer_config.json and preprocessor_config.json"):
        loading.load_processor(tmp_path)


def test_loading_imports_no_stage():
    """The path from a model spec to a model goes through loading alone: no evaluate, no export."""
    script = ("import sys, hubert_ee.loading; "
              "stages = [m for m in ('hubert_ee.evaluate', 'hubert_ee.export', 'torch') if m in sys.modules]; "
              "assert not stages, stages")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_tokenizer_vocab_mismatch_is_caught(tmp_path, hub_folder, capsys):
    folder = tmp_path / "bad_vocab"
    shutil.copytree(hub_folder, folder)
    vocab = json.loads((folder / "vocab.json").read_text())
    vocab["Ä"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    processor = AutoProcessor.from_pretrained(folder)
    model = HubertEEForCTC.from_pretrained(folder)
    with pytest.raises(ValueError, match="Tokenizer has 33 tokens but the model's CTC head has vocab_size=32"):
        loading.check_vocab_matches(model, processor)
    audio = tmp_path / "a.wav"
    sf.write(audio, noise(0.5), 16000)
    assert main(["transcribe", "--model", str(folder), str(audio)]) == 2
    assert "Tokenizer has 33 tokens but the model's CTC head has vocab_size=32" in capsys.readouterr().err


def test_a_hub_model_without_network_fails_at_once_in_one_line(tmp_path, monkeypatch, capsys):
    """`hubert-ee transcribe --model someorg/somemodel` with no Hub to reach (an address nothing listens on) and
    HF_HUB_OFFLINE unset: one line naming the repository, at once, not half a minute of retries printed twice."""
    import time

    from huggingface_hub import constants

    audio = tmp_path / "a.wav"
    sf.write(audio, noise(0.5), 16000)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite runs offline
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))  # nothing cached
    assert main(["transcribe", "--model", str(tmp_path / "missing"), str(audio)]) == 2  # the stage's imports, done
    capsys.readouterr()
    started = time.perf_counter()
    assert main(["transcribe", "--model", "someorg/somemodel", str(audio)]) == 2
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "hubert-ee transcribe: error: could not reach the Hugging Face Hub (ConnectionError: someorg/somemodel: "), err
    assert elapsed < 5, elapsed  # one refused request; a download's retries wait 1 + 2 + 4 + 8 + 8 s


def test_a_cached_hub_model_loads_from_the_cache_when_the_hub_cannot_be_reached(tmp_path, hub_folder, monkeypatch):
    """Unreachable Hub, model in the cache: loaded from it at once (the cached copy is what HF_HUB_OFFLINE=1 would
    load), with a warning, instead of retrying each file first."""
    from huggingface_hub import HfApi

    def unreachable(self, repo_id, **kwargs):
        raise ConnectionError("[Errno 111] Connection refused")

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # the suite runs offline
    monkeypatch.setattr(HfApi, "model_info", unreachable)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo_id, filename: str(hub_folder / filename))
    assert loading.hub_load_kwargs("someorg/somemodel") == {"local_files_only": True}
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo_id, filename: None)
    with pytest.raises(ConnectionError, match="someorg/somemodel: .*Connection refused"):
        loading.hub_load_kwargs("someorg/somemodel")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert loading.hub_load_kwargs("someorg/somemodel") == {}  # offline mode: transformers reads the cache itself
