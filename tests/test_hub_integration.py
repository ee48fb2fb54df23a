"""The real Hugging Face paths: save Hub-style -> fresh process -> trust_remote_code load -> ASR pipeline."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCTC

import hubert_ee  # noqa: F401  (registers the Auto classes locally)
import pytest

from hubert_ee import CODE_FILES_BY_MODEL_TYPE
from hubert_ee.export import save_hub_folder
from hubert_ee.text import build_processor
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import BACKBONES, backbone_class, padded_batch, sharpen_branches, tiny_config

ROOT = Path(__file__).resolve().parents[1]

FRESH_PROCESS = r"""
import json, sys
import numpy as np, torch
from transformers import AutoModel, AutoModelForCTC, pipeline

folder, inputs_path = sys.argv[1], sys.argv[2]
assert not {"modeling_hubert_ee", "modeling_wav2vec2_ee", "modeling_early_exit", "hubert_ee"} & set(sys.modules)
inputs = torch.load(inputs_path)
model = AutoModelForCTC.from_pretrained(folder, trust_remote_code=True).eval()
generic = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
out = model.generate(inputs["input_values"], inputs["attention_mask"])
with torch.no_grad():
    logits = generic(inputs["input_values"], attention_mask=inputs["attention_mask"]).logits
asr = pipeline("automatic-speech-recognition", model=folder, trust_remote_code=True)
rng = np.random.default_rng(0)
short = asr(rng.standard_normal(16000).astype(np.float32))
long = asr({"raw": rng.standard_normal(16000 * 25).astype(np.float32), "sampling_rate": 16000}, chunk_length_s=8)
torch.save({"sequences": out.sequences, "exit_layer": out.exit_layer, "logits": logits}, inputs_path + ".out")
print(json.dumps({"module": type(model).__module__, "generic": type(generic).__name__,
                  "short": short["text"], "long": long["text"]}))
"""


def _hub_folder(tmp_path, backbone="hubert"):
    torch.manual_seed(0)
    model = sharpen_branches(backbone_class(backbone, 1)(tiny_config(backbone, exit_threshold=0.5))).eval()
    return model, save_hub_folder(model, build_processor(), tmp_path / "hub")


@pytest.mark.parametrize("backbone", BACKBONES)
def test_saved_folder_is_hub_ready(tmp_path, backbone):
    model, folder = _hub_folder(tmp_path, backbone)
    config = json.loads((folder / "config.json").read_text())
    config_name, model_name = BACKBONES[backbone]
    assert config["model_type"] == f"{backbone}_ee" and config["architectures"] == [model_name.split(".")[1]]
    assert config["auto_map"] == {"AutoConfig": config_name, "AutoModel": model_name, "AutoModelForCTC": model_name}
    code_files = CODE_FILES_BY_MODEL_TYPE[config["model_type"]]
    for name in (*code_files, "vocab.json", "tokenizer_config.json"):
        assert (folder / name).is_file(), name
    assert (folder / "preprocessor_config.json").is_file() or (folder / "processor_config.json").is_file()
    assert sorted(path.name for path in folder.glob("*.py")) == sorted(code_files)  # no other code travels
    for name in code_files:  # the copies are the files of this repository
        assert (folder / name).read_text() == (ROOT / name).read_text()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_local_auto_classes_resolve_without_remote_code(tmp_path, backbone):
    model, folder = _hub_folder(tmp_path, backbone)
    model_class = backbone_class(backbone, 1)
    assert type(AutoConfig.from_pretrained(folder)) is backbone_class(backbone, 0)
    assert type(AutoModelForCTC.from_pretrained(folder)) is model_class
    assert type(AutoModel.from_pretrained(folder)) is model_class


@pytest.mark.parametrize("backbone", BACKBONES)
def test_fresh_process_trust_remote_code_and_pipeline(tmp_path, backbone):
    model, folder = _hub_folder(tmp_path, backbone)
    input_values, attention_mask = padded_batch([4000, 2600, 3300])
    inputs_path = tmp_path / "inputs.pt"
    torch.save({"input_values": input_values, "attention_mask": attention_mask}, inputs_path)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS)
    # run from a scratch folder, without PYTHONPATH: the class must come from transformers' module cache
    result = subprocess.run([sys.executable, str(script), str(folder), str(inputs_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules."), report["module"]
    assert report["generic"] == type(model).__name__
    assert isinstance(report["short"], str) and isinstance(report["long"], str) and report["long"]
    fresh = torch.load(str(inputs_path) + ".out")
    local = model.generate(input_values, attention_mask)
    assert torch.equal(fresh["sequences"], local.sequences)
    assert torch.equal(fresh["exit_layer"], local.exit_layer)
    with torch.no_grad():
        expected = model(input_values, attention_mask=attention_mask).logits
    torch.testing.assert_close(fresh["logits"], expected, rtol=1e-5, atol=1e-4)  # other process, other threads


def _imported_roots(nodes) -> set[str]:
    roots = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_remote_code_files_import_only_torch_and_transformers():
    """The code files need only torch and transformers. soxr, which the pipeline resamples with, is imported inside
    a function's `try: ... except ImportError` (transformers' remote-code loader skips imports in a `try`, so a
    machine without it still loads the model, and only resampling says what is missing)."""
    code_files = {name for names in CODE_FILES_BY_MODEL_TYPE.values() for name in names}
    own_modules = {name.removesuffix(".py") for name in code_files}
    for name in sorted(code_files):
        tree = ast.parse((ROOT / name).read_text())
        guarded = set()  # the import statements in a function's `try: ... except ImportError`
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, ast.Try) and any(
                            isinstance(handler.type, ast.Name) and handler.type.id == "ImportError"
                            for handler in node.handlers):
                        guarded.update(child for stmt in node.body for child in ast.walk(stmt))
        optional = _imported_roots(guarded)
        roots = _imported_roots(node for node in ast.walk(tree) if node not in guarded)
        assert roots <= {"torch", "transformers", "dataclasses", "typing", "__future__", *own_modules}, (name, roots)
        assert optional <= {"soxr"}, (name, optional)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_a_model_object_in_a_pipeline_takes_settings_through_its_pipeline_class(tmp_path, backbone):
    """`pipeline(model=<loaded model>)`: transformers reads `custom_pipelines` only from a folder or Hub id, so a
    model object gets transformers' own ASR pipeline, which never passes a setting to a CTC model and runs the
    config's setting (what README says); with `pipeline_class=model.asr_pipeline_class` a setting applies per call
    and the result carries `exit_layer`, for either backbone."""
    import numpy as np
    from transformers import AutomaticSpeechRecognitionPipeline, pipeline

    torch.manual_seed(0)
    model = sharpen_branches(backbone_class(backbone, 1)(tiny_config(backbone, early_exit=False))).eval()
    processor = build_processor()
    components = {"tokenizer": processor.tokenizer, "feature_extractor": processor.feature_extractor}
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    own = pipeline("automatic-speech-recognition", model=model, pipeline_class=model.asr_pipeline_class,
                   **components)
    full, first_exit = own(audio), own(audio, exit_threshold=0.0)
    assert full["exit_layer"] == model.config.num_hidden_layers and first_exit["exit_layer"] == 1
    assert full["text"] != first_exit["text"]
    plain = pipeline("automatic-speech-recognition", model=model, **components)
    assert type(plain) is AutomaticSpeechRecognitionPipeline
    assert plain(audio) == {"text": full["text"]}
    model.config.exit_threshold = 0.0  # the config's setting is what transformers' own pipeline runs
    model.config.early_exit = True
    assert plain(audio) == {"text": first_exit["text"]}


def test_pipeline_passes_early_exit_settings_on_and_refuses_others(tmp_path):
    """`pipeline("automatic-speech-recognition", model=<folder>, trust_remote_code=True)`: the settings of `generate`,
    at the top level or in `generate_kwargs`, at the call or when building, apply to the call; naming one turns
    exits on where the config has them off (as the shipped model's does); anything else is refused."""
    import numpy as np
    from transformers import pipeline

    torch.manual_seed(0)
    model = sharpen_branches(HubertEEForCTC(tiny_config(early_exit=False))).eval()
    folder = save_hub_folder(model, build_processor(), tmp_path / "hub")
    asr = pipeline("automatic-speech-recognition", model=str(folder), trust_remote_code=True)
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    input_values = asr.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_values

    def expected(**settings):
        return asr.tokenizer.decode(asr.model.generate(input_values, **settings).sequences[0])

    full, first_exit = expected(), expected(exit_threshold=0.0)
    assert full != first_exit
    assert asr(audio)["text"] == full
    assert asr(audio, exit_threshold=0.0)["text"] == first_exit
    assert asr(audio, generate_kwargs={"exit_threshold": 0.0})["text"] == first_exit
    assert asr(audio, generate_kwargs={"exit_criterion": "patience", "exit_patience": 1})["text"] == first_exit
    assert asr(audio, exit_threshold=0.0, early_exit=False)["text"] == full
    assert asr(audio, early_exit=True)["text"] == expected(early_exit=True)
    long = np.tile(audio, 3)  # chunked: windows with their context (stride) pass the settings on too
    assert isinstance(asr(long, chunk_length_s=1.0, stride_length_s=0.2, exit_threshold=0.0)["text"], str)
    built = pipeline("automatic-speech-recognition", model=str(folder), trust_remote_code=True, exit_threshold=0.0)
    assert built(audio)["text"] == first_exit
    configured = pipeline("automatic-speech-recognition", model=str(folder), trust_remote_code=True,
                          model_kwargs={"exit_threshold": 0.0})  # stored in the loaded config, which turns exits on
    assert configured.model.config.early_exit is True and configured(audio)["text"] == first_exit
    with pytest.raises(ValueError, match=r"does not take \['max_new_tokens'\].*early-exit ones"):
        asr(audio, max_new_tokens=5)
    with pytest.raises(ValueError, match=r"does not take \['num_beams'\]"):
        asr(audio, generate_kwargs={"num_beams": 4})
    with pytest.raises(ValueError, match="give each setting once"):
        asr(audio, exit_threshold=0.5, generate_kwargs={"exit_threshold": 0.6})
    with pytest.raises(ValueError, match="exit_criterion"):
        asr(audio, exit_criterion="vibes")
    # a model object gets transformers' own pipeline unless the class is named; the model carries it
    loaded = AutoModelForCTC.from_pretrained(folder, trust_remote_code=True).eval()
    own = pipeline("automatic-speech-recognition", model=loaded, tokenizer=asr.tokenizer,
                   feature_extractor=asr.feature_extractor, pipeline_class=loaded.asr_pipeline_class)
    assert own(audio, exit_threshold=0.0)["text"] == first_exit
