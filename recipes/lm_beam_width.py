#!/usr/bin/env python3
"""What the LM beam width buys and what it costs (the figures are in BENCHMARKS.md, "Decode cost and the beam width"):

1. accuracy: WER/CER of the final head on dev utterances with greedy decoding and with the LM at each beam width
   (full depth, batch 1; the logits are computed once and every decoder reads the same ones);
2. cost: LM decoding of a 5 s clip (test speech concatenated) against the full-depth encoder time of that clip,
   15 interleaved repetitions: the median ratio and its 10th-90th percentile, per beam width; against the shipped
   model's encoder and against encoders of HuBERT-base's and HuBERT-large's geometry (random weights: the time of
   an encoder does not depend on them).

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


# Encoders whose time the same decoding is also set against: the geometry of the checkpoints HuBERT-EE is made for
# (facebook/hubert-base-ls960, facebook/hubert-large-ls960-ft), with random weights, since an encoder's time does not
# depend on its weights; the decoding's does, so every decoder reads the shipped model's logits.
REFERENCE_ENCODERS = {
    "HuBERT-base geometry": {},
    "HuBERT-large geometry": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                  intermediate_size=4096, feat_extract_norm="layer", do_stable_layer_norm=True,
                                  conv_bias=True),
}


def reference_encoders(vocab_size: int) -> dict:
    from transformers import HubertConfig, HubertForCTC

    torch.manual_seed(0)
    return {name: HubertForCTC(HubertConfig(vocab_size=vocab_size, **geometry)).eval()
            for name, geometry in REFERENCE_ENCODERS.items()}


def clip_cost(model, processor, decoders: dict, test, references: dict) -> dict:
    """Per decoder: its decode time of a 5 s clip over the clip's full-depth encoder time, for the shipped encoder
    and each of `references` (repetitions interleaved, the first one dropped as warm-up)."""
    audio = np.concatenate([row["audio"] for row in test])[: CLIP_SECONDS * 16000]
    values, mask = featurize(processor, [audio], "cpu")
    encoders = {"shipped model": lambda: model.generate(values, mask, early_exit=False).logits,
                **{name: (lambda encoder=encoder: encoder(values).logits) for name, encoder in references.items()}}
    encoder_s = {name: [] for name in encoders}
    decode_s = {name: [] for name in decoders}
    with torch.inference_mode():
        for repetition in tqdm(range(REPEATS + 1), desc=f"{CLIP_SECONDS} s clip"):
            times, outputs = {}, {}
            for name, encode in encoders.items():
                start = time.perf_counter()
                outputs[name] = encode()
                times[name] = time.perf_counter() - start
            logits = outputs["shipped model"]
            for name, decoder in decoders.items():
                start = time.perf_counter()
                decoder.decode(logits, None)
                times[name] = time.perf_counter() - start
            if repetition:
                for name, seconds in times.items():
                    (encoder_s if name in encoders else decode_s)[name].append(seconds)
    result = {"encoder_ms": {name: statistics.median(seconds) * 1e3 for name, seconds in encoder_s.items()},
              "decoders": {}}
    for name, seconds in decode_s.items():
        result["decoders"][name] = {"decode_ms": statistics.median(seconds) * 1e3}
        for encoder, baseline in encoder_s.items():
            ratios = [d / e for d, e in zip(seconds, baseline)]
            low, high = np.percentile(ratios, [10, 90])
            result["decoders"][name][encoder] = {"ratio": statistics.median(ratios), "ratio_p10": float(low),
                                                 "ratio_p90": float(high)}
    return result


def markdown(report: dict) -> str:
    encoders = report["clip"]["encoder_ms"]
    lines = [f"Final head, {report['dev_samples']} dev utterances of `{report['dataset']}` (batch 1). Decode time of a "
             f"{CLIP_SECONDS} s test clip over the full-depth encoder time of that clip (median of {REPEATS} "
             "interleaved repetitions, 10th-90th percentile): the shipped model's encoder, and random-weight encoders "
             "of HuBERT's released geometries decoding nothing (their time, not their logits). Encoder medians here: "
             + ", ".join(f"{name} {ms:.0f} ms" for name, ms in encoders.items()) + ".", "",
             "| decoder | dev WER | dev CER | decode ms | " + " | ".join(f"/ {name}" for name in encoders) + " |",
             "|---|---|---|---|" + "---|" * len(encoders)]
    for name, accuracy in report["dev"].items():
        cost = report["clip"]["decoders"][name]
        ratios = " | ".join(f"{cost[encoder]['ratio']:.2f} ({cost[encoder]['ratio_p10']:.2f}-"
                            f"{cost[encoder]['ratio_p90']:.2f})" for encoder in encoders)
        lines.append(f"| {name} | {accuracy['wer']:.2f} | {accuracy['cer']:.2f} | {cost['decode_ms']:.1f} | {ratios} |")
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
              "clip": clip_cost(model, processor, decoders, test, reference_encoders(len(processor.tokenizer)))}
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    Path(args.markdown).write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
