"""hubert_ee.calibrate: choosing the operating point, writing it into config.json, and the command."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoModelForCTC

import hubert_ee  # noqa: F401  (registers the Auto classes)
from configuration_hubert_ee import HubertEEConfig
from hubert_ee.cli import main as cli_main
from hubert_ee import calibrate
from hubert_ee.calibrate import choose_operating_point, write_operating_point
from hubert_ee.export import save_hub_folder
from hubert_ee.text import build_processor
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import (REPOSITORY_ROOT, folder_contents, repository_status, run_with_file_size_limit,
                            sharpen_branches, tiny_config)


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
from hubert_ee.calibrate import write_operating_point
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


def _audiofolder(root):
    root.mkdir()
    rng = np.random.default_rng(0)
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "text"])
        for i in range(4):
            sf.write(root / f"{i}.wav", (0.3 * rng.standard_normal(int(rng.integers(8000, 24000)))).astype(np.float32),
                     16000)
            writer.writerow([f"{i}.wav", "HELLO WORLD"])
    return root


def test_command_evaluates_chooses_and_writes_config(model_folder, tmp_path, capsys):
    data = _audiofolder(tmp_path / "dev")
    out = tmp_path / "calibration.json"
    code = cli_main(["calibrate", 
        "--model", str(model_folder), "--dataset", str(data), "--max-wer-increase", "1000000",
        "--min-speedup", "0", "--confidence-thresholds", "0.5,0.9", "--entropy-thresholds", "0.5",
        "--patiences", "1", "--batch-size", "2", "--json", str(out), "--no-progress",
    ])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "chose" in printed and "expected WER" in printed and "speedup" in printed
    report = json.loads(out.read_text())
    assert set(report) == {"choice", "config_fields_written", "max_wer_increase", "evaluation"}
    choice = report["choice"]
    assert choice == choose_operating_point(report["evaluation"], 1000000, 0)  # what was chosen is the rule's pick
    assert choice["early_exit"] is True
    config = HubertEEConfig.from_pretrained(model_folder)
    assert config.early_exit is True and config.exit_criterion == choice["exit_criterion"]
    if choice["exit_criterion"] == "patience":
        assert config.exit_patience == choice["exit_patience"]
    else:
        assert config.exit_threshold == choice["exit_threshold"]


def test_command_dry_run_leaves_config_alone(model_folder, tmp_path, capsys):
    data = _audiofolder(tmp_path / "dev")
    before = (model_folder / "config.json").read_text()
    code = cli_main(["calibrate", "--model", str(model_folder), "--dataset", str(data), "--confidence-thresholds", "0.5",
                           "--entropy-thresholds", "", "--patiences", "", "--dry-run", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert (model_folder / "config.json").read_text() == before


def test_without_model_the_default_model_is_left_unchanged(monkeypatch, capsys):
    """From the repository root, `hubert-ee calibrate` without --model evaluates the shipped model and changes
    nothing in the repository (it used to rewrite the shipped config.json, its card left saying otherwise)."""
    before = repository_status("models", "model_card.md")
    monkeypatch.chdir(REPOSITORY_ROOT)
    code = cli_main(["calibrate", "--dataset", "examples/test-subset", "--max-samples", "2", "--repeats", "1",
                     "--confidence-thresholds", "0.5", "--entropy-thresholds", "", "--patiences", "",
                     "--min-speedup", "0", "--max-wer-increase", "1000", "--no-progress", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert "is left unchanged: calibrate writes into a model folder only when --model names it" in (
        capsys.readouterr().out)
    assert repository_status("models", "model_card.md") == before


def test_command_needs_a_local_folder(tmp_path, capsys):
    code = cli_main(["calibrate", "--model", "someone/hubert-ee-on-the-hub", "--dataset", str(tmp_path)])
    assert code == 2
    assert "must be a local model folder" in capsys.readouterr().err


def test_every_flag_has_help():
    parser = argparse.ArgumentParser()
    calibrate.add_arguments(parser)
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, action.dest


def test_a_setting_where_nothing_exits_is_never_chosen_even_if_timing_noise_calls_it_faster():
    rows = [_row("confidence", 0.99, 5.0, 1.13, mean_exit_layer=12.0), _row("confidence", 0.9, 5.3, 1.05)]
    assert choice_of(rows, 0.5) == ("confidence", 0.9)
    assert choose_operating_point(_result(rows[:1]), 0.5)["early_exit"] is False
