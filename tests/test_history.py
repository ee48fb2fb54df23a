"""hubert_ee.history, the training history: sessions read from trainer state, laid end to end on the learning
curve, plotted."""

import json

import pytest

from hubert_ee.cli import main
from hubert_ee.history import hours_to_reach, learning_curve, power_law_fit, read_run, real_speech_curve, session_ends


def write_state(run, step, log_history):
    folder = run / "checkpoints" / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": log_history}))


def test_a_run_gives_steps_hours_and_dev_points_from_its_newest_checkpoint(tmp_path):
    write_state(tmp_path, 10, [{"step": 5, "loss": 2.0, "speech_hours": 0.5}])
    write_state(tmp_path, 20, [{"step": 5, "loss": 2.0, "speech_hours": 0.5},
                               {"step": 10, "loss": 1.0, "speech_hours": 1.0},
                               {"step": 10, "eval_cer": 40.0, "eval_wer": 80.0},
                               {"step": 20, "loss": 0.5, "speech_hours": 2.0},
                               {"step": 20, "eval_cer": 30.0, "eval_wer": 70.0}])  # fmt: skip
    run = read_run(tmp_path)
    assert run["steps"] == 20 and run["speech_hours"] == 2.0
    assert run["dev"] == [{"step": 10, "speech_hours": 1.0, "cer": 40.0, "wer": 80.0},
                          {"step": 20, "speech_hours": 2.0, "cer": 30.0, "wer": 70.0}]


def test_a_finished_run_adds_its_final_evaluation_after_the_last_checkpoint(tmp_path):
    log = [{"step": 10, "loss": 1.0, "speech_hours": 1.0}, {"step": 10, "eval_cer": 40.0, "eval_wer": 80.0}]
    write_state(tmp_path, 10, log)
    final = {"global_step": 10, "log_history": log + [{"step": 10, "eval_cer": 35.0, "eval_wer": 75.0}]}
    (tmp_path / "checkpoints" / "trainer_state.json").write_text(json.dumps(final))
    assert [point["cer"] for point in read_run(tmp_path)["dev"]] == [40.0, 35.0]
    write_state(tmp_path, 20, log + [{"step": 20, "loss": 0.5, "speech_hours": 2.0}])  # trained on from there
    assert read_run(tmp_path)["steps"] == 20 and [point["cer"] for point in read_run(tmp_path)["dev"]] == [40.0]


def test_logs_without_speech_hours_count_the_given_speech_per_step(tmp_path):
    write_state(tmp_path, 20, [{"step": 10, "loss": 1.0}, {"step": 20, "loss": 0.5},
                               {"step": 20, "eval_cer": 30.0, "eval_wer": 70.0}])
    assert read_run(tmp_path, speech_seconds_per_step=360)["dev"][0]["speech_hours"] == 2.0


def test_a_run_resumed_from_logs_without_speech_hours_counts_on_top_of_them(tmp_path):
    write_state(tmp_path, 30, [{"step": 10, "loss": 1.0}, {"step": 20, "loss": 0.5, "speech_hours": 0.5},
                               {"step": 30, "loss": 0.4, "speech_hours": 1.0},
                               {"step": 30, "eval_cer": 30.0, "eval_wer": 70.0}])
    run = read_run(tmp_path, speech_seconds_per_step=360)
    assert run["speech_hours"] == 2.0 and run["dev"][0]["speech_hours"] == 2.0


def test_sessions_line_up_end_to_end_and_the_cli_plots_them(tmp_path, capsys):
    history = tmp_path / "history.json"
    result = tmp_path / "dev.json"
    result.write_text(json.dumps({"final_cer": 46.0, "final_wer": 92.0}))
    assert main(["history", "--history", str(history), "--session", "0", "--eval-json", str(result),
                 "--speech-hours", "34"]) == 0
    write_state(tmp_path / "run", 20, [{"step": 20, "loss": 0.5, "speech_hours": 2.0},
                                       {"step": 20, "eval_cer": 30.0, "eval_wer": 70.0}])
    plot = tmp_path / "curve.png"
    assert main(["history", "--history", str(history), "--session", "1", "--run", str(tmp_path / "run"),
                 "--note", "continued", "--plot", str(plot)]) == 0
    recorded = json.loads(history.read_text())
    assert [session["session"] for session in recorded["sessions"]] == [0, 1]
    assert learning_curve(recorded) == [(34.0, 46.0, 0), (36.0, 30.0, 1)]
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "2 session(s), 20 steps, 36.0 h of speech" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, message", [
    (["--session", "1"], "--session needs --run, --eval-json or --real-speech-eval"),
    (["--session", "1", "--eval-json", "x.json"], "--speech-hours"),
    (["--session", "1", "--run", "r", "--eval-json", "x.json"], "one of --run or --eval-json, not both"),
    (["--session", "1", "--real-speech-eval", "x.json"], "has no session 1: give --run or --eval-json too"),
])  # fmt: skip
def test_incomplete_history_commands_are_refused(tmp_path, capsys, arguments, message):
    assert main(["history", "--history", str(tmp_path / "h.json"), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_the_power_law_fit_of_session_ends_extrapolates_to_a_target(tmp_path, capsys):
    history = {"sessions": [
        {"session": 0, "speech_hours": 10.0, "dev": [{"speech_hours": 10.0, "cer": 40.0}],
         "real_speech": {"cer": 60.0}},
        {"session": 1, "speech_hours": 30.0, "dev": [{"speech_hours": 10.0, "cer": 35.0},   # a warm restart's bump
                                                    {"speech_hours": 30.0, "cer": 20.0}],
         "real_speech": {"cer": 30.0}},
    ]}
    assert session_ends(history) == [(10.0, 40.0), (40.0, 20.0)]
    a, b = power_law_fit(session_ends(history))
    assert b == pytest.approx(0.5) and a == pytest.approx(40.0 * 10 ** 0.5)  # CER halves when hours quadruple
    assert hours_to_reach((a, b), 10.0) == pytest.approx(160.0)
    assert hours_to_reach((a, 0.0), 10.0) == float("inf")
    with pytest.raises(ValueError, match="two sessions"):
        power_law_fit(session_ends(history)[:1])
    path = tmp_path / "history.json"
    path.write_text(json.dumps(history))
    plot = tmp_path / "curve.png"
    assert main(["history", "--history", str(path), "--target-cer", "10", "--target-real-cer", "15",
                 "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "dev CER 10 % at about 160 h of speech (120 h more than the 40.0 h so far)" in out
    assert "real-speech dev CER 15 % at about 160 h of speech (120 h more than the 40.0 h so far)" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_real_speech_points_sit_at_session_ends_and_can_be_added_to_a_recorded_session(tmp_path, capsys):
    history = tmp_path / "history.json"
    synthetic, real = tmp_path / "dev.json", tmp_path / "real.json"
    synthetic.write_text(json.dumps({"final_cer": 46.0, "final_wer": 92.0}))
    real.write_text(json.dumps({"final_cer": 65.8, "final_wer": 103.7, "num_utterances": 173, "dataset": "rs"}))
    assert main(["history", "--history", str(history), "--session", "0", "--eval-json", str(synthetic),
                 "--speech-hours", "34"]) == 0
    assert main(["history", "--history", str(history), "--session", "0", "--real-speech-eval", str(real)]) == 0
    write_state(tmp_path / "run", 20, [{"step": 20, "loss": 0.5, "speech_hours": 2.0},
                                       {"step": 20, "eval_cer": 30.0, "eval_wer": 70.0}])
    real.write_text(json.dumps({"final_cer": 50.0, "final_wer": 90.0, "num_utterances": 173, "dataset": "rs"}))
    plot = tmp_path / "curve.png"
    assert main(["history", "--history", str(history), "--session", "1", "--run", str(tmp_path / "run"),
                 "--real-speech-eval", str(real), "--plot", str(plot)]) == 0
    recorded = json.loads(history.read_text())
    assert recorded["sessions"][0]["dev"][0]["cer"] == 46.0  # adding the real-speech point kept the entry
    assert recorded["sessions"][0]["real_speech"]["utterances"] == 173
    assert real_speech_curve(recorded) == [(34.0, 65.8, 0), (36.0, 50.0, 1)]
    assert "session 1:   36.00 h  real-speech dev CER 50.00 %" in capsys.readouterr().out
    assert plot.read_bytes()[:4] == b"\x89PNG"
