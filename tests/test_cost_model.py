"""hubert_ee.cost_model: the expected cost of batches of utterances of different lengths leaving at different
layers (what `evaluate`'s expected speedups are), on hand-made cost tables. The ideal speedups of `benchmark` are
tested in tests/test_benchmark.py."""

import math

from hubert_ee import cost_model


def test_expected_batch_costs_follow_compaction_and_the_frames_still_running():
    # Measured at 2 rows of 10 frames: embed 4, layer 2, branch 0.5, criterion 0.1, head 1 (linear in rows).
    table = {"embed": {2: 4.0}, "layer": {2: 2.0}, "branch": {2: 0.5}, "criterion": {2: 0.1}, "head": {2: 1.0}}
    num_layers, exits = 4, [2]
    # Row 0 (20 frames) leaves at layer 2, row 1 (10 frames) runs to the end. Per row at 10 frames: embed 2,
    # layer 1, branch 0.25, criterion 0.05, head 0.5.
    (full, early), = cost_model.expected_batch_costs(table, 10, num_layers, exits, [([2, 4], [20, 10])])
    # Full depth: both rows padded to 20 frames (x2): embed 8 + 4 layers x 4 + head 2 = 26.
    assert math.isclose(full, 26.0)
    # Early exit: embed 8; layers 1-2 on both rows at 20 frames: 2 x 4; the exit on both: (0.5 + 0.1) x 2;
    # layers 3-4 on row 1 alone, cut to its 10 frames: 2 x 1; head on row 1: 0.5.
    assert math.isclose(early, 8 + 8 + 1.2 + 2 + 0.5)
    # Everyone to the end: the exit's branch and criterion are pure cost.
    (full, early), = cost_model.expected_batch_costs(table, 10, num_layers, exits, [([4, 4], [10, 10])])
    assert math.isclose(early - full, 0.6)
    # Without frames the benchmark's ideal is unchanged (branch only, frames as measured).
    assert math.isclose(cost_model.early_exit_cost(table, num_layers, exits, [2, 4]), 4 + 4 + 0.5 + 2 + 0.5)
