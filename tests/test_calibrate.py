"""hubert_ee.calibrate: the command, which evaluates, chooses and writes the operating point into --model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch

import hubert_ee  # noqa: F401  (registers the Auto classes)
from configuration_hubert_ee import HubertEEConfig
from hubert_ee.cli import main as cli_main
from hubert_ee.export import save_hub_folder
from hubert_ee.operating_point import choose_operating_point
from hubert_ee.text import build_processor
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import REPOSITORY_ROOT, repository_status, sharpen_branches, tiny_config


@pytest.fixture
def model_folder(tmp_path):
    torch.manual_seed(0)
    model = sharpen_branches(HubertEEForCTC(tiny_config())).eval()
    return save_hub_folder(model, build_processor(), tmp_path / "model")


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
    assert "chose" in printed and "expected WER" in printed and "(cost model; chosen by it), measured " in printed
    report = json.loads(out.read_text())
    assert set(report) == {"choice", "config_fields_written", "max_wer_increase", "evaluation"}
    choice = report["choice"]
    assert choice == choose_operating_point(report["evaluation"], 1000000, 0)  # what was chosen is the rule's pick
    assert choice["chosen_by"] == "expected" and choice["row"]["layers_skipped"] > 0
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
