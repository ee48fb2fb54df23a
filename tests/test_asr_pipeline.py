"""HubertEEAutomaticSpeechRecognitionPipeline, as `pipeline("automatic-speech-recognition")` builds it from a saved
HuBERT-EE folder: what it does with each kind of bad or unusual audio (rate, channels, length, NaN, int16, files)."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import soundfile as sf
from transformers import pipeline as hf_pipeline
from transformers.utils import is_torchaudio_available

from hubert_ee.data import to_mono_float32
from tests.conftest import noise

RATE = 16000
RECEPTIVE_FIELD = 65  # samples the tiny conv front end needs for one frame (4 ms at 16 kHz)


@pytest.fixture(scope="module")
def asr(hub_folder):
    return hf_pipeline("automatic-speech-recognition", model=str(hub_folder), trust_remote_code=True)


def test_pipeline_wrong_sampling_rate(asr):
    audio_8k = noise(1.0, rate=8000)
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
