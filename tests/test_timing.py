"""The synchronised timer and the one interleaved timing of several candidates (`hubert_ee.timing`)."""

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
