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
  its own (with its own early exit), and the per-frame log-probabilities are stitched at frame level: a frame is
  kept from the window whose centre region it falls in (the cut between two windows is the middle of their
  overlap), then the stitched frames are decoded once by the command's decoder (`--decoder greedy`: repeats
  merged, blanks dropped; `--decoder lm`: beam search with the folder's n-gram LM) - the same idea as the
  `stride` of transformers' ASR pipeline, so words at window edges are neither lost nor doubled. The file's
  `exit_layer` is then the mean over its windows (`chunk_exit_layers` lists them).
* Windows of all files are batched together, longest first. `time_ms` is the file's share (in proportion to its
  samples) of the wall time of the batches its windows ran in; with `--batch-size 1` it is the file's own
  latency.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf
import torch

from configuration_early_exit import ExitSetting

from .arguments import BASE_AUDIO_EXTENSIONS, UsageError, check_threshold_range
from .data import AudioReadError, read_audio_file, wav_truncation
from .decoding import GreedyDecoder, decoder_from_args
from .inference import featurize, frame_lengths
from .loading import load_model_and_processor, model_device, resolve_model_spec
from .timing import timed
from .outputs import write_json

__all__ = ["AUDIO_EXTENSIONS", "UNREADABLE_EXTENSIONS", "expand_inputs", "plan_windows", "transcribe_files", "run"]


def _audio_extensions() -> tuple[str, ...]:
    extensions = BASE_AUDIO_EXTENSIONS
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


@dataclasses.dataclass
class Segment:
    """One window of one file, transcribed in some batch."""

    result: int  # index of the file's result
    window: int  # index of the window in the file's windows
    samples: np.ndarray


@dataclasses.dataclass
class FileProgress:
    """What the batches have produced so far for one readable file."""

    windows: list[tuple[int, int]]
    pieces: list = dataclasses.field(default_factory=list)  # per window: the kept frames' log-probabilities
    layers: list = dataclasses.field(default_factory=list)  # per window: its exit layer
    seconds: float = 0.0

    def __post_init__(self):
        self.pieces = [None] * len(self.windows)
        self.layers = [None] * len(self.windows)


def check_settings(batch_size: int, chunk_length_s: float, stride_length_s: float) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not chunk_length_s > 2 * stride_length_s or stride_length_s < 0:
        raise ValueError(
            f"need chunk_length_s > 2 x stride_length_s >= 0, got chunk_length_s={chunk_length_s}, "
            f"stride_length_s={stride_length_s}"
        )


def read_inputs(model, paths, rate: int, max_length_s: float, chunk_length_s: float, stride_length_s: float
                ) -> tuple[list[dict[str, Any]], dict[int, FileProgress], list[Segment]]:
    """Read every input: a result per file (an `error` for what cannot be transcribed, a `warning` for a truncated
    WAV file), the windows of each readable file, and the segments to batch."""
    field = model.receptive_field()
    results: list[dict[str, Any]] = []
    files: dict[int, FileProgress] = {}
    segments: list[Segment] = []
    for path, error in expand_inputs(paths):
        index = len(results)
        if error is None:
            try:
                audio = read_audio_file(path, rate)
            except AudioReadError as failure:
                error = failure.reason
        if error is None and audio.size < field:
            error = (f"audio too short: {audio.size} samples at {rate} Hz, the model needs at least {field} "
                     f"({1000 * field / rate:.0f} ms)")
        if error is not None:
            results.append({"path": path, "error": error})
            continue
        results.append({"path": path, "duration_s": audio.size / rate})
        truncation = wav_truncation(path)
        if truncation:
            results[-1]["warning"] = f"{truncation}; the transcript covers only those"
        windows = [(0, audio.size)]
        if audio.size > max_length_s * rate:
            windows = plan_windows(audio.size, int(round(chunk_length_s * rate)), int(round(stride_length_s * rate)))
        files[index] = FileProgress(windows)
        segments.extend(Segment(index, number, audio[start:end]) for number, (start, end) in enumerate(windows))
    return results, files, segments


def run_batches(model, processor, segments: list[Segment], files: dict[int, FileProgress], batch_size: int,
                setting: ExitSetting) -> None:
    """Transcribe the segments, longest first, in batches; each window keeps the frames of its centre region, and
    each file gets its share (by samples) of its batches' wall time."""
    device = model_device(model)
    hop = model.samples_per_frame()
    segments = sorted(segments, key=lambda segment: -segment.samples.size)
    for start in range(0, len(segments), batch_size):
        batch = segments[start : start + batch_size]
        input_values, attention_mask = featurize(processor, [segment.samples for segment in batch], device)
        elapsed, output = timed(lambda: model.generate(input_values, attention_mask, exit_setting=setting), device)
        log_probs = torch.log_softmax(output.logits.float(), dim=-1).cpu()
        lengths = frame_lengths(model, attention_mask).cpu().tolist()
        total = sum(segment.samples.size for segment in batch)
        for row, segment in enumerate(batch):
            file = files[segment.result]
            first, last = _kept_frames(file.windows, segment.window, int(lengths[row]), hop)
            file.pieces[segment.window] = log_probs[row, first:last]
            file.layers[segment.window] = int(output.exit_layer[row])
            file.seconds += elapsed * segment.samples.size / total


def finish_result(result: dict[str, Any], file: FileProgress, decoder) -> None:
    """Stitch a file's windows' log-probabilities, decode them once (`hubert_ee.decoding`: greedy or with the LM),
    and fill in its transcript, exit layer and time."""
    log_probs = torch.cat(file.pieces)
    layers = file.layers
    result.update(
        text=decoder.decode(log_probs[None], None)[0],
        exit_layer=layers[0] if len(layers) == 1 else round(float(np.mean(layers)), 2),
        time_ms=1000.0 * file.seconds,
        num_chunks=len(layers),
    )
    if len(layers) > 1:
        result["chunk_exit_layers"] = layers


def transcribe_files(
    model,
    processor,
    paths: Sequence[str | Path],
    *,
    batch_size: int = 8,
    exit_setting: ExitSetting | None = None,
    max_length_s: float = 30.0,
    chunk_length_s: float = 20.0,
    stride_length_s: float = 2.0,
    decoder=None,
) -> list[dict[str, Any]]:
    """Transcribe audio files (folders are expanded, see `expand_inputs`), one result dict per file in input order.

    Success: `{"path", "text", "exit_layer", "time_ms", "duration_s", "num_chunks"}` (+ `"chunk_exit_layers"` for
    chunked files, + `"warning"` for a truncated WAV file, transcribed as far as it goes); failure:
    `{"path", "error"}`. `exit_setting` None: the model config's. See the module docstring for batching, timing
    and long audio.
    """
    check_settings(batch_size, chunk_length_s, stride_length_s)
    setting = model.exit_setting(exit_setting)
    model.eval()
    rate = int(getattr(processor, "feature_extractor", processor).sampling_rate)
    results, files, segments = read_inputs(model, paths, rate, max_length_s, chunk_length_s, stride_length_s)
    run_batches(model, processor, segments, files, batch_size, setting)
    decoder = decoder if decoder is not None else GreedyDecoder(processor, model.config.pad_token_id)
    for index, file in files.items():
        finish_result(results[index], file, decoder)
    return results


def exit_setting_from_args(args, config) -> ExitSetting:
    """The exit setting the flags ask for: the config's, with `--exit-criterion`, `--exit-threshold` and
    `--exit-patience` applied (naming one turns early exit on, also on a model whose config has it off) and
    `--no-early-exit` turning it off."""
    return config.exit_setting.with_overrides(
        early_exit=False if args.no_early_exit else None, exit_criterion=args.exit_criterion,
        exit_threshold=args.exit_threshold, exit_patience=args.exit_patience,
    )  # fmt: skip


def run(args) -> int:
    """`hubert-ee transcribe`: 0 if every file was transcribed, 1 if some failed, 2 if none succeeded. Usage and
    model-loading errors raise (`cli.main`: one line, exit code 2)."""
    model_spec = resolve_model_spec(args.model)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    model, processor = load_model_and_processor(model_spec, args.device)
    try:
        decoder = decoder_from_args(args, model_spec, processor, model.config.pad_token_id)
    except ValueError as error:  # a decoder flag on a folder without an LM, a mismatched LM: for the user to fix
        raise UsageError(str(error)) from error
    if args.exit_threshold is not None:
        check_threshold_range(args.exit_criterion or model.config.exit_criterion, [args.exit_threshold],
                              "--exit-threshold")
    setting = exit_setting_from_args(args, model.config)
    layout = {"batch_size": args.batch_size, "max_length_s": args.max_length_s,
              "chunk_length_s": args.chunk_length_s, "stride_length_s": args.stride_length_s}
    results = transcribe_files(model, processor, args.inputs, exit_setting=setting, decoder=decoder, **layout)
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
        write_json({
            "model": model_spec,
            "num_hidden_layers": num_layers,
            "settings": {**layout, **setting.as_config_fields()},
            "decoder": decoder.describe(),
            "num_succeeded": succeeded,
            "num_failed": failed,
            "results": results,
        }, args.json)
    if failed:
        print(f"{failed} of {len(results)} input(s) failed", file=sys.stderr)
    if succeeded == 0:
        return 2
    return 1 if failed else 0
