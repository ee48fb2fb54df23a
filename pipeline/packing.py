"""Packed CTC training batches: clips concatenated into rows of equal length, augmented anew on every pass.

A batch of clips padded to its longest one spends compute on padding and needs an attention mask; clips
concatenated into rows of one fixed length need neither. Each row holds several clips (each normalised on its own,
as the feature extractor does for a single utterance), separated by short silences, and its label is their
transcripts joined by the word delimiter: CTC aligns a longer utterance just as well. Clips are packed
first-fit-decreasing within pools of a few hundred, so a row is almost all speech, and rows keep the order of a
shuffled pass over the clips.

The stream is endless and deterministic: pass `p` over the clips uses the generator `[seed, p]` for its order and
`[seed, p, clip]` for each clip's augmentation, so two runs with the same seed see the same rows.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .augment import Augmenter
from .text import SAMPLING_RATE, make_labels

logger = logging.getLogger(__name__)

__all__ = ["ClipStore", "PackedCTCDataset", "PackedCTCCollator", "pack_first_fit"]


@dataclass
class ClipStore:
    """Training clips held once: float32 waveforms (views into the corpus' memory-mapped Arrow files where the
    corpus stores raw samples) and their tokenised transcripts."""

    audio: list[np.ndarray]
    labels: list[list[int]]
    sampling_rate: int = SAMPLING_RATE

    def __post_init__(self):
        if len(self.audio) != len(self.labels):
            raise ValueError(f"{len(self.audio)} clips but {len(self.labels)} transcripts")
        if not self.audio:
            raise ValueError("no training clips to pack")

    def __len__(self) -> int:
        return len(self.audio)

    @property
    def hours(self) -> float:
        return sum(len(clip) for clip in self.audio) / self.sampling_rate / 3600

    @classmethod
    def concatenate(cls, stores: Sequence["ClipStore"]) -> "ClipStore":
        rates = {store.sampling_rate for store in stores}
        if len(rates) != 1:
            raise ValueError(f"clip stores sampled at different rates: {sorted(rates)}")
        return cls([clip for store in stores for clip in store.audio],
                   [labels for store in stores for labels in store.labels], rates.pop())

    @classmethod
    def from_corpus(cls, path: str | os.PathLike, split: str, tokenizer, max_samples: int | None = None) -> "ClipStore":
        """Clips of a `hubert-ee synth` corpus split, read without decoding or copying the audio."""
        from datasets import load_from_disk

        dataset = load_from_disk(str(path))[split]
        if max_samples is not None:
            dataset = dataset.select(range(min(int(max_samples), len(dataset))))
            dataset = dataset.flatten_indices()
        column = dataset.data.table.column("audio")
        rates = {int(rate) for chunk in column.chunks for rate in chunk.field("sampling_rate").unique().to_pylist()}
        if rates - {SAMPLING_RATE}:
            raise ValueError(f"{path} [{split}] is sampled at {sorted(rates)} Hz; packing needs {SAMPLING_RATE} Hz")
        audio = list(_arrow_waveforms(column))
        return cls(audio, make_labels(dataset["text"], tokenizer))

    @classmethod
    def from_speech_dataset(cls, dataset, tokenizer) -> "ClipStore":
        """Clips of a `load_speech_dataset` dataset (any corpus the project reads: audiofolder, Hub, saved)."""
        audio = [np.asarray(row, dtype=np.float32) for row in dataset.with_format("numpy", columns=["audio"])["audio"]]
        return cls(audio, make_labels(dataset["text"], tokenizer))


def is_packable_corpus(path: str | os.PathLike) -> bool:
    """Whether `path` is a saved corpus whose `audio` column stores raw float32 samples (what `synth` writes)."""
    folder = Path(path)
    if not (folder / "dataset_dict.json").is_file():
        return False
    from .synth import corpus_features

    info = next(folder.glob("*/dataset_info.json"), None)
    if info is None:
        return False

    features = json.loads(info.read_text()).get("features", {})
    return features.get("audio") == corpus_features().to_dict()["audio"]


def _arrow_waveforms(column) -> Iterator[np.ndarray]:
    for chunk in column.chunks:
        lists = chunk.field("array")
        offsets = lists.offsets.to_numpy()
        values = lists.values.to_numpy(zero_copy_only=True)
        for start, end in zip(offsets[:-1], offsets[1:]):
            yield values[start:end]


def pack_first_fit(lengths: Sequence[int], capacity: int, gap: int) -> list[list[int]]:
    """Indices of `lengths` grouped into rows of at most `capacity`, `gap` apart, first-fit decreasing.

    A length over `capacity` gets no row (the caller reports it).
    """
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        length = lengths[index]
        if length > capacity:
            continue
        for row, space in enumerate(free):
            if space >= length + gap:
                rows[row].append(index)
                free[row] -= length + gap
                break
        else:
            rows.append([index])
            free.append(capacity - length)
    return rows


def normalise(audio: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance: `Wav2Vec2FeatureExtractor`'s `do_normalize` for one utterance."""
    return ((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)).astype(np.float32)


class PackedCTCDataset(torch.utils.data.IterableDataset):
    """Endless stream of packed rows `{"input_values", "labels", "speech_samples"}` from a `ClipStore`.

    `row_seconds` is the row length; `pool_size` clips are packed together; clips are separated by
    `gap_seconds` of silence; `normalize` matches the feature extractor's `do_normalize`. `start_pass` chooses
    where the stream starts (a resumed run starts on fresh passes instead of replaying the rows it already saw).
    Each DataLoader worker of each process (rank) packs its own share of the pools.
    """

    def __init__(self, store: ClipStore, word_delimiter_id: int, row_seconds: float = 8.0,
                 augmenter: Augmenter | None = None, seed: int = 0, normalize: bool = True,
                 gap_seconds: float = 0.15, pool_size: int = 256, start_pass: int = 0):  # fmt: skip
        super().__init__()
        if not row_seconds > 0:
            raise ValueError(f"row length must be > 0 seconds, got {row_seconds}")
        self.store = store
        self.word_delimiter_id = int(word_delimiter_id)
        self.row_samples = int(round(row_seconds * store.sampling_rate))
        self.gap_samples = int(round(gap_seconds * store.sampling_rate))
        self.augmenter = augmenter
        self.seed = int(seed)
        self.normalize = normalize
        self.pool_size = int(pool_size)
        self.start_pass = int(start_pass)
        too_long = sum(len(clip) > self.row_samples for clip in store.audio)
        if too_long:
            logger.warning("%d of %d clips are longer than a %.1f s row and are left out (before augmentation)",
                           too_long, len(store), row_seconds)
        if too_long == len(store):
            raise ValueError(f"every clip is longer than a {row_seconds:g} s row: raise the row length")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # one share per rank and worker
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
            worker, workers = rank * workers + worker, world * workers
        pass_index = self.start_pass
        while True:
            yield from self.rows_of_pass(pass_index, worker, workers)
            pass_index += 1

    def rows_of_pass(self, pass_index: int, worker: int = 0, workers: int = 1) -> Iterator[dict[str, Any]]:
        """The rows of one pass over the clips (this worker's share of its pools)."""
        order = np.random.default_rng([self.seed, pass_index]).permutation(len(self.store))
        for pool_number, start in enumerate(range(0, len(order), self.pool_size)):
            if pool_number % workers == worker:
                yield from self._pack_pool(pass_index, order[start : start + self.pool_size])

    def _pack_pool(self, pass_index: int, indices: np.ndarray) -> Iterator[dict[str, Any]]:
        clips = [self._prepared_clip(pass_index, int(index)) for index in indices]
        rows = pack_first_fit([len(clip) for clip in clips], self.row_samples, self.gap_samples)
        shuffle = np.random.default_rng([self.seed, pass_index, int(indices[0]), 1]).permutation(len(rows))
        for row in shuffle:
            yield self._row([clips[i] for i in rows[row]], [self.store.labels[int(indices[i])] for i in rows[row]])

    def _prepared_clip(self, pass_index: int, index: int) -> np.ndarray:
        audio = self.store.audio[index]
        if self.augmenter is not None:
            audio, _ = self.augmenter(audio, np.random.default_rng([self.seed, pass_index, index]))
        return normalise(audio) if self.normalize else np.asarray(audio, dtype=np.float32)

    def _row(self, clips: list[np.ndarray], labels: list[list[int]]) -> dict[str, Any]:
        values = np.zeros(self.row_samples, dtype=np.float32)
        position, speech = 0, 0
        for clip in clips:
            values[position : position + len(clip)] = clip
            position += len(clip) + self.gap_samples
            speech += len(clip)
        joined: list[int] = []
        for clip_labels in labels:
            if joined:
                joined.append(self.word_delimiter_id)
            joined.extend(clip_labels)
        return {"input_values": values, "labels": joined, "speech_samples": speech}


@dataclass
class PackedCTCCollator:
    """Stacks packed rows (all of one length: no attention mask) and pads labels with -100; hands rows that are
    single clips (evaluation) to `unpacked`.

    `speech_seconds` (the batch's seconds of speech, not counting silence between clips and at row ends) rides
    along for the trainer's throughput log; the trainer removes it before the forward pass.
    """

    sampling_rate: int = SAMPLING_RATE
    unpacked: Any = None  # collator for rows that are single clips (the evaluation set), e.g. DataCollatorCTCWithPadding

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "speech_samples" not in rows[0]:
            if self.unpacked is None:
                raise ValueError("these rows are not packed (no speech_samples) and no `unpacked` collator is set")
            return self.unpacked(rows)
        lengths = {len(row["input_values"]) for row in rows}
        if len(lengths) != 1:
            raise ValueError(f"packed rows must all have one length, got {sorted(lengths)}")
        longest = max(len(row["labels"]) for row in rows)
        labels = torch.full((len(rows), longest), -100, dtype=torch.long)
        for index, row in enumerate(rows):
            labels[index, : len(row["labels"])] = torch.as_tensor(row["labels"], dtype=torch.long)
        return {
            "input_values": torch.from_numpy(np.stack([row["input_values"] for row in rows])),
            "labels": labels,
            "speech_seconds": torch.tensor(sum(row["speech_samples"] for row in rows) / self.sampling_rate),
        }
