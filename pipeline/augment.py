"""On-the-fly audio augmentation for training: every epoch hears a different version of each clip.

Each effect is drawn independently per clip from a `numpy.random.Generator`, so a (seed, epoch, clip) triple always
gives the same audio:

=================  =================================================================================================
effect             what it does
=================  =================================================================================================
speed              resample by a factor (Kaldi-style speed perturbation: tempo and pitch move together)
volume             scale by a gain in dB; it matters where noise is added after it and where the feature extractor
                   does not normalise each utterance (HuBERT's does, so on its own it changes nothing there)
reverberation      convolve with a synthetic room impulse response (exponentially decaying noise, RT60 drawn)
telephone          band-limit to telephone bandwidth: a round trip through 8 kHz
noise              add white or pink noise at an SNR drawn in dB
=================  =================================================================================================

`Augmenter(AugmentationConfig())` is the training default; `AugmentationConfig.none()` turns everything off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from .audio_effects import add_noise
from .text import SAMPLING_RATE

__all__ = ["AugmentationConfig", "Augmenter"]


@dataclass(frozen=True)
class AugmentationConfig:
    """Probabilities and ranges of each effect (a probability of 0 turns the effect off).

    The defaults are mild (about half the clips pass unchanged): a small model that still underfits its corpus
    learns more slowly from heavily distorted audio, while mild effects keep passes over the corpus different.
    """

    speed_prob: float = 0.5
    speed_range: tuple[float, float] = (0.9, 1.1)
    volume_prob: float = 0.3
    volume_db: tuple[float, float] = (-12.0, 6.0)
    reverb_prob: float = 0.1
    rt60_range: tuple[float, float] = (0.15, 0.6)
    reverb_wet_range: tuple[float, float] = (0.2, 0.5)
    telephone_prob: float = 0.05
    noise_prob: float = 0.25
    snr_db: tuple[float, float] = (10.0, 30.0)

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise ValueError(f"augmentation {field.name} must be in [0, 1], got {value}")
            if isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(f"augmentation {field.name} must be a (low, high) pair, got {value}")
        if self.speed_range[0] <= 0:
            raise ValueError(f"augmentation speed_range must be positive, got {self.speed_range}")

    @classmethod
    def none(cls) -> "AugmentationConfig":
        return cls(speed_prob=0.0, volume_prob=0.0, reverb_prob=0.0, telephone_prob=0.0, noise_prob=0.0)


def change_speed(audio: np.ndarray, factor: float, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Play `audio` `factor` times faster (shorter for factor > 1), by resampling with soxr."""
    import soxr

    if factor == 1.0:
        return audio
    return soxr.resample(audio, sampling_rate * factor, sampling_rate, quality="MQ").astype(np.float32, copy=False)


def room_impulse_response(rng: np.random.Generator, rt60: float, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """A synthetic impulse response: a direct path, then noise decaying by 60 dB over `rt60` seconds."""
    length = max(2, int(rt60 * sampling_rate))
    decay = np.exp(-6.9078 * np.arange(length) / length)  # ln(1000): 60 dB in amplitude
    response = rng.standard_normal(length) * decay
    response[0] = 0.0
    response /= np.sqrt(np.sum(response**2)) + 1e-12
    return response.astype(np.float32)


def reverberate(audio: np.ndarray, response: np.ndarray, wet: float) -> np.ndarray:
    """Mix `audio` with its convolution by `response` (same length, same RMS as the input)."""
    size = 1 << int(math.ceil(math.log2(len(audio) + len(response) - 1)))
    tail = np.fft.irfft(np.fft.rfft(audio, size) * np.fft.rfft(response, size), size)[: len(audio)]
    mixed = (1.0 - wet) * audio + wet * tail.astype(np.float32)
    scale = np.sqrt(np.mean(audio**2) / (np.mean(mixed**2) + 1e-12))
    return (mixed * scale).astype(np.float32)


def telephone_band(audio: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Keep what survives a round trip through 8 kHz sampling (the band below 4 kHz)."""
    import soxr

    narrow = soxr.resample(audio, sampling_rate, 8000, quality="MQ")
    wide = soxr.resample(narrow, 8000, sampling_rate, quality="MQ").astype(np.float32, copy=False)
    return wide[: len(audio)] if len(wide) >= len(audio) else np.pad(wide, (0, len(audio) - len(wide)))


class Augmenter:
    """Applies an `AugmentationConfig` to one clip at a time; `__call__` returns the new audio and what was done."""

    def __init__(self, config: AugmentationConfig | None = None, sampling_rate: int = SAMPLING_RATE):
        self.config = config or AugmentationConfig()
        self.sampling_rate = sampling_rate

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        config, done = self.config, []
        audio = np.asarray(audio, dtype=np.float32)
        if rng.random() < config.speed_prob:
            factor = round(float(rng.uniform(*config.speed_range)), 3)
            audio = change_speed(audio, factor, self.sampling_rate)
            done.append(f"speed={factor}")
        if rng.random() < config.volume_prob:
            gain_db = round(float(rng.uniform(*config.volume_db)), 1)
            audio = audio * np.float32(10 ** (gain_db / 20))
            done.append(f"volume={gain_db}dB")
        if rng.random() < config.reverb_prob:
            rt60 = float(rng.uniform(*config.rt60_range))
            wet = float(rng.uniform(*config.reverb_wet_range))
            audio = reverberate(audio, room_impulse_response(rng, rt60, self.sampling_rate), wet)
            done.append(f"reverb={rt60:.2f}s")
        if rng.random() < config.telephone_prob:
            audio = telephone_band(audio, self.sampling_rate)
            done.append("telephone")
        if rng.random() < config.noise_prob and np.any(audio):
            kind = ("white", "pink")[int(rng.integers(2))]
            snr = round(float(rng.uniform(*config.snr_db)), 1)
            audio = add_noise(audio, rng, snr, kind)
            done.append(f"noise={kind},snr={snr}")
        peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
        if peak > 1.0:
            audio = audio / np.float32(peak)
        return audio.astype(np.float32, copy=False), ",".join(done) or "none"
