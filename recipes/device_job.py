"""Helpers of recipes/device_train_backbone.sh (run on the GPU machine, but they work anywhere).

    python recipes/device_job.py versions
        Python, torch / CUDA / GPU and the versions of the packages the job relies on.
    python recipes/device_job.py eval MODEL CORPUS OUT.json [--splits test,dev] [--batch-size 32]
        Greedy-CTC WER / CER (percent, corpus level, after normalize_text) of the final head of a HubertForCTC or
        HuBERT-EE checkpoint on the splits of a `hubert-ee synth` corpus, overall, for held-out and seen voices (the corpus'
        synth_summary.json names the held-out test voices), per engine and per voice; with a few examples.
    python recipes/device_job.py export CORPUS DEST [--splits dev,test] [--max-mib 14]
        The splits as audiofolders DEST/<split>/ (16-bit FLAC + metadata.csv with
        file_name,transcription,engine,voice), loadable with `--dataset DEST --eval-split <split>`. Rows are taken in
        a seeded random order until each split's share of --max-mib of FLAC is used (all rows if they fit).
    python recipes/device_job.py log-history OUTPUT
        The Trainer's log history (newest OUTPUT/checkpoints/checkpoint-*/trainer_state.json), one JSON per line.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path


def cmd_versions(args) -> int:
    import importlib.metadata as md
    import platform

    print(f"python {platform.python_version()} ({sys.executable}), {platform.platform()}")
    for name in ("torch", "transformers", "accelerate", "huggingface_hub", "numpy", "pandas", "pyarrow", "fsspec",
                 "datasets", "dill", "multiprocess", "soundfile", "cffi", "soxr", "jiwer", "rapidfuzz", "num2words"):
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            version = "MISSING"
        print(f"  {name:16s} {version}")
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            print(f"  cuda: {torch.version.cuda}, {props.name}, {props.total_memory / 2**30:.0f} GiB, "
                  f"bf16={torch.cuda.is_bf16_supported()}")
        else:
            print("  cuda: not available")
    except Exception as error:  # noqa: BLE001 - informational only
        print(f"  torch: {error}")
    return 0


def _rates(refs, hyps, rows) -> dict:
    from hubert_ee.metrics import char_error_rate, word_error_rate

    return {"wer": round(word_error_rate(refs, hyps), 3), "cer": round(char_error_rate(refs, hyps), 3),
            "utterances": len(refs), "hours": round(sum(r["duration"] for r in rows) / 3600, 4)}


def cmd_eval(args) -> int:
    import numpy as np
    import torch
    from hubert_ee.data import load_speech_dataset
    from hubert_ee.inference import featurize, greedy_decode
    from hubert_ee.loading import load_processor
    from hubert_ee.train import load_backbone

    t0 = time.time()
    corpus = Path(args.corpus)
    summary_path = corpus / "synth_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    held = set(summary.get("test_voices", []))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_backbone(args.model).to(device).eval()  # the final head of a HubertForCTC or HuBERT-EE folder
    processor = load_processor(args.model)
    result: dict = {"model": str(args.model), "corpus": str(corpus), "device": device,
                    "metric": "greedy CTC, final head; WER/CER in percent, corpus level, after normalize_text",
                    "heldout_voices": sorted(held), "splits": {}}
    for split in [s for s in args.splits.split(",") if s]:
        try:
            ds = load_speech_dataset(str(corpus), split=split)
        except ValueError as error:
            result["splits"][split] = {"error": str(error)}
            continue
        columns = [c for c in ("id", "text", "engine", "voice", "duration") if c in ds.column_names]
        rows = ds.select_columns(columns).to_list()
        for row in rows:
            row.setdefault("duration", 0.0)
            row.setdefault("engine", "?")
            row.setdefault("voice", "?")
        arrays = list(ds.with_format("numpy")["audio"]) if len(ds) else []
        order = np.argsort([-len(a) for a in arrays], kind="stable")
        hyps = [""] * len(ds)
        with torch.inference_mode():
            for start in range(0, len(order), args.batch_size):
                index = [int(i) for i in order[start:start + args.batch_size]]
                values, mask = featurize(processor, [arrays[i] for i in index], device)
                logits = model(values, attention_mask=mask).logits
                for row_index, text in zip(index, greedy_decode(model, processor, logits, mask)):
                    hyps[row_index] = text
        refs = [r["text"] for r in rows]
        keys = [f"{r['engine']}:{r['voice']}" for r in rows]

        def subset(predicate):
            chosen = [i for i, key in enumerate(keys) if predicate(i, key)]
            return _rates([refs[i] for i in chosen], [hyps[i] for i in chosen], [rows[i] for i in chosen])

        out = {"all": _rates(refs, hyps, rows)}
        if held:
            out["heldout_voices"] = subset(lambda i, key: key in held)
            out["seen_voices"] = subset(lambda i, key: key not in held)
        out["engines"] = {e: subset(lambda i, key, e=e: rows[i]["engine"] == e)
                          for e in sorted({r["engine"] for r in rows})}
        out["voices"] = {v: subset(lambda i, key, v=v: key == v) for v in sorted(set(keys))}
        out["examples"] = [{"id": rows[i].get("id"), "voice": keys[i], "ref": refs[i], "hyp": hyps[i]}
                           for i in range(min(8, len(rows)))]
        result["splits"][split] = out
        print(f"{split}: WER {out['all']['wer']:.2f} CER {out['all']['cer']:.2f} ({len(rows)} utterances)"
              + (f"; held-out voices WER {out['heldout_voices']['wer']:.2f}, seen {out['seen_voices']['wer']:.2f}"
                 if held and out['heldout_voices']['utterances'] and out['seen_voices']['utterances'] else ""))
    result["seconds"] = round(time.time() - t0, 1)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


def cmd_export(args) -> int:
    import numpy as np
    import soundfile as sf
    from datasets import load_from_disk

    from hubert_ee.synth import decode_audio

    dsd = load_from_disk(str(args.corpus))
    splits = [s for s in args.splits.split(",") if s in dsd]
    budget = args.max_mib * 2**20 / max(1, len(splits))
    dest = Path(args.dest)
    for split in splits:
        ds = dsd[split].with_format("numpy")
        folder = dest / split
        folder.mkdir(parents=True, exist_ok=True)
        order = np.random.default_rng(args.seed).permutation(len(ds))
        used, kept = 0, []
        for i in order:
            row = ds[int(i)]
            x, sr = decode_audio(row)
            # "utt-0000016.flac", not the id "test-0000016": `load_dataset("audiofolder", data_dir=...)` reads a
            # split name into file names, and a split named by file names leaves metadata.csv (the transcripts) out
            name = f"utt-{str(row['id']).rsplit('-', 1)[-1]}.flac"
            sf.write(folder / name, x, sr, format="FLAC", subtype="PCM_16")
            size = (folder / name).stat().st_size + 1024  # + tar header and padding
            if used + size > budget:
                (folder / name).unlink()
                break
            used += size
            kept.append((int(i), name, str(row["text"]), str(row["engine"]), str(row["voice"]),
                         float(row["duration"])))
        kept.sort()
        with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", "transcription", "engine", "voice"])
            writer.writerows([k[1:5] for k in kept])
        print(f"export {split}: {len(kept)} of {len(ds)} utterances, {sum(k[5] for k in kept) / 60:.1f} min, "
              f"{used / 2**20:.1f} MiB -> {folder}")
    return 0


def cmd_log_history(args) -> int:
    checkpoints = sorted(Path(args.output, "checkpoints").glob("checkpoint-*"),
                         key=lambda p: int(p.name.rsplit("-", 1)[-1]) if p.name.rsplit("-", 1)[-1].isdigit() else -1)
    if not checkpoints:
        print(f"no checkpoint in {args.output}/checkpoints")
        return 1
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    print(f"{checkpoints[-1]}: global_step {state.get('global_step')} of max_steps {state.get('max_steps')}")
    for entry in state.get("log_history", []):
        print(json.dumps(entry))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("versions").set_defaults(run=cmd_versions)
    p = sub.add_parser("eval")
    p.add_argument("model")
    p.add_argument("corpus")
    p.add_argument("out")
    p.add_argument("--splits", default="test")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(run=cmd_eval)
    p = sub.add_parser("export")
    p.add_argument("corpus")
    p.add_argument("dest")
    p.add_argument("--splits", default="dev,test")
    p.add_argument("--max-mib", type=float, default=14.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_export)
    p = sub.add_parser("log-history")
    p.add_argument("output")
    p.set_defaults(run=cmd_log_history)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
