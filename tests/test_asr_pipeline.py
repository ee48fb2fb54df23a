"""HubertEEAutomaticSpeechRecognitionPipeline, as `pipeline("automatic-speech-recognition")` builds it from a saved
HuBERT-EE folder: what it does with each kind of bad or unusual audio (rate, channels, length, NaN, int16, files),
and batches that give what single calls give."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import soundfile as sf
import soxr
from transformers import pipeline as hf_pipeline

from hubert_ee.data import to_mono_float32
from tests.conftest import noise

RATE = 16000
RECEPTIVE_FIELD = 65  # samples the tiny conv front end needs for one frame (4 ms at 16 kHz)


@pytest.fixture(scope="module")
def asr(hub_folder):
    return hf_pipeline("automatic-speech-recognition", model=str(hub_folder), trust_remote_code=True)


def test_pipeline_resamples_audio_at_another_rate_without_torchaudio(asr):
    """`{"raw": x, "sampling_rate": rate}` (or a `datasets` row's `{"array", "sampling_rate", "path"}`) at 44.1,
    22.05 or 8 kHz is resampled by the pipeline itself (`resample`, checked against soxr below), not by
    transformers' step, which needs torchaudio."""
    from modeling_hubert_ee import HubertEEAutomaticSpeechRecognitionPipeline as Pipeline

    speech_like = noise(1.0, rate=16000, seed=4)
    for rate in (44100, 22050, 8000):
        audio = soxr.resample(speech_like, RATE, rate, quality="VHQ").astype(np.float32)
        expected = asr(Pipeline.resample(audio, rate, RATE).numpy())["text"]
        assert asr({"raw": audio, "sampling_rate": rate})["text"] == expected, rate
        assert asr({"array": audio, "sampling_rate": rate, "path": "x.wav"})["text"] == expected, rate  # datasets' row
        stereo = np.stack([audio, audio])  # (channels, samples): averaged, then resampled
        assert asr({"raw": stereo, "sampling_rate": rate})["text"] == expected, rate
        assert asr({"raw": audio, "sampling_rate": rate}, chunk_length_s=0.4)["text"], rate
    with pytest.raises(ValueError, match="transpose"):  # (samples, channels), as soundfile.read gives
        asr({"raw": np.stack([audio, audio], axis=1), "sampling_rate": 8000})


def test_pipeline_resampling_matches_soxr():
    """The pipeline's resampler (torch only: the model file imports nothing else) against soxr on band-limited
    audio, up and down: the same length, and the same samples to within 0.3 % of full scale."""
    from modeling_hubert_ee import HubertEEAutomaticSpeechRecognitionPipeline as Pipeline

    rng = np.random.default_rng(5)
    for source, target in ((44100, 16000), (48000, 16000), (8000, 16000), (22050, 16000), (16000, 44100)):
        times = np.arange(int(0.5 * source)) / source
        tones = sum(np.sin(2 * np.pi * f * times + rng.uniform(0, 6)) for f in rng.uniform(50, 3500, 8)) / 8
        audio = tones.astype(np.float32)
        ours = Pipeline.resample(audio, source, target).numpy()
        reference = soxr.resample(audio, source, target, quality="VHQ")
        assert len(ours) == -(-len(audio) * target // source) and abs(len(ours) - len(reference)) <= 1
        inside = slice(200, min(len(ours), len(reference)) - 200)  # both filters treat the edges their own way
        assert np.abs(ours[inside] - reference[inside]).max() < 3e-3, (source, target)
    with pytest.raises(ValueError, match="filter bank"):  # coprime rates: a table too large, refused by name
        Pipeline.resample(audio, 44101, 16000)


def test_pipeline_sampling_rate_argument_points_to_the_dict_form(asr):
    with pytest.raises(ValueError, match=r"asr\(audio, sampling_rate=8000\): give the rate with the audio instead, "
                                         r"as asr\(\{\"raw\": audio, \"sampling_rate\": 8000\}\)"):
        asr(noise(1.0, rate=8000), sampling_rate=8000)


@pytest.mark.parametrize("front_end_norm", ["layer", "group"])
def test_a_batch_gives_what_one_call_per_input_gives(tmp_path, front_end_norm):
    """`asr(clips, batch_size=3)` pads the clips of a batch to the longest: the padding frames are blank, and a
    front end that normalises over time (group norm) sees each clip alone, so every transcript (and with chunks,
    every window) is the single call's. Early exit on, as the issue's shipped model ran it."""
    from hubert_ee.export import save_hub_folder
    from hubert_ee.text import build_processor
    from tests.conftest import tiny_model

    folder = save_hub_folder(tiny_model(feat_extract_norm=front_end_norm), build_processor(), tmp_path / "hub")
    asr = hf_pipeline("automatic-speech-recognition", model=str(folder), trust_remote_code=True)
    clips = [noise(seconds, seed=seed) for seed, seconds in enumerate((1.3, 0.4, 2.2, 0.9, 1.7))]
    for call in ({}, {"chunk_length_s": 0.6}):
        single = [asr(clip, **call)["text"] for clip in clips]
        assert any(single), single  # something to compare: the tiny model's branches say something
        for batch_size in (2, 3, 5):
            assert [out["text"] for out in asr(clips, batch_size=batch_size, **call)] == single, (call, batch_size)


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


def test_pipeline_int16_pcm_equals_float(asr):
    audio = noise(1.0, seed=2)
    pcm = np.round(audio * 32767).astype(np.int16)
    assert asr(pcm)["text"] == asr(pcm.astype(np.float32) / 32768)["text"]  # the normaliser removes the scale


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
