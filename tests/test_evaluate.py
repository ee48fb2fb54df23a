"""hubert_ee.evaluate on a tiny random model: JSON structure, consistency of exits / sweep / oracle, reports, CLI."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import hubert_ee
from hubert_ee.cli import main as cli_main
from hubert_ee.evaluate import evaluate_model
from hubert_ee.loading import folder_weights_fingerprint
from hubert_ee.results import markdown_report, plot_tradeoff
from hubert_ee.export import save_hub_folder
from hubert_ee.text import build_processor
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import sharpen_branches, tiny_config

TOP_KEYS = {"final_wer", "final_cer", "exits", "sweep", "oracle", "num_utterances", "model", "dataset",
            "num_hidden_layers", "exit_layers"}
EXTRA_KEYS = {"num_skipped_too_short", "timing", "wer_note", "vocab_size", "weights_sha256", "decoder"}
ROW_KEYS = {"criterion", "threshold", "wer", "cer", "mean_exit_layer", "speedup", "layers_skipped", "ideal_speedup",
            "baseline_seconds", "early_exit_seconds", "speedup_interval", "speedup_reliable", "speedup_note",
            "expected_speedup"}
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
    assert all(set(row) == {"layer", "wer", "cer"} and row["wer"] >= 0 and row["cer"] >= 0 for row in result["exits"])
    assert result["exits"][-1]["wer"] == result["final_wer"]  # the final head row is the final head
    assert result["exits"][-1]["cer"] == result["final_cer"]
    assert len(result["sweep"]) == 3 + 3 + 2
    for row in result["sweep"]:
        expected = ROW_KEYS | ({"patience"} if row["criterion"] == "patience" else set())
        assert set(row) == expected, row
        assert row["wer"] >= 0
        assert 1 <= row["mean_exit_layer"] <= 4
        assert 0 < row["speedup"] < math.inf
        assert row["layers_skipped"] == pytest.approx(1 - row["mean_exit_layer"] / 4)
        assert row["ideal_speedup"] == pytest.approx(4 / row["mean_exit_layer"])
        low, high = row["speedup_interval"]
        assert low <= row["speedup"] <= high and 0 < row["expected_speedup"] < math.inf
        assert row["speedup_reliable"] == (row["speedup_note"] == "")
        if row["speedup"] > row["ideal_speedup"]:  # never presented as a result
            assert not row["speedup_reliable"] and "above its ideal" in row["speedup_note"]
    timing = result["timing"]
    assert {"baseline_spread", "busy", "part_costs", "timed_settings", "confidence"} <= set(timing)
    assert timing["part_costs"]["layer"] > 0 and timing["part_costs"]["branch"] > 0
    assert [(r["criterion"], r["threshold"], r.get("patience")) for r in result["sweep"]] == [
        ("confidence", 0.5, None), ("confidence", 0.9, None), ("confidence", 0.99, None),
        ("entropy", 1.0, None), ("entropy", 0.1, None), ("entropy", 0.0, None),
        ("patience", None, 1), ("patience", None, 2),
    ]
    json.dumps(result.to_json(), allow_nan=False)  # plain JSON


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


def test_each_settings_exits_from_the_all_exits_pass_are_where_generate_leaves(processor, dataset):
    """Accuracy and depth of every setting come from one full-depth pass (the criterion applied to every branch's
    logits), not from running the setting: it must send each utterance where `generate` sends it."""
    from hubert_ee.decoding import GreedyDecoder
    from hubert_ee.evaluate import all_exits_pass, prepare_data, sweep_settings

    model = _model()
    settings = sweep_settings({"confidence": [0.5, 0.95, 0.99, 0.999], "entropy": [0.5, 0.1, 0.01]}, (1, 2, 3))
    data = prepare_data(model, processor, dataset, 3, [])
    greedy = GreedyDecoder(processor, model.config.pad_token_id)
    passed = all_exits_pass(model, data, settings, greedy, greedy, progress=False)
    exits_seen = set()
    for number, setting in enumerate(settings):
        for indices, values, mask in data.batches:
            output = model.generate(values, mask, exit_setting=setting)
            assert [passed.setting_layers[number][i] for i in indices] == output.exit_layer.tolist(), setting
            exits_seen |= set(output.exit_layer.tolist())
    assert len(exits_seen) >= 3  # the settings do send utterances to different exits


def test_only_the_timing_runs_the_settings_each_distinct_one_once(processor, dataset, monkeypatch):
    """What needs a clock is timed once: per batch the baseline twice, each distinct way of exiting once (settings
    that send every utterance to the same layers share one timing) and the oracle, after one warm-up call of each
    kind; the accuracy of every setting needs no run of its own."""
    model = _model()
    calls = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda *args, **kwargs: calls.append(kwargs) or generate(*args, **kwargs))
    # confidence 0.2 and 0.5 both send every utterance out at layer 1 on this model: one timing for the two
    thresholds = {"confidence": [0.2, 0.5], "entropy": [0.0]}
    result = evaluate_model(model, processor, dataset, thresholds=thresholds, patiences=(1,), batch_size=3,
                            progress=False)
    assert [row["mean_exit_layer"] for row in result["sweep"]] == [1.0, 1.0, 4.0, 1.0]
    assert result["timing"]["timed_settings"] == 3
    assert len(calls) == 2 + math.ceil(7 / 3) * (2 + 3 + 1)
    first, second = result["sweep"][:2]
    assert first["speedup"] == second["speedup"] and first["expected_speedup"] == second["expected_speedup"]


def test_speed_figures_stay_honest_while_another_process_competes_for_the_cores(processor, dataset):
    """`evaluate` with CPU-bound processes competing: a setting that skips no layer is never reported faster than
    the full model unmarked, and no row is reported above its ideal unmarked; the cost model still expects what the
    exits' layers say (a no-skip setting pays its branches: below 1)."""
    import subprocess
    import sys

    torch.manual_seed(0)
    model = sharpen_branches(HubertEEForCTC(tiny_config(exit_branch="linear"))).eval()
    rows = [*dataset, *dataset, *dataset]
    competitors = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        result = evaluate_model(model, processor, rows, thresholds={"confidence": [0.5], "entropy": [0.0]},
                                patiences=(1,), batch_size=3, progress=False)
    finally:
        for competitor in competitors:
            competitor.kill()
            competitor.wait()
    no_skip = [row for row in [*result["sweep"], result["oracle"]] if row["layers_skipped"] == 0]
    assert no_skip, "the entropy 0.0 row skips nothing"
    for row in no_skip:
        assert row["ideal_speedup"] == 1.0 and row["expected_speedup"] < 1.0
        assert row["speedup_interval"][0] <= 1.0 or not row["speedup_reliable"], row
    for row in [*result["sweep"], result["oracle"]]:
        assert row["speedup"] <= row["ideal_speedup"] or not row["speedup_reliable"], row
    report = markdown_report(result)
    assert "± " in report and "| expected | ideal |" in report
    assert report.count("unreliable: ") == sum(not row["speedup_reliable"] for row in [*result["sweep"],
                                                                                         result["oracle"]])


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
    assert "| layer | WER (%) | CER (%) |" in text and f"CER: {result['final_cer']:.2f} %" in text
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
    # which model was evaluated: its geometry and the fingerprint of the weights in the folder (what `card` checks)
    assert (result["vocab_size"], result["weights_sha256"]) == (32, folder_weights_fingerprint(model_folder))


def test_command_reports_an_unreadable_file_and_evaluates_the_rest(folders, tmp_path, capsys):
    model_folder, data = folders
    broken = tmp_path / "data"
    shutil.copytree(data, broken)
    (broken / "u1.wav").write_bytes(b"not audio" * 50)
    code = cli_main(["evaluate", "--model", str(model_folder), "--dataset", str(broken), "--json",
                     str(tmp_path / "eval.json"), "--confidence-thresholds", "0.5", "--entropy-thresholds", "",
                     "--patiences", "", "--repeats", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1  # as transcribe: some inputs failed, the others are done
    assert f"error: {broken / 'u1.wav'}" in err and "left out" in err
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["num_utterances"] == 4
    assert [item["path"].split(" ")[0] for item in result["unreadable"]] == [str(broken / "u1.wav")]


@pytest.mark.parametrize("flag,value", [("--confidence-thresholds", "0.5,1.5"), ("--entropy-thresholds", "-0.1")])
def test_command_refuses_a_threshold_outside_its_criterion_range(folders, tmp_path, capsys, flag, value):
    model_folder, data = folders
    code = cli_main(["evaluate", "--model", str(model_folder), "--dataset", str(data), "--json",
                     str(tmp_path / "eval.json"), flag, value])
    assert code == 2
    assert flag in capsys.readouterr().err and not (tmp_path / "eval.json").exists()


def test_command_without_model_and_without_default(folders, tmp_path, monkeypatch, capsys):
    monkeypatch.delattr(hubert_ee, "DEFAULT_MODEL", raising=False)
    code = cli_main(["evaluate", "--dataset", str(folders[1]), "--json", str(tmp_path / "x.json")])
    assert code == 2
    assert "no --model given, and there is no default model" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_markdown_of_a_result_without_cer_keeps_its_old_columns(result):
    """Results written before CER was reported (e.g. the committed default-model JSON) render as they did."""
    old = json.loads(json.dumps(result.to_json()))
    del old["final_cer"]
    for row in [*old["exits"], *old["sweep"], old["oracle"]]:
        del row["cer"]
    text = markdown_report(old)
    assert "CER" not in text and "| layer | WER (%) |\n|---:|---:|" in text


def test_group_by_breaks_accuracy_down_per_value(processor, dataset):
    rows = [{**row, "voice": "odd" if index % 2 else "even"} for index, row in enumerate(dataset)]
    result = evaluate_model(_model(), processor, rows, thresholds={"confidence": [0.5, 0.99]}, patiences=(),
                            batch_size=3, progress=False, group_by=["voice"])
    entries = result["groups"]["voice"]
    assert [entry["value"] for entry in entries] == ["even", "odd"]
    assert sum(entry["utterances"] for entry in entries) == result["num_utterances"]
    for entry in entries:
        assert [row["layer"] for row in entry["exits"]] == [1, 2, 3, 4]
        assert entry["exits"][-1]["wer"] == entry["final_wer"]
        assert 1 <= entry["oracle_mean_exit_layer"] <= 4
        assert [(row["criterion"], row["threshold"]) for row in entry["sweep"]] == [("confidence", 0.5),
                                                                                 ("confidence", 0.99)]
        assert all(1 <= row["mean_exit_layer"] <= 4 and row["cer"] >= 0 for row in entry["sweep"])
    # A group holding every utterance reproduces the overall numbers.
    whole = evaluate_model(_model(), processor, [{**row, "all": 1} for row in dataset], thresholds={}, patiences=(1,),
                           batch_size=3, progress=False, group_by=["all"])
    (entry,) = whole["groups"]["all"]
    assert entry["value"] == "1" and entry["final_wer"] == whole["final_wer"] and entry["final_cer"] == whole["final_cer"]
    assert entry["sweep"][0]["wer"] == whole["sweep"][0]["wer"]
    assert entry["sweep"][0]["mean_exit_layer"] == whole["sweep"][0]["mean_exit_layer"]
    assert "## By `all`" in markdown_report(whole)


def test_group_by_an_unknown_column_names_the_columns(processor, dataset):
    with pytest.raises(ValueError, match=r"no column\(s\) \['speaker_id'\]; its columns: \['audio', 'text'\]"):
        evaluate_model(_model(), processor, list(dataset), progress=False, group_by=["speaker_id"])


def test_command_group_by(folders, tmp_path, capsys):
    model_folder, data = folders
    grouped = tmp_path / "grouped"
    shutil.copytree(data, grouped)
    lines = (grouped / "metadata.csv").read_text().splitlines()
    (grouped / "metadata.csv").write_text("\n".join([lines[0] + ",speaker"] + [
        line + f",s{index % 2}" for index, line in enumerate(lines[1:])]) + "\n")
    out = tmp_path / "eval.json"
    code = cli_main(["evaluate", "--model", str(model_folder), "--dataset", str(grouped), "--json", str(out),
                     "--markdown", str(tmp_path / "eval.md"), "--group-by", "speaker", "--confidence-thresholds",
                     "0.5", "--entropy-thresholds", "", "--patiences", "", "--repeats", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert [entry["value"] for entry in result["groups"]["speaker"]] == ["s0", "s1"]
    assert "## By `speaker`" in (tmp_path / "eval.md").read_text()
    code = cli_main(["evaluate", "--model", str(model_folder), "--dataset", str(grouped), "--json",
                     str(tmp_path / "bad.json"), "--group-by", "voice", "--no-progress"])
    assert code == 2 and "no column(s) ['voice']" in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists()


def test_the_json_form_has_the_keys_of_the_committed_results_in_their_order(result):
    """`EvaluationResult.to_json()` writes what `--json` always wrote: a committed result file has the same keys
    in the same order, and loads back into the record."""
    from hubert_ee.results import EvaluationResult

    committed = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" /
                            "default_model_test.json").read_text())
    written = result.to_json()
    assert [key for key in committed if key in written] == [key for key in written if key in committed]
    # optional keys, and the model's identity, which evaluations before it was recorded lack
    assert set(written) - {"unreadable", "groups", "vocab_size", "weights_sha256", "decoder"} <= set(committed)
    assert EvaluationResult(**committed).to_json() == committed


def test_markdown_of_a_result_without_intervals_keeps_its_old_speedup_column(result):
    """Results written before speedups carried intervals (the committed default-model JSON, whose card is rebuilt
    from it) render as they did."""
    old = json.loads(json.dumps(result.to_json()))
    for row in [*old["sweep"], old["oracle"]]:
        for key in ("speedup_interval", "speedup_reliable", "speedup_note", "expected_speedup"):
            del row[key]
    text = markdown_report(old)
    assert "| mean exit layer | speedup |" in text and "±" not in text and "expected" not in text
    assert "divided by that of early exit, on the same batches, interleaved." in text


def test_lm_decoding_adds_greedy_figures_decode_time_and_the_end_to_end_speedup(folders, dataset, tmp_path):
    from hubert_ee.decoding import build_decoder
    from hubert_ee.language_model import build_arpa, save_language_model
    from hubert_ee.operating_point import choose_operating_point
    from processing_early_exit import plain_processor

    folder = tmp_path / "model"
    shutil.copytree(folders[0], folder)
    save_language_model(folder, build_arpa(WORDS * 3, tmp_path / "2gram.arpa", order=2))
    processor = plain_processor(folder)
    decoder = build_decoder("lm", folder, processor, processor.tokenizer.pad_token_id, beam_width=4)
    result = evaluate_model(_model(), processor, dataset, thresholds={"confidence": [0.5, 0.99]}, patiences=(),
                            batch_size=3, progress=False, decoder=decoder)
    assert result["decoder"] == decoder.describe() and result["decoder"]["name"] == "lm"
    for row in result["exits"]:
        assert {"greedy_wer", "greedy_cer", "decode_seconds"} <= set(row) and row["decode_seconds"] > 0
    greedy = evaluate_model(_model(), processor, dataset, thresholds={"confidence": [0.5, 0.99]}, patiences=(),
                            batch_size=3, progress=False)
    assert [row["greedy_wer"] for row in result["exits"]] == [row["wer"] for row in greedy["exits"]]
    for row in [*result["sweep"], result["oracle"]]:
        low, high = row["end_to_end_interval"]
        assert low <= row["end_to_end_speedup"] <= high and row["decode_seconds"] > 0
        # the encoder times of the timed run plus the decode times at the heads answering, on both sides
        assert row["end_to_end_speedup"] == pytest.approx(
            (row["baseline_seconds"] + row["baseline_decode_seconds"])
            / (row["early_exit_seconds"] + row["decode_seconds"]))
    choice = choose_operating_point(result, max_wer_increase=1000.0, min_speedup=0.0)  # random weights: any WER
    assert choice["end_to_end_expected_speedup"] == max(row["end_to_end_expected_speedup"] for row in result["sweep"]
                                                         if row["mean_exit_layer"] < 4)
    report = markdown_report(result)
    assert "## LM decoding against greedy" in report and "beam width 4" in report
    assert "LM decoding" not in markdown_report(greedy) and "greedy CTC (no language model)" in markdown_report(greedy)


def test_a_greedy_decoder_built_from_the_flags_adds_no_lm_figures(folders, dataset):
    """`--decoder greedy` (a decoder object of its own) evaluates as the default does: no LM columns."""
    from hubert_ee.decoding import build_decoder
    from processing_early_exit import plain_processor

    processor = plain_processor(folders[0])
    decoder = build_decoder("greedy", folders[0], processor, processor.tokenizer.pad_token_id)
    result = evaluate_model(_model(), processor, dataset, thresholds={"confidence": [0.5]}, patiences=(),
                            batch_size=3, progress=False, decoder=decoder)
    assert result["decoder"]["name"] == "greedy"
    assert not any("greedy_wer" in row or "end_to_end_speedup" in row
                   for row in [*result["exits"], *result["sweep"], result["oracle"]])
    assert "LM decoding" not in markdown_report(result)
