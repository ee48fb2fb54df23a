"""hubert_ee.compare (`hubert-ee compare`): strategy comparison table and plot from evaluate JSON."""

import json

import pytest

from hubert_ee.cli import main as cli_main
from hubert_ee.compare import comparison_markdown


def _result(final_wer, exit_wers, sweep, dataset="corpus[test]", utterances=10):
    layers = [2, 4]
    return {
        "dataset": dataset, "num_utterances": utterances, "num_hidden_layers": 6, "exit_layers": layers,
        "final_wer": final_wer,
        "exits": [{"layer": layer, "wer": wer} for layer, wer in zip([*layers, 6], [*exit_wers, final_wer])],
        "sweep": [{"criterion": c, "threshold": t, "wer": w, "speedup": s, "mean_exit_layer": m}
                  for c, t, w, s, m in sweep],
        "oracle": {"wer": final_wer, "mean_exit_layer": 3.0, "speedup": 1.6},
        "timing": {"device": "cpu", "batch_size": 8},
    }


def test_table_picks_the_fastest_setting_within_each_budget():
    results = {
        "two-stage": _result(10.0, [40.0, 20.0], [("confidence", 0.9, 10.4, 1.3, 4.0),
                                                  ("confidence", 0.8, 11.9, 1.6, 3.0),
                                                  ("confidence", 0.5, 30.0, 2.5, 2.0)]),
        "joint": _result(9.0, [30.0, 15.0], [("entropy", 0.1, 12.0, 1.2, 5.0)]),
    }
    table = comparison_markdown(results, budgets=(0.5, 2.0))
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "10.40, 1.30x (confidence 0.9)" in rows["two-stage"]  # +0.5: only 0.9 qualifies
    assert "11.90, 1.60x (confidence 0.8)" in rows["two-stage"]  # +2: 0.8 is faster and within budget
    assert "none faster" in rows["joint"]  # 12.0 > 9.0 + 2
    assert "| 30.00 | 15.00 |" in rows["joint"]
    assert "9.00 / 3.00 / 1.60x" in rows["joint"]


def test_results_from_different_test_sets_are_refused():
    results = {"a": _result(10.0, [20.0, 15.0], []), "b": _result(10.0, [20.0, 15.0], [], utterances=11)}
    with pytest.raises(ValueError, match="different data or settings"):
        comparison_markdown(results)


def test_command_writes_table_and_plot(tmp_path, capsys):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(_result(10.0, [20.0, 15.0], [("confidence", 0.9, 10.2, 1.4, 4.0)])))
    code = cli_main(["compare", f"two-stage={path}", "--markdown", str(tmp_path / "c.md"),
                     "--plot", str(tmp_path / "c.png")])
    assert code == 0
    assert "10.20, 1.40x (confidence 0.9)" in (tmp_path / "c.md").read_text()
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert "two-stage" in capsys.readouterr().out


def test_command_rejects_a_file_that_is_not_evaluate_output(tmp_path, capsys):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"wer": 3}))
    with pytest.raises(SystemExit) as stop:
        cli_main(["compare", f"x={path}"])
    assert stop.value.code == 2
    assert "is not `hubert-ee evaluate` output" in capsys.readouterr().err
