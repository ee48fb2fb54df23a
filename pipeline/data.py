"""Loading speech corpora and preparing them for CTC fine-tuning.

Everything here works offline.  Audio is decoded with `soundfile` (libsndfile) directly,
*not* through the `datasets` `Audio` feature: `datasets` 5.x decodes audio with
`torchcodec` + FFmpeg, which may be missing.  Audio columns are therefore cast to
`Audio(decode=False)` and the stored bytes / paths are read here.

Conventions of every dataset returned by `load_speech_dataset`:

* `audio`: mono float32 samples in [-1, 1] (nominally) at the requested `sampling_rate`.
  The dataset is formatted so that `ds[i]["audio"]` is a `numpy.ndarray` (float32); the
  other columns come back as plain Python objects.  Multi-channel audio is downmixed to mono
  by averaging the channels.  Audio at another rate is resampled with `soxr` (the `soxr`
  PyPI package, "HQ" quality).  Integer PCM is scaled to float in [-1, 1].
* `text`: the raw transcript (not normalised; `prepare_for_ctc` and the metrics
  normalise with `hubert_ee.text.normalize_text`).
* `id`: an existing `id` column is kept; otherwise the file name stem of the audio file,
  or the row index (as a string) where no file name is known.
* all other columns of the source are kept unchanged.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf

import datasets
from datasets import Audio, Dataset, DatasetDict, Features, List, Value

from .loading import is_local_path
from .text import make_labels, normalize_text

logger = logging.getLogger(__name__)

__all__ = [
    "AudioReadError",
    "HubDatasetUnavailableError",
    "DataCollatorCTCWithPadding",
    "TEXT_COLUMN_CANDIDATES",
    "load_speech_dataset",
    "network_error_types",
    "prepare_for_ctc",
    "decode_audio",
    "read_audio_file",
    "to_mono_float32",
    "wav_truncation",
]

#: Transcript columns looked for, in this order, when `text_column` is not given.
TEXT_COLUMN_CANDIDATES: tuple[str, ...] = (
    "text",
    "transcription",
    "sentence",
    "transcript",
    "normalized_text",
)

_SAVED_DATASET_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")
# Where `_decode_dataset(keep_going=True)` notes an unreadable item: its file (and row) and the reason.
UNREADABLE_COLUMNS = ("_unreadable_source", "_unreadable_reason")
_AUDIOFOLDER_METADATA = ("metadata.csv", "metadata.jsonl")


class AudioReadError(ValueError):
    """An audio file (or in-memory audio) could not be read or is unusable.

    `source` names the file (or describes the in-memory item); `reason` says why.
    """

    def __init__(self, source: str, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"Cannot read audio {self.source}: {reason}")

    def __reduce__(self):  # pickled across worker processes (`num_proc`): rebuild from both arguments
        return type(self), (self.source, self.reason)


class HubDatasetUnavailableError(ConnectionError):
    """A dataset id could not be fetched from the Hugging Face Hub (offline or unreachable)."""


# ---------------------------------------------------------------------------------------------
# Audio decoding
# ---------------------------------------------------------------------------------------------

def _int_pcm_to_float(x: np.ndarray) -> np.ndarray:
    """Scale integer PCM to float32 in [-1, 1]."""
    if x.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128
        return (x.astype(np.float32) - 128.0) / 128.0
    info = np.iinfo(x.dtype)
    return (x.astype(np.float64) / float(-info.min)).astype(np.float32)


def _resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return x
    import soxr  # PyPI package "soxr"

    return np.asarray(soxr.resample(x, orig_sr, target_sr, quality="HQ"), dtype=np.float32)


def to_mono_float32(
    samples: Any,
    orig_sampling_rate: int,
    sampling_rate: int | None = 16000,
    source: str = "<array>",
    channels_first: bool | None = None,
) -> np.ndarray:
    """Turn decoded samples into a finite mono float32 vector at `sampling_rate` (None: left at its own rate).

    `samples` may be 1-D (mono) or 2-D; 2-D arrays are taken as `(frames, channels)`
    (soundfile's layout), or as `(channels, frames)` when `channels_first` is true; with
    `channels_first=None` the layout is guessed (channels first when the first axis is the
    short one, at most 8).  Channels are averaged.  Integer PCM is scaled to [-1, 1].  Raises
    `AudioReadError` for empty audio or NaN/Inf samples.
    """
    x = np.asarray(samples)
    if x.dtype == object:
        try:
            x = np.asarray(x.tolist(), dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise AudioReadError(source, f"samples are not a numeric array ({e})") from None
    if x.dtype.kind in "iu":
        x = _int_pcm_to_float(x)
    elif x.dtype.kind == "b" or x.dtype.kind not in "f":
        raise AudioReadError(source, f"unsupported sample type {x.dtype}")
    if x.ndim == 2:
        if channels_first is None:
            channels_first = x.shape[0] <= 8 and x.shape[1] > x.shape[0]
        if channels_first:
            x = x.T  # (channels, frames) -> (frames, channels)
        x = x.mean(axis=1)  # downmix by averaging the channels
    elif x.ndim != 1:
        raise AudioReadError(source, f"expected 1-D or 2-D samples, got shape {x.shape}")
    if x.size == 0:
        raise AudioReadError(source, "the audio contains no samples (empty or truncated file)")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        n_bad = int((~np.isfinite(x)).sum())
        raise AudioReadError(source, f"the audio contains {n_bad} NaN/Inf sample(s)")
    if orig_sampling_rate is None or int(orig_sampling_rate) <= 0:
        raise AudioReadError(source, f"invalid sampling rate {orig_sampling_rate!r}")
    if sampling_rate is not None:
        x = _resample(x, int(orig_sampling_rate), int(sampling_rate))
    if x.size == 0:
        raise AudioReadError(source, "the audio is too short to resample")
    return np.ascontiguousarray(x, dtype=np.float32)


def _decode_with_soundfile(fileobj: Any, source: str) -> tuple[np.ndarray, int]:
    try:
        data, sr = sf.read(fileobj, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as e:
        raise AudioReadError(source, f"not a readable audio file ({e})") from None
    return data, sr


def read_audio_file(path: str | os.PathLike, sampling_rate: int | None = 16000) -> np.ndarray:
    """Read one audio file into a mono float32 numpy vector at `sampling_rate` (None: the file's own rate).

    Raises `AudioReadError` (a `ValueError`) naming `path` and the reason when the
    file is missing, empty, truncated, corrupt, in an unsupported format, or holds NaN/Inf
    samples.  Formats are those of libsndfile (WAV, FLAC, OGG/Vorbis, OPUS, AIFF, ...; MP3
    with libsndfile >= 1.1).  A WAV file cut off inside its audio data is read as far as it goes,
    with a logged warning (see `wav_truncation`).
    """
    p = Path(path)
    if not p.exists():
        raise AudioReadError(str(path), "file not found")
    if p.is_dir():
        raise AudioReadError(str(path), "is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise AudioReadError(str(path), "the file is empty (0 bytes)")
    data, sr = _decode_with_soundfile(str(p), str(path))
    truncation = wav_truncation(p)
    if truncation and data.size == 0:
        raise AudioReadError(str(path), truncation)
    audio = to_mono_float32(data, sr, sampling_rate, source=str(path), channels_first=False)
    if truncation:  # libsndfile silently returns what is there: say so, the transcript covers only that part
        logger.warning("%s: %s; using those", path, truncation)
    return audio


def wav_truncation(path: str | os.PathLike) -> str | None:
    """For a WAV file cut off before the end of its `data` chunk (an interrupted recording or copy), a
    message saying how much of the audio the header declares and how much is there; `None` otherwise
    (complete WAV files, streamed WAVs whose header leaves the size open, other formats, unreadable headers).
    libsndfile reads such files without complaint, returning only the samples present.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            file_size = os.fstat(handle.fileno()).st_size
            offset, block_align, rate = 12, 0, 0
            while offset + 8 <= file_size:
                handle.seek(offset)
                chunk = handle.read(8)
                chunk_id, size = chunk[:4], int.from_bytes(chunk[4:8], "little")
                if chunk_id == b"fmt ":
                    fmt = handle.read(16)
                    if len(fmt) == 16:
                        rate = int.from_bytes(fmt[4:8], "little")
                        block_align = int.from_bytes(fmt[12:14], "little")
                elif chunk_id == b"data":
                    present = file_size - offset - 8
                    if size in (0, 0xFFFFFFFF) or present >= size or not block_align or not rate:
                        return None  # complete, or a streamed header that does not know its size
                    declared_frames, present_frames = size // block_align, present // block_align
                    return (
                        f"truncated WAV file: its header declares {declared_frames} samples "
                        f"({declared_frames / rate:.2f} s) but only {present_frames} ({present_frames / rate:.2f} s) "
                        "are present"
                    )
                offset += 8 + size + (size & 1)
    except OSError:
        return None
    return None


_warned_pcm = False


def _undo_arrow_pcm_cast(x: np.ndarray, source: str) -> np.ndarray:
    """Recover the scale of integer PCM whose dtype Arrow changed in an `array` column.

    Arrow stores a column of int16 arrays as int64 (python ints), and a column mixing int and
    float arrays as float.  Integer data (int32/int64 or integral floats beyond +-1.5) whose
    peak fits 16 bits is taken as 16-bit PCM (scaled by 1/32768); integral floats with a larger
    peak as 32-bit PCM.  A warning is logged the first time.
    """
    global _warned_pcm
    if x.size == 0:
        return x
    if x.dtype.kind in "iu" and x.dtype.itemsize > 2:
        peak = float(np.abs(x.astype(np.float64)).max())
        if peak > 32768:
            return x  # genuine 32/64-bit PCM: to_mono_float32 scales by the dtype's range
        scale = 32768.0
    elif x.dtype.kind == "f":
        if not np.isfinite(x).all():
            return x  # rejected later with a clear message
        peak = float(np.abs(x).max())
        if peak <= 1.5 or not np.all(x == np.round(x)):
            return x
        scale = 32768.0 if peak <= 32768 else 2147483648.0
    else:
        return x
    if not _warned_pcm:
        logger.warning(
            "%s: audio array of %s with integral samples up to %.0f looks like integer PCM; "
            "scaling by 1/%.0f (further such arrays are scaled silently)", source, x.dtype, peak, scale
        )
        _warned_pcm = True
    return (x.astype(np.float64) / scale).astype(np.float32)


def decode_audio(value: Any, sampling_rate: int | None = None, base_dir: Path | None = None,
                 source: str = "<audio>") -> tuple[np.ndarray, int]:
    """One audio value, whatever its storage, as a mono float32 vector and its sampling rate.

    Accepted values: `{"bytes", "path"}` (an `Audio(decode=False)` item, read with soundfile: no torchcodec
    or FFmpeg needed), `{"array", "sampling_rate"}`, a torchcodec `AudioDecoder` (a decoded `Audio` item),
    or a path (relative paths are looked up in `base_dir` too). Resampled to `sampling_rate`; None keeps the
    audio's own rate. Raises `AudioReadError` naming `source` for what cannot be read.
    """
    samples, rate, _ = _decode_audio_value(value, sampling_rate, base_dir, source)
    return samples, rate


def _file_rate(path: Path, sampling_rate: int | None) -> int:
    return int(sampling_rate) if sampling_rate is not None else int(sf.info(str(path)).samplerate)


def _local(path: str | os.PathLike, base_dir: Path | None) -> Path:
    p = Path(path)
    if not p.is_absolute() and base_dir is not None and (base_dir / p).exists():
        return base_dir / p
    return p


def _decode_audio_value(value: Any, sampling_rate: int | None, base_dir: Path | None, source: str
                        ) -> tuple[np.ndarray, int, str | None]:
    """`decode_audio`, also returning the file name the value names (or None)."""
    if isinstance(value, (str, os.PathLike)):
        p = _local(value, base_dir)
        return read_audio_file(p, sampling_rate), _file_rate(p, sampling_rate), str(value)
    if hasattr(value, "get_all_samples"):  # torchcodec's AudioDecoder: channels first
        decoded = value.get_all_samples()
        rate = int(decoded.sample_rate)
        samples = to_mono_float32(np.asarray(decoded.data), rate, sampling_rate, source=source, channels_first=True)
        return samples, rate if sampling_rate is None else int(sampling_rate), None
    if not isinstance(value, dict):
        raise AudioReadError(source, f"unsupported audio value of type {type(value).__name__}")
    path = value.get("path")
    if value.get("array") is not None:
        rate = value.get("sampling_rate")
        if rate is None:
            raise AudioReadError(source, "audio dict has an 'array' but no 'sampling_rate'")
        arr = _undo_arrow_pcm_cast(np.asarray(value["array"]), source)
        samples = to_mono_float32(arr, rate, sampling_rate, source=source)
        return samples, int(rate if sampling_rate is None else sampling_rate), path
    name = f"{source} ({path})" if path else source
    if value.get("bytes") is not None:
        raw = value["bytes"]
        if len(raw) == 0:
            raise AudioReadError(name, "the stored audio is empty (0 bytes)")
        data, rate = _decode_with_soundfile(io.BytesIO(raw), name)
        samples = to_mono_float32(data, rate, sampling_rate, source=name, channels_first=False)
        return samples, int(rate if sampling_rate is None else sampling_rate), path
    if path:
        p = _local(path, base_dir)
        return read_audio_file(p, sampling_rate), _file_rate(p, sampling_rate), path
    raise AudioReadError(source, "audio item has neither 'bytes', 'path' nor 'array'")


# ---------------------------------------------------------------------------------------------
# Dataset loading
# ---------------------------------------------------------------------------------------------

def _find_text_column(column_names: Sequence[str], text_column: str | None, where: str) -> str:
    if text_column is not None:
        if text_column not in column_names:
            raise ValueError(
                f"text_column={text_column!r} is not a column of {where}; columns: {list(column_names)}"
            )
        return text_column
    for c in TEXT_COLUMN_CANDIDATES:
        if c in column_names:
            return c
    raise ValueError(
        f"No transcript column found in {where} (looked for {list(TEXT_COLUMN_CANDIDATES)}); "
        f"columns: {list(column_names)}. Name it with --text-column (text_column=... in Python)"
    )


def _pick_split(dd: DatasetDict, split: str | None, where: str) -> Dataset:
    if split is None:
        if len(dd) == 1:
            return next(iter(dd.values()))
        raise ValueError(
            f"{where} has several splits {list(dd.keys())}; choose one with --split (split=... in Python)"
        )
    if split not in dd:
        raise ValueError(f"Split {split!r} not found in {where}; available splits: {list(dd.keys())}")
    return dd[split]


def _read_audiofolder_metadata(folder: Path) -> tuple[list[dict[str, Any]], Path]:
    csv_path = folder / "metadata.csv"
    jsonl_path = folder / "metadata.jsonl"
    if csv_path.exists():
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = [dict(r) for r in csv.DictReader(f)]
        return rows, csv_path
    rows = []
    with open(jsonl_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows, jsonl_path


def _load_audiofolder(folder: Path, text_column: str | None, max_samples: int | None) -> Dataset:
    rows, meta_path = _read_audiofolder_metadata(folder)
    if not rows:
        raise ValueError(f"{meta_path} lists no files")
    columns = list(rows[0].keys())
    if "file_name" not in columns:
        raise ValueError(f"{meta_path} has no 'file_name' column; columns: {columns}")
    tcol = _find_text_column(columns, text_column, str(meta_path))
    if max_samples is not None:
        rows = rows[: max(0, int(max_samples))]
    missing = [r["file_name"] for r in rows if not (folder / r["file_name"]).is_file()]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise FileNotFoundError(
            f"{meta_path} lists audio files that do not exist: "
            + ", ".join(str(folder / m) for m in missing[:5])
            + more
        )
    data: dict[str, list[Any]] = {"audio": [], "text": [], "id": []}
    extra = [c for c in columns if c not in ("file_name", tcol, "audio", "text", "id")]
    has_id = "id" in columns and tcol != "id"
    for c in extra:
        data[c] = []
    for r in rows:
        data["audio"].append(str((folder / r["file_name"]).resolve()))
        t = r.get(tcol)
        data["text"].append("" if t is None else str(t))
        data["id"].append(str(r["id"]) if has_id else Path(r["file_name"]).stem)
        for c in extra:
            data[c].append(r.get(c))
    return Dataset.from_dict(data)


def _decode_dataset(
    ds: Dataset, sampling_rate: int, base_dir: Path | None, source: str, use_dataset_cache: bool = False,
    num_proc: int | None = None, keep_going: bool = False,
) -> Dataset:
    """Decode the `audio` column of `ds` into float32 mono arrays (eagerly).

    With `use_dataset_cache` (Hub datasets) the result goes to the usual `datasets` cache
    next to the source's Arrow files and is reused; otherwise to a temporary file. With
    `keep_going` an unreadable item gets empty audio and its file and reason in the columns
    `UNREADABLE_COLUMNS` (empty strings for the others) instead of raising.
    """
    if "audio" not in ds.column_names:
        raise ValueError(f"{source} has no 'audio' column; columns: {ds.column_names}")
    if isinstance(ds.features["audio"], Audio):
        ds = ds.cast_column("audio", Audio(decode=False))
    has_id = "id" in ds.column_names

    def _decode(example: dict[str, Any], idx: int) -> dict[str, Any]:
        item = f"row {idx} of {source}"
        try:
            arr, _, fname = _decode_audio_value(example["audio"], sampling_rate, base_dir, item)
        except AudioReadError as e:
            # Name the row as well as the file, so the culprit is easy to find.
            where = e.source if e.source.startswith("row ") else f"{e.source} ({item})"
            if not keep_going:
                raise AudioReadError(where, e.reason) from None
            out = {"audio": np.zeros(0, np.float32), **dict(zip(UNREADABLE_COLUMNS, (where, e.reason)))}
            return out if has_id else {**out, "id": str(idx)}
        out: dict[str, Any] = {"audio": arr}
        if keep_going:
            out.update(dict.fromkeys(UNREADABLE_COLUMNS, ""))
        if not has_id:
            out["id"] = Path(fname).stem if fname else str(idx)
        return out

    features = ds.features.copy()
    features["audio"] = List(Value("float32"))
    if not has_id:
        features["id"] = Value("string")
    if keep_going:
        features.update({column: Value("string") for column in UNREADABLE_COLUMNS})
    cache_file_name = None
    if not use_dataset_cache:
        # Keep decoded audio out of the source folder (it may be read-only, e.g. shared/data,
        # and a save_to_disk folder should stay as written) and out of RAM: write it to
        # datasets' temporary directory, which is removed when the process exits.
        from datasets.fingerprint import generate_random_fingerprint, get_temporary_cache_files_directory

        cache_file_name = os.path.join(
            get_temporary_cache_files_directory(), f"decoded-audio-{generate_random_fingerprint()}.arrow"
        )
    ds = ds.map(
        _decode,
        with_indices=True,
        features=Features(features),
        cache_file_name=cache_file_name,
        load_from_cache_file=use_dataset_cache,
        num_proc=num_proc if num_proc and num_proc > 1 and len(ds) >= num_proc else None,
        desc="Decoding audio",
    )
    return ds


def load_speech_dataset(
    spec: str,
    split: str | None = None,
    config: str | None = None,
    sampling_rate: int = 16000,
    max_samples: int | None = None,
    text_column: str | None = None,
    num_proc: int | None = None,
    unreadable: list[dict[str, str]] | None = None,
) -> Dataset:
    """Load a speech corpus as a `datasets.Dataset` with `audio`, `text` and `id`.

    `spec` is one of

    (a) a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (it holds
        `dataset_dict.json`, `dataset_info.json` or `state.json`); its `audio` column may
        be a datasets `Audio` feature, a `{"array", "sampling_rate"}` struct or a path string;
    (b) an "audiofolder": a folder with `metadata.csv` (or `metadata.jsonl`) holding a
        `file_name` column (relative to the folder) and a transcript column (`transcription`,
        `text`, `sentence`, ...); with `split` given, `<folder>/<split>/metadata.csv` is
        used when the folder itself has no metadata;
    (c) a Hugging Face Hub dataset id (e.g. `"librispeech_asr"` with `config="clean"`,
        `split="test"`), fetched with `datasets.load_dataset`; when the Hub cannot be
        reached, `HubDatasetUnavailableError` (a `ConnectionError`) is raised.

    A non-existent `spec` that looks like a path raises `FileNotFoundError`.  With several
    splits and `split=None` a `ValueError` lists them.  `max_samples` keeps the first N
    rows (before decoding).  The transcript column is renamed to `text` (see
    `TEXT_COLUMN_CANDIDATES`, or pass `text_column`).

    Audio is decoded eagerly with soundfile, downmixed to mono by averaging the channels and
    resampled to `sampling_rate` with soxr; a file that cannot be read raises
    `AudioReadError` naming the file, unless `unreadable` is a list: then each such
    file is left out and noted there as `{"path", "error"}` (a batch job reports it and goes
    on).  `ds[i]["audio"]` is a float32 numpy array.
    """
    spec = os.fspath(spec)
    path = Path(spec).expanduser()
    if path.exists():
        ds, base_dir, source, text_column = _load_local(path, spec, split, text_column, max_samples)
        from_hub = False
    elif is_local_path(spec):
        raise FileNotFoundError(f"Dataset path does not exist: {spec}")
    else:
        ds = _load_from_hub(spec, config, split)
        base_dir, source, from_hub = None, f"Hub dataset {spec!r}", True

    if max_samples is not None and len(ds) > max_samples:
        ds = ds.select(range(max(0, int(max_samples))))
    ds = _rename_text_column(ds, text_column, source)
    ds = _decode_dataset(ds, sampling_rate, base_dir, source, use_dataset_cache=from_hub, num_proc=num_proc,
                         keep_going=unreadable is not None)
    if unreadable is not None:
        ds = _drop_unreadable(ds, unreadable)
    return ds.with_format("numpy", columns=["audio"], output_all_columns=True)


def _load_local(path: Path, spec: str, split: str | None, text_column: str | None, max_samples: int | None):
    """`(dataset, base_dir, source, text_column)` of an existing folder: a `save_to_disk` folder or an
    audiofolder (whose transcript column comes back already renamed to `text`); anything else is a
    `ValueError` saying what the folder lacks."""
    if not path.is_dir():
        raise ValueError(
            f"{spec} is a file; expected a dataset folder (save_to_disk output or an "
            f"audiofolder with metadata.csv) or a Hub dataset id"
        )
    if any((path / m).exists() for m in _SAVED_DATASET_MARKERS):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            ds = _pick_split(loaded, split, str(path))
        else:
            if split is not None:
                logger.info("%s holds a single Dataset; ignoring split=%r", spec, split)
            ds = loaded
        return ds, path, str(path), text_column
    folder = path
    if not any((path / m).exists() for m in _AUDIOFOLDER_METADATA):
        if split is not None and any((path / split / m).exists() for m in _AUDIOFOLDER_METADATA):
            folder = path / split
        else:
            raise ValueError(
                f"{spec} is neither a saved dataset (no {' / '.join(_SAVED_DATASET_MARKERS)}) "
                f"nor an audiofolder (no metadata.csv / metadata.jsonl"
                + (f", nor {split}/metadata.csv" if split else "")
                + ")"
            )
    return _load_audiofolder(folder, text_column, max_samples), folder, str(folder), "text"


def _rename_text_column(ds: Dataset, text_column: str | None, source: str) -> Dataset:
    """`ds` with its transcript column (`text_column`, or the one `_find_text_column` picks) named `text`
    (a `text` column that is not the transcript is dropped)."""
    tcol = _find_text_column(ds.column_names, text_column, source)
    if tcol != "text":
        if "text" in ds.column_names:
            ds = ds.remove_columns("text")
        ds = ds.rename_column(tcol, "text")
    return ds


def _drop_unreadable(ds: Dataset, unreadable: list[dict[str, str]]) -> Dataset:
    """Leave out the items `_decode_dataset(keep_going=True)` could not read, noting each in `unreadable`."""
    sources, reasons = (ds[column] for column in UNREADABLE_COLUMNS)
    unreadable.extend({"path": where, "error": reason} for where, reason in zip(sources, reasons) if where)
    readable = [index for index, where in enumerate(sources) if not where]
    if len(readable) < len(ds):
        ds = ds.select(readable)
    return ds.remove_columns(list(UNREADABLE_COLUMNS))


def network_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions of a failed exchange with the Hugging Face Hub: no network, no DNS, a refused or timed-out
    connection, offline mode with nothing cached, an HTTP error status. huggingface_hub, datasets and transformers
    raise them from several HTTP clients (httpx, httpx2, requests), so each one that is installed is listed."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

        types += [HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled]
    except ImportError:  # pragma: no cover
        pass
    for client in ("httpx", "httpx2"):
        try:
            types.append(importlib.import_module(client).TransportError)
        except ImportError:
            pass
    try:
        import requests

        types.append(requests.exceptions.ConnectionError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def _load_from_hub(spec: str, config: str | None, split: str | None) -> Dataset:
    try:
        loaded = datasets.load_dataset(spec, config, split=split)
    except network_error_types() as e:
        raise HubDatasetUnavailableError(
            f"Could not fetch the dataset {spec!r}"
            + (f" (config {config!r})" if config else "")
            + f" from the Hugging Face Hub: {e}. This machine may be offline or the Hub "
            f"unreachable (no local folder named {spec!r} exists either). Pass a local folder "
            f"instead: a save_to_disk() folder or an audiofolder with metadata.csv, e.g. "
            f"shared/data/real-speech-dev. (Setting HF_HUB_OFFLINE=1 makes this fail fast.)"
        ) from e
    if isinstance(loaded, (DatasetDict, dict)):
        loaded = _pick_split(DatasetDict(loaded), split, f"Hub dataset {spec!r}")
    if not isinstance(loaded, Dataset):
        raise TypeError(f"Unexpected object from load_dataset({spec!r}): {type(loaded).__name__}")
    return loaded


# ---------------------------------------------------------------------------------------------
# CTC preparation and collation
# ---------------------------------------------------------------------------------------------

def _parts(processor: Any) -> tuple[Any, Any]:
    fe = getattr(processor, "feature_extractor", None)
    tok = getattr(processor, "tokenizer", None)
    if fe is None or tok is None:
        raise TypeError(
            "processor must have .feature_extractor and .tokenizer (e.g. a Wav2Vec2Processor); "
            f"got {type(processor).__name__}"
        )
    return fe, tok


def prepare_for_ctc(
    dataset: Dataset,
    processor: Any,
    num_proc: int = 1,
    keep_columns: Sequence[str] = ("id", "text"),
) -> Dataset:
    """Map a `load_speech_dataset` dataset to CTC training features.

    Adds `input_values` (the processor's feature extractor output; it zero-mean/unit-variance
    normalises when its `do_normalize` is set, as for HuBERT), `labels` (tokenizer ids of
    `normalize_text(text)`) and `input_length` (number of audio samples, for
    length-grouped batching: ``TrainingArguments(group_by_length=True,
    length_column_name="input_length")``).  The audio is assumed to be at the feature
    extractor's `sampling_rate`.  Rows whose normalised text is empty are dropped (the count
    is logged).  Columns other than `keep_columns` are removed.
    """
    fe, tok = _parts(processor)
    n_before = len(dataset)
    dataset = dataset.filter(
        lambda texts: [bool(normalize_text(t or "")) for t in texts],
        input_columns=["text"],
        batched=True,
        num_proc=num_proc if num_proc and num_proc > 1 else None,
        desc="Dropping empty transcripts",
    )
    dropped = n_before - len(dataset)
    if dropped:
        logger.warning("prepare_for_ctc: dropped %d of %d rows whose normalised text is empty", dropped, n_before)
    else:
        logger.info("prepare_for_ctc: no rows with empty normalised text (%d rows)", n_before)

    sr = getattr(fe, "sampling_rate", 16000)

    def _prep(batch: dict[str, Any]) -> dict[str, Any]:
        audios = [np.asarray(a, dtype=np.float32) for a in batch["audio"]]
        feats = fe(audios, sampling_rate=sr)
        labels = make_labels(batch["text"], tok)
        return {
            "input_values": [np.asarray(v, dtype=np.float32) for v in feats["input_values"]],
            "labels": labels,
            "input_length": [int(a.shape[0]) for a in audios],
        }

    remove = [c for c in dataset.column_names if c not in keep_columns]
    out = dataset.map(
        _prep,
        batched=True,
        batch_size=16,
        remove_columns=remove,
        num_proc=num_proc if num_proc and num_proc > 1 else None,
        desc="Preparing CTC features",
    )
    return out.with_format(None)


@dataclass
class DataCollatorCTCWithPadding:
    """Pads CTC training examples into a batch (the standard HF CTC fine-tuning collator).

    `input_values` are padded with the feature extractor (returning `attention_mask`),
    `labels` with the tokenizer; label padding is replaced by `-100` so the CTC loss
    ignores it.  Returns PyTorch tensors `input_values`, `attention_mask` and `labels`.
    """

    processor: Any
    padding: bool | str = True
    max_length: int | None = None
    max_length_labels: int | None = None
    pad_to_multiple_of: int | None = None
    pad_to_multiple_of_labels: int | None = None
    return_attention_mask: bool = True

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        fe, tok = _parts(self.processor)
        input_features = [{"input_values": np.asarray(f["input_values"], dtype=np.float32)} for f in features]
        label_features = [{"input_ids": [int(i) for i in f["labels"]]} for f in features]

        batch = fe.pad(
            input_features,
            padding=self.padding,
            max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_attention_mask=self.return_attention_mask,
            return_tensors="pt",
        )
        labels_batch = tok.pad(
            label_features,
            padding=self.padding,
            max_length=self.max_length_labels,
            pad_to_multiple_of=self.pad_to_multiple_of_labels,
            return_attention_mask=True,
            return_tensors="pt",
        )
        labels = labels_batch["input_ids"].masked_fill(labels_batch["attention_mask"].ne(1), -100)
        batch["labels"] = labels
        return batch
