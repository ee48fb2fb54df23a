"""Audio effects on float32 waveforms: resampling to 16 kHz (with speed perturbation), silence trimming and
additive noise at a chosen SNR. The corpus builder (`synth`), augmentation (`augment`) and the demo use them.

Audio
    The engine's WAV (22.05 kHz for espeak-ng, 16 kHz for flite and festival's
    diphone voices, 32 kHz for cmu_us_slt_arctic_hts) is read with
    `soundfile`, resampled to 16 kHz mono float32 with **soxr** (HQ), leading
    and trailing silence is trimmed (frames 40 dB under the loudest frame, with
    0.1 s kept on each side) and the peak is kept below 1.
"""

from __future__ import annotations

import math

import numpy as np

from .text import SAMPLING_RATE

__all__ = ["to_16k", "trim_silence", "add_noise"]


def to_16k(x: np.ndarray, sr: int, speed: float = 1.0) -> np.ndarray:
    """Resample to 16 kHz with soxr (HQ); `speed` != 1 speeds the audio up
    (1.1 -> 10 % shorter, pitch up) in the same step."""
    import soxr

    x = np.asarray(x, dtype=np.float32)
    in_rate = float(sr) * float(speed)
    if in_rate == SAMPLING_RATE:
        return x.copy()
    return soxr.resample(x, in_rate, SAMPLING_RATE, quality="HQ").astype(np.float32, copy=False)


def trim_silence(x: np.ndarray, sr: int = SAMPLING_RATE, top_db: float = 40.0,
                 pad: float = 0.1) -> np.ndarray:
    """Cut leading/trailing frames (20 ms, hop 10 ms) quieter than `top_db`
    under the loudest frame, keeping `pad` seconds on each side."""
    frame, hop = int(0.02 * sr), int(0.01 * sr)
    if len(x) <= frame:
        return x
    n = 1 + (len(x) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    rms = np.sqrt(np.mean(np.square(x[idx], dtype=np.float64), axis=1))
    peak = rms.max()
    if peak <= 0:
        return x[:0]
    loud = np.flatnonzero(rms > max(peak * 10 ** (-top_db / 20), 1e-5))
    start = max(0, loud[0] * hop - int(pad * sr))
    end = min(len(x), loud[-1] * hop + frame + int(pad * sr))
    return x[start:end]


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    pink = np.fft.irfft(spec / np.sqrt(f), n)
    return pink / (pink.std() + 1e-12)


def add_noise(x: np.ndarray, rng: np.random.Generator, snr_db: float,
              kind: str = "white") -> np.ndarray:
    """Add white or pink Gaussian noise at `snr_db` (relative to the mean
    power of `x`)."""
    if kind == "white":
        noise = rng.standard_normal(len(x))
    elif kind == "pink":
        noise = _pink(len(x), rng)
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    power = float(np.mean(np.square(x, dtype=np.float64)))
    scale = math.sqrt(power / (10 ** (snr_db / 10)) / (float(np.mean(noise ** 2)) + 1e-12))
    return (x + scale * noise).astype(np.float32)
