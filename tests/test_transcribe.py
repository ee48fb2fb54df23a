"""hubert_ee.transcribe: files and folders, unreadable inputs, exit codes, JSON output, long-audio windows."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from configuration_early_exit import ExitSetting

from hubert_ee.cli import main as cli_main
from hubert_ee import transcribe
from hubert_ee.inference import featurize
from hubert_ee.export import save_hub_folder
from hubert_ee.text import build_processor
from hubert_ee.transcribe import _kept_frames, expand_inputs, plan_windows, transcribe_files
from tests.conftest import noise, tiny_model

RATE = 16000
RESULT_KEYS = {"path", "text", "exit_layer", "time_ms", "duration_s", "num_chunks"}


def _sine(seconds, rate=16000, freq=300.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def model_and_processor():
    return tiny_model(), build_processor()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, model_and_processor):
    return save_hub_folder(*model_and_processor, tmp_path_factory.mktemp("transcribe") / "model")


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "a.wav", _sine(1.0), 16000)
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    stereo_8k = np.stack([_sine(0.8, 8000), (0.2 * rng.standard_normal(6400)).astype(np.float32)], axis=1)
    sf.write(folder / "b.flac", stereo_8k, 8000)  # resampled to 16 kHz, downmixed
    sf.write(folder / "sub" / "c.ogg", _sine(0.6, freq=500.0), 16000)
    (folder / "notes.txt").write_text("not audio, skipped by the folder scan")
    (tmp_path / "x.wav").write_bytes(b"RIFF garbage that is not a wave file" * 10)
    return tmp_path


def test_expand_inputs(inputs, tmp_path):
    (tmp_path / "empty").mkdir()
    entries = expand_inputs([inputs / "a.wav", inputs / "folder", tmp_path / "empty", "missing.wav"])
    assert entries[0] == (str(inputs / "a.wav"), None)
    assert entries[1:3] == [(str(inputs / "folder" / "b.flac"), None), (str(inputs / "folder" / "sub" / "c.ogg"), None)]
    assert entries[3][0] == str(tmp_path / "empty") and "no audio files" in entries[3][1]
    assert entries[4] == ("missing.wav", None)  # reading reports it


def test_transcribe_files_reports_bad_inputs_and_transcribes_the_rest(model_and_processor, inputs):
    model, processor = model_and_processor
    paths = [inputs / "a.wav", inputs / "x.wav", inputs / "folder", inputs / "missing.flac"]
    results = transcribe_files(model, processor, paths, batch_size=2)
    assert [r["path"] for r in results] == [str(inputs / "a.wav"), str(inputs / "x.wav"),
                                            str(inputs / "folder" / "b.flac"), str(inputs / "folder" / "sub" / "c.ogg"),
                                            str(inputs / "missing.flac")]
    assert set(results[1]) == {"path", "error"} and "not a readable audio file" in results[1]["error"]
    assert set(results[4]) == {"path", "error"} and "not found" in results[4]["error"]
    for result in (results[0], results[2], results[3]):
        assert set(result) == RESULT_KEYS
        assert isinstance(result["text"], str)
        assert 1 <= result["exit_layer"] <= 4 and result["num_chunks"] == 1 and result["time_ms"] > 0
    assert results[2]["duration_s"] == pytest.approx(0.8, abs=1e-3)

    # the same as calling the model directly, file by file
    audio = sf.read(inputs / "a.wav", dtype="float32")[0]
    input_values, attention_mask = featurize(processor, [audio], torch.device("cpu"))
    direct = model.generate(input_values, attention_mask)
    assert results[0]["text"] == processor.batch_decode(direct.sequences)[0]
    assert results[0]["exit_layer"] == int(direct.exit_layer[0])


def test_settings_reach_the_model(model_and_processor, inputs):
    model, processor = model_and_processor
    full = transcribe_files(model, processor, [inputs / "a.wav", inputs / "folder"],
                            exit_setting=ExitSetting(early_exit=False))
    assert [r["exit_layer"] for r in full] == [4, 4, 4]
    first = transcribe_files(model, processor, [inputs / "a.wav"],
                             exit_setting=ExitSetting(criterion="patience", patience=1))
    assert first[0]["exit_layer"] == 1
    with pytest.raises(TypeError, match="must be an ExitSetting"):
        transcribe_files(model, processor, [inputs / "a.wav"], exit_setting={"exit_threshold": 0.5})


def test_windows_tile_long_audio():
    rate, hop = 16000, 320
    windows = plan_windows(35 * rate, 20 * rate, 2 * rate)
    assert windows == [(0, 20 * rate), (15 * rate, 35 * rate)]
    assert plan_windows(10 * rate, 20 * rate, 2 * rate) == [(0, 10 * rate)]
    windows = plan_windows(61 * rate + 123, 20 * rate, 2 * rate)
    assert windows[0][0] == 0 and windows[-1][1] == 61 * rate + 123
    assert all(end - start == 20 * rate for start, end in windows)
    # kept frames: contiguous, no gaps, no overlaps, in sample-position terms
    positions = []
    for index, (start, end) in enumerate(windows):
        first, last = _kept_frames(windows, index, (end - start) // hop, hop)
        positions.extend(start + hop * f for f in range(first, last))
    steps = np.diff(positions)
    assert steps.min() > 0 and steps.max() <= hop
    assert positions[0] == 0 and positions[-1] >= windows[-1][1] - 2 * hop


def test_long_audio_is_transcribed_in_windows(model_and_processor, tmp_path):
    model, processor = model_and_processor
    rng = np.random.default_rng(1)
    sf.write(tmp_path / "long.wav", (0.3 * rng.standard_normal(16000 * 35)).astype(np.float32), 16000)
    sf.write(tmp_path / "short.wav", _sine(1.5), 16000)
    results = transcribe_files(model, processor, [tmp_path / "long.wav", tmp_path / "short.wav"], batch_size=4)
    long = results[0]
    assert long["num_chunks"] == 2 and len(long["chunk_exit_layers"]) == 2
    assert long["exit_layer"] == pytest.approx(np.mean(long["chunk_exit_layers"]))
    assert long["duration_s"] == pytest.approx(35.0) and isinstance(long["text"], str)
    assert results[1]["num_chunks"] == 1 and "chunk_exit_layers" not in results[1]


def test_command_output_json_and_exit_codes(model_folder, inputs, tmp_path, capsys):
    out = tmp_path / "out.json"
    code = cli_main(["transcribe", "--model", str(model_folder), str(inputs / "a.wav"), str(inputs / "x.wav"),
                            str(inputs / "folder"), str(inputs / "nope.wav"), "--json", str(out),
                            "--batch-size", "2", "--exit-threshold", "0.7", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    assert str(inputs / "x.wav") in captured.err and str(inputs / "nope.wav") in captured.err
    assert "2 of 5 input(s) failed" in captured.err
    lines = captured.out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(str(inputs / "a.wav")) and "exit layer" in lines[0]
    assert " ms)" in lines[0]
    report = json.loads(out.read_text())
    assert set(report) == {"model", "num_hidden_layers", "settings", "decoder", "num_succeeded", "num_failed", "results"}
    assert report["decoder"] == {"name": "greedy"}
    assert report["num_succeeded"] == 3 and report["num_failed"] == 2
    assert report["settings"]["exit_threshold"] == 0.7 and report["settings"]["exit_criterion"] == "confidence"
    assert report["settings"]["early_exit"] is True
    assert [("error" in r) for r in report["results"]] == [False, True, False, False, True]

    assert cli_main(["transcribe", "--model", str(model_folder), str(inputs / "a.wav"), "--no-early-exit"]) == 0
    assert "exit layer 4/4" in capsys.readouterr().out
    assert cli_main(["transcribe", "--model", str(model_folder), str(inputs / "x.wav"), str(inputs / "nope.wav")]) == 2


def test_an_unwritable_json_path_stops_the_command_before_any_work(model_folder, inputs, monkeypatch, capsys):
    """`--json` naming a folder used to transcribe every file and then lose the results to IsADirectoryError."""

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded although --json cannot be written")

    monkeypatch.setattr(transcribe, "load_model_and_processor", never)
    (inputs / "results").mkdir()
    with pytest.raises(SystemExit) as stopped:
        cli_main(["transcribe", "--model", str(model_folder), str(inputs / "a.wav"), "--json", str(inputs / "results")])
    assert stopped.value.code == 2
    assert f"argument --json: {inputs / 'results'} is a folder" in capsys.readouterr().err


def test_command_refuses_a_confidence_threshold_outside_0_1(model_folder, inputs, capsys):
    code = cli_main(["transcribe", "--model", str(model_folder), str(inputs / "a.wav"), "--exit-threshold", "1.5"])
    assert code == 2
    assert "--exit-threshold 1.5: a confidence threshold is a probability, in [0, 1]" in capsys.readouterr().err
    # entropy thresholds are in nats: above 1 is fine
    assert cli_main(["transcribe", "--model", str(model_folder), str(inputs / "a.wav"), "--exit-criterion",
                     "entropy", "--exit-threshold", "1.5"]) == 0


def test_command_without_model_and_without_default(inputs, monkeypatch, capsys):
    import hubert_ee

    monkeypatch.delattr(hubert_ee, "DEFAULT_MODEL", raising=False)
    assert cli_main(["transcribe", str(inputs / "a.wav")]) == 2
    assert "no --model given, and there is no default model" in capsys.readouterr().err


@pytest.fixture
def broken_inputs(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    sf.write(folder / "good.wav", noise(1.0, seed=5), RATE, subtype="PCM_16")
    raw = (folder / "good.wav").read_bytes()
    (folder / "header_only.wav").write_bytes(raw[:44])
    (folder / "cut_in_middle.wav").write_bytes(raw[: 44 + RATE])  # half of the declared 1 s of samples
    (folder / "header_cut.wav").write_bytes(raw[:30])
    (folder / "notes_renamed.wav").write_text("these are my notes, not audio\n" * 20)
    (folder / "empty.wav").write_bytes(b"")
    sf.write(folder / "too_short.wav", noise(30 / RATE, seed=6), RATE)
    nan = noise(0.5, seed=7)
    nan[10] = np.nan
    sf.write(folder / "nan.wav", nan, RATE, subtype="FLOAT")
    t = np.arange(44100) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.1 * np.sin(2 * np.pi * 330 * t)], axis=1)
    sf.write(folder / "stereo_44k.wav", stereo.astype(np.float32), 44100)  # resampled and downmixed
    (folder / "phone.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(200))  # a format libsndfile lacks
    (folder / "readme.txt").write_text("not audio: the folder scan ignores it")
    (tmp_path / "movie.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    return tmp_path


def test_transcribe_cli_reports_every_bad_file_and_transcribes_the_rest(model_folder, broken_inputs, capsys,
                                                                       caplog):
    folder, out = broken_inputs / "recordings", broken_inputs / "out.json"
    missing, movie = broken_inputs / "missing.wav", broken_inputs / "movie.mp4"
    with caplog.at_level(logging.WARNING, logger="hubert_ee.data"):
        code = cli_main(["transcribe", "--model", str(model_folder), str(missing), str(folder), str(movie),
                     "--json", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1  # some failed, some succeeded
    results = {result["path"]: result for result in json.loads(out.read_text())["results"]}
    expected_errors = {
        missing: "file not found",
        folder / "header_only.wav": "truncated WAV file: its header declares 16000 samples (1.00 s) but only 0",
        folder / "header_cut.wav": "not a readable audio file",
        folder / "notes_renamed.wav": "not a readable audio file (Error opening",
        folder / "empty.wav": "the file is empty (0 bytes)",
        folder / "too_short.wav": "audio too short: 30 samples at 16000 Hz, the model needs at least 65 (4 ms)",
        folder / "nan.wav": "the audio contains 1 NaN/Inf sample(s)",
        folder / "phone.m4a": "unsupported audio format .m4a",
        movie: "Format not recognised",
    }
    assert set(results) == {str(path) for path in expected_errors} | {
        str(folder / name) for name in ("good.wav", "cut_in_middle.wav", "stereo_44k.wav")}
    for path, fragment in expected_errors.items():
        result = results[str(path)]
        assert set(result) == {"path", "error"} and fragment in result["error"], result
        assert f"error: {path}: " in captured.err  # stderr names the file too
    for name in ("good.wav", "cut_in_middle.wav", "stereo_44k.wav"):
        result = results[str(folder / name)]
        assert "error" not in result and isinstance(result["text"], str) and 1 <= result["exit_layer"] <= 4
        assert str(folder / name) in captured.out
    assert results[str(folder / "stereo_44k.wav")]["duration_s"] == pytest.approx(1.0, abs=1e-3)
    cut = results[str(folder / "cut_in_middle.wav")]  # transcribed as far as it goes, and flagged
    assert cut["duration_s"] == pytest.approx(0.5, abs=1e-3)
    assert cut["warning"].startswith("truncated WAV file: its header declares 16000 samples (1.00 s) but only 8000")
    assert "warning" not in results[str(folder / "good.wav")]
    assert any("cut_in_middle.wav" in record.getMessage() and "truncated" in record.getMessage()
               for record in caplog.records)
    assert f"{len(expected_errors)} of {len(results)} input(s) failed" in captured.err


def test_transcribe_cli_when_nothing_can_be_read(model_folder, tmp_path, capsys):
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "a.txt").write_text("x")
    code = cli_main(["transcribe", "--model", str(model_folder), str(tmp_path / "only_text"),
                     str(tmp_path / "nope.wav")])
    assert code == 2  # none succeeded
    err = capsys.readouterr().err
    assert "no audio files" in err and "nope.wav: file not found" in err


def test_transcribe_cli_bad_model_folder(tmp_path, model_folder, capsys):
    audio = tmp_path / "a.wav"
    sf.write(audio, noise(0.5), RATE)
    # a mistyped folder is reported as such at once (not tried as a Hub id, with retries and a network error)
    assert cli_main(["transcribe", "--model", str(tmp_path / "no_such_model"), str(audio)]) == 2
    assert f"error: model folder {tmp_path / 'no_such_model'} does not exist" in capsys.readouterr().err
    no_processor = tmp_path / "no_processor"
    shutil.copytree(model_folder, no_processor)
    for name in ("vocab.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json"):
        (no_processor / name).unlink(missing_ok=True)
    assert cli_main(["transcribe", "--model", str(no_processor), str(audio)]) == 2
    assert "No processor (tokenizer + feature extractor) could be loaded" in capsys.readouterr().err


def test_lm_decoding_of_stitched_windows_and_the_decoder_flag(model_and_processor, model_folder, inputs, tmp_path,
                                                              capsys):
    """Windows are stitched as log-probabilities, so the LM decodes a long file once; a short file's LM transcript
    is the decoder's on the model's logits; `--decoder lm` on a folder without an LM is a usage error."""
    import shutil

    import torch

    from hubert_ee.decoding import build_decoder
    from hubert_ee.inference import featurize
    from hubert_ee.language_model import build_arpa, save_language_model

    model, processor = model_and_processor
    folder = tmp_path / "with-lm"
    shutil.copytree(model_folder, folder)
    save_language_model(folder, build_arpa(["A CAT SAT", "THE DOG RAN"] * 3, tmp_path / "2gram.arpa", order=2))
    decoder = build_decoder("lm", folder, processor, model.config.pad_token_id, beam_width=4)
    rng = np.random.default_rng(2)
    sf.write(tmp_path / "long.wav", (0.3 * rng.standard_normal(16000 * 35)).astype(np.float32), 16000)
    long, short = transcribe_files(model, processor, [tmp_path / "long.wav", inputs / "a.wav"], decoder=decoder)
    assert long["num_chunks"] == 2 and isinstance(long["text"], str)
    values, mask = featurize(processor, [_sine(1.0)], "cpu")
    with torch.inference_mode():
        logits = model.generate(values, mask).logits
    assert short["text"] == decoder.decode(logits, None)[0]
    assert cli_main(["transcribe", "--model", str(model_folder), "--decoder", "lm", str(inputs / "a.wav")]) == 2
    assert "no language_model/ directory" in capsys.readouterr().err
