"""Offline synthetic English speech corpus for HuBERT-EE.

Everything here runs without network access, from Debian packages only:

===============  ==========================  ==================================
what             Debian package (apt name)   used for
===============  ==========================  ==================================
`espeak-ng`    `espeak-ng`               formant TTS, 8 English accents
`flite`        `flite`                   CMU Flite TTS, voices kal16, awb,
                                             rms, slt
`festival`     `festival`,               Festival: diphone voices kal, ked
                 `festvox-kallpc16k`,      and the HTS voice cmu_us_slt_arctic
                 `festvox-kdlpc16k`,
                 `festvox-us-slt-hts`
fortunes         `fortunes`                sentences from
                                             `/usr/share/games/fortunes`
WordNet          `wordnet-base`            quoted example sentences in the
                                             glosses of `/usr/share/wordnet`
===============  ==========================  ==================================

plus the PyPI packages `soxr` (resampling), `soundfile`, `numpy`,
`datasets`, `tqdm` and `num2words` (via `normalize_text`).

Texts
    Fortunes are split into sentences (attribution lines `-- Author` are
    dropped), WordNet examples are the double-quoted parts of the glosses.
    Each sentence is normalised with `hubert_ee.text.normalize_text`;
    sentences with code-like characters, very long tokens, or fewer than 3 /
    more than 30 words are dropped, and duplicates (after normalisation) are
    removed.  The TTS engines are fed the *normalised* text (lower-cased, so
    that all-caps words are not spelled out as acronyms), so the label is
    exactly what is spoken.  `sentences=` (`--sentences FILE`, plain text
    or `.gz`, one sentence per line) replaces both sources, e.g. on a machine
    without the Debian packages: the lines go through the same filter and
    normaliser, and a file holding `load_sentences` in order gives the
    same corpus as the packages (see `read_sentences`).

Voices and audio
    The TTS engines and their voices are `hubert_ee.tts`'s (`synthesize`); each utterance is resampled to 16 kHz,
    trimmed and, in train, noised with `hubert_ee.audio_effects`.

Augmentation (training split only; `augment=False` turns it off)
    speed perturbation 0.9 / 1.0 / 1.1 (uniform; done by resampling, so pitch
    moves too, as in Kaldi's speed perturbation) and, with probability 0.5,
    additive white or pink noise at an SNR drawn uniformly from 10-30 dB.  The
    `augmentation` column describes what was done, e.g.
    `"speed=1.1,noise=pink,snr=18.3"` or `"none"`.

Splits
    The normalised sentences are shuffled with the seed and *split by text
    before synthesis*: dev and test get their own disjoint sentences (enough
    for the requested hours, at most 15 % of the pool each), train the rest.
    `test_voices` (default `espeak-ng:en-gb-scotland` and `flite:rms`)
    are never used for train or dev; in test, half the utterances (see
    `test_heldout_fraction`) use a held-out voice and the rest use training
    voices, so the `voice` column lets one score seen and unseen voices
    apart.  Dev uses the training voices only and, like test, is never
    augmented.  Texts are reused (with new voices) within a split when it needs
    more audio than it has sentences.

Storage (no torchcodec / FFmpeg needed)
    `audio` is a plain struct ``{"array": list<float32>, "sampling_rate":
    int32}` -- not a `datasets.Audio`` feature -- so reading it back needs no
    audio decoder at all: `ds[i]["audio"]["array"]` is the waveform (a list,
    or a numpy array under `ds.with_format("numpy")`).  Use
    `decode_audio` to get `(np.float32 array, sampling_rate)`; it also
    accepts `datasets.Audio` rows (decoded dicts, or `{"bytes", "path"}`
    with `decode=False`, decoded with soundfile).  Float32 costs 64 kB per
    second (about 230 MB per hour); the splits are written batch by batch
    straight to Arrow (64 rows at a time, audio as one numpy buffer, because
    a `Dataset.from_generator` of numpy rows converts every sample through
    Python, which would take longer than the synthesis) so memory use does
    not grow with the corpus.

Determinism
    Every utterance's text, voice, settings, augmentation and noise come from
    `numpy.random.default_rng([seed, split, index])` drawn in the main
    process, workers are pure functions of their job (a worker's festival
    process gives every utterance the samples a fresh `text2wave` gives it),
    results are consumed in order and a split stops at the first utterance
    that reaches its hour budget -- so the same seed gives the same bytes
    whatever `num_proc` is.

Command line: `hubert-ee synth --out data/synth --hours-train 1 ...` (see
`add_synth_arguments`), or `python -m hubert_ee.synth ...`.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import multiprocessing.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .arguments import str_list
from .audio_effects import add_noise, to_16k, trim_silence
from .text import SAMPLING_RATE, normalize_text
from .tts import (
    ENGINE_PACKAGES, ENGINE_PIP_PACKAGES, ENGINES, FLITE_VOICES, MissingSourceError, Voice, close_festival,
    engine_installed,
    espeak_variants, list_voices, parse_voice, synthesize,
)

__all__ = [
    "MissingSourceError", "APT_PACKAGES", "TEXT_SOURCES", "DEFAULT_TEST_VOICES", "missing_packages", "check_sources",
    "missing_pip_packages", "fortune_sentences", "wordnet_sentences", "load_sentences", "read_sentences", "split_texts", "synth_job",
    "build_corpus", "decode_audio", "load_corpus", "summarize", "format_summary", "corpus_features",
    "add_synth_arguments", "run_synth",
]

FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")

TEXT_SOURCES = ("fortunes", "wordnet")
SPLITS = ("train", "dev", "test")

#: Debian package that provides each engine / text source.
APT_PACKAGES = {**ENGINE_PACKAGES, "fortunes": "fortunes", "wordnet": "wordnet-base"}

DEFAULT_TEST_VOICES = ("espeak-ng:en-gb-scotland", "flite:rms")

ESPEAK_RATE = (130, 200)   # words per minute (-s)
ESPEAK_PITCH = (30, 70)    # 0-99 (-p)

FLITE_STRETCH = (0.85, 1.2)
FLITE_F0_FACTOR = (0.85, 1.2)
FESTIVAL_STRETCH = (0.85, 1.2)
PIPER_STRETCH = (0.85, 1.2)      # length_scale
# Piper's noise comes from a random generator inside its ONNX graph, seeded once per session and advanced by every
# call, so with any noise an utterance's audio would depend on what its worker spoke before; without noise the
# same job gives the same samples in any process, as the other engines do.
PIPER_NOISE_SCALE = PIPER_NOISE_W_SCALE = 0.0

ESPEAK_VARIANT_SETS = ("standard", "all")  # `tts.ESPEAK_VARIANTS`; with `tts.ESPEAK_MORE_VARIANTS`

SPEEDS = (0.9, 1.0, 1.1)
NOISE_PROB = 0.5
SNR_DB = (10.0, 30.0)

MIN_WORDS, MAX_WORDS = 3, 30
MAX_DURATION = 20.0   # seconds; longer utterances are dropped
SECONDS_PER_WORD = 0.4  # rough TTS speaking rate, only used to size dev/test texts
MAX_HELDOUT_TEXT_FRACTION = 0.15  # of the sentence pool, for dev and for test each



# --------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------

def _source_present(name: str) -> bool:
    if name in ENGINES:
        return engine_installed(name)
    if name == "fortunes":
        return FORTUNE_DIR.is_dir() and any(_fortune_files(FORTUNE_DIR))
    if name == "wordnet":
        return any((WORDNET_DIR / f"data.{p}").is_file() for p in ("noun", "verb", "adj", "adv"))
    raise ValueError(f"unknown engine / text source {name!r}; "
                     f"known: {', '.join((*ENGINES, *TEXT_SOURCES))}")


def missing_packages(engines: Iterable[str] = ENGINES,
                     text_sources: Iterable[str] = TEXT_SOURCES) -> list[str]:
    """Debian packages (apt names) that are needed by `engines` and
    `text_sources` but not installed."""
    return [package for n in (*engines, *text_sources) if not _source_present(n)
            for package in APT_PACKAGES.get(n, "").split()]


def missing_pip_packages(engines: Iterable[str] = ENGINES) -> list[str]:
    """Python packages (PyPI names) that are needed by `engines` but not installed."""
    return [package for n in engines if not _source_present(n) for package in ENGINE_PIP_PACKAGES.get(n, "").split()]


def check_sources(engines: Iterable[str] = ENGINES,
                  text_sources: Iterable[str] = TEXT_SOURCES) -> None:
    """Raise `MissingSourceError` naming the missing Debian and Python packages."""
    engines = tuple(engines)
    missing, missing_pip = missing_packages(engines, text_sources), missing_pip_packages(engines)
    if missing or missing_pip:
        raise MissingSourceError.for_packages("synthetic corpus sources", missing, missing_pip)


def _fortune_files(fortune_dir: Path) -> list[Path]:
    """Fortune databases (the plain files; their `.u8` UTF-8 twin is preferred)."""
    out = []
    for p in sorted(fortune_dir.iterdir()):
        if p.is_file() and "." not in p.name and p.name not in ("ascii-art", "translate-me"):
            out.append(p)
    return out


_RE_OVERSTRIKE = re.compile(r".\x08")
_RE_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_RE_ATTRIBUTION = re.compile(r"^\s*(--|\u2014|~~)")
_RE_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_RE_CODE_LIKE = re.compile(r"[{}<>|\\=_#@*^~\[\]]|://|\.\w+\(")
_RE_WS = re.compile(r"\s+")


def _keep_sentence(raw: str, min_words: int, max_words: int) -> str:
    """Normalised sentence if it is usable, else `""`."""
    if _RE_CODE_LIKE.search(raw):
        return ""
    letters = sum(c.isalpha() for c in raw)
    if letters < 0.6 * len(raw.replace(" ", "")):
        return ""
    norm = normalize_text(raw)
    words = norm.split()
    if not (min_words <= len(words) <= max_words):
        return ""
    if max(len(w) for w in words) > 18:
        return ""
    return norm


def fortune_sentences(fortune_dir: str | os.PathLike = FORTUNE_DIR,
                      min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """Normalised sentences from the `fortunes` package, in file order."""
    fortune_dir = Path(fortune_dir)
    if not fortune_dir.is_dir():
        raise MissingSourceError(f"{fortune_dir} not found: apt-get install -y {APT_PACKAGES['fortunes']}")
    out = []
    for path in _fortune_files(fortune_dir):
        u8 = path.with_name(path.name + ".u8")
        if u8.is_file():
            raw = u8.read_text(encoding="utf-8", errors="replace")
        else:
            raw = path.read_bytes().decode("latin-1")
        for fortune in re.split(r"^%\s*$", raw, flags=re.M):
            fortune = _RE_CONTROL.sub(" ", _RE_OVERSTRIKE.sub("", fortune))
            lines = []
            for line in fortune.splitlines():
                if _RE_ATTRIBUTION.match(line):
                    break  # "-- Author" and whatever follows it
                lines.append(line.strip())
            text = _RE_WS.sub(" ", " ".join(lines)).strip()
            for sent in _RE_SENTENCE_END.split(text):
                norm = _keep_sentence(sent, min_words, max_words)
                if norm:
                    out.append(norm)
    return out


def wordnet_sentences(wordnet_dir: str | os.PathLike = WORDNET_DIR,
                      min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """Normalised example sentences (the `"..."` parts of WordNet glosses)."""
    wordnet_dir = Path(wordnet_dir)
    files = [wordnet_dir / f"data.{p}" for p in ("noun", "verb", "adj", "adv")]
    files = [f for f in files if f.is_file()]
    if not files:
        raise MissingSourceError(f"WordNet data files not found in {wordnet_dir}: "
                                 f"apt-get install -y {APT_PACKAGES['wordnet']}")
    out = []
    quoted = re.compile(r'"([^"]+)"')
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(" "):
                    continue  # licence header
                _, sep, gloss = line.partition(" | ")
                if not sep:
                    continue
                for example in quoted.findall(gloss):
                    norm = _keep_sentence(example, min_words, max_words)
                    if norm:
                        out.append(norm)
    return out


@lru_cache(maxsize=8)
def _load_sentences_cached(text_sources: tuple[str, ...], min_words: int,
                           max_words: int) -> tuple[str, ...]:
    check_sources((), text_sources)
    seen: dict[str, None] = {}
    for source in text_sources:
        fn = {"fortunes": fortune_sentences, "wordnet": wordnet_sentences}[source]
        for s in fn(min_words=min_words, max_words=max_words):
            seen.setdefault(s, None)
    return tuple(seen)


def load_sentences(text_sources: Sequence[str] = TEXT_SOURCES,
                   min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """All usable normalised sentences, de-duplicated, in a deterministic order.

    Raises `MissingSourceError` (naming the Debian package) when a
    source is not installed.
    """
    for s in text_sources:
        if s not in TEXT_SOURCES:
            raise ValueError(f"unknown text source {s!r}; known: {', '.join(TEXT_SOURCES)}")
    return list(_load_sentences_cached(tuple(text_sources), int(min_words), int(max_words)))


def _clean_sentences(lines: Iterable[str], min_words: int = MIN_WORDS,
                     max_words: int = MAX_WORDS) -> list[str]:
    seen: dict[str, None] = {}
    for line in lines:
        norm = _keep_sentence(line.strip(), min_words, max_words) if line.strip() else ""
        if norm:
            seen.setdefault(norm, None)
    return list(seen)


def read_sentences(path: str | os.PathLike, min_words: int = MIN_WORDS,
                   max_words: int = MAX_WORDS) -> list[str]:
    """Sentences from a UTF-8 text file, one per line (gzip-compressed if the
    name ends in `.gz`), to use instead of the Debian text sources.

    Every line goes through the same filter and normaliser as fortunes and
    WordNet (see the module docstring); empty lines, rejected lines and
    duplicates are dropped, the order is kept.  Already normalised sentences
    come back unchanged, so a file written from `load_sentences` gives
    exactly the Debian sources' pool (and corpus, for the same seed).
    """
    import gzip

    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return _clean_sentences(f, min_words, max_words)


def _estimated_seconds(text: str) -> float:
    return 0.3 + SECONDS_PER_WORD * (text.count(" ") + 1)


def split_texts(texts: Sequence[str], seed: int, hours: dict[str, float]) -> dict[str, list[str]]:
    """Shuffle `texts` with `seed` and split them into disjoint per-split lists.

    dev and test each get sentences until their estimated duration is 1.25x
    the requested hours (at most `MAX_HELDOUT_TEXT_FRACTION` of the pool,
    at least one sentence when their hours are > 0); train gets the rest.
    """
    order = np.random.default_rng([int(seed), 7919]).permutation(len(texts))
    pool = [texts[i] for i in order]
    out: dict[str, list[str]] = {}
    pos = 0
    cap = max(1, int(MAX_HELDOUT_TEXT_FRACTION * len(pool)))
    for split in ("test", "dev"):
        want = 1.25 * 3600.0 * float(hours.get(split, 0.0))
        chosen: list[str] = []
        total = 0.0
        while want > 0 and pos < len(pool) and total < want and len(chosen) < cap:
            chosen.append(pool[pos])
            total += _estimated_seconds(pool[pos])
            pos += 1
        out[split] = chosen
    out["train"] = pool[pos:]
    for split in SPLITS:
        if hours.get(split, 0.0) > 0 and not out[split]:
            raise ValueError(f"not enough sentences ({len(texts)}) to give {split} its own texts")
    return {s: out[s] for s in SPLITS}


def synth_job(job: dict) -> dict | None:
    """Synthesise one utterance described by `job` (see `_make_job`).

    Pure function of `job` (safe in a worker process).  Returns the row
    (audio as a float32 numpy array) or `None` if the engine failed or the
    result is empty / longer than `job["max_duration"]`.
    """
    try:
        x, sr = synthesize(job["text"].lower(), job["engine"], job["voice"],
                           variant=job.get("variant", ""), rate=job.get("rate"),
                           pitch=job.get("pitch"), stretch=job.get("stretch"),
                           f0_mean=job.get("f0_mean"), noise_scale=job.get("noise_scale"),
                           noise_w_scale=job.get("noise_w_scale"))
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print(f"[synth] skipped {job['id']}: {e}", file=sys.stderr)
        return None
    y = trim_silence(to_16k(x, sr, job.get("speed", 1.0)))
    if len(y) < int(0.2 * SAMPLING_RATE):
        return None
    if job.get("noise"):
        rng = np.random.default_rng(job["noise_seed"])
        y = add_noise(y, rng, job["snr"], job["noise"])
    peak = float(np.max(np.abs(y)))
    if peak > 0.99:
        y = y * np.float32(0.99 / peak)
    y = y.astype(np.float32, copy=False)
    duration = len(y) / SAMPLING_RATE
    if duration > job.get("max_duration", MAX_DURATION):
        return None
    return {
        "id": job["id"],
        "audio": {"array": y, "sampling_rate": SAMPLING_RATE},
        "text": job["text"],
        "engine": job["engine"],
        "voice": job["voice"],
        "voice_settings": job["voice_settings"],
        "augmentation": job["augmentation"],
        "duration": float(duration),
    }


# --------------------------------------------------------------------------
# corpus
# --------------------------------------------------------------------------

def corpus_features():
    """`datasets.Features` of the corpus (audio as a plain float32 struct)."""
    from datasets import Features, List, Value

    return Features({
        "id": Value("string"),
        "audio": {"array": List(Value("float32")), "sampling_rate": Value("int32")},
        "text": Value("string"),
        "engine": Value("string"),
        "voice": Value("string"),
        "voice_settings": Value("string"),
        "augmentation": Value("string"),
        "duration": Value("float32"),
    })


@lru_cache(maxsize=4)
def _text_order(seed: int, split_id: int, epoch: int, n: int) -> np.ndarray:
    """Order in which a split visits its `n` texts in pass `epoch`."""
    return np.random.default_rng([seed, split_id, 1_000_003, epoch]).permutation(n)


def _make_job(split: str, index: int, texts: Sequence[str], voices: dict[str, list[Voice]],
              heldout: dict[str, list[Voice]], seed: int, augment: bool,
              heldout_fraction: float, max_duration: float, more_variants: bool = False) -> dict:
    split_id = SPLITS.index(split)
    n = len(texts)
    epoch, pos = divmod(index, n)
    text = texts[int(_text_order(seed, split_id, epoch, n)[pos])]
    rng = np.random.default_rng([seed, split_id, index])
    engines = sorted(e for e in set(voices) | set(heldout)
                     if voices.get(e) or (split == "test" and heldout.get(e)))
    engine = engines[int(rng.integers(len(engines)))]
    use_heldout = split == "test" and heldout.get(engine) and (
        not voices.get(engine) or rng.random() < heldout_fraction)
    pool = heldout[engine] if use_heldout else voices[engine]
    voice = pool[int(rng.integers(len(pool)))]
    job = {"id": f"{split}-{index:07d}", "text": text, "engine": engine,
           "voice": voice.name, "max_duration": max_duration}
    if engine == "espeak-ng":
        variants = espeak_variants(more_variants)
        job["variant"] = variants[int(rng.integers(len(variants)))]
        job["rate"] = int(rng.integers(ESPEAK_RATE[0], ESPEAK_RATE[1] + 1))
        job["pitch"] = int(rng.integers(ESPEAK_PITCH[0], ESPEAK_PITCH[1] + 1))
        job["voice_settings"] = (f"variant={job['variant'] or 'default'},"
                                 f"rate={job['rate']},pitch={job['pitch']}")
    elif engine == "festival":
        job["stretch"] = round(float(rng.uniform(*FESTIVAL_STRETCH)), 3)
        job["voice_settings"] = f"stretch={job['stretch']}"
    elif engine == "piper":
        job["stretch"] = round(float(rng.uniform(*PIPER_STRETCH)), 3)
        job["noise_scale"], job["noise_w_scale"] = PIPER_NOISE_SCALE, PIPER_NOISE_W_SCALE
        job["voice_settings"] = f"stretch={job['stretch']},noise=0"
    else:
        job["stretch"] = round(float(rng.uniform(*FLITE_STRETCH)), 3)
        factor = float(rng.uniform(*FLITE_F0_FACTOR))
        base_f0 = FLITE_VOICES.get(voice.name)
        job["f0_mean"] = round(base_f0 * factor, 1) if base_f0 else None
        job["voice_settings"] = f"stretch={job['stretch']},f0={job['f0_mean'] or 'default'}"
    # augmentation draws happen for every split so that turning it on/off
    # does not change the other draws
    speed = SPEEDS[int(rng.integers(len(SPEEDS)))]
    noisy = rng.random() < NOISE_PROB
    kind = ("white", "pink")[int(rng.integers(2))]
    snr = round(float(rng.uniform(*SNR_DB)), 1)
    noise_seed = int(rng.integers(2**63 - 1))
    parts = []
    if augment and split == "train":
        job["speed"] = speed
        if speed != 1.0:
            parts.append(f"speed={speed}")
        if noisy:
            job.update(noise=kind, snr=snr, noise_seed=noise_seed)
            parts.append(f"noise={kind},snr={snr}")
    job["augmentation"] = ",".join(parts) or "none"
    return job


def _mp_context():
    # forkserver: workers start from a clean single-threaded server, not as forks of a caller that may run threads
    # (torch's pools, tqdm's monitor), which can leave a forked worker or the pool's shutdown deadlocked.
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else methods[0])


def _split_rows(split: str, texts: list[str], voices: dict, heldout: dict, seed: int,
                augment: bool, heldout_fraction: float, max_duration: float,
                seconds: float, num_proc: int, progress: bool,
                deadline: float | None = None, status: dict | None = None,
                more_variants: bool = False) -> Iterator[dict]:
    """Rows of `split` (see `_write_split`): synthesise it until
    `seconds` of audio, in order, with a pool of `num_proc` processes, or
    until `time.monotonic()` passes `deadline` (after at least one row;
    `status["cut"]` is then set to True)."""
    from tqdm.auto import tqdm

    batch = max(32, 16 * num_proc)
    total, index, failures = 0.0, 0, 0
    pool = _mp_context().Pool(num_proc) if num_proc > 1 else None  # before tqdm's thread
    bar = None
    try:
        # progress in whole seconds of audio synthesised (rate = audio s per wall s)
        bar = tqdm(total=int(math.ceil(seconds)), unit="s", desc=f"synth {split} (s of audio)",
                   disable=not progress)
        def out_of_time() -> bool:
            cut = deadline is not None and total > 0 and time.monotonic() >= deadline
            if cut and status is not None:
                status["cut"] = True
            return cut

        while total < seconds and not out_of_time():
            jobs = [_make_job(split, i, texts, voices, heldout, seed, augment,
                              heldout_fraction, max_duration, more_variants)
                    for i in range(index, index + batch)]
            index += batch
            results = pool.imap(synth_job, jobs) if pool else map(synth_job, jobs)
            got, done = 0, False
            for row in results:  # always drained: an abandoned imap makes the pool's shutdown hang
                if row is None or done:
                    continue
                got += 1
                total += row["duration"]
                bar.update(min(int(total), bar.total) - bar.n)
                yield row
                done = total >= seconds or out_of_time()
            if got == 0:
                failures += 1
                if failures >= 3:
                    raise RuntimeError(f"synthesis of split {split} keeps failing; "
                                       "see the messages above")
    except BaseException:  # an error or an abandoned generator: stop the workers now
        if pool is not None:
            pool.terminate()
            pool.join()
            pool = None
        raise
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:  # normal end: every submitted job has been consumed, so a clean shutdown
            pool.close()
            pool.join()  # each worker ends its festival process as it exits
        close_festival()  # the one this process started when it synthesised itself (num_proc 1)


def _rows_to_table(rows: list[dict], schema):
    """A `pyarrow.Table` of corpus rows (`schema`: `corpus_features().arrow_schema`),
    the audio arrays concatenated into one buffer instead of converted sample by sample."""
    import pyarrow as pa

    arrays = [np.asarray(r["audio"]["array"], dtype=np.float32) for r in rows]
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    samples = pa.array(np.concatenate(arrays) if arrays else np.zeros(0, np.float32))
    audio = pa.StructArray.from_arrays(
        [pa.ListArray.from_arrays(pa.array(offsets), samples),
         pa.array([int(r["audio"]["sampling_rate"]) for r in rows], pa.int32())],
        fields=list(schema.field("audio").type))
    columns = [audio if f.name == "audio" else pa.array([r[f.name] for r in rows], f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _write_split(path: Path, rows: Iterable[dict], features, batch_size: int = 64):
    """Write `rows` to the Arrow stream file `path` (the format of `datasets`'
    cache files, with `features` in its metadata) `batch_size` rows at a time and
    return it as a memory-mapped `Dataset`."""
    import pyarrow as pa
    from datasets import Dataset

    schema = features.arrow_schema
    batch: list[dict] = []
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for row in rows:
            batch.append(row)
            if len(batch) == batch_size:
                writer.write_table(_rows_to_table(batch, schema))
                batch = []
        if batch:
            writer.write_table(_rows_to_table(batch, schema))
    return Dataset.from_file(str(path))


def summarize(dsd) -> dict:
    """Hours and utterances per split, and per split and engine / voice."""
    out: dict = {"splits": {}, "total_hours": 0.0, "total_utterances": 0}
    for split, ds in dsd.items():
        cols = ds.select_columns(["duration", "engine", "voice"]).to_dict()
        dur = np.asarray(cols["duration"], dtype=np.float64)
        per_engine: dict = {}
        per_voice: dict = {}
        for d, e, v in zip(dur, cols["engine"], cols["voice"]):
            pe = per_engine.setdefault(e, {"hours": 0.0, "utterances": 0})
            pe["hours"] += d / 3600
            pe["utterances"] += 1
            pv = per_voice.setdefault(f"{e}:{v}", {"hours": 0.0, "utterances": 0})
            pv["hours"] += d / 3600
            pv["utterances"] += 1
        out["splits"][split] = {
            "hours": float(dur.sum() / 3600), "utterances": int(len(dur)),
            "engines": {k: per_engine[k] for k in sorted(per_engine)},
            "voices": {k: per_voice[k] for k in sorted(per_voice)},
        }
        out["total_hours"] += float(dur.sum() / 3600)
        out["total_utterances"] += int(len(dur))
    return out


def format_summary(summary: dict) -> str:
    lines = [f"{'split':<6} {'engine':<10} {'hours':>8} {'utts':>7}"]
    for split, s in summary["splits"].items():
        lines.append(f"{split:<6} {'(all)':<10} {s['hours']:8.3f} {s['utterances']:7d}")
        for e, es in s["engines"].items():
            lines.append(f"{'':<6} {e:<10} {es['hours']:8.3f} {es['utterances']:7d}")
    lines.append(f"{'total':<6} {'':<10} {summary['total_hours']:8.3f} "
                 f"{summary['total_utterances']:7d}")
    return "\n".join(lines)


def build_corpus(out_dir: str | os.PathLike, hours_train: float = 1.0, hours_dev: float = 0.1,
                 hours_test: float = 0.1, seed: int = 0, num_proc: int | None = None,
                 augment: bool = True, engines: Sequence[str] = ENGINES,
                 test_voices: Sequence[str] | None = DEFAULT_TEST_VOICES,
                 text_sources: Sequence[str] = TEXT_SOURCES,
                 test_heldout_fraction: float = 0.5, max_duration: float = MAX_DURATION,
                 progress: bool = True, verbose: bool = True,
                 sentences: str | os.PathLike | Sequence[str] | None = None,
                 max_minutes: float | None = None, espeak_variants: str = "all", only_train: bool = False):
    """Synthesise the corpus and `save_to_disk` it at `out_dir`.

    Returns the `DatasetDict` (splits `train`/`dev`/`test`) re-loaded
    from `out_dir`.  The summary of hours and utterances per split, engine
    and voice (see `summarize`) is printed when `verbose`, written to
    `out_dir/synth_summary.json` and returned as the attribute
    `dsd.summary`.

    `hours_*` are targets: a split stops at the first utterance that reaches
    it; a split with 0 hours is left out.  `test_voices` are `engine:voice`
    (or unambiguous bare voice names) used only in test; voices of engines not
    in `engines` are ignored; `None` or `()` means no held-out voice.
    `out_dir` must be new, empty, or an earlier corpus (which is replaced).
    `sentences` (a text file, see `read_sentences`, or a list of
    sentences, cleaned the same way) replaces `text_sources`, whose Debian
    packages are then not needed.  `max_minutes` is a wall-clock budget
    (from the call): dev and test are then made first, in full, and train stops
    early (keeping at least one utterance) once the budget is spent -- a prefix
    of the corpus the same seed gives without it; the summary's
    `train_cut_by_time_budget` says whether that happened.
    """
    from datasets import load_from_disk

    t0 = time.time()
    deadline = None if max_minutes is None else time.monotonic() + 60.0 * float(max_minutes)
    engines = tuple(dict.fromkeys(engines))
    if not engines:
        raise ValueError("no engine given")
    text_sources, pool = _text_sources(engines, text_sources, sentences)
    num_proc = max(1, int(num_proc or os.cpu_count() or 1))
    hours = {"train": float(hours_train), "dev": float(hours_dev), "test": float(hours_test)}
    if any(h < 0 for h in hours.values()) or not any(h > 0 for h in hours.values()):
        raise ValueError(f"hours must be >= 0 and not all 0: {hours}")
    if espeak_variants not in ESPEAK_VARIANT_SETS:
        raise ValueError(f"espeak_variants must be one of {', '.join(ESPEAK_VARIANT_SETS)}, got {espeak_variants!r}")
    held, train_voices, heldout = _assign_voices(engines, test_voices, hours)
    if pool is None:
        pool = load_sentences(text_sources)
    texts = split_texts(pool, seed, hours)
    if only_train:
        if hours["train"] <= 0:
            raise ValueError("only_train needs hours_train > 0")
        hours = {**hours, "dev": 0.0, "test": 0.0}

    out_dir = Path(out_dir)
    _clear_out_dir(out_dir)
    cut = _synthesise_splits(
        out_dir, texts, hours, deadline, voices=train_voices, heldout=heldout, seed=int(seed),
        augment=bool(augment), heldout_fraction=float(test_heldout_fraction), max_duration=float(max_duration),
        num_proc=num_proc, progress=progress, more_variants=espeak_variants == "all",
    )  # fmt: skip

    dsd = load_from_disk(str(out_dir))
    summary = summarize(dsd)
    summary.update(
        seed=int(seed), augment=bool(augment), engines=list(engines),
        test_voices=[v.key for v in held], text_sources=list(text_sources),
        texts_per_split={s: len(t) for s, t in texts.items()},
        train_voices=sorted(v.key for vs in train_voices.values() for v in vs),
        wall_seconds=round(time.time() - t0, 1), num_proc=num_proc,
        time_budget_minutes=max_minutes, espeak_variants=espeak_variants, only_train=bool(only_train),
        train_cut_by_time_budget=cut)
    with open(out_dir / "synth_summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    if verbose:
        _print_corpus_summary(summary, out_dir, hours["train"], max_minutes, num_proc)
    dsd.summary = summary
    return dsd


def _text_sources(engines, text_sources, sentences) -> tuple[list[str] | Sequence[str], list[str] | None]:
    """The text sources a corpus names, and its sentence pool where `sentences` gives it (`None`: the pool
    is loaded from `text_sources` later); checks that the engines and sources are installed."""
    if sentences is None:
        check_sources(engines, text_sources)
        return text_sources, None
    if isinstance(sentences, (str, os.PathLike)):
        text_sources, pool = [f"file:{sentences}"], read_sentences(sentences)
    else:
        text_sources, pool = ["sentences"], _clean_sentences(sentences)
    check_sources(engines, ())
    return text_sources, pool


def _assign_voices(engines, test_voices, hours: dict):
    """`(held, train_voices, heldout)`: the held-out `Voice` list, and every voice by engine, split into
    those train and dev use and those only test uses (`test_voices` of engines not in `engines` are ignored)."""
    all_voices = list_voices(engines)
    held: list[Voice] = []
    for spec in test_voices or ():
        if ":" in spec and spec.split(":", 1)[0] not in engines:
            continue
        held.append(parse_voice(spec, all_voices))
    train_voices: dict[str, list[Voice]] = {}
    heldout: dict[str, list[Voice]] = {}
    for v in all_voices:
        (heldout if v in held else train_voices).setdefault(v.engine, []).append(v)
    for split in ("train", "dev"):
        if hours[split] > 0 and not train_voices:
            raise ValueError("every voice is held out for test; nothing left for train/dev")
    return held, train_voices, heldout


def _clear_out_dir(out_dir: Path) -> None:
    """Make way for a corpus at `out_dir`: an earlier corpus there, or an empty folder, is removed; anything
    else is refused (`FileExistsError`)."""
    if out_dir.exists():
        if (out_dir / "dataset_dict.json").is_file():
            shutil.rmtree(out_dir)
        elif out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        else:
            raise FileExistsError(f"{out_dir} exists and is not an earlier synthetic corpus")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def _synthesise_splits(out_dir: Path, texts: dict, hours: dict, deadline: float | None, **settings) -> bool:
    """Synthesise every split with hours into Arrow files beside `out_dir`, then `save_to_disk` them there;
    returns whether the deadline cut the training split. With a deadline dev and test come first, so that only
    train is cut. `settings` are `_split_rows`' own."""
    from datasets import DatasetDict

    features = corpus_features()
    tmp = Path(tempfile.mkdtemp(prefix=".synth-cache-", dir=out_dir.parent))
    try:
        splits, status = {}, {"cut": False}
        for split in SPLITS if deadline is None else ("dev", "test", "train"):
            if hours[split] <= 0:
                continue
            rows = _split_rows(split=split, texts=texts[split], seconds=3600.0 * hours[split],
                               deadline=deadline if split == "train" else None, status=status, **settings)
            splits[split] = _write_split(tmp / f"{split}.arrow", rows, features)
        DatasetDict({s: splits[s] for s in SPLITS if s in splits}).save_to_disk(str(out_dir))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return status["cut"]


def _print_corpus_summary(summary: dict, out_dir: Path, hours_train: float, max_minutes, num_proc: int) -> None:
    if summary["train_cut_by_time_budget"]:
        print(f"--max-minutes {max_minutes:g}: the training split was cut at "
              f"{summary['splits']['train']['hours']:.3f} of {hours_train:g} hours")
    print(format_summary(summary))
    audio_s = summary["total_hours"] * 3600
    print(f"synthesised {audio_s:.0f} s of audio in {summary['wall_seconds']:.0f} s "
          f"with {num_proc} processes -> {out_dir}")


def load_corpus(path: str | os.PathLike):
    """`datasets.load_from_disk` of a corpus written by `build_corpus`."""
    from datasets import load_from_disk

    return load_from_disk(str(path))


def decode_audio(example) -> tuple[np.ndarray, int]:
    """`(waveform as 1-D float32 numpy array, sampling_rate)` of one row (`{"audio": ...}`) or of its
    `audio` value, in any storage `hubert_ee.data.decode_audio` reads; multi-channel audio is averaged to mono,
    nothing is resampled."""
    from .data import decode_audio as decode_value  # datasets comes with data: only for who decodes

    audio = example["audio"] if isinstance(example, dict) and "audio" in example else example
    return decode_value(audio)


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------

def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `synth` options to `parser` (used by `hubert-ee synth`)."""
    parser.add_argument("--out", required=True,
                        help="output folder; the DatasetDict is saved there with save_to_disk "
                             "(an earlier corpus in it is replaced)")
    parser.add_argument("--hours-train", type=float, default=1.0,
                        help="hours of training audio to synthesise (default: 1.0)")
    parser.add_argument("--hours-dev", type=float, default=0.1,
                        help="hours of dev audio (training voices, unseen texts; default: 0.1)")
    parser.add_argument("--hours-test", type=float, default=0.1,
                        help="hours of test audio (unseen texts, half of it from the held-out "
                             "--test-voices; default: 0.1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; the same seed gives byte-identical audio (default: 0)")
    parser.add_argument("--num-proc", type=int, default=None,
                        help="synthesis processes (default: all CPU cores)")
    parser.add_argument("--no-augment", action="store_true",
                        help="no speed perturbation / additive noise on the training split")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"comma-separated TTS engines among {','.join(ENGINES)} (piper: the neural voice "
                             f"en_US-joe-medium, pip packages {ENGINE_PIP_PACKAGES['piper']}; "
                             f"default: {','.join(ENGINES)})")
    parser.add_argument("--espeak-variants", choices=ESPEAK_VARIANT_SETS, default="all",
                        help="espeak-ng voice variants: 'standard' (none, m1-m8, f1-f5, klatt-klatt4) or 'all' (also "
                             "the named ones: Andy, Annie, grandma, ...; default)")
    parser.add_argument("--only-train", action="store_true",
                        help="synthesise the training split only; --hours-dev/--hours-test still reserve their "
                             "sentences, so the corpus holds no dev or test sentence of the corpus the same seed "
                             "makes (extra training audio for an existing corpus)")
    parser.add_argument("--test-voices", default=",".join(DEFAULT_TEST_VOICES),
                        help="comma-separated ENGINE:VOICE held out of train and dev and used "
                             "only in test; '' or 'none' for none "
                             f"(default: {','.join(DEFAULT_TEST_VOICES)})")
    parser.add_argument("--sentences", default=None, metavar="FILE",
                        help="text file (plain, or gzip if it ends in .gz), one sentence per line, used "
                             "instead of the fortunes + WordNet sentences, whose Debian packages are then "
                             "not needed; lines are filtered and normalised the same way")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="wall-clock budget in minutes: dev and test are made first, in full, and "
                             "the training split stops early (keeping what was made) once it is spent "
                             "(default: none)")
    return parser


def _csv(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """A comma list of engines or voices; the word 'none' names none."""
    return tuple(item for item in str_list(value) if item.lower() != "none")


def run_synth(args: argparse.Namespace):
    """Run `build_corpus` from parsed `add_synth_arguments` options."""
    return build_corpus(
        args.out, hours_train=args.hours_train, hours_dev=args.hours_dev,
        hours_test=args.hours_test, seed=args.seed, num_proc=args.num_proc,
        augment=not args.no_augment, engines=_csv(args.engines),
        test_voices=_csv(args.test_voices), sentences=getattr(args, "sentences", None),
        max_minutes=getattr(args, "max_minutes", None), espeak_variants=args.espeak_variants,
        only_train=args.only_train)
