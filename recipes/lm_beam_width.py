#!/usr/bin/env python3
"""The LM beam width, measured both ways (BENCHMARKS.md, "n-gram language model: the beam width"):

1. accuracy: WER/CER of the final head on dev utterances with greedy decoding and with the LM at each beam width
   (full depth, batch 1; the logits are computed once and every decoder reads the same ones);
2. cost: LM decoding of a 5 s clip (test speech concatenated) against the full-depth encoder time of that clip,
   15 interleaved repetitions: the median ratio and its 10th-90th percentile, per beam width.

    .venv/bin/python recipes/lm_beam_width.py [--model FOLDER] [--dataset CORPUS] [--dev-samples 200]
        [--widths 4,8,16,32] [--json benchmarks/results/lm_beam_width.json] [--markdown ...md]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hubert_ee.data import load_speech_dataset
from hubert_ee.decoding import build_decoder
from hubert_ee.inference import featurize
from hubert_ee.loading import load_model_and_processor
from hubert_ee.metrics import char_error_rate, word_error_rate

CLIP_SECONDS = 5
REPEATS = 15


def dev_accuracy(model, processor, decoders: dict, dataset) -> dict:
    """Per decoder: WER, CER and the total decode seconds over `dataset`, at full depth, one utterance at a time."""
    hypotheses = {name: [] for name in decoders}
    seconds = {name: 0.0 for name in decoders}
    with torch.inference_mode():
        for row in tqdm(dataset, desc="dev utterances"):
            values, mask = featurize(processor, [row["audio"]], "cpu")
            logits = model.generate(values, mask, early_exit=False).logits
            for name, decoder in decoders.items():
                start = time.perf_counter()
                hypotheses[name].append(decoder.decode(logits, None)[0])
                seconds[name] += time.perf_counter() - start
    references = list(dataset["text"])
    return {name: {"wer": word_error_rate(references, texts), "cer": char_error_rate(references, texts),
                   "decode_s": seconds[name]} for name, texts in hypotheses.items()}


def clip_cost(model, processor, decoders: dict, test) -> dict:
    """Per decoder: its decode time of a 5 s clip over the clip's full-depth encoder time (repetitions interleaved,
    the first one dropped as warm-up)."""
    audio = np.concatenate([row["audio"] for row in test])[: CLIP_SECONDS * 16000]
    values, mask = featurize(processor, [audio], "cpu")
    encoder, decode = [], {name: [] for name in decoders}
    with torch.inference_mode():
        for repetition in tqdm(range(REPEATS + 1), desc=f"{CLIP_SECONDS} s clip"):
            start = time.perf_counter()
            logits = model.generate(values, mask, early_exit=False).logits
            encoder_s = time.perf_counter() - start
            times = {}
            for name, decoder in decoders.items():
                start = time.perf_counter()
                decoder.decode(logits, None)
                times[name] = time.perf_counter() - start
            if repetition:
                encoder.append(encoder_s)
                for name in decoders:
                    decode[name].append(times[name])
    result = {}
    for name in decoders:
        ratios = [d / e for d, e in zip(decode[name], encoder)]
        low, high = np.percentile(ratios, [10, 90])
        result[name] = {"decode_ms": statistics.median(decode[name]) * 1e3, "ratio": statistics.median(ratios),
                        "ratio_p10": float(low), "ratio_p90": float(high)}
    return {"encoder_ms": statistics.median(encoder) * 1e3, "decoders": result}


def markdown(report: dict) -> str:
    lines = [f"Final head, {report['dev_samples']} dev utterances of `{report['dataset']}` (batch 1); decode cost of a "
             f"{CLIP_SECONDS} s test clip against its full-depth encoder time ({report['clip']['encoder_ms']:.0f} ms "
             f"here), median of {REPEATS} interleaved repetitions with the 10th-90th percentile.", "",
             "| decoder | dev WER | dev CER | decode / encoder, 5 s clip |", "|---|---|---|---|"]
    for name, accuracy in report["dev"].items():
        cost = report["clip"]["decoders"][name]
        lines.append(f"| {name} | {accuracy['wer']:.2f} | {accuracy['cer']:.2f} | {cost['ratio']:.2f} "
                     f"({cost['ratio_p10']:.2f}-{cost['ratio_p90']:.2f}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/hubert-ee-compact-synth")
    parser.add_argument("--dataset", default="outputs/corpus-v2")
    parser.add_argument("--dev-samples", type=int, default=200)
    parser.add_argument("--widths", default="4,8,16,32")
    parser.add_argument("--json", default="benchmarks/results/lm_beam_width.json")
    parser.add_argument("--markdown", default="benchmarks/results/lm_beam_width.md")
    args = parser.parse_args()
    model, processor = load_model_and_processor(args.model, "cpu")
    blank = model.config.pad_token_id
    decoders = {"greedy": build_decoder("greedy", args.model, processor, blank)}
    for width in (int(width) for width in args.widths.split(",")):
        decoders[f"LM, beam {width}"] = build_decoder("lm", args.model, processor, blank, beam_width=width)
    dev = load_speech_dataset(args.dataset, split="dev", max_samples=args.dev_samples)
    test = load_speech_dataset(args.dataset, split="test", max_samples=60)
    report = {"model": args.model, "dataset": args.dataset, "dev_samples": len(dev),
              "dev": dev_accuracy(model, processor, decoders, dev),
              "clip": clip_cost(model, processor, decoders, test)}
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    Path(args.markdown).write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
