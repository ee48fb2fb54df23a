"""Transcribe stage: audio files (or folders of them) to text with early exit.

`hubert-ee transcribe --model M FILES_OR_FOLDERS... [--json OUT] [--batch-size B]
[--exit-criterion C --exit-threshold T --exit-patience P | --no-early-exit]`

* Folders are searched recursively for audio files (.wav .flac .ogg .oga .opus .aiff .aif, and .mp3 when this
  libsndfile can decode MP3), in sorted order. Files in common audio/video formats that libsndfile cannot decode
  (.m4a .mp4 .aac .wma .webm ...) are listed with an error rather than skipped, so nothing is left out silently.
* Each file is read with `hubert_ee.data.read_audio_file` (mono, resampled to 16 kHz). A missing, empty, corrupt or
  too-short file is reported on stderr and in the JSON (`error` field) and the other files are still transcribed.
  A WAV file cut off inside its audio data is transcribed as far as it goes and flagged (`warning` field, and a
  warning on stderr).
  Exit code: 0 when every file was transcribed, 1 when some failed and some succeeded, 2 when none succeeded.
* Long audio (over `max_length_s`, 30 s): cut into overlapping windows of `chunk_length_s` (20 s) that overlap
  by `2 x stride_length_s` (4 s); the last window is aligned to the end of the file. Each window is transcribed on
  its own (with its own early exit), and the per-frame greedy CTC ids are stitched at frame level: a frame is
  kept from the window whose centre region it falls in (the cut between two windows is the middle of their
  overlap), then the stitched ids are CTC-decoded once (repeats merged, blanks dropped) - the same idea as the
  `stride` of transformers' ASR pipeline, so words at window edges are neither lost nor doubled. The file's
  `exit_layer` is then the mean over its windows (`chunk_exit_layers` lists them).
* Windows of all files are batched together, longest first. `time_ms` is the file's share (in proportion to its
  samples) of the wall time of the batches its windows ran in; with `--batch-size 1` it is the file's own
  latency.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf
import torch

from .data import AudioReadError, read_audio_file, wav_truncation
from .evaluate import (
    UsageError,
    add_device_argument,
    add_model_argument,
    batch_decode,
    check_threshold_range,
    featurize,
    load_model_and_processor,
    resolve_model_spec,
    synchronize,
)
from .outputs import output_file, write_json

__all__ = [
    "AUDIO_EXTENSIONS", "UNREADABLE_EXTENSIONS", "expand_inputs", "plan_windows", "transcribe_files", "add_arguments",
    "run",
]

_BASE_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif")


def _audio_extensions() -> tuple[str, ...]:
    extensions = _BASE_EXTENSIONS
    try:
        if "MP3" in sf.available_formats():
            extensions += (".mp3",)
    except Exception:  # pragma: no cover - very old soundfile
        pass
    return extensions


AUDIO_EXTENSIONS = _audio_extensions()
# Audio/video formats libsndfile cannot decode: a folder scan reports these files instead of skipping them.
UNREADABLE_EXTENSIONS = tuple(
    extension
    for extension in (".m4a", ".mp4", ".aac", ".wma", ".webm", ".amr", ".3gp", ".mkv", ".mov", ".ac3", ".mp3")
    if extension not in AUDIO_EXTENSIONS
)


def expand_inputs(paths: Sequence[str | Path]) -> list[tuple[str, str | None]]:
    """Files and folders -> `[(path, error_or_None)]`: folders are replaced by their audio files (recursive,
    sorted), files in a format that cannot be decoded (`UNREADABLE_EXTENSIONS`) coming with an error; a folder
    without audio files gives one entry with an error; files are kept as given (whatever their extension:
    reading them decides)."""
    entries: list[tuple[str, str | None]] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS + UNREADABLE_EXTENSIONS
            )
            if not found:
                entries.append((str(given), f"no audio files ({' '.join(AUDIO_EXTENSIONS)}) in this folder"))
            entries.extend(
                (str(p), None if p.suffix.lower() in AUDIO_EXTENSIONS else
                 f"unsupported audio format {p.suffix.lower()} (readable: {' '.join(AUDIO_EXTENSIONS)}); convert "
                 "it first, e.g. ffmpeg -i INPUT -ac 1 -ar 16000 OUTPUT.wav")
                for p in found
            )
        else:
            entries.append((str(given), None))
    return entries


def plan_windows(num_samples: int, chunk_samples: int, stride_samples: int) -> list[tuple[int, int]]:
    """Window `(start, end)` sample ranges covering `num_samples`: `chunk_samples` long, overlapping by
    `2 * stride_samples`, the last one aligned to the end. A signal no longer than one window is one window."""
    if num_samples <= chunk_samples:
        return [(0, num_samples)]
    step = chunk_samples - 2 * stride_samples
    if step <= 0:
        raise ValueError("chunk_length_s must be more than 2 x stride_length_s")
    starts = list(range(0, num_samples - chunk_samples, step))
    starts.append(num_samples - chunk_samples)
    return [(start, start + chunk_samples) for start in starts]


def _kept_frames(windows: list[tuple[int, int]], index: int, frames: int, hop: int) -> tuple[int, int]:
    """Frame range `[first, last)` of window `index` to keep: frames whose start sample lies between the middles
    of the overlaps with the previous and the next window."""
    start, end = windows[index]
    low = -np.inf if index == 0 else (windows[index - 1][1] + start) / 2
    high = np.inf if index == len(windows) - 1 else (end + windows[index + 1][0]) / 2
    positions = start + hop * np.arange(frames)
    keep = np.nonzero((positions >= low) & (positions < high))[0]
    if keep.size == 0:
        return 0, 0
    return int(keep[0]), int(keep[-1]) + 1


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def transcribe_files(
    model,
    processor,
    paths: Sequence[str | Path],
    *,
    batch_size: int = 8,
    early_exit: bool | None = None,
    exit_criterion: str | None = None,
    exit_threshold: float | None = None,
    exit_patience: int | None = None,
    max_length_s: float = 30.0,
    chunk_length_s: float = 20.0,
    stride_length_s: float = 2.0,
) -> list[dict[str, Any]]:
    """Transcribe audio files (folders are expanded, see `expand_inputs`), one result dict per file in input order.

    Success: `{"path", "text", "exit_layer", "time_ms", "duration_s", "num_chunks"}` (+ `"chunk_exit_layers"` for
    chunked files, + `"warning"` for a truncated WAV file, transcribed as far as it goes); failure:
    `{"path", "error"}`. Settings left at None use the model config's values. See the
    module docstring for batching, timing and long audio.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not chunk_length_s > 2 * stride_length_s or stride_length_s < 0:
        raise ValueError(
            f"need chunk_length_s > 2 x stride_length_s >= 0, got chunk_length_s={chunk_length_s}, "
            f"stride_length_s={stride_length_s}"
        )
    overrides = {
        key: value
        for key, value in (("early_exit", early_exit), ("exit_criterion", exit_criterion),
                           ("exit_threshold", exit_threshold), ("exit_patience", exit_patience))
        if value is not None
    }
    model.config.validate_exit_settings(**overrides)
    model.eval()
    device = _model_device(model)
    feature_extractor = getattr(processor, "feature_extractor", processor)
    rate = int(feature_extractor.sampling_rate)
    field = model.receptive_field()
    hop = model.samples_per_frame()
    pad_id = model.config.pad_token_id

    results: list[dict[str, Any]] = []
    segments = []  # (result index, window index, samples)
    windows_of: dict[int, list[tuple[int, int]]] = {}
    for path, error in expand_inputs(paths):
        index = len(results)
        if error is not None:
            results.append({"path": path, "error": error})
            continue
        try:
            audio = read_audio_file(path, rate)
        except AudioReadError as failure:
            results.append({"path": path, "error": failure.reason})
            continue
        if audio.size < field:
            results.append({"path": path, "error": f"audio too short: {audio.size} samples at {rate} Hz, the model "
                                                    f"needs at least {field} ({1000 * field / rate:.0f} ms)"})
            continue
        results.append({"path": path, "duration_s": audio.size / rate})
        truncation = wav_truncation(path)
        if truncation:
            results[-1]["warning"] = f"{truncation}; the transcript covers only those"
        if audio.size > max_length_s * rate:
            windows = plan_windows(audio.size, int(round(chunk_length_s * rate)), int(round(stride_length_s * rate)))
        else:
            windows = [(0, audio.size)]
        windows_of[index] = windows
        for number, (start, end) in enumerate(windows):
            segments.append((index, number, audio[start:end]))

    pieces: dict[int, list] = {index: [None] * len(windows) for index, windows in windows_of.items()}
    layers: dict[int, list] = {index: [None] * len(windows) for index, windows in windows_of.items()}
    seconds: dict[int, float] = {index: 0.0 for index in windows_of}
    segments.sort(key=lambda segment: -segment[2].size)
    for start in range(0, len(segments), batch_size):
        batch = segments[start : start + batch_size]
        input_values, attention_mask = featurize(processor, [segment[2] for segment in batch], device)
        synchronize(device)
        began = time.perf_counter()
        output = model.generate(input_values, attention_mask, **overrides)
        synchronize(device)
        elapsed = time.perf_counter() - began
        sequences = output.sequences.cpu()
        lengths = model.frame_lengths(attention_mask.sum(-1)).cpu().tolist()
        total = sum(segment[2].size for segment in batch)
        for row, (index, number, samples) in enumerate(batch):
            first, last = _kept_frames(windows_of[index], number, int(lengths[row]), hop)
            pieces[index][number] = sequences[row, first:last]
            layers[index][number] = int(output.exit_layer[row])
            seconds[index] += elapsed * samples.size / total

    for index in windows_of:
        ids = torch.cat(pieces[index]) if pieces[index] else torch.zeros(0, dtype=torch.long)
        if ids.numel() == 0:
            ids = torch.full((1,), pad_id, dtype=torch.long)
        text = batch_decode(processor, ids[None])[0]
        result = results[index]
        chunk_layers = layers[index]
        result.update(
            text=text,
            exit_layer=chunk_layers[0] if len(chunk_layers) == 1 else round(float(np.mean(chunk_layers)), 2),
            time_ms=1000.0 * seconds[index],
            num_chunks=len(chunk_layers),
        )
        if len(chunk_layers) > 1:
            result["chunk_exit_layers"] = chunk_layers
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `hubert-ee transcribe`."""
    add_model_argument(parser)
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER",
                        help="Audio files, or folders searched recursively for "
                        + ", ".join(AUDIO_EXTENSIONS) + " files.")
    parser.add_argument("--json", default=None, type=output_file,
                        help="Also write the results (and errors) as JSON to this file.")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="Files (or 20 s windows of long files) per batch (default: 8). Use 1 for per-file "
                        "latencies in time_ms.")
    parser.add_argument("--exit-criterion", choices=["confidence", "entropy", "patience"], default=None,
                        help="Exit criterion (default: the model config's exit_criterion). Giving any --exit-* option "
                        "turns early exit on, even where the model's config has it off.")
    parser.add_argument("--exit-threshold", type=float, default=None,
                        help="Threshold of the criterion: minimum confidence in [0, 1], or maximum mean entropy in "
                        "nats (default: the model config's exit_threshold).")
    parser.add_argument("--exit-patience", type=int, default=None,
                        help="Agreeing consecutive exits needed by the patience criterion (default: the config's).")
    parser.add_argument("--no-early-exit", action="store_true",
                        help="Run the full model (every layer, final head), as plain HubertForCTC does.")
    parser.add_argument("--max-length-s", type=float, default=30.0,
                        help="Audio longer than this many seconds is transcribed in overlapping windows (default: 30).")
    parser.add_argument("--chunk-length-s", type=float, default=20.0,
                        help="Window length in seconds for long audio (default: 20).")
    parser.add_argument("--stride-length-s", type=float, default=2.0,
                        help="Context in seconds on each side of a window boundary, i.e. windows overlap by twice "
                        "this (default: 2).")
    add_device_argument(parser)


def _settings_from_args(args) -> dict[str, Any]:
    return {
        "batch_size": args.batch_size,
        # naming an exit setting asks for early exit, also on a model whose config has it off
        "early_exit": False if args.no_early_exit else (
            True if any(value is not None for value in (args.exit_criterion, args.exit_threshold, args.exit_patience))
            else None),
        "exit_criterion": args.exit_criterion,
        "exit_threshold": args.exit_threshold,
        "exit_patience": args.exit_patience,
        "max_length_s": args.max_length_s,
        "chunk_length_s": args.chunk_length_s,
        "stride_length_s": args.stride_length_s,
    }


def run(args) -> int:
    """`hubert-ee transcribe`: 0 if every file was transcribed, 1 if some failed, 2 if none succeeded (or on a
    usage / model-loading error)."""
    settings = _settings_from_args(args)
    try:
        model_spec = resolve_model_spec(args.model)
        if args.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
        model, processor = load_model_and_processor(model_spec, args.device)
        if args.exit_threshold is not None:
            check_threshold_range(args.exit_criterion or model.config.exit_criterion, [args.exit_threshold],
                                  "--exit-threshold")
        results = transcribe_files(model, processor, args.inputs, **settings)
    except (UsageError, OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    num_layers = model.config.num_hidden_layers
    for result in results:
        if "error" in result:
            print(f"error: {result['path']}: {result['error']}", file=sys.stderr)
        else:
            print(f"{result['path']}\t{result['text']}\t(exit layer {result['exit_layer']}/{num_layers}, "
                  f"{result['time_ms']:.1f} ms)")
    succeeded = sum("error" not in result for result in results)
    failed = len(results) - succeeded
    if args.json:
        effective = {key: getattr(model.config, key) if value is None else value
                     for key, value in settings.items() if key in ("early_exit", "exit_criterion", "exit_threshold",
                                                                   "exit_patience")}
        write_json({
            "model": model_spec,
            "num_hidden_layers": num_layers,
            "settings": {**settings, **effective},
            "num_succeeded": succeeded,
            "num_failed": failed,
            "results": results,
        }, args.json)
    if failed:
        print(f"{failed} of {len(results)} input(s) failed", file=sys.stderr)
    if succeeded == 0:
        return 2
    return 1 if failed else 0
