"""The synchronised timer and the one interleaved timing of several candidates (`hubert_ee.timing`)."""

import numpy as np
import pytest
import torch

from hubert_ee import timing


def test_interleaved_times_rotate_the_order_and_sum_over_inputs():
    """The one interleaved timer: in repetition r on input i the cases run rotated by r + i, each recorded
    repetition sums its inputs, warm-up repetitions are dropped, and the first repetition's outputs are handed on."""
    calls, first = [], []
    cases = {name: (lambda value, name=name: calls.append((name, value)) or f"{name}{value}") for name in "abc"}
    times = timing.interleaved_times(cases, torch.device("cpu"), repeats=2, warmup=1, inputs=[(1,), (2,)],
                                     on_first_output=lambda name, index, output: first.append((name, index, output)))
    assert {name: len(values) for name, values in times.items()} == {"a": 2, "b": 2, "c": 2}
    assert all(value > 0 for values in times.values() for value in values)
    assert calls[:9] == [("a", 1), ("b", 1), ("c", 1), ("b", 2), ("c", 2), ("a", 2), ("b", 1), ("c", 1), ("a", 1)]
    assert len(calls) == 3 * 2 * 3
    assert first == [("a", 0, "a1"), ("b", 0, "b1"), ("c", 0, "c1"), ("b", 1, "b2"), ("c", 1, "c2"), ("a", 1, "a2")]
    assert list(timing.interleaved_times({"x": lambda: None}, torch.device("cpu"), repeats=3)) == ["x"]


def test_interleaved_times_per_input_keeps_each_input_and_sums_to_interleaved_times():
    cases = {"a": lambda value: value, "b": lambda value: value}
    per_input = timing.interleaved_times_per_input(cases, torch.device("cpu"), repeats=3, inputs=[(1,), (2,)])
    assert {name: [len(repetition) for repetition in reps] for name, reps in per_input.items()} == {
        "a": [2, 2, 2], "b": [2, 2, 2]}
    assert all(seconds > 0 for reps in per_input.values() for repetition in reps for seconds in repetition)


def test_paired_speedup_is_the_ratio_of_sums_with_an_interval_around_it():
    baseline, candidate = [2.0, 2.2, 1.9, 2.1, 2.0], [1.0, 1.05, 1.0, 1.0, 1.02]
    measured = timing.paired_speedup(baseline, candidate)
    assert measured["speedup"] == pytest.approx(sum(baseline) / sum(candidate))
    low, high = measured["speedup_interval"]
    assert low <= measured["speedup"] <= high and high - low < 0.2 and measured["pairs"] == 5
    assert timing.paired_speedup(baseline, candidate) == measured  # seeded: the same timings give the same interval
    with pytest.raises(ValueError, match="same non-zero number of pairs"):
        timing.paired_speedup([1.0], [1.0, 2.0])


def test_the_cost_model_takes_the_mix_of_batches_out_of_the_interval():
    """Batches that differ in what they skip differ in their ratio without any noise: with their expected costs as
    a control variate the interval is (near) a point, without them it is wide."""
    expected = [(10.0, 2.0), (10.0, 8.0), (4.0, 1.0), (6.0, 6.0)]  # ratios 5, 1.25, 4, 1
    baseline = [full * 1.01 for full, _ in expected]  # the machine: 1 % slower on both, efficiency 1
    candidate = [early * 1.01 for _, early in expected]
    plain = timing.paired_speedup(baseline, candidate)
    adjusted = timing.paired_speedup(baseline, candidate, *zip(*expected))
    assert plain["speedup"] == adjusted["speedup"] == pytest.approx(30 / 17)
    assert plain["speedup_interval"][1] - plain["speedup_interval"][0] > 0.5
    assert adjusted["speedup_interval"] == pytest.approx([30 / 17, 30 / 17])


def test_speedup_verdict_marks_what_the_noise_could_explain():
    def verdict(speedup, low, high, pairs=7, ideal=3.0):
        return timing.speedup_verdict({"speedup": speedup, "speedup_interval": [low, high], "pairs": pairs}, ideal)

    assert verdict(1.42, 1.40, 1.45) == {"speedup_reliable": True, "speedup_note": ""}
    assert "wider than 10 %" in verdict(1.42, 1.0, 1.9)["speedup_note"]
    assert "fewer than 3" in verdict(1.42, 1.42, 1.42, pairs=2)["speedup_note"]
    no_skip = verdict(1.72, 1.70, 1.74, ideal=1.0)  # nothing skipped: it cannot be faster
    assert not no_skip["speedup_reliable"] and "above its ideal 1.00x" in no_skip["speedup_note"]
    assert verdict(0.98, 0.97, 0.99, ideal=1.0)["speedup_reliable"]


def test_format_speedup_shows_the_interval_and_the_mark():
    assert timing.format_speedup({"speedup": 1.42, "speedup_interval": [1.40, 1.45], "speedup_reliable": True}) == \
        "1.42x ± 0.03"
    assert timing.format_speedup({"speedup": 1.72, "speedup_interval": [1.5, 1.9], "speedup_reliable": False}) == \
        "unreliable: 1.72x ± 0.22"
    assert timing.format_speedup({"speedup": 1.31}) == "1.31x"  # a result written before intervals


def test_spread_of_repeated_timings():
    assert timing.spread([[1.0, 2.0]]) == 0.0
    assert timing.spread([[1.0, 2.0], [1.1, 2.0], [1.0, 2.0]]) == pytest.approx(np.median([0.1, 0.0]))
