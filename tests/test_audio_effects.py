"""hubert_ee.audio_effects: resampling with speed perturbation, silence trimming, additive noise at an SNR."""

import numpy as np

from hubert_ee import audio_effects


def test_trim_resample_and_noise():
    rng = np.random.default_rng(0)
    sig = np.concatenate([np.zeros(16000), 0.5 * np.sin(np.arange(8000) / 3), np.zeros(16000)])
    sig = sig.astype(np.float32)
    trimmed = audio_effects.trim_silence(sig)
    assert 8000 <= len(trimmed) <= 8000 + 2 * 1600 + 320
    y = audio_effects.to_16k(np.ones(22050, np.float32), 22050)
    assert abs(len(y) - 16000) <= 1 and y.dtype == np.float32
    assert abs(len(audio_effects.to_16k(np.ones(16000, np.float32), 16000, speed=1.1)) - 14545) <= 1
    for kind in ("white", "pink"):
        noisy = audio_effects.add_noise(trimmed, rng, 10.0, kind)
        noise = noisy - trimmed
        snr = 10 * np.log10(np.mean(trimmed.astype(np.float64) ** 2) / np.mean(noise ** 2))
        assert abs(snr - 10.0) < 0.5
