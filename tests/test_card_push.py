"""hubert_ee.card and hubert_ee.push: the model card generated from evaluation JSON, and the push command up
to the upload call."""

import json

import pytest
import torch
from huggingface_hub import ModelCard

from hubert_ee import push as push_module
from hubert_ee.card import write_card
from hubert_ee.cli import main
from hubert_ee.export import save_hub_folder
from hubert_ee.text import build_processor
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import REPOSITORY_ROOT, repository_status, tiny_config

RESULT = {
    "model": "m", "dataset": "d test", "num_utterances": 10, "num_hidden_layers": 4, "exit_layers": [1, 2, 3],
    "final_wer": 12.5,
    "exits": [{"layer": 1, "wer": 40.0}, {"layer": 2, "wer": 25.0}, {"layer": 3, "wer": 14.0}, {"layer": 4, "wer": 12.5}],
    "sweep": [
        {"criterion": "confidence", "threshold": 0.9, "wer": 12.9, "mean_exit_layer": 2.6, "layers_skipped": 0.35,
         "speedup": 1.31, "ideal_speedup": 1.54},
        {"criterion": "patience", "threshold": None, "patience": 2, "wer": 13.4, "mean_exit_layer": 2.9,
         "layers_skipped": 0.27, "speedup": 1.2, "ideal_speedup": 1.38},
    ],
    "oracle": {"wer": 12.5, "mean_exit_layer": 2.1, "layers_skipped": 0.47, "speedup": 1.7, "ideal_speedup": 1.9},
}  # fmt: skip


@pytest.fixture
def hub_folder(tmp_path):
    torch.manual_seed(0)
    model = HubertEEForCTC(tiny_config(exit_threshold=0.9))
    return save_hub_folder(model, build_processor(), tmp_path / "model")


def test_card_numbers_come_from_the_json_and_metadata_parses(hub_folder, tmp_path):
    eval_json = tmp_path / "eval.json"
    eval_json.write_text(json.dumps(RESULT))
    commands = tmp_path / "commands.txt"
    commands.write_text("hubert-ee synth --out data\nhubert-ee train --model ctc --dataset data --output ee\n")
    comparison = tmp_path / "strategies.md"
    comparison.write_text("| model | final WER |\n|---|---:|\n| two-stage-linear | 12.50 |\n")
    training_data = tmp_path / "data.md"
    training_data.write_text("Synthetic speech, and speechocean762 (arXiv 2104.01378).\n")
    code = main(["card", "--model", str(hub_folder), "--eval", str(eval_json), "--commands", str(commands),
                 "--comparison", str(comparison), "--training-data", str(training_data),
                 "--repo-id", "me/hubert-ee-demo", "--output", str(tmp_path / "model_card.md")])
    assert code == 0
    text = (tmp_path / "model_card.md").read_text()
    assert text == (hub_folder / "README.md").read_text()
    card = ModelCard.load(hub_folder / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "automatic-speech-recognition" and data["library_name"] == "transformers"
    assert data["license"] == "apache-2.0" and "wer" in data["metrics"]
    metrics = data["model-index"][0]["results"][0]["metrics"]
    assert [m["value"] for m in metrics] == [12.5, 12.9]  # full depth, and the config's operating point (0.9)
    assert "hubert-ee train --model ctc" in text and "trust_remote_code=True" in text and "2204.06328" in text
    assert "1.31x" in text and "me/hubert-ee-demo" in text
    assert "## Exit-training strategies compared" in text and "| two-stage-linear | 12.50 |" in text
    assert "## Training data\n\nSynthetic speech, and speechocean762 (arXiv 2104.01378).\n" in text


def test_card_shows_lm_decoding_from_an_lm_evaluation_and_refuses_a_greedy_one(hub_folder, tmp_path, capsys):
    eval_json, lm_json = tmp_path / "eval.json", tmp_path / "lm.json"
    eval_json.write_text(json.dumps(RESULT))
    decoder = {"name": "lm", "beam_width": 32, "alpha": 0.5, "beta": 1.5, "language_model": "m/language_model"}
    lm_json.write_text(json.dumps({**RESULT, "final_wer": 7.25, "decoder": decoder}))
    assert main(["card", "--model", str(hub_folder), "--eval", str(eval_json), "--lm-eval", str(lm_json)]) == 0
    text = (hub_folder / "README.md").read_text()
    section = text[text.index("## Results with the n-gram language model"):text.index("## Limitations")]
    assert "beam width 32, alpha 0.5, beta 1.5" in section and "final head WER: 7.25 %" in section
    assert main(["card", "--model", str(hub_folder), "--eval", str(eval_json), "--lm-eval", str(eval_json)]) == 2
    assert "was decoded greedily: evaluate with --decoder lm" in capsys.readouterr().err


def test_card_shows_a_peer_recogniser_beside_the_model_on_real_speech(hub_folder, tmp_path, capsys):
    eval_json, ood_json, peer_json = tmp_path / "eval.json", tmp_path / "ood.json", tmp_path / "peer.json"
    eval_json.write_text(json.dumps(RESULT))
    ood_json.write_text(json.dumps({**RESULT, "final_wer": 101.77, "num_utterances": 173}))
    peer_json.write_text(json.dumps({"recogniser": "PocketSphinx 5", "utterances": 173, "wer": 47.03, "cer": 23.45}))
    assert main(["card", "--model", str(hub_folder), "--eval", str(eval_json), "--ood-eval", str(ood_json),
                 "--peer-eval", str(peer_json)]) == 0
    text = (hub_folder / "README.md").read_text()
    section = text[text.index("## Out of domain: real human speech"):text.index("## Limitations")]
    assert "| this model, full depth | 101.77 | - |" in section
    assert "| PocketSphinx 5 | 47.03 | 23.45 |" in section and "The same 173 utterances" in section
    capsys.readouterr()
    assert main(["card", "--model", str(hub_folder), "--eval", str(eval_json), "--peer-eval", str(peer_json)]) == 2
    assert "--peer-eval needs --ood-eval" in capsys.readouterr().err


def test_card_shows_the_lm_beside_greedy_and_the_peer_on_real_speech(hub_folder, tmp_path, capsys):
    eval_json, ood_json, ood_lm_json = tmp_path / "eval.json", tmp_path / "ood.json", tmp_path / "ood_lm.json"
    peer_json = tmp_path / "peer.json"
    eval_json.write_text(json.dumps(RESULT))
    ood = {**RESULT, "final_wer": 99.03, "final_cer": 57.77, "num_utterances": 173,  # every row has a CER then
           "exits": [{**row, "cer": 60.0} for row in RESULT["exits"]],
           "sweep": [{**row, "cer": 60.0} for row in RESULT["sweep"]], "oracle": {**RESULT["oracle"], "cer": 55.0}}
    ood_json.write_text(json.dumps(ood))
    decoder = {"name": "lm", "beam_width": 32, "alpha": 0.5, "beta": 1.5, "language_model": "m/language_model"}
    ood_lm_json.write_text(json.dumps({**ood, "final_wer": 80.5, "final_cer": 55.25, "decoder": decoder}))
    peer_json.write_text(json.dumps({"recogniser": "PocketSphinx 5", "utterances": 173, "wer": 47.03, "cer": 23.45}))
    assert main(["card", "--model", str(hub_folder), "--eval", str(eval_json), "--ood-eval", str(ood_json),
                 "--ood-lm-eval", str(ood_lm_json), "--peer-eval", str(peer_json)]) == 0
    text = (hub_folder / "README.md").read_text()
    section = text[text.index("## Out of domain: real human speech"):text.index("## Limitations")]
    assert ("| this model, full depth, greedy | 99.03 | 57.77 |\n"
            "| this model, full depth, n-gram LM (beam 32) | 80.50 | 55.25 |\n"
            "| PocketSphinx 5 | 47.03 | 23.45 |") in section
    real_speech = ModelCard.load(hub_folder / "README.md").data.to_dict()["model-index"][0]["results"][1]
    assert [metric["value"] for metric in real_speech["metrics"]] == [99.03, 80.5]
    for arguments, message in [(["--ood-lm-eval", str(ood_lm_json)], "--ood-lm-eval needs --ood-eval"),
                               (["--ood-eval", str(ood_json), "--ood-lm-eval", str(ood_json)],
                                "--ood-lm-eval " + str(ood_json) + " was decoded greedily")]:
        capsys.readouterr()
        assert main(["card", "--model", str(hub_folder), "--eval", str(eval_json), *arguments]) == 2
        assert message in capsys.readouterr().err


def test_card_writes_only_the_model_folder_unless_output_is_named(hub_folder, tmp_path, monkeypatch, capsys):
    """Run from the repository root without --output, `hubert-ee card` used to replace the shipped model_card.md."""
    eval_json = tmp_path / "eval.json"
    eval_json.write_text(json.dumps(RESULT))
    before = repository_status("models", "model_card.md")
    monkeypatch.chdir(REPOSITORY_ROOT)
    assert main(["card", "--model", str(hub_folder), "--eval", str(eval_json)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {hub_folder / 'README.md'}"
    assert repository_status("models", "model_card.md") == before
    assert "- shipped operating point:" in (hub_folder / "README.md").read_text()
    with pytest.raises(SystemExit) as stopped:  # --output naming a folder: refused before anything is written
        main(["card", "--model", str(hub_folder), "--eval", str(eval_json), "--output", str(tmp_path)])
    assert stopped.value.code == 2 and "is a folder" in capsys.readouterr().err


def test_push_uploads_exactly_the_hub_files(hub_folder, tmp_path, monkeypatch):
    eval_json = tmp_path / "eval.json"
    eval_json.write_text(json.dumps(RESULT))
    write_card(hub_folder, eval_json, tmp_path / "card.md")
    (hub_folder / "stray.tmp").write_text("not for the Hub")
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs["private"]))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            return "https://hub/commit/1"

    monkeypatch.setattr(push_module, "HfApi", FakeApi)
    assert main(["push", "--model", str(hub_folder), "--repo-id", "me/ee", "--private"]) == 0
    upload = calls[-1][1]
    assert calls[1] == ("create_repo", "me/ee", True) and upload["repo_id"] == "me/ee"
    files = set(upload["allow_patterns"])
    assert {"config.json", "configuration_hubert_ee.py", "modeling_hubert_ee.py", "vocab.json",
            "tokenizer_config.json", "README.md", "model.safetensors"} <= files
    assert "stray.tmp" not in files and all((hub_folder / name).is_file() for name in files)


def test_push_refuses_a_folder_without_card_or_code(hub_folder, capsys):
    (hub_folder / "modeling_hubert_ee.py").unlink()
    assert main(["push", "--model", str(hub_folder), "--repo-id", "me/ee", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "modeling_hubert_ee.py" in err and "README.md" in err


def test_push_without_network_prints_one_line_and_exits_2():
    """No Hub (an address nothing listens on), and HF_HUB_OFFLINE unset: one line naming the failure, not a
    traceback; what would be uploaded is listed first."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "models" / "hubert-ee-compact-synth"
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="5")
    result = subprocess.run([sys.executable, "-m", "hubert_ee.cli", "push", "--model", str(shipped), "--repo-id",
                             "someone/hubert-ee"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("hubert-ee push: error: could not reach the Hugging Face Hub (ConnectError")
    assert "files from" in result.stdout


def test_the_card_records_every_training_session_and_the_totals():
    from hubert_ee.card import training_history_lines

    history = {"sessions": [
        {"session": 0, "date": "2026-11-01", "steps": 0, "speech_hours": 34, "note": "from scratch",
         "dev": [{"step": 0, "speech_hours": 34, "cer": 46.15, "wer": 92.2}]},
        {"session": 1, "date": "2026-11-29", "steps": 1800, "speech_hours": 15.08, "note": "continued",
         "dev": [{"step": 600, "speech_hours": 5, "cer": 45.7, "wer": 93}, {"step": 1800, "speech_hours": 15.08,
                                                                              "cer": 40.35, "wer": 89}],
         "real_speech": {"cer": 65.81, "wer": 103.67}},
    ]}  # fmt: skip
    text = "\n".join(training_history_lines(history, "learning_curve.png"))
    assert "2 training session(s) so far, 1,800 optimiser steps, 49.08 hours of speech" in text
    assert "| 0 | 2026-11-01 | 0 | 34 | 46.15 |  | from scratch |" in text
    assert "| 1 | 2026-11-29 | 1,800 | 15.08 | 40.35 | 65.81 | continued |" in text
    assert "![learning curve: dev CER against hours of speech](learning_curve.png)" in text


def _evaluation_of(folder, **changes) -> dict:
    """`RESULT` as `hubert-ee evaluate` writes it for the model in `folder` (geometry and weights), then `changes`."""
    from hubert_ee.loading import folder_identity

    return {**RESULT, **folder_identity(folder), **changes}


@pytest.mark.parametrize("changes", [{"num_hidden_layers": 12}, {"exit_layers": [2, 4, 6, 8, 10]},
                                     {"vocab_size": 40}, {"weights_sha256": "0" * 64}])
def test_card_refuses_an_evaluation_of_another_model(hub_folder, tmp_path, capsys, changes):
    """`hubert-ee card --model A --eval B.json` with B evaluating another model (other layers, exits, vocabulary
    or weights) used to write a card mixing A's geometry with B's numbers."""
    (tmp_path / "eval.json").write_text(json.dumps(_evaluation_of(hub_folder)))
    (tmp_path / "other.json").write_text(json.dumps(_evaluation_of(hub_folder, **changes)))
    for flags in (["--eval", str(tmp_path / "other.json")],
                  ["--eval", str(tmp_path / "eval.json"), "--ood-eval", str(tmp_path / "other.json")]):
        assert main(["card", "--model", str(hub_folder), *flags]) == 2
        err = capsys.readouterr().err
        field = next(iter(changes))
        assert err.count("\n") == 1 and "is an evaluation of another model than" in err and field in err, err
        assert "hubert-ee evaluate --model" in err
        assert not (hub_folder / "README.md").exists()  # nothing written
    assert main(["card", "--model", str(hub_folder), "--eval", str(tmp_path / "eval.json")]) == 0


def test_push_refuses_a_card_that_describes_other_weights(hub_folder, tmp_path, capsys):
    """The card records the geometry and weights it was written for; `push` (also `--dry-run`) refuses a folder
    whose weights or geometry changed since, e.g. a card copied beside another model."""
    from safetensors.torch import load_file, save_file

    (tmp_path / "eval.json").write_text(json.dumps(_evaluation_of(hub_folder)))
    write_card(hub_folder, tmp_path / "eval.json")
    assert main(["push", "--model", str(hub_folder), "--repo-id", "me/ee", "--dry-run"]) == 0
    capsys.readouterr()
    weights = load_file(hub_folder / "model.safetensors")
    weights["lm_head.bias"] = weights["lm_head.bias"] + 1.0
    save_file(weights, hub_folder / "model.safetensors", metadata={"format": "pt"})
    assert main(["push", "--model", str(hub_folder), "--repo-id", "me/ee", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "README.md describes another model than the folder holds: weights_sha256" in err
    assert "hubert-ee card --model" in err


def test_push_on_a_save_pretrained_folder_names_hubert_ee_card(tmp_path, capsys):
    from tests.conftest import tiny_model

    folder = tmp_path / "plain"
    tiny_model().save_pretrained(folder)
    build_processor().save_pretrained(folder)
    assert main(["push", "--model", str(folder), "--repo-id", "me/ee", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "README.md" in err and f"hubert-ee card --model {folder} --eval EVAL.json" in err, err


def test_push_with_hf_hub_offline_set_does_not_suggest_setting_it():
    """`HF_HUB_OFFLINE=1 hubert-ee push`: one line saying offline mode is why, not "set HF_HUB_OFFLINE=1"."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    shipped = Path(REPOSITORY_ROOT) / "models" / "hubert-ee-compact-synth"
    env = {**{key: value for key, value in os.environ.items() if key != "HF_TOKEN"}, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "hubert_ee.cli", "push", "--model", str(shipped), "--repo-id",
                             "someone/hubert-ee"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("hubert-ee push: error: the Hugging Face Hub is not used: HF_HUB_OFFLINE is set")
    assert "set HF_HUB_OFFLINE=1" not in result.stderr
