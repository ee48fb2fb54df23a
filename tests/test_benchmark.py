"""The hubert_ee.benchmark package (`hubert-ee benchmark`): forced exits, the ideal-speedup arithmetic, the report
layout, and tiny end-to-end runs.

No timing is asserted: the numbers of a 2-core CI machine mean nothing; only the machinery is checked.
"""

import argparse
import json
import math
import statistics

import numpy as np
import pytest
import torch

from hubert_ee import benchmark, forced_exits
from hubert_ee.benchmark import cli, forced
from hubert_ee.arguments import UsageError
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import padded_batch, tiny_config

REQUIRED_ROW_KEYS = {"device", "dtype", "batch_size", "workload", "arch", "exit_distribution", "speedup",
                     "ideal_speedup", "efficiency", "speedup_interval", "speedup_reliable", "speedup_note"}


def _tiny_model(**overrides):
    torch.manual_seed(0)
    return HubertEEForCTC(tiny_config(**overrides)).eval()


@pytest.mark.parametrize("with_mask", [False, True], ids=["no-mask", "padded"])
def test_forced_exits_land_on_requested_layers(with_mask):
    model = _tiny_model()  # 4 layers, exits after 1, 2, 3
    targets = [2, 4, 1, 3, 1, 4, 2, 3]
    input_values, attention_mask = padded_batch([4000, 3000, 4000, 2500, 3500, 4000, 2000, 3900])
    if not with_mask:
        attention_mask = None
    with torch.inference_mode(), forced_exits.forced_exit_targets(model, targets):
        out = model(input_values, attention_mask=attention_mask)
        again = model(input_values, attention_mask=attention_mask)  # the per-forward state starts afresh
    assert out.exit_layer.tolist() == targets
    assert again.exit_layer.tolist() == targets
    # Each row's logits are those of the branch (or final head) it was sent to.
    with torch.inference_mode():
        full = model(input_values, attention_mask=attention_mask, output_exit_logits=True)
    heads = {1: full.exit_logits[0], 2: full.exit_logits[1], 3: full.exit_logits[2], 4: full.logits}
    lengths = model._get_feat_extract_output_lengths(
        attention_mask.sum(-1) if attention_mask is not None else torch.full((8,), 4000)
    )
    for row, layer in enumerate(targets):
        frames = int(lengths[row])
        torch.testing.assert_close(out.logits[row, :frames], heads[layer][row, :frames], rtol=1e-4, atol=1e-4)


def test_forced_distribution_is_exact_for_a_batch():
    model = _tiny_model()
    distribution = benchmark.parse_distribution("1:0.25,2:0.25,final:0.5", 4, [1, 2, 3])
    assert distribution == {1: 0.25, 2: 0.25, 4: 0.5}
    targets = benchmark.allocate_rows(distribution, 8)
    assert targets == [1, 1, 2, 2, 4, 4, 4, 4]
    with torch.inference_mode(), forced_exits.forced_exit_targets(model, targets):
        exit_layer = model(torch.randn(8, 3000)).exit_layer.tolist()
    assert exit_layer == targets
    assert {layer: exit_layer.count(layer) / 8 for layer in set(exit_layer)} == distribution
    # Without targets the model decides by itself again (threshold 2.0: never leaves).
    with torch.inference_mode():
        assert model(torch.randn(2, 3000), exit_setting=benchmark.NEVER_EXIT).exit_layer.tolist() == [4, 4]


def test_forced_targets_are_validated():
    model = _tiny_model()
    with pytest.raises(ValueError, match="not exits"):
        with forced_exits.forced_exit_targets(model, [5]):
            pass
    with pytest.raises(ValueError, match="not exits"):
        forced_exits.prepare_forced_targets(model, torch.tensor([1, 5]), "cpu")
    with pytest.raises(ValueError, match="forced targets"):
        with torch.inference_mode(), forced_exits.forced_exit_targets(model, [1, 2]):
            model(torch.randn(3, 3000))


def test_parse_and_allocate_distribution():
    assert benchmark.parse_distribution("4:1,8:1,12:2", 12) == {4: 0.25, 8: 0.25, 12: 0.5}
    assert benchmark.format_distribution({4: 0.25, 8: 0.25, 12: 0.5}) == "4:0.25,8:0.25,12:0.5"
    with pytest.raises(ValueError, match="layer 5"):
        benchmark.parse_distribution("5:1", 12, [4, 8])
    with pytest.raises(ValueError, match="no positive share"):
        benchmark.parse_distribution("4:0", 12)
    assert benchmark.allocate_rows({4: 1 / 3, 8: 1 / 3, 12: 1 / 3}, 16) == [4] * 6 + [8] * 5 + [12] * 5
    assert sorted(benchmark.allocate_rows({4: 0.25, 12: 0.75}, 1)) == [12]


def test_ideal_speedup_on_a_hand_made_cost_table():
    # Per-row linear costs except the front end: embed 10 + 2/row, layer 1/row, branch 0.5/row, head 0.25/row.
    rows = range(1, 9)
    table = {"embed": {n: 10.0 + 2 * n for n in rows}, "layer": {n: 1.0 * n for n in rows},
             "branch": {n: 0.5 * n for n in rows}, "head": {n: 0.25 * n for n in rows}}
    num_layers, exits = 12, [4, 8]
    # Batch 1: plain = 12 + 12 + 0.25 = 24.25.
    # exit 4: 12 + 4 + 0.5 = 16.5; exit 8: 12 + 8 + 1 = 21; final: 12 + 12 + 1 + 0.25 = 25.25.
    distribution = {4: 0.25, 8: 0.25, 12: 0.5}
    expected = 24.25 / (0.25 * 16.5 + 0.25 * 21 + 0.5 * 25.25)
    assert math.isclose(benchmark.ideal_speedup(table, num_layers, exits, distribution, 1), expected)
    assert math.isclose(benchmark.ideal_speedup(table, num_layers, exits, {4: 1.0}, 1), 24.25 / 16.5)
    # Batch 8 (2 at 4, 2 at 8, 4 final): embed 26; layers 4x8 + 4x6 + 4x4 = 72; branches 0.5x8 + 0.5x6 = 7;
    # head 0.25x4 = 1 -> 106; plain = 26 + 96 + 2 = 124.
    assert math.isclose(benchmark.ideal_speedup(table, num_layers, exits, distribution, 8), 124 / 106)
    assert benchmark.needed_row_counts(num_layers, exits, [4, 4, 8, 8, 12, 12, 12, 12]) == {8, 6, 4}
    # A row count that was not measured scales linearly from the nearest measured one.
    assert math.isclose(benchmark.lookup_cost({"layer": {4: 2.0}}, "layer", 6), 3.0)
    assert benchmark.lookup_cost({"layer": {4: 2.0}}, "layer", 0) == 0.0


def _args(tmp_path, *extra):
    parser = benchmark.add_arguments(argparse.ArgumentParser())
    return parser.parse_args([
        "--device", "cpu", "--archs", "tiny", "--seconds", "0.25", "--repeats", "1", "--warmup", "0",
        "--batch-sizes", "1,4", "--component-min-ms", "0", "--no-progress",
        "--json", str(tmp_path / "bench.json"), "--markdown", str(tmp_path / "bench.md"), *extra,
    ])


def test_run_tiny_forced_end_to_end_writes_json(tmp_path, capsys, monkeypatch):
    import hubert_ee

    monkeypatch.delattr(hubert_ee, "DEFAULT_MODEL", raising=False)  # the trained workload must say why it is skipped
    args = _args(tmp_path, "--workloads", "forced,trained", "--branch", "transformer,linear", "--overhead-detail",
                 "--exit-distribution", "1:0.5,final:0.5", "--exit-distribution", "3:1",
                 "--exit-distribution", "7:1")  # not an exit of tiny: skipped with a note
    assert benchmark.run(args) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert {"meta", "rows", "branch_cost", "overhead", "notes"} <= set(report)
    rows = report["rows"]
    # 2 branch types x 2 batch sizes x 2 distributions.
    assert len(rows) == 8
    for row in rows:
        assert REQUIRED_ROW_KEYS <= set(row), set(REQUIRED_ROW_KEYS) - set(row)
        assert row["workload"] == "forced" and row["arch"] == "tiny" and row["device"] == "cpu"
        assert row["dtype"] == "fp32"
        if row["batch_size"] == 1:
            assert {"latency_ms", "baseline_latency_ms"} <= set(row)
        else:
            assert {"throughput", "baseline_throughput"} <= set(row)
            assert sum(row["rows_per_exit"].values()) == row["batch_size"]
        assert row["speedup"] > 0 and row["ideal_speedup"] > 0
        assert math.isclose(row["efficiency"], row["speedup"] / row["ideal_speedup"], rel_tol=1e-3)
        # one repetition: one pair, no interval to speak of, so the figure is marked and not presented as a result
        assert row["speedup_interval"] == [row["speedup"], row["speedup"]] and not row["speedup_reliable"]
        assert "1 paired timing(s), fewer than 3" in row["speedup_note"]
    assert {row["exit_distribution"] for row in rows} == {"1:0.5,4:0.5", "3:1"}
    assert {row["branch"] for row in rows} == {"transformer", "linear"}
    assert len(report["overhead"]) == 4
    for row in report["overhead"]:
        assert {"overhead_pct", "overhead_paired_pct", "ee_ms", "baseline_ms", "no_exit_overhead_pct",
                "goal_pct"} <= set(row)
        assert row["max_abs_logit_diff"] < 1e-3  # same weights in both models
        # one wait per exit consulted (the tiny model has three), none in HubertForCTC without a mask
        assert row["host_transfers"] == {"hubert_ee": {"reads": 3, "host_to_device": 0},
                                         "baseline": {"reads": 0, "host_to_device": 0}}
    for row in report["branch_cost"]:
        assert set(row["branches"]) == {"transformer", "linear"}
        assert all(cost["fraction_of_layer"] > 0 for cost in row["branches"].values())
        ops = row["dispatched_ops"]
        # a linear branch is a LayerNorm and a Linear; a transformer branch adds a whole encoder layer
        assert ops["branch_linear"] < ops["criterion"] < ops["layer"] < ops["branch_transformer"]
        assert ops["branch_transformer"] >= ops["layer"] + ops["branch_linear"]
    assert any("DEFAULT_MODEL" in note for note in report["notes"])  # trained workload skipped, said so
    markdown = (tmp_path / "bench.md").read_text()
    assert "| cpu | fp32 | tiny | transformer | 4 | 1:0.5,4:0.5 |" in markdown
    assert "Overhead" in markdown and "Component costs" in markdown
    assert markdown.count("| unreliable: ") == len(rows) and " ± 0.00 |" in markdown
    assert "| 3 / 0 |" in markdown  # host reads: HuBERT-EE / plain
    ops = report["branch_cost"][0]["dispatched_ops"]
    assert (f"| {ops['layer']} / {ops['criterion']} / {ops['branch_linear']} / {ops['branch_transformer']} |"
            in markdown)
    assert "skipping exit distribution '7:1'" in capsys.readouterr().out


def test_baseline_carries_the_same_weights():
    model = _tiny_model()
    baseline = benchmark.baseline_from(model)
    assert type(baseline).__name__ == "HubertForCTC"
    input_values, attention_mask = padded_batch([4000, 3000])
    with torch.inference_mode():
        expected = baseline(input_values, attention_mask=attention_mask).logits
        got = model(input_values, attention_mask=attention_mask, early_exit=False).logits
    torch.testing.assert_close(got, expected)


def test_trained_workload_on_a_tiny_saved_model(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    from hubert_ee.export import save_hub_folder
    from hubert_ee.text import build_processor
    from tests.conftest import sharpen_branches

    torch.manual_seed(0)
    # early_exit=False, as a calibrated config stores when no setting met its budget: the thresholds asked for
    # must still be measured with exits on.
    model = sharpen_branches(HubertEEForCTC(tiny_config(exit_threshold=0.5, early_exit=False))).eval()
    folder = save_hub_folder(model, build_processor(), tmp_path / "model")
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    lines = ["file_name,transcription"]
    for index, seconds in enumerate((0.3, 0.2, 0.25)):
        soundfile.write(data / f"{index}.wav", rng.standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1,
                        16000)
        lines.append(f"{index}.wav,hello world")
    (data / "metadata.csv").write_text("\n".join(lines) + "\n")
    args = _args(tmp_path, "--workloads", "trained", "--model", str(folder), "--dataset", str(data),
                 "--thresholds", "0.5,2.0", "--batch-sizes", "1,2")
    assert benchmark.run(args) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert len(report["rows"]) == 4  # 2 batch sizes x 2 thresholds
    for row in report["rows"]:
        assert REQUIRED_ROW_KEYS <= set(row)
        assert row["workload"] == "trained" and row["utterances"] == 3
        assert {"wer", "baseline_wer", "mean_exit_layer"} <= set(row)
        assert 1 <= row["mean_exit_layer"] <= 4
    assert all(row["mean_exit_layer"] < 4 for row in report["rows"] if row["threshold"] == "t=0.5")
    never = [row for row in report["rows"] if row["threshold"] == "t=2"]
    assert all(row["mean_exit_layer"] == 4 and row["wer"] == row["baseline_wer"] for row in never)
    assert len(report["overhead"]) == 2
    assert all({"overhead_pct", "overhead_paired_pct"} <= set(row) for row in report["overhead"])


def test_cli_entry_points():
    parser = benchmark.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args([])
    assert args.archs == "base,large" and args.batch_sizes == "1,8,16" and args.seconds == 10.0
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--help"])
    assert exit_info.value.code == 0


def test_profile_mode_writes_breakdown_and_tables(tmp_path):
    out = tmp_path / "profile.txt"
    args = _args(tmp_path, "--profile", str(out), "--batch-sizes", "2", "--profile-rows", "5")
    assert benchmark.run(args) == 0
    text = out.read_text()
    for variant in ("baseline", "baseline_wn_folded", "ee_no_exit", "ee_branches_only", "ee_branches_sync",
                    "ee_never", "ee_never_wn_folded"):
        assert f"\n{variant} " in text
    assert "## HubertForCTC" in text and "## HubertEEForCTC, exits never taken" in text


def test_module_imports_stay_light():
    """Top-level imports of every `benchmark` module and of the light homes it uses (`forced_exits`, `outputs`,
    `arguments`, `loading`, `timing`): torch,
    transformers, numpy, the standard library and the model files only (the GPU machine may lack
    datasets/jiwer/soundfile); the trained workload imports the rest lazily."""
    import ast
    import sys
    from pathlib import Path

    from hubert_ee import CODE_FILES_BY_MODEL_TYPE, arguments, cost_model, loading, outputs, timing

    model_files = {name.removesuffix(".py") for names in CODE_FILES_BY_MODEL_TYPE.values() for name in names}
    allowed = {"torch", "transformers", "numpy", "__future__", *model_files}
    files = sorted(Path(benchmark.__file__).parent.glob("*.py"))
    assert {file.stem for file in files} >= {"instrumentation", "forced", "trained", "report", "cli"}
    for file in files + [Path(module.__file__) for module in (forced_exits, outputs, arguments, loading, timing,
                                                              cost_model)]:
        in_package = file.parent.name == "benchmark"
        for node in ast.parse(file.read_text()).body:
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # a sibling in the package, or one of the light homes
                    light = ("forced_exits", "outputs", "arguments", "loading", "timing", "cost_model")
                    assert (in_package and node.level == 1) or node.module in light, (
                        file.name, ast.dump(node))
                    continue
                names = [node.module.split(".")[0]]
            else:
                continue
            for name in names:
                assert name in allowed or name in sys.stdlib_module_names, (file.name, name)


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "hubert_ee.benchmark", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--exit-distribution" in result.stdout and "--batch-sizes" in result.stdout


@pytest.mark.parametrize("choice, expected", [("on", True), ("off", False)])
def test_overlap_option_applies_to_the_benchmarked_models_only(tmp_path, monkeypatch, choice, expected):
    seen = []
    original = HubertEEForCTC._early_exit_pass

    def recording(self, *args, **kwargs):
        seen.append(self.overlap_exit_decisions)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HubertEEForCTC, "_early_exit_pass", recording)
    args = _args(tmp_path, "--workloads", "forced", "--batch-sizes", "1", "--exit-distribution", "3:1",
                 "--overlap-exit-decisions", choice)
    assert benchmark.run(args) == 0
    assert seen and set(seen) == {expected}
    assert _tiny_model().overlap_exit_decisions is False  # a setting of the run's models, not of the process
    assert "overlap_exit_decisions" not in vars(HubertEEForCTC)
    assert json.loads((tmp_path / "bench.json").read_text())["meta"]["overlap_exit_decisions"] == choice


def test_plot_of_a_run_and_of_earlier_reports(tmp_path, capsys):
    args = _args(tmp_path, "--workloads", "forced", "--batch-sizes", "1,4", "--exit-distribution", "3:1",
                 "--plot", str(tmp_path / "run.png"))
    assert benchmark.run(args) == 0
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = tmp_path / "again.png"
    assert benchmark.main(["--plot-from", str(tmp_path / "bench.json"), "--plot", str(again)]) == 0
    assert again.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UsageError, match="bad.json: not a benchmark --json report"):
        benchmark.run(benchmark.add_arguments(argparse.ArgumentParser()).parse_args(
            ["--plot-from", str(tmp_path / "bad.json"), "--plot", str(tmp_path / "x.png")]))
    assert benchmark.main(["--plot-from", str(tmp_path / "bench.json")]) == 2
    assert capsys.readouterr().err == "hubert-ee benchmark: error: --plot-from needs --plot OUT.png\n"


def test_forced_cases_put_their_targets_on_the_device_before_timing(monkeypatch):
    """A list or CPU tensor of targets is copied to the GPU inside every timed forward (a hidden host sync charged
    to early exit): the cases must prepare them once, when built, and hand the prepared tensor over."""
    model = _tiny_model()
    baseline = benchmark.baseline_from(model)
    prepared, handed = [], []
    real_prepare, real_context = forced.prepare_forced_targets, forced.forced_exit_targets

    def recording_prepare(*args, **kwargs):
        prepared.append(real_prepare(*args, **kwargs))
        return prepared[-1]

    def recording_context(model_, targets):
        handed.append(targets)
        return real_context(model_, targets)

    monkeypatch.setattr(forced, "prepare_forced_targets", recording_prepare)
    monkeypatch.setattr(forced, "forced_exit_targets", recording_context)
    input_values = torch.randn(4, 4000)
    distributions = {"d": benchmark.parse_distribution("1:0.5,final:0.5", 4, model.config.exit_layers)}
    cases, _ = forced.forced_cases(model, baseline, input_values, distributions, False, {})
    built = len(prepared)
    assert built == 1
    with torch.inference_mode():
        for call in cases.values():
            call()
    assert len(prepared) == built  # nothing prepared (copied) while timed
    assert handed and all(any(target is done for done in prepared) for target in handed)


def test_cuda_without_cudnn_benchmark_is_noted(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_devices", lambda spec: [torch.device("cuda")])
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a GPU")
    args = _args(tmp_path, "--workloads", "trained", "--model", "unused")  # no --dataset: nothing runs
    assert benchmark.run(args) == 0
    notes = json.loads((tmp_path / "bench.json").read_text())["notes"]
    assert any("--cudnn-benchmark" in note for note in notes)


def test_paired_ratio_cancels_a_slow_phase_of_the_machine():
    # mostly fast, twice slow (3x) for both, once slow for the candidate alone; the candidate is 2 % slower
    baseline = [1.0, 1.0, 1.0, 3.0, 3.0]
    candidate = [1.02, 3.06, 1.02, 3.06, 3.06]
    assert benchmark.paired_ratio(candidate, baseline) == pytest.approx(1.02)
    assert statistics.median(candidate) / statistics.median(baseline) == pytest.approx(3.06)  # what it avoids
    with pytest.raises(ValueError, match="same non-zero number"):
        benchmark.paired_ratio([1.0], [1.0, 2.0])


def test_kernel_counter_counts_computations_only():
    values, valid = torch.randn(4, 5), torch.ones(4, 5, dtype=torch.bool)
    with torch.inference_mode(), benchmark.KernelCounter() as counter:
        positive = values > 0  # computes
        positive &= valid  # in place: returns its input, but computes
        torch.nn.functional.dropout(values, 0.1, training=False)  # eval mode: hands its input back, launches nothing
        values.transpose(0, 1)  # a view
        values.add(1.0)  # computes
    assert counter.kernels == 3


def test_compiled_run_compiles_both_models_and_the_components_alike(tmp_path, monkeypatch):
    """`--compile` wraps HubertForCTC, HuBERT-EE and every timed component with the same torch.compile, and the
    forced exits still land where asked (the run checks every forced call's exit layers)."""
    import torch._dynamo

    compiled = []
    real_compile = torch.compile

    def recording_compile(fn, **options):
        compiled.append((type(fn).__name__, options))
        return real_compile(fn, **options)

    monkeypatch.setattr(torch, "compile", recording_compile)
    args = _args(tmp_path, "--workloads", "forced", "--branch", "linear", "--batch-sizes", "1,2",
                 "--exit-distribution", "1:0.5,final:0.5", "--compile", "default", "--compile-backend", "aot_eager")
    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.reset()
    try:
        assert benchmark.run(args) == 0
    finally:
        torch._dynamo.reset()
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["meta"]["compile"] == "default"
    assert all(row["compile"] == "default/aot_eager" for row in report["rows"] + report["overhead"])
    assert {row["batch_size"] for row in report["rows"]} == {1, 2}
    assert all(options == {"backend": "aot_eager"} for _, options in compiled)
    kinds = [kind for kind, _ in compiled]
    assert kinds.count("HubertEEForCTC") == kinds.count("HubertForCTC") == 2  # once per batch size
    assert kinds.count("function") >= 2 * 5  # embed, layer, linear branch, head, criterion per batch size
    assert any("compiled" in note for note in report["notes"])
    assert torch._dynamo.config.recompile_limit == limit  # raised for the run only


def test_compile_mode_needs_the_inductor_backend(tmp_path):
    args = _args(tmp_path, "--workloads", "forced", "--compile", "reduce-overhead", "--compile-backend", "cudagraphs")
    with pytest.raises(UsageError, match="mode of the inductor backend"):
        benchmark.run(args)
