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


WAV2VEC2_COMMANDS = r"""
import json, sys
from pathlib import Path
import numpy as np, soundfile as sf, torch
from datasets import Dataset, DatasetDict
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC
from hubert_ee.cli import main
from hubert_ee.text import build_processor
from tests.conftest import tiny_hubert_kwargs

root = Path(sys.argv[1])
rng = np.random.default_rng(0)
processor = build_processor()
torch.manual_seed(0)
plain = Wav2Vec2ForCTC(Wav2Vec2Config(**tiny_hubert_kwargs(vocab_size=len(processor.tokenizer),
                                                           do_stable_layer_norm=True)))
plain.save_pretrained(root / "w2v")
processor.save_pretrained(root / "w2v")
texts = ["HELLO WORLD", "A CAT", "THE DOG RAN", "YES"] * 2
audio = [(0.1 * rng.standard_normal(int(16000 * (0.4 + 0.05 * len(t))))).astype(np.float32) for t in texts]
split = lambda n: Dataset.from_dict({"audio": [{"array": a, "sampling_rate": 16000} for a in audio[:n]],
                                     "text": texts[:n]})
DatasetDict({"train": split(8), "dev": split(4), "test": split(4)}).save_to_disk(str(root / "corpus"))
sf.write(root / "clip.wav", audio[0], 16000)
runs = {
    "train": ["train", "--model", str(root / "w2v"), "--dataset", str(root / "corpus"), "--output", str(root / "ee"),
              "--exit-layers", "1,2", "--exit-branch", "linear", "--max-steps", "2", "--batch-size", "4",
              "--eval-steps", "0", "--save-steps", "2", "--warmup-steps", "0", "--no-progress"],
    "evaluate": ["evaluate", "--model", str(root / "ee"), "--dataset", str(root / "corpus"), "--split", "test",
                 "--json", str(root / "eval.json"), "--no-progress"],
    "calibrate": ["calibrate", "--model", str(root / "ee"), "--dataset", str(root / "corpus"), "--split", "dev",
                  "--confidence-thresholds", "0.5", "--entropy-thresholds", "0.5", "--patiences", "1",
                  "--max-wer-increase", "1000000", "--min-speedup", "0", "--no-progress"],
    "transcribe": ["transcribe", "--model", str(root / "ee"), str(root / "clip.wav"), "--json", str(root / "t.json")],
    "benchmark": ["benchmark", "--workloads", "trained", "--model", str(root / "ee"), "--dataset",
                  str(root / "corpus"), "--split", "test", "--exit-criterion", "confidence", "--thresholds", "0.5",
                  "--batch-sizes", "1",
                  "--device", "cpu", "--seconds", "0.1", "--repeats", "1", "--warmup", "0",
                  "--component-min-ms", "0", "--no-progress", "--json", str(root / "bench.json")],
    "card": ["card", "--model", str(root / "ee"), "--eval", str(root / "eval.json")],
    "push": ["push", "--model", str(root / "ee"), "--repo-id", "me/w2v-ee", "--dry-run"],
}
codes = {name: main(argv) for name, argv in runs.items()}
config = json.loads((root / "ee" / "config.json").read_text())
print(json.dumps({"codes": codes, "model_type": config["model_type"],
                  "code_files": sorted(path.name for path in (root / "ee").glob("*.py"))}))
"""


def test_every_command_runs_on_a_wav2vec2_checkpoint(tmp_path):
    """`train` converts a wav2vec2 CTC checkpoint (random, tiny) and every other command takes the result, each
    choosing its classes from the checkpoint's `model_type`; run in a fresh process, as a user would."""
    import json
    import os

    from tests.conftest import REPOSITORY_ROOT

    script = tmp_path / "commands.py"
    script.write_text(WAV2VEC2_COMMANDS)
    env = {**os.environ, "PYTHONPATH": REPOSITORY_ROOT, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["codes"] == {name: 0 for name in report["codes"]}, (report, result.stderr[-3000:])
    assert report["model_type"] == "wav2vec2_ee"
    assert report["code_files"] == sorted(["configuration_wav2vec2_ee.py", "modeling_wav2vec2_ee.py",
                                           "configuration_early_exit.py", "modeling_early_exit.py"])


def test_version_names_hubert_ee_torch_and_transformers():
    import torch
    import transformers

    result = subprocess.run([sys.executable, "-m", "hubert_ee.cli", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("hubert-ee 0.") and "\n" not in line, line
    assert f"torch {torch.__version__}" in line and f"transformers {transformers.__version__}" in line, line
