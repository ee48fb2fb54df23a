"""The `hubert-ee` entry point: light to start, one subcommand's stage loaded at a time, defaults in the help,
one line for an error the user can act on."""

import subprocess
import sys

import pytest

from hubert_ee.cli import COMMANDS, main


def test_help_imports_neither_torch_nor_transformers():
    """`hubert-ee --help` (and a stage that does not need them, e.g. push) answers without the heavy imports that
    made every --help take seconds."""
    script = (
        "import sys\n"
        "from hubert_ee.cli import main\n"
        "for argv in (['--help'], ['push', '--help'], ['compare', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code == 0, argv\n"
        "heavy = sorted({'torch', 'transformers', 'datasets'} & set(sys.modules))\n"
        "print('heavy:', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout
    for name in COMMANDS:
        assert name in result.stdout  # every subcommand listed by the top-level help


def test_training_flags_show_their_defaults(capsys):
    for command in ("train", "train-backbone"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for shown in ("Clips per device per step. (default: 16)", "(default: 0.0005)", "(default: 42)",
                      "(default: 10.0)", "(default: 0)"):
            assert shown in text, (command, shown)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: two-stage)" in text and text.count("(default: cosine)") == 1  # named once, not twice


def test_an_error_the_user_can_act_on_is_one_line(tmp_path, capsys):
    assert main(["push", "--model", str(tmp_path / "nowhere"), "--repo-id", "me/x", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hubert-ee push: error: --model") and "nowhere" in err


def test_version_names_hubert_ee_torch_and_transformers():
    import torch
    import transformers

    result = subprocess.run([sys.executable, "-m", "hubert_ee.cli", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("hubert-ee 0.") and "\n" not in line, line
    assert f"torch {torch.__version__}" in line and f"transformers {transformers.__version__}" in line, line
