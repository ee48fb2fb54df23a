"""Issue 5, "every bad input gets a clear error and loses nothing": what a user sees for each bad input.

(a) the Hugging Face ASR pipeline on a saved HuBERT-EE folder; (b) the model on silence and mixed lengths;
(c) `hubert-ee transcribe` on a folder of broken files; (d) broken checkpoints, tokenizers and config.json files;
(e) training: resume equals an uninterrupted run, and impossible CTC alignments.
The README table "What happens when..." is built from what these tests observe.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCTC, AutoProcessor, Trainer, TrainerCallback, TrainingArguments
from transformers import pipeline as hf_pipeline
from transformers.utils import is_torchaudio_available
from transformers.utils import logging as hf_logging

from hubert_ee.cli import main
from hubert_ee.data import to_mono_float32
from hubert_ee.inference import featurize
from hubert_ee.export import check_vocab_matches, save_hub_folder
from hubert_ee.text import build_processor
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import sharpen_branches, tiny_config

RATE = 16000
RECEPTIVE_FIELD = 65  # samples the tiny conv front end needs for one frame (4 ms at 16 kHz)


def _noise(seconds, rate=RATE, seed=0, scale=0.3):
    return (scale * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def _tiny_model(**overrides):
    torch.manual_seed(0)
    return sharpen_branches(HubertEEForCTC(tiny_config(**{"exit_threshold": 0.5, **overrides}))).eval()


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    return save_hub_folder(_tiny_model(), build_processor(), tmp_path_factory.mktemp("reliability") / "hub")


@pytest.fixture
def hf_verbose(caplog):
    """transformers' own log lines (e.g. its load report) in `caplog`."""
    hf_logging.enable_propagation()
    with caplog.at_level(logging.WARNING):
        yield caplog
    hf_logging.disable_propagation()


# ---------------------------------------------------------------------------------------------------------------
# (a) pipeline("automatic-speech-recognition") on a saved HuBERT-EE folder
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asr(hub_folder):
    return hf_pipeline("automatic-speech-recognition", model=str(hub_folder), trust_remote_code=True)


def test_pipeline_wrong_sampling_rate(asr):
    audio_8k = _noise(1.0, rate=8000)
    if is_torchaudio_available():  # the pipeline resamples itself
        assert isinstance(asr({"raw": audio_8k, "sampling_rate": 8000})["text"], str)
    else:  # what users of this project's environment see: a clear ImportError, nothing transcribed wrongly
        with pytest.raises(ImportError, match="torchaudio is required to resample"):
            asr({"raw": audio_8k, "sampling_rate": 8000})
    # the workaround that needs no torchaudio: resample with soxr (hubert_ee.data) before the pipeline
    resampled = to_mono_float32(audio_8k, 8000, RATE)
    assert resampled.shape == (RATE,)
    assert isinstance(asr(resampled)["text"], str)


def test_pipeline_stereo(asr):
    rng = np.random.default_rng(1)
    stereo = (0.3 * rng.standard_normal((2, RATE))).astype(np.float32)  # (channels, samples): averaged
    assert asr(stereo)["text"] == asr(stereo.mean(axis=0))["text"]
    with pytest.raises(ValueError, match="transpose it first"):  # (samples, channels), as soundfile.read gives
        asr(np.ascontiguousarray(stereo.T))


def test_pipeline_empty_silent_nan(asr):
    with warnings.catch_warnings():  # the feature extractor's numpy "mean of empty slice" warnings come first
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match=r"Audio too short: utterance\(s\) \[0\] have \[0\] samples"):
            asr(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match=r"Audio too short.*needs at least 65 samples"):
        asr(np.zeros(RECEPTIVE_FIELD - 1, np.float32) + 0.1)
    assert isinstance(asr(np.zeros(RATE, np.float32))["text"], str)  # silence: a (usually empty) transcript
    for bad in (np.nan, np.inf):
        audio = _noise(1.0)
        audio[100] = bad
        with warnings.catch_warnings(), pytest.raises(ValueError, match="NaN or infinite"):
            warnings.simplefilter("ignore", RuntimeWarning)  # inf - inf in the normaliser, before the error
            asr(audio)


def test_pipeline_int16_pcm_equals_float(asr):
    audio = _noise(1.0, seed=2)
    pcm = np.round(audio * 32767).astype(np.int16)
    assert asr(pcm)["text"] == asr(pcm.astype(np.float32) / 32768)["text"]  # the normaliser removes the scale


def test_pipeline_long_audio_with_chunks(asr):
    text = asr(_noise(25.0, seed=3), chunk_length_s=8)["text"]
    assert isinstance(text, str) and text


def test_pipeline_file_path_needs_ffmpeg(asr, tmp_path):
    sf.write(tmp_path / "a.wav", _noise(0.5), RATE)
    if shutil.which("ffmpeg"):
        assert isinstance(asr(str(tmp_path / "a.wav"))["text"], str)
    else:
        with pytest.raises(ValueError, match="ffmpeg was not found"):
            asr(str(tmp_path / "a.wav"))


# ---------------------------------------------------------------------------------------------------------------
# (b) the model on silence (zero-variance audio) and mixed lengths
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("feat_extract_norm", ["layer", "group"])
def test_silence_never_gives_nan(stable_layer_norm, feat_extract_norm):
    processor = build_processor()
    audios = [np.zeros(4000, np.float32), _noise(2600 / RATE, seed=4), np.zeros(1000, np.float32),
              np.full(1500, 0.25, np.float32)]  # a DC offset is zero-variance too
    input_values, attention_mask = featurize(processor, audios, torch.device("cpu"))
    assert torch.isfinite(input_values).all()
    assert input_values[0].abs().max() == 0 and input_values[3, :1500].abs().max() == 0
    labels = torch.tensor([[5, 6], [7, -100], [8, 9], [10, -100]])
    for criterion in ("confidence", "entropy", "patience"):
        model = _tiny_model(do_stable_layer_norm=stable_layer_norm, feat_extract_norm=feat_extract_norm,
                            exit_criterion=criterion)
        generated = model.generate(input_values, attention_mask)
        assert torch.isfinite(generated.logits).all()
        with torch.no_grad():
            full = model(input_values, attention_mask=attention_mask, labels=labels, output_exit_logits=True)
            early = model(input_values, attention_mask=attention_mask, labels=labels)
        assert all(torch.isfinite(logits).all() for logits in (*full.exit_logits, full.logits, early.logits))
        assert torch.isfinite(full.loss) and torch.isfinite(early.loss) and torch.isfinite(full.exit_losses).all()
        model.train()
        loss = model(input_values, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.eval()
        if feat_extract_norm == "group":  # GroupNorm normalises over padding too: batches differ from one-by-one
            continue
        for row, length in enumerate([4000, 2600, 1000, 1500]):  # silent rows exit as they would alone
            alone = model.generate(input_values[row : row + 1, :length])
            assert generated.exit_layer[row] == alone.exit_layer[0]
            assert torch.equal(generated.sequences[row, : alone.sequences.shape[1]], alone.sequences[0])


# ---------------------------------------------------------------------------------------------------------------
# (c) `hubert-ee transcribe` on broken files: the good ones are transcribed, each bad one gets an error naming it
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def broken_inputs(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    sf.write(folder / "good.wav", _noise(1.0, seed=5), RATE, subtype="PCM_16")
    raw = (folder / "good.wav").read_bytes()
    (folder / "header_only.wav").write_bytes(raw[:44])
    (folder / "cut_in_middle.wav").write_bytes(raw[: 44 + RATE])  # half of the declared 1 s of samples
    (folder / "header_cut.wav").write_bytes(raw[:30])
    (folder / "notes_renamed.wav").write_text("these are my notes, not audio\n" * 20)
    (folder / "empty.wav").write_bytes(b"")
    sf.write(folder / "too_short.wav", _noise(30 / RATE, seed=6), RATE)
    nan = _noise(0.5, seed=7)
    nan[10] = np.nan
    sf.write(folder / "nan.wav", nan, RATE, subtype="FLOAT")
    t = np.arange(44100) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.1 * np.sin(2 * np.pi * 330 * t)], axis=1)
    sf.write(folder / "stereo_44k.wav", stereo.astype(np.float32), 44100)  # resampled and downmixed
    (folder / "phone.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(200))  # a format libsndfile lacks
    (folder / "readme.txt").write_text("not audio: the folder scan ignores it")
    (tmp_path / "movie.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    return tmp_path


def test_transcribe_cli_reports_every_bad_file_and_transcribes_the_rest(hub_folder, broken_inputs, capsys,
                                                                       caplog):
    folder, out = broken_inputs / "recordings", broken_inputs / "out.json"
    missing, movie = broken_inputs / "missing.wav", broken_inputs / "movie.mp4"
    with caplog.at_level(logging.WARNING, logger="hubert_ee.data"):
        code = main(["transcribe", "--model", str(hub_folder), str(missing), str(folder), str(movie),
                     "--json", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1  # some failed, some succeeded
    results = {result["path"]: result for result in json.loads(out.read_text())["results"]}
    expected_errors = {
        missing: "file not found",
        folder / "header_only.wav": "truncated WAV file: its header declares 16000 samples (1.00 s) but only 0",
        folder / "header_cut.wav": "not a readable audio file",
        folder / "notes_renamed.wav": "not a readable audio file (Error opening",
        folder / "empty.wav": "the file is empty (0 bytes)",
        folder / "too_short.wav": "audio too short: 30 samples at 16000 Hz, the model needs at least 65 (4 ms)",
        folder / "nan.wav": "the audio contains 1 NaN/Inf sample(s)",
        folder / "phone.m4a": "unsupported audio format .m4a",
        movie: "Format not recognised",
    }
    assert set(results) == {str(path) for path in expected_errors} | {
        str(folder / name) for name in ("good.wav", "cut_in_middle.wav", "stereo_44k.wav")}
    for path, fragment in expected_errors.items():
        result = results[str(path)]
        assert set(result) == {"path", "error"} and fragment in result["error"], result
        assert f"error: {path}: " in captured.err  # stderr names the file too
    for name in ("good.wav", "cut_in_middle.wav", "stereo_44k.wav"):
        result = results[str(folder / name)]
        assert "error" not in result and isinstance(result["text"], str) and 1 <= result["exit_layer"] <= 4
        assert str(folder / name) in captured.out
    assert results[str(folder / "stereo_44k.wav")]["duration_s"] == pytest.approx(1.0, abs=1e-3)
    cut = results[str(folder / "cut_in_middle.wav")]  # transcribed as far as it goes, and flagged
    assert cut["duration_s"] == pytest.approx(0.5, abs=1e-3)
    assert cut["warning"].startswith("truncated WAV file: its header declares 16000 samples (1.00 s) but only 8000")
    assert "warning" not in results[str(folder / "good.wav")]
    assert any("cut_in_middle.wav" in record.getMessage() and "truncated" in record.getMessage()
               for record in caplog.records)
    assert f"{len(expected_errors)} of {len(results)} input(s) failed" in captured.err


def test_transcribe_cli_when_nothing_can_be_read(hub_folder, tmp_path, capsys):
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "a.txt").write_text("x")
    code = main(["transcribe", "--model", str(hub_folder), str(tmp_path / "only_text"), str(tmp_path / "nope.wav")])
    assert code == 2  # none succeeded
    err = capsys.readouterr().err
    assert "no audio files" in err and "nope.wav: file not found" in err


def test_transcribe_cli_bad_model_folder(tmp_path, hub_folder, capsys):
    audio = tmp_path / "a.wav"
    sf.write(audio, _noise(0.5), RATE)
    # a mistyped folder is reported as such at once (not tried as a Hub id, with retries and a network error)
    assert main(["transcribe", "--model", str(tmp_path / "no_such_model"), str(audio)]) == 2
    assert f"error: model folder {tmp_path / 'no_such_model'} does not exist" in capsys.readouterr().err
    no_processor = tmp_path / "no_processor"
    shutil.copytree(hub_folder, no_processor)
    for name in ("vocab.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json"):
        (no_processor / name).unlink(missing_ok=True)
    assert main(["transcribe", "--model", str(no_processor), str(audio)]) == 2
    assert "No processor (tokenizer + feature extractor) could be loaded" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# (d) broken checkpoints, tokenizers and config.json files
# ---------------------------------------------------------------------------------------------------------------


def _saved(tmp_path, name="ckpt", **overrides):
    folder = tmp_path / name
    _tiny_model(**overrides).save_pretrained(folder)
    return folder


def _edit_config(folder, **fields):
    config = json.loads((folder / "config.json").read_text())
    config.update(fields)
    (folder / "config.json").write_text(json.dumps(config))


def test_safetensors_missing_a_branch_key_fails_naming_it(tmp_path):
    folder = _saved(tmp_path, exit_branch="linear")
    weights = load_file(folder / "model.safetensors")
    del weights["exit_branches.2.head.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    for load in (lambda: HubertEEForCTC.from_pretrained(folder),
                 lambda: AutoModelForCTC.from_pretrained(folder, trust_remote_code=True)):
        with pytest.raises(ValueError, match=r"lacks exit-branch weights .*\['exit_branches\.2\.head\.weight'\]"):
            load()


def test_branch_architecture_changed_to_transformer_fails_naming_keys(tmp_path):
    folder = _saved(tmp_path, exit_branch="linear")
    _edit_config(folder, exit_branch="transformer")
    with pytest.raises(ValueError, match=r"exit_branches\.1\.layer\.attention\.k_proj\.bias"):
        HubertEEForCTC.from_pretrained(folder)


def test_branch_architecture_changed_to_linear_should_fail(tmp_path, hf_verbose):
    """Transformer-branch weights under a config saying "linear": the heads load, the branch layers are dropped and
    the exits silently compute something else. transformers only logs UNEXPECTED keys."""
    folder = _saved(tmp_path, exit_branch="transformer")
    _edit_config(folder, exit_branch="linear")
    try:
        HubertEEForCTC.from_pretrained(folder)
    except ValueError as error:  # with the proposed modeling_hubert_ee.from_pretrained check
        assert "exit_branches.1.layer." in str(error) and "exit_branch" in str(error)
        return
    assert any("UNEXPECTED" in record.getMessage() for record in hf_verbose.records)
    pytest.xfail("modeling_hubert_ee.from_pretrained does not yet reject unexpected exit-branch weights")


def _cut_short(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: keep if keep >= 0 else len(data) + keep])


@pytest.mark.parametrize("keep", [0, 5, 100, -1], ids=["empty", "in-length", "in-header", "last-byte"])
def test_truncated_weights_name_the_file_and_say_it_is_incomplete(tmp_path, hub_folder, keep, capsys):
    """An interrupted download or copy: safetensors' own error ("incomplete metadata") names no file."""
    folder = tmp_path / "cut"
    shutil.copytree(hub_folder, folder)
    _cut_short(folder / "model.safetensors", keep)
    message = rf"{folder / 'model.safetensors'} is incomplete or damaged \(.*\); was its download or copy interrupted"
    for load in (lambda: HubertEEForCTC.from_pretrained(folder),
                 lambda: AutoModelForCTC.from_pretrained(folder, trust_remote_code=True)):
        with pytest.raises(OSError, match=message):
            load()
    audio = tmp_path / "a.wav"
    sf.write(audio, _noise(0.5), RATE)
    for command in (["transcribe", "--model", str(folder), str(audio)],
                    ["evaluate", "--model", str(folder), "--dataset", str(tmp_path), "--json", str(tmp_path / "e.json")],
                    ["train", "--model", str(folder), "--dataset", str(tmp_path), "--output", str(tmp_path / "run")]):
        assert main(command) == 2, command
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and error.startswith("hubert-ee ") and ": error: " in error and "is incomplete" in error, (command, error)


def test_a_truncated_shard_is_named(tmp_path):
    folder = tmp_path / "sharded"
    _tiny_model().save_pretrained(folder, max_shard_size="20KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    _cut_short(shards[1], shards[1].stat().st_size // 2)
    with pytest.raises(OSError, match=rf"^{shards[1]} is incomplete or damaged"):
        HubertEEForCTC.from_pretrained(folder)


@pytest.mark.parametrize("field,value", [("hidden_size", 64), ("vocab_size", 40)])
def test_shape_mismatch_fails_naming_keys(tmp_path, hf_verbose, field, value):
    folder = _saved(tmp_path, exit_branch="linear")
    _edit_config(folder, **{field: value})
    with pytest.raises((RuntimeError, ValueError)) as raised:
        HubertEEForCTC.from_pretrained(folder)
    if isinstance(raised.value, ValueError):  # with the proposed modeling_hubert_ee.from_pretrained check
        assert "exit_branches.1.head.weight (checkpoint (32, 32), model (" in str(raised.value)
        return
    # today: transformers' RuntimeError says "look at the above report"; the report (a log line) names the keys
    assert "ignore_mismatched_sizes" in str(raised.value)
    report = "\n".join(record.getMessage() for record in hf_verbose.records)
    assert "lm_head.weight" in report and "MISMATCH" in report
    pytest.xfail("the exception itself does not name the mismatched keys (proposed change to from_pretrained)")


def test_tokenizer_vocab_mismatch_is_caught(tmp_path, hub_folder, capsys):
    folder = tmp_path / "bad_vocab"
    shutil.copytree(hub_folder, folder)
    vocab = json.loads((folder / "vocab.json").read_text())
    vocab["Ä"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    processor = AutoProcessor.from_pretrained(folder)
    model = HubertEEForCTC.from_pretrained(folder)
    with pytest.raises(ValueError, match="Tokenizer has 33 tokens but the model's CTC head has vocab_size=32"):
        check_vocab_matches(model, processor)
    audio = tmp_path / "a.wav"
    sf.write(audio, _noise(0.5), RATE)
    assert main(["transcribe", "--model", str(folder), str(audio)]) == 2
    assert "Tokenizer has 33 tokens but the model's CTC head has vocab_size=32" in capsys.readouterr().err


INVALID_FIELDS = [
    ("exit_layers", [0, 2]), ("exit_layers", [4]), ("exit_layers", [3, 1]), ("exit_layers", "1,2"),
    ("exit_branch", "mlp"), ("exit_criterion", "vibes"), ("exit_training_strategy", "frozen"),
    ("exit_threshold", -0.5), ("exit_threshold", "high"), ("exit_patience", 0), ("exit_patience", 1.5),
    ("early_exit", "yes"), ("exit_loss_weight", -1), ("distill_weight", 1.5), ("distill_temperature", 0),
    ("ctc_loss_reduction", "avg"),
]  # fmt: skip


@pytest.fixture(scope="module")
def valid_folder(tmp_path_factory):
    return _saved(tmp_path_factory.mktemp("config"), exit_branch="linear")


@pytest.mark.parametrize("field,value", INVALID_FIELDS, ids=[f"{f}={v!r}" for f, v in INVALID_FIELDS])
def test_hand_edited_config_json_names_the_field(tmp_path, valid_folder, monkeypatch, field, value):
    folder = tmp_path / "edited"
    shutil.copytree(valid_folder, folder)
    _edit_config(folder, **{field: value})
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


# ---------------------------------------------------------------------------------------------------------------
# (e) training: resume equals the uninterrupted run; impossible CTC alignments
# ---------------------------------------------------------------------------------------------------------------

TEXTS = ["HELLO WORLD", "EARLY EXIT", "SPEECH", "FAST MODEL", "A TEST", "HUBERT", "GOOD DAY", "YES NO"]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    train = Dataset.from_dict({
        "audio": [{"array": (0.1 * rng.standard_normal(int(RATE * (0.4 + 0.05 * len(t))))).astype(np.float32),
                   "sampling_rate": RATE} for t in TEXTS],
        "text": TEXTS,
    })  # fmt: skip
    folder = tmp_path_factory.mktemp("corpus") / "tiny"
    DatasetDict({"train": train}).save_to_disk(str(folder))
    return folder


def _train_backbone(corpus, output, save_steps, *extra):
    # 8 clips, batch 4: 2 steps per epoch, 6 steps = 3 epochs; dropout, layerdrop and time masking all on (preset)
    code = main(["train-backbone", "--dataset", str(corpus), "--preset", "tiny", "--output", str(output),
                 "--max-steps", "6", "--batch-size", "4", "--eval-split", "none", "--save-steps", str(save_steps),
                 "--warmup-steps", "1", "--learning-rate", "1e-2", "--logging-steps", "1", "--seed", "7",
                 "--no-progress", *extra])
    assert code == 0


def _interrupt_after(run, folder, step):
    """A copy of `run` as if it had died right after checkpoint-`step`: later checkpoints and the model are gone."""
    shutil.copytree(run, folder)
    for path in folder.iterdir():
        if path.is_file():
            path.unlink()
    for checkpoint in (folder / "checkpoints").glob("checkpoint-*"):
        if int(checkpoint.name.split("-")[1]) > step:
            shutil.rmtree(checkpoint)
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [f"checkpoint-{step}"]


def _losses(run):
    state = json.loads((run / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def _max_difference(first, second):
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys()
    return max((a[key] - b[key]).abs().max().item() for key in a)


def test_resume_gives_the_uninterrupted_result(tiny_corpus, tmp_path):
    from hubert_ee.train import CTCTrainer

    mid_epoch_run, epoch_end_run = tmp_path / "save3", tmp_path / "save2"
    _train_backbone(tiny_corpus, mid_epoch_run, 3)  # checkpoints 3 (mid-epoch) and 6
    _train_backbone(tiny_corpus, epoch_end_run, 2)  # checkpoints 4 (end of epoch 2) and 6 (the limit keeps 2)
    assert _max_difference(mid_epoch_run, epoch_end_run) == 0.0  # same seed, same result; saving changes nothing
    assert _max_difference(mid_epoch_run, tmp_path / "save3" / "checkpoints" / "checkpoint-3") > 1e-3

    resumed_at_epoch_end = tmp_path / "resumed4"
    _interrupt_after(epoch_end_run, resumed_at_epoch_end, 4)
    _train_backbone(tiny_corpus, resumed_at_epoch_end, 2, "--resume")
    assert _max_difference(epoch_end_run, resumed_at_epoch_end) <= 1e-6
    assert _losses(resumed_at_epoch_end) == _losses(epoch_end_run)  # steps 5-6 logged again, identically

    resumed_mid_epoch = tmp_path / "resumed3"
    _interrupt_after(mid_epoch_run, resumed_mid_epoch, 3)
    _train_backbone(tiny_corpus, resumed_mid_epoch, 3, "--resume")
    difference = _max_difference(mid_epoch_run, resumed_mid_epoch)
    if difference > 1e-6 and "_get_train_sampler" not in CTCTrainer.__dict__:
        # transformers' LengthGroupedSampler draws each epoch's order from the global RNG when the epoch starts, so
        # the epoch resumed mid-way gets another order (proposed fix: an epoch-seeded sampler in CTCTrainer)
        pytest.xfail(f"mid-epoch resume differs by {difference:.2e} (group_by_length sampler not resumable)")
    assert difference <= 1e-6
    assert _losses(resumed_mid_epoch) == _losses(mid_epoch_run)


class _Logs(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logs.append(dict(logs))


def _ctc_batch(impossible_rows, rows=2, samples=400):
    """Tiny conv front end: 400 samples -> 9 frames. 20 labels cannot be aligned to 9 frames; 3 can."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.full((rows, 20), -100)
    for row in range(rows):
        labels[row] = torch.arange(5, 25) if row in impossible_rows else labels[row].index_fill(0, torch.arange(3), 6)
    return torch.randn(rows, samples, generator=generator), labels


def test_impossible_alignment_gives_zero_loss_for_that_item():
    input_values, labels = _ctc_batch(impossible_rows={1})
    for reduction in ("sum", "mean"):
        model = _tiny_model(ctc_zero_infinity=True, ctc_loss_reduction=reduction, exit_training_strategy="joint")
        with torch.no_grad():
            alone = model(input_values[:1], labels=labels[:1], output_exit_logits=True)
            both = model(input_values, labels=labels, output_exit_logits=True)
            inference = model(input_values, labels=labels)  # early-exit path computes a loss too
        assert torch.isfinite(inference.loss)
        scale = 1.0 if reduction == "sum" else 0.5  # "mean" averages over the batch: the 0 counts
        torch.testing.assert_close(both.loss, alone.loss * scale)
        torch.testing.assert_close(both.exit_losses, alone.exit_losses * scale)
        model.train()
        loss = model(input_values, labels=labels).loss
        loss.backward()
        assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters()
                                            if p.grad is not None)
    # without ctc_zero_infinity (HubertConfig's default) the same batch is infinite: train.py turns it on
    model = _tiny_model(ctc_zero_infinity=False, exit_training_strategy="joint")
    with torch.no_grad():
        assert math.isinf(model(input_values, labels=labels, output_exit_logits=True).loss.item())
    from hubert_ee.train import build_backbone_config

    assert build_backbone_config("tiny", 32).ctc_zero_infinity is True


@pytest.mark.parametrize("zero_infinity", [True, False])
def test_what_the_trainer_logs_for_impossible_batches(tmp_path, zero_infinity):
    input_values, labels = _ctc_batch(impossible_rows={0, 1, 2, 3}, rows=4)
    data = [{"input_values": input_values[i], "labels": labels[i]} for i in range(4)]
    model = _tiny_model(ctc_zero_infinity=zero_infinity, exit_training_strategy="joint")
    before = {key: value.clone() for key, value in model.state_dict().items()}
    logs = _Logs()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2,
                             learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none",
                             disable_tqdm=True, remove_unused_columns=False, use_cpu=True)
    collate = lambda items: {key: torch.stack([item[key] for item in items]) for key in items[0]}  # noqa: E731
    Trainer(model=model, args=args, train_dataset=data, data_collator=collate, callbacks=[logs]).train()
    after = model.state_dict()
    assert [log["loss"] for log in logs.logs] == [0.0, 0.0]  # the Trainer shows a loss of 0 either way
    if zero_infinity:  # every item zeroed: no gradient, nothing changes, nothing breaks
        assert [log["grad_norm"] for log in logs.logs] == [0.0, 0.0]
        assert all(torch.equal(before[key], after[key]) for key in before)
    else:  # inf loss, filtered out of the log (logging_nan_inf_filter), but NaN gradients ruin the weights
        assert all(math.isnan(log["grad_norm"]) for log in logs.logs)
        assert not all(torch.isfinite(value).all() for value in after.values())


def test_saving_over_an_earlier_model_leaves_no_stale_weights(tmp_path):
    """A sharded save over an unsharded one (or the reverse) must load the new weights, not the old file."""
    processor = build_processor()
    folder = tmp_path / "model"
    small = _tiny_model()
    save_hub_folder(small, processor, folder, max_shard_size="100GB")  # one model.safetensors
    torch.manual_seed(1)
    bigger = _tiny_model(num_hidden_layers=3, exit_layers=[1, 2])
    save_hub_folder(bigger, processor, folder, max_shard_size="20KB")  # several shards + index
    assert not (folder / "model.safetensors").exists()
    loaded = HubertEEForCTC.from_pretrained(folder)
    assert loaded.config.num_hidden_layers == 3
    for name, tensor in bigger.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
