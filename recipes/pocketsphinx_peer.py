"""The offline peer a user would otherwise pick: PocketSphinx 5 on the same speech, scored the same way.

PocketSphinx's wheel ships its own US-English acoustic model, dictionary and language model, so it runs offline.
Its transcripts are scored with the project's normaliser and WER/CER, exactly as `hubert-ee evaluate` scores
HuBERT-EE, so the two rows of a results table are comparable.

    pip install -e ".[peer]"
    python recipes/pocketsphinx_peer.py ../shared/data/real-speech-dev \
        --json benchmarks/results/pocketsphinx_real_speech.json
"""

import argparse
import json

import numpy as np
from pocketsphinx import Decoder
from tqdm.auto import tqdm

from hubert_ee.data import load_speech_dataset
from hubert_ee.metrics import char_error_rate, word_error_rate
from hubert_ee.outputs import write_json

SAMPLING_RATE = 16000


def transcribe(decoder: Decoder, audio: np.ndarray) -> str:
    """One utterance through PocketSphinx, which reads 16-bit PCM."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return hypothesis.hypstr if hypothesis is not None else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="a speech corpus as `hubert-ee evaluate --dataset` takes it")
    parser.add_argument("--split", default=None)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--json", required=True, help="where the result goes")
    args = parser.parse_args()

    dataset = load_speech_dataset(args.dataset, split=args.split, max_samples=args.max_samples)
    decoder = Decoder(samprate=SAMPLING_RATE)
    predictions, references = [], []
    for row in tqdm(dataset, desc="pocketsphinx"):
        audio = np.asarray(row["audio"], dtype=np.float32).reshape(-1)
        predictions.append(transcribe(decoder, audio))
        references.append(row["text"])
    result = {
        "recogniser": "PocketSphinx 5 (its wheel's en-us acoustic model, dictionary and language model)",
        "dataset": args.dataset,
        "utterances": len(references),
        "wer": word_error_rate(references, predictions),
        "cer": char_error_rate(references, predictions),
        "examples": [{"reference": r, "prediction": p} for r, p in list(zip(references, predictions))[:5]],
    }
    write_json(result, args.json)
    print(f"PocketSphinx on {len(references)} utterances: WER {result['wer']:.2f}, CER {result['cer']:.2f}")


if __name__ == "__main__":
    main()
