#!/usr/bin/env python3
"""LM decode of a 5 s clip against the full-depth encoder time (BENCHMARKS.md, "n-gram language model"): 5 s of
concatenated test speech, batch 1, 15 interleaved repetitions, medians and the 10th-90th percentile of the ratio.

    .venv/bin/python recipes/lm_decode_cost.py [CORPUS]
"""
import statistics, sys, time

import numpy as np
import torch

from hubert_ee.data import load_speech_dataset
from hubert_ee.loading import load_model_and_processor
from hubert_ee.decoding import build_decoder
from hubert_ee.inference import featurize
folder = "models/hubert-ee-compact-synth"
model, processor = load_model_and_processor(folder, "cpu")
test = load_speech_dataset(sys.argv[1] if len(sys.argv) > 1 else "outputs/corpus-v2", split="test", config=None, sampling_rate=16000, max_samples=60, text_column=None)
audio = np.concatenate([row["audio"] for row in test])[: 5 * 16000]  # exactly 5 s of test speech
x, m = featurize(processor, [audio], "cpu")
lms = {width: build_decoder("lm", folder, processor, model.config.pad_token_id, beam_width=width) for width in (8, 16, 32)}
greedy = build_decoder("greedy", folder, processor, model.config.pad_token_id)
enc, gdec, dec = [], [], {width: [] for width in lms}
with torch.inference_mode():
    for r in range(16):
        t = time.perf_counter(); logits = model.generate(x, m, early_exit=False).logits; e = time.perf_counter() - t
        times = {}
        for width, lm in lms.items():
            t = time.perf_counter(); text = lm.decode(logits, None); times[width] = time.perf_counter() - t
        t = time.perf_counter(); greedy.decode(logits, None); g = time.perf_counter() - t
        if r:
            enc.append(e); gdec.append(g)
            for width in lms: dec[width].append(times[width])
print(f"encoder (full depth) {statistics.median(enc)*1000:.0f} ms, greedy decode {statistics.median(gdec)*1000:.1f} ms")
for width in lms:
    ratios = [d / e for d, e in zip(dec[width], enc)]
    q = np.percentile(ratios, [10, 90])
    print(f"beam {width}: LM decode {statistics.median(dec[width])*1000:.0f} ms; LM decode / encoder: median "
          f"{statistics.median(ratios):.2f} (10th-90th percentile {q[0]:.2f}-{q[1]:.2f})")
print(text)
