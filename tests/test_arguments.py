"""Tests of hubert_ee.arguments: every subcommand's flags, the list parsers, and a light import."""

import argparse
import subprocess
import sys

import pytest

from hubert_ee import arguments
from hubert_ee.cli import main

ADDERS = [getattr(arguments, name) for name in arguments.__all__ if name.startswith("add_")]


@pytest.mark.parametrize("add", ADDERS, ids=lambda add: add.__name__)
def test_every_flag_has_help(add):
    parser = argparse.ArgumentParser()
    add(parser)
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, action.dest


def test_importing_the_arguments_and_building_every_parser_loads_no_heavy_library():
    script = ("import sys; from hubert_ee.cli import build_parser; "
              "build_parser([c for c in __import__('hubert_ee.cli').cli.COMMANDS if c not in ('synth', 'benchmark')]); "
              "heavy = [m for m in ('torch', 'transformers', 'datasets', 'numpy') if m in sys.modules]; "
              "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_copied_choices_match_their_sources():
    import configuration_hubert_ee
    import modeling_early_exit
    from hubert_ee import train

    assert arguments.EXIT_BRANCHES == configuration_hubert_ee.EXIT_BRANCHES
    assert arguments.EXIT_TRAINING_STRATEGIES == configuration_hubert_ee.EXIT_TRAINING_STRATEGIES
    assert arguments.BACKBONE_PRESET_NAMES == tuple(sorted(train.BACKBONE_PRESETS))
    assert arguments.PRECISIONS == train.PRECISIONS
    assert arguments.DEFAULT_BEAM_WIDTH == modeling_early_exit.LM_BEAM_WIDTH


def test_list_parsers():
    assert arguments.float_list("0.5, ,0.75") == [0.5, 0.75] and arguments.float_list("") == []
    assert arguments.int_list("1,2") == [1, 2] and arguments.str_list(" a, b ,,") == ["a", "b"]
    assert arguments.str_list(["x ", ""]) == ["x"]
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated numbers"):
        arguments.float_list("0.5,high")
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated integers"):
        arguments.int_list("1,2.5")


def test_dataset_share():
    assert arguments.dataset_share("../real-speech=0.25") == ("../real-speech", 0.25)
    assert arguments.dataset_share("a=b=0.5") == ("a=b", 0.5)  # the last "=" splits
    for bad in ("x", "x=1.5", "x=0", "=0.5", "x=high"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"0 < SHARE < 1, got '{bad}'"):
            arguments.dataset_share(bad)


def test_a_bad_exit_layers_value_is_a_usage_error_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--model", "m", "--dataset", "d", "--output", str(tmp_path / "o"), "--exit-layers", "2,x"])
    assert stopped.value.code == 2
    assert "--exit-layers: expected comma-separated integers" in capsys.readouterr().err


def test_threshold_range():
    arguments.check_threshold_range("confidence", [0.0, 1.0], "--x")
    arguments.check_threshold_range("patience", [7.0], "--x")
    with pytest.raises(arguments.UsageError, match="--x 1.5: a confidence threshold is a probability"):
        arguments.check_threshold_range("confidence", [1.5], "--x")
    with pytest.raises(arguments.UsageError, match="an entropy in nats"):
        arguments.check_threshold_range("entropy", [-0.1], "--x")


def test_throughput_configurations():
    assert arguments.throughput_configurations("packed:fp32, padded:bf16:compiled") == [
        ("packed", "fp32", False), ("padded", "bf16", True)]
    for bad in ("packed", "packed:fp16", "packed:fp32:fast"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not BATCHING:PRECISION"):
            arguments.throughput_configurations(bad)
