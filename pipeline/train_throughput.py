"""Training throughput of the backbone on this machine: seconds of speech trained on per wall-clock second.

Compares the ways a batch can be built and computed, on the same model and clips, in one run (the configurations
take turns in blocks, so a machine that slows down mid-run slows all of them alike):

- batching: `packed` (clips concatenated into equal rows, `pipeline/packing.py`) or `padded` (clips sorted by length
  in buckets and padded to the longest in the batch, with an attention mask: length-grouped batching);
- precision: `fp32`, or `bf16` autocast;
- optionally `torch.compile`d (`packed:fp32:compiled`).

Each step is a full optimiser step (forward, CTC loss, backward, AdamW), as in training; batch building and
augmentation are timed too. `padding_share` is the share of computed samples that are not speech.

    python -m hubert_ee.train_throughput --model models/hubert-ee-compact-synth --dataset outputs/corpus-v2 \\
        --json benchmarks/results/train_throughput.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .arguments import add_train_throughput_arguments, throughput_configurations
from .augment import Augmenter
from .data import DataCollatorCTCWithPadding
from .export import load_processor
from .outputs import write_text
from .packing import ClipStore, PackedCTCCollator, PackedCTCDataset, normalise
from .text import SAMPLING_RATE
from .train import load_backbone


@dataclass
class ThroughputRow:
    batching: str
    precision: str
    steps: int
    speech_seconds: float
    wall_seconds: float
    padding_share: float

    @property
    def audio_s_per_s(self) -> float:
        return self.speech_seconds / self.wall_seconds


def padded_batches(store: ClipStore, processor, seconds_per_batch: float, seed: int):
    """Length-grouped padded batches of about `seconds_per_batch` of speech: shuffled buckets of 50 batches' worth,
    sorted by length within, each cut into batches."""
    rng = np.random.default_rng(seed)
    collator = DataCollatorCTCWithPadding(processor=processor)
    order = rng.permutation(len(store))
    rate = store.sampling_rate
    mean_clip = np.mean([len(clip) for clip in store.audio]) / rate
    per_batch = max(1, int(seconds_per_batch / mean_clip))
    bucket = per_batch * 50
    while True:
        for start in range(0, len(order), bucket):
            chunk = sorted(order[start : start + bucket], key=lambda index: len(store.audio[index]))
            for first in range(0, len(chunk) - per_batch + 1, per_batch):
                rows = [{"input_values": normalise(store.audio[i]), "labels": store.labels[i]}
                        for i in chunk[first : first + per_batch]]
                batch = collator(rows)
                batch["speech_seconds"] = torch.tensor(sum(len(row["input_values"]) for row in rows) / rate)
                yield batch


def packed_batches(store: ClipStore, row_seconds: float, rows_per_batch: int, seed: int, augment: bool):
    dataset = PackedCTCDataset(store, 4, row_seconds=row_seconds, augmenter=Augmenter() if augment else None,
                               seed=seed)  # fmt: skip
    collator = PackedCTCCollator()
    stream = iter(dataset)
    while True:
        yield collator([next(stream) for _ in range(rows_per_batch)])


def timed_step(model, optimizer, batches, bf16: bool) -> tuple[float, float, float]:
    """One optimiser step; returns (speech seconds, computed seconds, wall seconds) of it."""
    start = time.perf_counter()
    batch = next(batches)
    speech = float(batch.pop("speech_seconds"))
    computed = batch["input_values"].numel() / SAMPLING_RATE
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return speech, computed, time.perf_counter() - start


def measure(model_path: str, dataset: str, configurations: list[tuple[str, str, bool]], steps: int, warmup: int,
            row_seconds: float, rows_per_batch: int, max_clips: int, seed: int) -> list[ThroughputRow]:
    """Each configuration runs as a block (its warm-up, then its timed steps); blocks take turns over two rounds.

    Blocks rather than alternating steps: switching precision or batch shapes on every step defeats the CPU
    kernels' caches and slows every configuration (BENCHMARKS.md, "Training throughput").
    """
    processor = load_processor(model_path)
    store = ClipStore.from_corpus(dataset, "train", processor.tokenizer, max_samples=max_clips)
    totals = {config: [0.0, 0.0, 0.0] for config in configurations}
    models = {compiled: _train_mode_model(model_path, compiled) for compiled in {c for _, _, c in configurations}}
    optimizers = {compiled: torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True) for compiled, model in models.items()}
    streams = {
        "packed": packed_batches(store, row_seconds, rows_per_batch, seed, augment=True),
        "padded": padded_batches(store, processor, row_seconds * rows_per_batch * 0.95, seed),
    }
    rounds = 2
    progress = tqdm(total=rounds * len(configurations) * (warmup + -(-steps // rounds)), desc="training steps")
    for round_number in range(rounds):
        for batching, precision, compiled in configurations:
            timed = steps // rounds + (round_number < steps % rounds)
            for step in range(warmup + timed):
                speech, computed, wall = timed_step(models[compiled], optimizers[compiled], streams[batching],
                                                    precision == "bf16")
                progress.update()
                if step >= warmup:
                    for index, value in enumerate((speech, computed, wall)):
                        totals[(batching, precision, compiled)][index] += value
    progress.close()
    return [ThroughputRow(batching + (" (compiled)" if compiled else ""), precision, steps, round(speech, 2),
                          round(wall, 3), round(1.0 - speech / computed, 4))
            for (batching, precision, compiled), (speech, computed, wall) in totals.items()]


def _train_mode_model(model_path: str, compiled: bool):
    model = load_backbone(model_path)
    model.train()
    return torch.compile(model) if compiled else model


def markdown(rows: list[ThroughputRow]) -> str:
    lines = ["| batching | precision | audio-s/s (speech) | padding share | steps |", "|---|---|---|---|---|"]
    lines += [f"| {row.batching} | {row.precision} | {row.audio_s_per_s:.1f} | {100 * row.padding_share:.1f} % | "
              f"{row.steps} |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_train_throughput_arguments(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        configurations = throughput_configurations(args.configurations)
    except argparse.ArgumentTypeError as error:
        parser.error(f"--configurations: {error}")
    rows = measure(args.model, args.dataset, configurations, args.steps, args.warmup, args.row_seconds,
                   args.rows_per_batch, args.max_clips, args.seed)
    print(markdown(rows))
    if args.json:
        record = {"threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                  "args": vars(args), "rows": [{**asdict(row), "audio_s_per_s": round(row.audio_s_per_s, 2)}
                                               for row in rows]}  # fmt: skip
        write_text(args.json, json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
