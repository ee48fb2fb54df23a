"""hubert_ee.operating_point: choosing the operating point, writing it into a model folder's config and card."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCTC

import hubert_ee  # noqa: F401  (registers the Auto classes)
from configuration_hubert_ee import HubertEEConfig
from hubert_ee.operating_point import choose_operating_point, write_operating_point
from hubert_ee.export import save_hub_folder
from hubert_ee.text import build_processor
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import folder_contents, run_with_file_size_limit, sharpen_branches, tiny_config


def _row(criterion, threshold, wer, speedup, patience=None, mean_exit_layer=6.0):
    row = {"criterion": criterion, "threshold": threshold, "wer": wer, "mean_exit_layer": mean_exit_layer,
           "speedup": speedup, "layers_skipped": 1 - mean_exit_layer / 12}
    if patience is not None:
        row["patience"] = patience
    return row


def _result(rows, final_wer=5.0):
    return {"final_wer": final_wer, "num_hidden_layers": 12, "exit_layers": [2, 4, 6, 8, 10], "sweep": rows,
            "exits": [], "oracle": {"wer": final_wer, "mean_exit_layer": 5.0, "speedup": 2.4}}


def test_picks_the_fastest_row_within_the_wer_budget():
    rows = [
        _row("confidence", 0.5, 9.0, 3.0),   # fastest, but too inaccurate
        _row("confidence", 0.8, 5.4, 2.1),   # qualifies
        _row("confidence", 0.9, 5.1, 1.6),   # qualifies, slower
        _row("entropy", 0.1, 5.5, 2.2),      # qualifies exactly at the bound: the winner
        _row("entropy", 0.01, 5.0, 1.1),
    ]
    choice = choose_operating_point(_result(rows), 0.5)
    assert choice["early_exit"] is True
    assert (choice["exit_criterion"], choice["exit_threshold"], choice["exit_patience"]) == ("entropy", 0.1, None)
    assert choice["wer"] == 5.5 and choice["speedup"] == 2.2 and choice["row"] == rows[3]
    assert choice["final_wer"] == 5.0 and choice["max_wer"] == 5.5
    # a tighter budget moves to slower, more accurate rows
    assert choice_of(rows, 0.4) == ("confidence", 0.8)
    assert choice_of(rows, 0.1) == ("confidence", 0.9)
    assert choice_of(rows, 0.0) == ("entropy", 0.01)


def choice_of(rows, budget):
    choice = choose_operating_point(_result(rows), budget)
    return choice["exit_criterion"], choice["exit_threshold"]


def test_ties_go_to_the_lower_wer_and_patience_rows_set_the_patience():
    rows = [_row("confidence", 0.7, 5.3, 2.0), _row("patience", None, 5.1, 2.0, patience=2),
            _row("entropy", 0.2, 5.2, 2.0)]
    choice = choose_operating_point(_result(rows), 0.5)
    assert (choice["exit_criterion"], choice["exit_threshold"], choice["exit_patience"]) == ("patience", None, 2)
    assert choice["wer"] == 5.1


def test_none_qualifies_turns_early_exit_off():
    rows = [_row("confidence", 0.5, 8.0, 3.0), _row("entropy", 0.1, 7.0, 2.0)]
    choice = choose_operating_point(_result(rows), 0.5)
    assert choice["early_exit"] is False and choice["row"] is None
    assert choice["exit_criterion"] is None and choice["exit_threshold"] is None and choice["exit_patience"] is None
    assert choice["wer"] == 5.0 and choice["speedup"] == 1.0
    assert choose_operating_point(_result([]), 1.0)["early_exit"] is False
    # accurate but not faster than the full model: not worth it
    slow = [_row("confidence", 0.99, 5.0, 0.9), _row("entropy", 0.01, 5.0, 1.0)]
    assert choose_operating_point(_result(slow), 0.5)["early_exit"] is False
    assert choose_operating_point(_result(slow), 0.5, min_speedup=0.5)["exit_threshold"] == 0.01
    with pytest.raises(ValueError):
        choose_operating_point(_result(rows), -0.1)


@pytest.fixture
def model_folder(tmp_path):
    torch.manual_seed(0)
    model = sharpen_branches(HubertEEForCTC(tiny_config())).eval()
    return save_hub_folder(model, build_processor(), tmp_path / "model")


def test_write_operating_point_keeps_everything_else(model_folder):
    before = json.loads((model_folder / "config.json").read_text())
    # the folder's code files are its own: calibrate must not replace them with this installation's copies
    own_code = (model_folder / "configuration_hubert_ee.py").read_text() + "# this folder's own copy\n"
    (model_folder / "configuration_hubert_ee.py").write_text(own_code)
    choice = choose_operating_point(_result([_row("entropy", 0.25, 5.2, 2.0)]), 0.5)
    written = write_operating_point(model_folder, choice)
    assert written == {"early_exit": True, "exit_criterion": "entropy", "exit_threshold": 0.25}
    after = json.loads((model_folder / "config.json").read_text())
    changed = {key for key in set(before) | set(after) if before.get(key) != after.get(key)}
    assert changed <= {"exit_criterion", "exit_threshold"}, changed
    assert after["auto_map"] == before["auto_map"]
    assert (model_folder / "configuration_hubert_ee.py").read_text() == own_code
    config = HubertEEConfig.from_pretrained(model_folder)
    assert (config.early_exit, config.exit_criterion, config.exit_threshold, config.exit_patience) == (
        True, "entropy", 0.25, 2)
    model = AutoModelForCTC.from_pretrained(model_folder)
    assert model.config.exit_criterion == "entropy" and model.config.exit_threshold == 0.25

    write_operating_point(model_folder, choose_operating_point(_result([_row("patience", None, 5.0, 2.0, 3)]), 0.5))
    config = HubertEEConfig.from_pretrained(model_folder)
    assert (config.early_exit, config.exit_criterion, config.exit_threshold, config.exit_patience) == (
        True, "patience", 0.25, 3)

    write_operating_point(model_folder, choose_operating_point(_result([]), 0.5))
    config = HubertEEConfig.from_pretrained(model_folder)
    assert config.early_exit is False and config.exit_criterion == "patience"


@pytest.fixture
def carded_folder(model_folder, tmp_path):
    """A model folder with a card from `hubert-ee card` that states its operating point (confidence 0.9)."""
    from hubert_ee.card import write_card
    from tests.test_card_push import RESULT

    (tmp_path / "eval.json").write_text(json.dumps(RESULT))
    config = json.loads((model_folder / "config.json").read_text())
    (model_folder / "config.json").write_text(json.dumps({**config, "exit_threshold": 0.9}))
    write_card(model_folder, tmp_path / "eval.json")
    return model_folder


def test_a_failed_write_leaves_the_model_folder_as_it_was(carded_folder):
    """A write that fails midway (a full disk) must leave config.json, the card and the code files as they were:
    a truncated configuration_hubert_ee.py breaks every `trust_remote_code` load with a SyntaxError."""
    before = folder_contents(carded_folder)
    code = f"""
from hubert_ee.operating_point import write_operating_point
write_operating_point({str(carded_folder)!r}, {{"early_exit": True, "exit_criterion": "entropy", "exit_threshold": 0.3}})
"""
    finished = run_with_file_size_limit(code, limit_bytes=1500)  # config.json and the card are larger
    assert finished.returncode != 0 and "File too large" in finished.stderr, finished.stderr[-2000:]
    assert folder_contents(carded_folder) == before


def test_config_and_card_are_written_together(carded_folder):
    from huggingface_hub import ModelCard

    card = (carded_folder / "README.md").read_text()
    assert "- shipped operating point: `exit_criterion='confidence'`, `exit_threshold=0.9`" in card
    assert "- at that point on the test split: WER 12.90 %" in card
    choice = choose_operating_point(_result([_row("entropy", 0.25, 5.2, 2.0)]), 0.5)
    write_operating_point(carded_folder, choice, "chosen on dev")
    card = (carded_folder / "README.md").read_text()
    assert "- shipped operating point: `exit_criterion='entropy'`, `exit_threshold=0.25` (chosen on dev)" in card
    assert "at that point on the test split" not in card and "0.9" not in card.split("## Usage")[0]
    metrics = ModelCard.load(carded_folder / "README.md").data.to_dict()["model-index"][0]["results"][0]["metrics"]
    assert [metric["name"] for metric in metrics] == ["WER (full depth)"]  # the old point's WER is gone
    write_operating_point(carded_folder, choose_operating_point(_result([]), 0.5), "nothing was faster")
    assert "- shipped operating point: early exit disabled (full depth) (nothing was faster)" in (
        carded_folder / "README.md").read_text()


def test_a_setting_where_nothing_exits_is_never_chosen_even_if_timing_noise_calls_it_faster():
    rows = [_row("confidence", 0.99, 5.0, 1.13, mean_exit_layer=12.0), _row("confidence", 0.9, 5.3, 1.05)]
    assert choice_of(rows, 0.5) == ("confidence", 0.9)
    assert choose_operating_point(_result(rows[:1]), 0.5)["early_exit"] is False


def test_chooses_by_the_expected_speedup_and_names_it():
    """A noisy clock cannot sway the choice: by default rows are ranked by the cost model's expected speedup; by the
    measured one, a figure marked unreliable does not count; a setting that skips nothing is never chosen."""
    rows = [
        {**_row("confidence", 0.6, 5.2, 2.4, mean_exit_layer=6.0), "expected_speedup": 1.3},   # lucky clock
        {**_row("confidence", 0.5, 5.3, 1.5, mean_exit_layer=4.0), "expected_speedup": 1.8},
        {**_row("confidence", 0.95, 5.0, 1.9, mean_exit_layer=12.0), "expected_speedup": 0.93},  # skips nothing
    ]
    choice = choose_operating_point(_result(rows), 0.5)
    assert choice["chosen_by"] == "expected" and choice["exit_threshold"] == 0.5
    assert choice["expected_speedup"] == 1.8 and choice["speedup"] == 1.5
    assert choose_operating_point(_result(rows), 0.5, by="measured")["exit_threshold"] == 0.6
    rows[0].update(speedup_reliable=False, speedup_note="interval ±0.9 wider than 10 % of it")
    assert choose_operating_point(_result(rows), 0.5, by="measured")["exit_threshold"] == 0.5
    rows[1].update(speedup_reliable=False)
    assert choose_operating_point(_result(rows), 0.5, by="measured")["early_exit"] is False
    assert choose_operating_point(_result(rows[2:]), 0.5)["early_exit"] is False
    # a result written before the cost model: chosen by the measured speedup, and it says so
    old = choose_operating_point(_result([_row("entropy", 0.1, 5.5, 2.2)]), 0.5)
    assert old["chosen_by"] == "measured" and old["exit_threshold"] == 0.1
    with pytest.raises(ValueError, match="choose by"):
        choose_operating_point(_result(rows), 0.5, by="luck")
