"""hubert_ee.evaluate on a tiny random model: JSON structure, consistency of exits / sweep / oracle, reports, CLI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

import hubert_ee
from hubert_ee.cli import main as cli_main
from hubert_ee import evaluate
from hubert_ee.evaluate import evaluate_model, markdown_report, plot_tradeoff
from hubert_ee.export import save_hub_folder
from hubert_ee.text import build_processor
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import sharpen_branches, tiny_config

TOP_KEYS = {"final_wer", "exits", "sweep", "oracle", "num_utterances", "model", "dataset", "num_hidden_layers",
            "exit_layers"}
EXTRA_KEYS = {"num_skipped_too_short", "timing", "wer_note"}
ROW_KEYS = {"criterion", "threshold", "wer", "mean_exit_layer", "speedup", "layers_skipped", "ideal_speedup",
            "baseline_seconds", "early_exit_seconds"}
WORDS = ["HELLO WORLD", "EARLY EXIT", "A CAT SAT", "SPEECH", "ON THE MAT", "QUICK BROWN FOX"]


def _model():
    torch.manual_seed(0)
    return sharpen_branches(HubertEEForCTC(tiny_config())).eval()


def _audio(index: int, rng) -> np.ndarray:
    n = int(rng.integers(8000, 32000))  # 0.5 - 2 s
    if index % 2:
        return (0.3 * rng.standard_normal(n)).astype(np.float32)
    t = np.arange(n) / 16000
    return (0.5 * np.sin(2 * np.pi * (200 + 50 * index) * t)).astype(np.float32)


@pytest.fixture(scope="module")
def processor():
    return build_processor()


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(0)
    return [{"audio": _audio(i, rng), "text": WORDS[i % len(WORDS)]} for i in range(7)]


@pytest.fixture(scope="module")
def result(processor, dataset):
    thresholds = {"confidence": [0.5, 0.9, 0.99], "entropy": [1.0, 0.1, 0.0]}
    short = [*dataset, {"audio": np.zeros(30, np.float32), "text": "TOO SHORT"}]
    return evaluate_model(_model(), processor, short, thresholds=thresholds, patiences=(1, 2), batch_size=3,
                          progress=False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, processor):
    root = tmp_path_factory.mktemp("evaluate")
    model_folder = save_hub_folder(_model(), processor, root / "model")
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    with open(data / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "transcription"])
        for i in range(5):
            sf.write(data / f"u{i}.wav", _audio(i, rng), 16000)
            writer.writerow([f"u{i}.wav", WORDS[i].title() + "."])
    return model_folder, data


def test_result_has_the_exact_keys_and_sane_values(result):
    assert set(result) == TOP_KEYS | EXTRA_KEYS
    assert result["num_utterances"] == 7 and result["num_skipped_too_short"] == 1
    assert result["num_hidden_layers"] == 4 and result["exit_layers"] == [1, 2, 3]
    assert result["final_wer"] >= 0
    assert [row["layer"] for row in result["exits"]] == [1, 2, 3, 4]
    assert all(set(row) == {"layer", "wer"} and row["wer"] >= 0 for row in result["exits"])
    assert result["exits"][-1]["wer"] == result["final_wer"]  # the final head row is the final head
    assert len(result["sweep"]) == 3 + 3 + 2
    for row in result["sweep"]:
        expected = ROW_KEYS | ({"patience"} if row["criterion"] == "patience" else set())
        assert set(row) == expected, row
        assert row["wer"] >= 0
        assert 1 <= row["mean_exit_layer"] <= 4
        assert 0 < row["speedup"] < math.inf
        assert row["layers_skipped"] == pytest.approx(1 - row["mean_exit_layer"] / 4)
        assert row["ideal_speedup"] == pytest.approx(4 / row["mean_exit_layer"])
    assert [(r["criterion"], r["threshold"], r.get("patience")) for r in result["sweep"]] == [
        ("confidence", 0.5, None), ("confidence", 0.9, None), ("confidence", 0.99, None),
        ("entropy", 1.0, None), ("entropy", 0.1, None), ("entropy", 0.0, None),
        ("patience", None, 1), ("patience", None, 2),
    ]
    json.dumps(result, allow_nan=False)  # plain JSON


def test_sweep_is_consistent_with_forced_exits(result):
    by_setting = {(r["criterion"], r["threshold"], r.get("patience")): r for r in result["sweep"]}
    first = by_setting[("patience", None, 1)]  # patience 1: everyone leaves at the first exit
    assert first["mean_exit_layer"] == 1.0
    assert first["wer"] == pytest.approx(result["exits"][0]["wer"])
    never = by_setting[("entropy", 0.0, None)]  # a zero entropy is never reached: the final head answers
    assert never["mean_exit_layer"] == 4.0 and never["layers_skipped"] == 0.0
    assert never["wer"] == pytest.approx(result["final_wer"])
    confidences = [by_setting[("confidence", t, None)]["mean_exit_layer"] for t in (0.5, 0.9, 0.99)]
    assert confidences == sorted(confidences)  # stricter thresholds never exit earlier


def test_oracle(result):
    oracle = result["oracle"]
    assert {"wer", "mean_exit_layer", "layers_skipped", "speedup", "ideal_speedup"} <= set(oracle)
    assert oracle["wer"] == pytest.approx(result["final_wer"])  # oracle transcripts are the final head's
    assert 1 <= oracle["mean_exit_layer"] <= 4
    assert oracle["ideal_speedup"] == pytest.approx(4 / oracle["mean_exit_layer"])
    assert oracle["speedup"] > 0 and oracle["baseline_seconds"] > 0 and oracle["early_exit_seconds"] > 0  # measured


def test_markdown_and_plot(result, tmp_path):
    text = markdown_report(result)
    assert "| 4 (final head) |" in text
    for layer in (1, 2, 3):
        assert f"| {layer} |" in text
    assert "| confidence | 0.9 |" in text and "| entropy | 0.1 |" in text and "| patience | patience 2 |" in text
    assert text.count("\n| confidence |") == 3 and "## Oracle" in text
    path = plot_tradeoff(result, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_bad_settings_fail_before_any_work(processor, dataset):
    model = _model()
    with pytest.raises(ValueError, match="exit_threshold"):
        evaluate_model(model, processor, dataset, thresholds={"confidence": [-1.0]}, progress=False)
    with pytest.raises(ValueError, match="patience"):
        evaluate_model(model, processor, dataset, thresholds={}, patiences=[0], progress=False)
    with pytest.raises(ValueError, match="unknown criteria"):
        evaluate_model(model, processor, dataset, thresholds={"loudness": [1.0]}, progress=False)


def test_command_writes_json_markdown_and_plot(folders, tmp_path, capsys):
    model_folder, data = folders
    out = tmp_path / "out"
    code = cli_main(["evaluate", 
        "--model", str(model_folder), "--dataset", str(data), "--json", str(out / "eval.json"),
        "--markdown", str(out / "eval.md"), "--plot", str(out / "eval.png"), "--batch-size", "2",
        "--max-samples", "4", "--confidence-thresholds", "0.5,0.9", "--entropy-thresholds", "0.5",
        "--patiences", "1", "--no-progress",
    ])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "eval.json").read_text())
    assert TOP_KEYS <= set(result)
    assert result["num_utterances"] == 4 and result["model"] == str(model_folder)
    assert result["dataset"].startswith(str(data))
    assert [(r["criterion"], r["threshold"]) for r in result["sweep"]] == [
        ("confidence", 0.5), ("confidence", 0.9), ("entropy", 0.5), ("patience", None)]
    assert "| confidence | 0.5 |" in (out / "eval.md").read_text()
    assert (out / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert "final head WER" in capsys.readouterr().out


def test_command_without_model_and_without_default(folders, tmp_path, monkeypatch, capsys):
    monkeypatch.delattr(hubert_ee, "DEFAULT_MODEL", raising=False)
    code = cli_main(["evaluate", "--dataset", str(folders[1]), "--json", str(tmp_path / "x.json")])
    assert code == 2
    assert "no --model given, and there is no default model" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_every_flag_has_help():
    import argparse

    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, action.dest
