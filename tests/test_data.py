"""Tests of hubert_ee.data: loading speech corpora offline, decoding, collation."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import datasets
from datasets import Audio, Dataset, DatasetDict

from hubert_ee.data import (
    AudioReadError,
    DataCollatorCTCWithPadding,
    HubDatasetUnavailableError,
    load_speech_dataset,
    prepare_for_ctc,
    read_audio_file,
    to_mono_float32,
)
from hubert_ee.text import build_processor, normalize_text

REAL_SPEECH_DEV = Path(__file__).resolve().parents[2] / "shared/data/real-speech-dev"


def _sine(n: int, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(n) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_metadata(folder: Path, rows: list[dict], fieldnames: list[str]) -> None:
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames)
        w.writeheader()
        w.writerows(rows)


@pytest.fixture
def audiofolder(tmp_path: Path) -> Path:
    """WAV/FLAC, 8 kHz/16 kHz, mono/stereo, float/int16 fixtures with a metadata.csv."""
    root = tmp_path / "af"
    (root / "audio").mkdir(parents=True)
    # 16 kHz mono float WAV, 1.0 s
    sf.write(root / "audio/a.wav", _sine(16000, 16000), 16000, subtype="FLOAT")
    # 8 kHz stereo int16 FLAC, 0.5 s
    st = np.stack([_sine(4000, 8000), _sine(4000, 8000, amp=0.25)], axis=1)
    sf.write(root / "audio/b.flac", (st * 32767).astype(np.int16), 8000, subtype="PCM_16")
    # 16 kHz stereo int16 WAV with constant channels 0.25 and 0.75 -> mono 0.5
    const = np.stack([np.full(800, 8192, np.int16), np.full(800, 24576, np.int16)], axis=1)
    sf.write(root / "audio/c.wav", const, 16000, subtype="PCM_16")
    _write_metadata(
        root,
        [
            {"file_name": "audio/a.wav", "transcription": "Hello, world!", "speaker": "s1"},
            {"file_name": "audio/b.flac", "transcription": "It's 1491.", "speaker": "s2"},
            {"file_name": "audio/c.wav", "transcription": "", "speaker": "s1"},
        ],
        ["file_name", "transcription", "speaker"],
    )
    return root


def test_audiofolder_loading_and_resampling(audiofolder: Path):
    ds = load_speech_dataset(str(audiofolder), sampling_rate=16000)
    assert {"audio", "text", "id", "speaker"} <= set(ds.column_names)
    assert "file_name" not in ds.column_names and "transcription" not in ds.column_names
    assert ds["id"] == ["a", "b", "c"]
    assert ds["text"] == ["Hello, world!", "It's 1491.", ""]
    assert ds["speaker"] == ["s1", "s2", "s1"]

    a, b, c = ds[0]["audio"], ds[1]["audio"], ds[2]["audio"]
    for x in (a, b, c):
        assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 1
    assert a.shape[0] == 16000
    np.testing.assert_allclose(a, _sine(16000, 16000), atol=1e-6)
    # 0.5 s at 8 kHz -> 8000 samples at 16 kHz; downmix = mean of the channels (amp 0.375)
    assert abs(b.shape[0] - 8000) <= 1
    assert 0.33 < np.abs(b[1000:-1000]).max() < 0.42
    # int16 -> float in [-1, 1], stereo averaged
    np.testing.assert_allclose(c, 0.5, atol=1e-4)


def test_audiofolder_other_rate_and_max_samples(audiofolder: Path):
    ds = load_speech_dataset(str(audiofolder), sampling_rate=8000, max_samples=2)
    assert len(ds) == 2
    assert abs(ds[0]["audio"].shape[0] - 8000) <= 1  # 1 s at 16 kHz -> 8 kHz
    assert ds[1]["audio"].shape[0] == 4000  # already 8 kHz


def test_audiofolder_text_column_choice(tmp_path: Path):
    root = tmp_path / "cv"
    root.mkdir()
    sf.write(root / "x.wav", _sine(1600, 16000), 16000)
    _write_metadata(root, [{"file_name": "x.wav", "sentence": "a b", "note": "n"}], ["file_name", "sentence", "note"])
    assert load_speech_dataset(str(root))["text"] == ["a b"]
    ds = load_speech_dataset(str(root), text_column="note")
    assert ds["text"] == ["n"]
    with pytest.raises(ValueError, match="nope"):
        load_speech_dataset(str(root), text_column="nope")


def test_audiofolder_split_subfolder(audiofolder: Path, tmp_path: Path):
    parent = tmp_path / "splits"
    parent.mkdir()
    audiofolder.rename(parent / "test")
    ds = load_speech_dataset(str(parent), split="test")
    assert len(ds) == 3
    with pytest.raises(ValueError, match="neither a saved dataset"):
        load_speech_dataset(str(parent))


def test_save_to_disk_roundtrip_audio_feature(audiofolder: Path, tmp_path: Path):
    files = [str(audiofolder / "audio/a.wav"), str(audiofolder / "audio/b.flac")]
    ds = Dataset.from_dict({"audio": files, "text": ["one", "two"], "speaker": ["s1", "s2"]})
    ds = ds.cast_column("audio", Audio())
    out = tmp_path / "saved"
    DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(str(out))

    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    train = load_speech_dataset(str(out), split="train")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # no cache files written there
    assert train["text"] == ["one", "two"]
    assert train["id"] == ["a", "b"]
    np.testing.assert_allclose(train[0]["audio"], _sine(16000, 16000), atol=1e-6)
    assert abs(train[1]["audio"].shape[0] - 8000) <= 1
    assert len(load_speech_dataset(str(out), split="test")) == 1
    with pytest.raises(ValueError, match="several splits.*--split"):
        load_speech_dataset(str(out))
    with pytest.raises(ValueError, match="validation"):
        load_speech_dataset(str(out), split="validation")


def test_save_to_disk_roundtrip_array_dict(tmp_path: Path):
    x16 = _sine(3200, 16000)
    x8 = (_sine(800, 8000) * 32767).astype(np.int16)  # integer PCM in the dict
    ds = Dataset.from_dict(
        {
            "audio": [{"array": x16, "sampling_rate": 16000}, {"array": x8, "sampling_rate": 8000}],
            "sentence": ["first one", "second"],
            "id": ["u1", "u2"],
        }
    )
    out = tmp_path / "saved_dict"
    ds.save_to_disk(str(out))
    loaded = load_speech_dataset(str(out))
    assert loaded["id"] == ["u1", "u2"]  # existing ids are kept
    assert loaded["text"] == ["first one", "second"]
    np.testing.assert_allclose(loaded[0]["audio"], x16, atol=1e-6)
    y = loaded[1]["audio"]
    # Arrow stored the int16 row as float (the column is float32): scaled back as PCM
    assert abs(y.shape[0] - 1600) <= 1 and 0.4 < np.abs(y).max() <= 0.6

    # an all-int16 column keeps its integer type and is scaled to [-1, 1]
    out16 = tmp_path / "saved_int16"
    Dataset.from_dict({"audio": [{"array": x8, "sampling_rate": 8000}], "text": ["x"]}).save_to_disk(str(out16))
    z = load_speech_dataset(str(out16), sampling_rate=8000)[0]["audio"]
    np.testing.assert_allclose(z, x8 / 32768.0, atol=1e-6)


def test_missing_path_errors(tmp_path: Path):
    missing = tmp_path / "no_such_corpus"
    with pytest.raises(FileNotFoundError, match="no_such_corpus"):
        load_speech_dataset(str(missing))
    with pytest.raises(FileNotFoundError, match="nope"):
        load_speech_dataset("./data/nope")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ValueError, match="metadata.csv"):
        load_speech_dataset(str(empty))


def test_metadata_lists_missing_file(audiofolder: Path):
    (audiofolder / "audio/b.flac").unlink()
    with pytest.raises(FileNotFoundError, match="b.flac"):
        load_speech_dataset(str(audiofolder))


def test_corrupt_file_error_names_the_file(audiofolder: Path):
    (audiofolder / "audio/b.flac").write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioReadError, match="b.flac"):
        load_speech_dataset(str(audiofolder))


def test_unreadable_files_can_be_left_out_and_reported(audiofolder: Path):
    (audiofolder / "audio/b.flac").write_bytes(b"this is not audio at all" * 10)
    unreadable: list = []
    ds = load_speech_dataset(str(audiofolder), unreadable=unreadable)
    assert ds["id"] == ["a", "c"] and len(ds[1]["audio"]) == 800
    assert set(ds.column_names) == {"audio", "text", "id", "speaker"}
    assert len(unreadable) == 1 and "b.flac" in unreadable[0]["path"] and unreadable[0]["error"]
    unreadable.clear()
    assert len(load_speech_dataset(str(audiofolder), unreadable=unreadable, max_samples=1)) == 1 and not unreadable


def test_read_audio_file_errors(tmp_path: Path):
    good = tmp_path / "good.wav"
    sf.write(good, _sine(1600, 16000), 16000, subtype="PCM_16")
    x = read_audio_file(good, 16000)
    assert x.dtype == np.float32 and x.shape == (1600,)

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])  # header cut in the middle
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"\x00\x01garbage" * 50)
    no_frames = tmp_path / "no_frames.wav"
    sf.write(no_frames, np.zeros(0, np.float32), 16000)
    for p in (empty, truncated, garbage, no_frames, tmp_path / "missing.wav", tmp_path):
        with pytest.raises(AudioReadError) as ei:
            read_audio_file(p, 16000)
        assert str(p) in str(ei.value) and ei.value.reason
        assert isinstance(ei.value, ValueError)


def test_nan_audio_rejected(tmp_path: Path):
    x = _sine(1600, 16000)
    x[100] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioReadError, match="NaN"):
        read_audio_file(p, 16000)
    x[100] = np.inf
    with pytest.raises(AudioReadError, match="NaN/Inf"):
        to_mono_float32(x, 16000, 16000)
    # and inside a dataset: the row is named
    out = tmp_path / "nan_ds"
    Dataset.from_dict({"audio": [{"array": x, "sampling_rate": 16000}], "text": ["a"]}).save_to_disk(str(out))
    with pytest.raises(AudioReadError, match="row 0"):
        load_speech_dataset(str(out))


def test_to_mono_float32_int_and_layouts():
    y = to_mono_float32(np.array([16384, -32768, 0], dtype=np.int16), 16000, 16000)
    np.testing.assert_allclose(y, [0.5, -1.0, 0.0])
    y = to_mono_float32(np.array([[0.2, 0.4, 0.6], [0.0, 0.0, 0.0]], np.float32), 16000, 16000)
    np.testing.assert_allclose(y, [0.1, 0.2, 0.3], atol=1e-7)  # (channels, frames) guessed
    y = to_mono_float32(np.array([[0.2, 0.0]], np.float32), 16000, 16000, channels_first=False)
    np.testing.assert_allclose(y, [0.1], atol=1e-7)
    with pytest.raises(AudioReadError, match="no samples"):
        to_mono_float32(np.zeros(0, np.float32), 16000, 16000)


def test_hub_id_offline_gives_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # so that no local folder named like the id exists
    with pytest.raises(HubDatasetUnavailableError) as ei:
        load_speech_dataset("librispeech_asr", split="test", config="clean")
    msg = str(ei.value)
    assert "librispeech_asr" in msg and "Hub" in msg and "offline" in msg and "local folder" in msg
    assert isinstance(ei.value, ConnectionError)


def test_collator_pads_inputs_and_labels():
    processor = build_processor()
    collator = DataCollatorCTCWithPadding(processor=processor, padding=True)
    features = [
        {"input_values": np.ones(10, np.float32).tolist(), "labels": [5, 6, 7]},
        {"input_values": np.full(6, 2.0, np.float32), "labels": np.array([8])},
    ]
    batch = collator(features)
    assert tuple(batch["input_values"].shape) == (2, 10)
    assert tuple(batch["attention_mask"].shape) == (2, 10)
    assert batch["attention_mask"].tolist() == [[1] * 10, [1] * 6 + [0] * 4]
    assert batch["input_values"][1, 6:].abs().sum().item() == 0.0
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]
    assert str(batch["labels"].dtype) == "torch.int64"


def test_prepare_for_ctc(audiofolder: Path):
    processor = build_processor()
    ds = load_speech_dataset(str(audiofolder))
    prepared = prepare_for_ctc(ds, processor)
    # the third row has an empty transcript and is dropped
    assert len(prepared) == 2
    assert {"input_values", "labels", "input_length", "id"} <= set(prepared.column_names)
    assert "audio" not in prepared.column_names
    assert prepared["input_length"] == [16000, ds[1]["audio"].shape[0]]
    iv = np.asarray(prepared[0]["input_values"], dtype=np.float32)
    assert iv.shape == (16000,)
    if processor.feature_extractor.do_normalize:
        assert abs(iv.mean()) < 1e-3 and abs(iv.std() - 1) < 1e-2
    decoded = processor.tokenizer.decode(prepared[0]["labels"], group_tokens=False)
    assert decoded == normalize_text("Hello, world!") == "HELLO WORLD"
    batch = DataCollatorCTCWithPadding(processor)([prepared[0], prepared[1]])
    assert batch["input_values"].shape[1] == 16000


@pytest.mark.skipif(not REAL_SPEECH_DEV.is_dir(), reason="shared/data/real-speech-dev not present")
def test_real_speech_dev():
    ds = load_speech_dataset(str(REAL_SPEECH_DEV), max_samples=3)
    assert len(ds) == 3
    assert {"audio", "text", "id", "speaker", "source"} <= set(ds.column_names)
    for row in ds:
        assert row["audio"].dtype == np.float32 and row["audio"].ndim == 1
        assert 16000 * 0.5 < row["audio"].shape[0] < 16000 * 40
        assert row["text"] and normalize_text(row["text"])
    assert ds[0]["id"] == Path(ds[0]["id"]).stem


def test_hub_loading_path_mocked(monkeypatch: pytest.MonkeyPatch, audiofolder: Path, tmp_path: Path):
    """The Hub branch: load_dataset is called for real ids; Audio bytes are decoded here."""
    calls = []
    ds = Dataset.from_dict(
        {"audio": [str(audiofolder / "audio/b.flac")], "text": ["HI"], "id": ["1-2-3"], "file": ["b.flac"]}
    ).cast_column("audio", Audio())
    ds.save_to_disk(str(tmp_path / "hubcopy"))  # embeds the bytes, as Hub parquet files do
    embedded = datasets.load_from_disk(str(tmp_path / "hubcopy"))

    def fake_load_dataset(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        return DatasetDict({"test": embedded, "train": embedded})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.chdir(tmp_path)
    out = load_speech_dataset("librispeech_asr", split="test", config="clean", max_samples=5)
    assert calls == [("librispeech_asr", "clean", "test")]
    assert out["id"] == ["1-2-3"] and out["text"] == ["HI"] and out["file"] == ["b.flac"]
    assert abs(out[0]["audio"].shape[0] - 8000) <= 1

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'x' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(HubDatasetUnavailableError, match="could not be fetched|Could not fetch"):
        load_speech_dataset("someone/some_dataset", split="test")


def test_prepare_for_ctc_num_proc(audiofolder: Path):
    processor = build_processor()
    ds = load_speech_dataset(str(audiofolder))
    prepared = prepare_for_ctc(ds, processor, num_proc=2)
    assert len(prepared) == 2
    assert processor.tokenizer.decode(prepared[1]["labels"], group_tokens=False) == normalize_text("It's 1491.")


def test_parallel_decoding_gives_the_same_audio_and_the_same_errors(audiofolder: Path):
    serial = load_speech_dataset(str(audiofolder))
    parallel = load_speech_dataset(str(audiofolder), num_proc=2)
    assert list(parallel["id"]) == list(serial["id"])
    assert all(np.array_equal(a, b) for a, b in zip(parallel["audio"], serial["audio"]))
    (audiofolder / "audio" / "a.wav").write_bytes(b"RIFF not really a wav file")
    with pytest.raises(AudioReadError, match="a.wav"):
        load_speech_dataset(str(audiofolder), num_proc=2)


def test_decode_audio_reads_every_storage_at_its_own_rate_or_resampled(tmp_path):
    """One decoder for every storage of an audio value: bytes, a path, an array, a torchcodec decoder."""
    import io as _io
    from types import SimpleNamespace

    from hubert_ee.data import decode_audio

    x = (0.1 * np.sin(np.arange(800) / 5)).astype(np.float32)
    buffer = _io.BytesIO()
    sf.write(buffer, np.stack([x, x], axis=1), 8000, format="WAV", subtype="FLOAT")
    sf.write(tmp_path / "a.wav", x, 8000, subtype="FLOAT")
    decoder = SimpleNamespace(get_all_samples=lambda: SimpleNamespace(data=np.stack([x, x]), sample_rate=8000))
    for value in ({"bytes": buffer.getvalue(), "path": None}, str(tmp_path / "a.wav"), {"path": "a.wav"},
                  {"array": x, "sampling_rate": 8000}, decoder):
        samples, rate = decode_audio(value, base_dir=tmp_path)
        assert rate == 8000 and np.allclose(samples, x, atol=1e-6), value
        samples, rate = decode_audio(value, 16000, base_dir=tmp_path)
        assert rate == 16000 and abs(samples.size - 1600) <= 2
    with pytest.raises(AudioReadError, match="neither 'bytes', 'path' nor 'array'"):
        decode_audio({})


def test_prepare_for_ctc_labels_lower_case_transcripts_like_upper_case_ones(audiofolder: Path, tmp_path: Path):
    """An audiofolder whose `transcription` values are lower case trains on the same labels as upper case."""
    lower = tmp_path / "lower"
    shutil.copytree(audiofolder, lower)
    rows = list(csv.DictReader(open(audiofolder / "metadata.csv", newline="", encoding="utf-8")))
    _write_metadata(lower, [{**row, "transcription": row["transcription"].lower()} for row in rows],
                    list(rows[0]))
    processor = build_processor()
    labels = [prepare_for_ctc(load_speech_dataset(str(folder)), processor)["labels"] for folder in (audiofolder, lower)]
    assert labels[0] == labels[1] and all(processor.tokenizer.unk_token_id not in row for row in labels[1])
