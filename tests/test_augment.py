"""hubert_ee.augment, on-the-fly augmentation: each effect does what it says, draws are reproducible, and off
means off."""

import numpy as np
import pytest

from hubert_ee.augment import (AugmentationConfig, Augmenter, change_speed, reverberate, room_impulse_response,
                               telephone_band)

RATE = 16000


def tone(frequency: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def band_energy(audio: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    frequencies = np.fft.rfftfreq(len(audio), 1 / RATE)
    return float(spectrum[(frequencies >= low) & (frequencies < high)].sum())


def test_speed_changes_length_by_the_factor():
    audio = tone(440)
    assert len(change_speed(audio, 1.1)) == pytest.approx(len(audio) / 1.1, abs=2)
    assert len(change_speed(audio, 0.9)) == pytest.approx(len(audio) / 0.9, abs=2)
    assert change_speed(audio, 1.0) is audio


def test_telephone_band_removes_what_is_above_4_khz_and_keeps_the_length():
    audio = tone(300) + tone(6000)
    narrow = telephone_band(audio)
    assert len(narrow) == len(audio)
    assert band_energy(narrow, 5000, 8000) < 1e-3 * band_energy(audio, 5000, 8000)
    assert band_energy(narrow, 200, 400) == pytest.approx(band_energy(audio, 200, 400), rel=0.05)


def test_reverberation_keeps_length_and_loudness_and_adds_a_tail():
    audio = np.zeros(RATE, dtype=np.float32)
    audio[:800] = tone(500, 0.05)
    response = room_impulse_response(np.random.default_rng(0), rt60=0.5)
    wet = reverberate(audio, response, wet=0.5)
    assert len(wet) == len(audio)
    assert np.sqrt(np.mean(wet**2)) == pytest.approx(np.sqrt(np.mean(audio**2)), rel=1e-3)
    assert np.abs(wet[4000:8000]).max() > 1e-3  # energy after the burst has ended: the room's tail


def test_same_generator_state_gives_the_same_audio_and_description():
    audio = tone(220, 2.0)
    augmenter = Augmenter(AugmentationConfig(speed_prob=1, volume_prob=1, reverb_prob=1, telephone_prob=1,
                                             noise_prob=1))
    first, done = augmenter(audio, np.random.default_rng([3, 4]))
    second, again = augmenter(audio, np.random.default_rng([3, 4]))
    assert np.array_equal(first, second) and done == again
    assert all(name in done for name in ("speed=", "volume=", "reverb=", "telephone", "noise="))
    assert np.abs(first).max() <= 1.0


def test_no_augmentation_returns_the_clip_unchanged():
    audio = tone(220)
    out, done = Augmenter(AugmentationConfig.none())(audio, np.random.default_rng(0))
    assert done == "none" and np.array_equal(out, audio)


@pytest.mark.parametrize("bad", [dict(noise_prob=1.5), dict(speed_range=(1.2, 0.9)), dict(speed_range=(0.0, 1.0))])
def test_invalid_settings_are_refused_with_the_field_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        AugmentationConfig(**bad)
