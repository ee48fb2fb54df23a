"""EarlyExitAutomaticSpeechRecognitionPipeline, as `pipeline("automatic-speech-recognition")` builds it from a saved
HuBERT-EE or Wav2Vec2-EE folder: what it does with each kind of bad or unusual audio (rate, channels, length, NaN,
dtype, files), the exit layer it reports, and batches that give what single calls give."""

from __future__ import annotations

import shutil
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from transformers import pipeline as hf_pipeline

from hubert_ee.data import to_mono_float32
from modeling_early_exit import EarlyExitAutomaticSpeechRecognitionPipeline as Pipeline
from tests.conftest import BACKBONES, noise

RATE = 16000
RECEPTIVE_FIELD = 65  # samples the tiny conv front end needs for one frame (4 ms at 16 kHz)


@pytest.fixture(scope="module", params=BACKBONES)
def asr(request, tmp_path_factory):
    """The pipeline of a tiny saved model of each backbone, as a user builds it from the folder."""
    from hubert_ee.export import save_hub_folder
    from hubert_ee.text import build_processor
    from tests.conftest import tiny_model

    folder = save_hub_folder(tiny_model(request.param), build_processor(), tmp_path_factory.mktemp("hub") / "hub")
    return hf_pipeline("automatic-speech-recognition", model=str(folder), trust_remote_code=True)


def test_pipeline_resamples_audio_at_another_rate_with_soxr(asr):
    """`{"raw": x, "sampling_rate": rate}` (or a `datasets` row's `{"array", "sampling_rate", "path"}`) at 44.1,
    22.05 or 8 kHz is resampled by the pipeline itself with soxr ("HQ"), as `hubert-ee transcribe` resamples
    (`to_mono_float32`), not by transformers' step, which needs torchaudio."""
    speech_like = noise(1.0, rate=16000, seed=4)
    for rate in (44100, 22050, 8000):
        audio = soxr.resample(speech_like, RATE, rate, quality="VHQ").astype(np.float32)
        np.testing.assert_array_equal(Pipeline.resample(audio, rate, RATE).numpy(), to_mono_float32(audio, rate))
        expected = asr(to_mono_float32(audio, rate))
        assert asr({"raw": audio, "sampling_rate": rate}) == expected, rate
        assert asr({"array": audio, "sampling_rate": rate, "path": "x.wav"}) == expected, rate  # datasets' row
        assert asr({"raw": audio.astype(np.float64), "sampling_rate": rate}) == expected, rate
        stereo = np.stack([audio, audio])  # (channels, samples): averaged, then resampled
        assert asr({"raw": stereo, "sampling_rate": rate}) == expected, rate
        assert isinstance(asr({"raw": audio, "sampling_rate": rate}, chunk_length_s=0.4)["text"], str), rate
    with pytest.raises(ValueError, match="transpose"):  # (samples, channels), as soundfile.read gives
        asr({"raw": np.stack([audio, audio], axis=1), "sampling_rate": 8000})
    with pytest.raises(ValueError, match="positive integers"):
        asr({"raw": audio, "sampling_rate": 0})


def test_resampling_without_soxr_says_how_to_get_it(monkeypatch):
    """The model file imports soxr only to resample (it travels to the Hub needing only torch and transformers)."""
    monkeypatch.setitem(sys.modules, "soxr", None)  # what `import soxr` meets where it is not installed
    with pytest.raises(ImportError, match=r"Resampling 44100 Hz audio to 16000 Hz needs the soxr package: `pip "
                                          r"install soxr`"):
        Pipeline.resample(noise(0.1, rate=44100), 44100, 16000)
    assert Pipeline.resample(noise(0.1), 16000, 16000).dtype == torch.float32  # nothing to resample: no soxr


def test_pipeline_sampling_rate_argument_points_to_the_dict_form(asr):
    with pytest.raises(ValueError, match=r"asr\(audio, sampling_rate=8000\): give the rate with the audio instead, "
                                         r"as asr\(\{\"raw\": audio, \"sampling_rate\": 8000\}\)"):
        asr(noise(1.0, rate=8000), sampling_rate=8000)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("front_end_norm", ["layer", "group"])
def test_a_batch_gives_what_one_call_per_input_gives(tmp_path, front_end_norm, backbone):
    """`asr(clips, batch_size=3)` pads the clips of a batch to the longest: the padding frames are blank, and a
    front end that normalises over time (group norm) sees each clip alone, so every transcript and exit layer (and
    with chunks, every window's) is the single call's. Early exit on, as the issue's shipped model ran it."""
    from hubert_ee.export import save_hub_folder
    from hubert_ee.text import build_processor
    from tests.conftest import tiny_model

    model = tiny_model(backbone, feat_extract_norm=front_end_norm)
    folder = save_hub_folder(model, build_processor(), tmp_path / "hub")
    asr = hf_pipeline("automatic-speech-recognition", model=str(folder), trust_remote_code=True)
    clips = [noise(seconds, seed=seed) for seed, seconds in enumerate((1.3, 0.4, 2.2, 0.9, 1.7))]
    for call in ({}, {"chunk_length_s": 0.6}):
        single = [asr(clip, **call) for clip in clips]
        assert any(out["text"] for out in single), single  # something to compare: the branches say something
        for batch_size in (2, 3, 5):
            assert asr(clips, batch_size=batch_size, **call) == single, (call, batch_size)


def test_each_result_names_the_layer_it_left_at(asr):
    """`exit_layer`: the encoder layer of the exit that answered (the model's `generate` says the same), the last
    layer at full depth; audio cut into windows reports the deepest window's, with every window's listed."""
    model = asr.model
    layers = {*model.config.exit_layers, model.config.num_hidden_layers}
    for seed in range(4):
        audio = noise(1.0, seed=seed)
        input_values = asr.feature_extractor(audio, sampling_rate=RATE, return_tensors="pt").input_values
        for settings in ({}, {"exit_threshold": 0.0}, {"early_exit": False}):
            result = asr(audio, **settings)
            assert set(result) == {"text", "exit_layer"}, result
            assert result["exit_layer"] == int(model.generate(input_values, **settings).exit_layer[0]), settings
            assert result["exit_layer"] in layers
    assert asr(audio, early_exit=False)["exit_layer"] == model.config.num_hidden_layers
    assert asr(audio, exit_threshold=0.0)["exit_layer"] == model.config.exit_layers[0]
    chunked = asr(noise(3.0, seed=9), chunk_length_s=1.0)
    assert len(chunked["chunk_exit_layers"]) > 1 and chunked["exit_layer"] == max(chunked["chunk_exit_layers"])
    assert set(chunked["chunk_exit_layers"]) <= layers


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_pipeline_takes_float32_and_float64_audio(tmp_path, dtype):
    """`pipeline(..., dtype=torch.bfloat16)` (the model in half precision): the feature extractor's float32, from
    float64 or float32 audio, runs in the model's dtype."""
    from hubert_ee.export import save_hub_folder
    from hubert_ee.text import build_processor
    from tests.conftest import tiny_model

    folder = save_hub_folder(tiny_model(), build_processor(), tmp_path / "hub")
    asr = hf_pipeline("automatic-speech-recognition", model=str(folder), trust_remote_code=True, dtype=dtype)
    assert asr.model.dtype == dtype
    audio = noise(1.0, seed=1)
    result = asr(audio)
    assert isinstance(result["text"], str) and result["exit_layer"] >= 1
    assert asr(audio.astype(np.float64)) == result
    assert asr([audio, noise(0.5)], batch_size=2)[0] == result


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
        audio = noise(1.0)
        audio[100] = bad
        with warnings.catch_warnings(), pytest.raises(ValueError, match="NaN or infinite"):
            warnings.simplefilter("ignore", RuntimeWarning)  # inf - inf in the normaliser, before the error
            asr(audio)


def test_pipeline_takes_samples_of_every_numeric_dtype(asr):
    """float64 (numpy's and soundfile's default), float16 and integer PCM (scaled to [-1, 1], as
    `hubert-ee transcribe` reads it) give the float32 audio's result; bool or complex samples are refused by name."""
    audio = noise(1.0, seed=2)
    pcm = np.round(audio * 32767).astype(np.int16)
    as_float = pcm.astype(np.float32) / 32768
    expected = asr(as_float)
    assert asr(pcm) == expected
    assert asr({"raw": pcm, "sampling_rate": RATE}) == expected
    assert asr(pcm.astype(np.int32) * 65536) == expected
    assert asr(as_float.astype(np.float64)) == expected
    assert isinstance(asr(audio.astype(np.float16))["text"], str)
    assert asr((as_float * 128 + 128).round().clip(0, 255).astype(np.uint8))["exit_layer"] >= 1
    for bad in (audio > 0, audio.astype(np.complex64)):
        with pytest.raises(TypeError, match=f"Audio samples of dtype torch.{bad.dtype}: give float or integer PCM"):
            asr(bad)


def test_pipeline_long_audio_with_chunks(asr):
    text = asr(noise(25.0, seed=3), chunk_length_s=8)["text"]
    assert isinstance(text, str) and text


def test_pipeline_file_path_needs_ffmpeg(asr, tmp_path):
    sf.write(tmp_path / "a.wav", noise(0.5), RATE)
    if shutil.which("ffmpeg"):
        assert isinstance(asr(str(tmp_path / "a.wav"))["text"], str)
    else:
        with pytest.raises(ValueError, match="ffmpeg was not found"):
            asr(str(tmp_path / "a.wav"))
