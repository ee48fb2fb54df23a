"""`make demo`: the real HuBERT-EE path, end to end, on this machine.

1. A `HubertForCTC` checkpoint: the shipped trained model's backbone when there is one, else a small random one
   built here (the stand-in for downloading `facebook/hubert-*-ls960-ft`, which this machine cannot).
2. Conversion to `HubertEEForCTC` (`HubertEEForCTC.from_pretrained(<HubertForCTC folder>, exit_layers=...)`) and a
   Hub-ready save (weights, config with `auto_map`, both code files, tokenizer, feature extractor).
3. A fresh Python process that never imports this project loads the folder with `trust_remote_code=True`, runs
   `pipeline("automatic-speech-recognition")` on clips synthesised with espeak-ng, and prints per clip the
   transcript, the exit layer and the time against the same model at full depth.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile
import torch
from transformers import HubertForCTC

from .export import convert_checkpoint, save_hub_folder
from .synth import synthesize, to_16k, trim_silence
from .text import build_processor
from .train import build_backbone_config

DEMO_SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "early exit makes speech recognition faster",
    "hello world",
]

# Runs in a separate interpreter without this project on its path: what a Hub user does.
FRESH_PROCESS = r"""
import json, sys, time
import soundfile, torch
from transformers import AutoModelForCTC, AutoProcessor, pipeline

folder, clips = sys.argv[1], sys.argv[2:]
model = AutoModelForCTC.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
asr = pipeline("automatic-speech-recognition", model=model, tokenizer=processor.tokenizer,
               feature_extractor=processor.feature_extractor)
print(f"loaded {type(model).__name__} from {type(model).__module__}")
rows = []
for clip in clips:
    audio, rate = soundfile.read(clip, dtype="float32")
    text = asr({"raw": audio, "sampling_rate": rate})["text"]
    inputs = processor(audio, sampling_rate=rate, return_tensors="pt")
    def timed(**settings):
        model.generate(inputs.input_values, **settings)  # warm-up
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            out = model.generate(inputs.input_values, **settings)
            best = min(best, time.perf_counter() - start)
        return out, best
    early, early_s = timed()
    full, full_s = timed(early_exit=False)
    first, first_s = timed(exit_threshold=0.0)  # per-call override: any confidence passes, first exit answers
    rows.append({"clip": clip, "text": text, "exit_layer": int(early.exit_layer[0]),
                 "num_layers": model.config.num_hidden_layers, "early_ms": early_s * 1e3, "full_ms": full_s * 1e3,
                 "first_exit_layer": int(first.exit_layer[0]), "first_exit_ms": first_s * 1e3})
print(json.dumps(rows))
"""


def _demo_clips(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for index, sentence in enumerate(DEMO_SENTENCES):
        audio, rate = synthesize(sentence, "espeak-ng", "en-us", rate=160)
        path = folder / f"clip{index}.wav"
        soundfile.write(path, trim_silence(to_16k(audio, rate)), 16000)
        clips.append(path)
    return clips


def _random_backbone(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    processor = build_processor()
    model = HubertForCTC(build_backbone_config("small", len(processor.tokenizer)))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hubert_ee.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/demo", help="Working folder (default: outputs/demo).")
    parser.add_argument("--exit-layers", default="3,6,9", help="Exit layers of the converted model.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random stand-in backbone.")
    args = parser.parse_args(argv)
    output = Path(args.output)

    print("== 1. a HubertForCTC checkpoint")
    backbone = _random_backbone(output / "hubert-ctc", args.seed)
    print(f"   {backbone}: small HubertForCTC with RANDOM weights (no pretrained HuBERT can be downloaded here;\n"
          "   transcripts below are noise until a trained model ships: the demo shows the path, not accuracy)")

    print("== 2. convert to HuBERT-EE and save Hub-style")
    exit_layers = [int(layer) for layer in args.exit_layers.split(",")]
    model = convert_checkpoint(backbone, exit_layers=exit_layers, exit_branch="linear")
    folder = save_hub_folder(model, build_processor(), output / "hubert-ee")
    print(f"   {folder}: " + ", ".join(sorted(path.name for path in folder.iterdir())))

    print("== 3. synthesise clips, reload with trust_remote_code in a fresh process, run the ASR pipeline")
    clips = _demo_clips(output / "clips")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    script = output / "fresh_process.py"
    script.write_text(FRESH_PROCESS)
    result = subprocess.run([sys.executable, str(script.resolve()), str(folder.resolve()),
                             *[str(clip.resolve()) for clip in clips]],
                            cwd=output, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        return result.returncode
    lines = result.stdout.strip().splitlines()
    print("   " + next(line for line in lines if line.startswith("loaded ")))
    rows = json.loads(lines[-1])
    print(f"\n   {'clip':<10} {'exit layer':>10} {'early ms':>9} {'full ms':>8}  {'forced first exit':>17}  transcript")
    for row in rows:
        first = f"layer {row['first_exit_layer']}: {row['first_exit_ms']:.1f} ms"
        print(f"   {Path(row['clip']).name:<10} {row['exit_layer']:>4} / {row['num_layers']:<3} "
              f"{row['early_ms']:>9.1f} {row['full_ms']:>8.1f}  {first:>17}  {row['text'][:50]!r}")
    mean_exit = float(np.mean([row["exit_layer"] for row in rows]))
    print(f"\n   mean exit layer {mean_exit:.1f} of {rows[0]['num_layers']} at the configured threshold "
          f"({model.config.exit_criterion} {model.config.exit_threshold}); 'forced first exit' overrides the "
          "threshold for one call (exit_threshold=0.0) to show the time an early answer takes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
