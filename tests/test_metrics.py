"""Tests of hubert_ee.metrics: offline WER/CER and the Trainer compute_metrics."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import EvalPrediction

from hubert_ee.metrics import char_error_rate, ctc_compute_metrics, error_counts, word_error_rate
from hubert_ee.text import build_processor


def test_wer_hand_computed():
    # "the cat sat" -> "the bat sat down": 1 substitution + 1 insertion over 3 words
    assert word_error_rate(["the cat sat"], ["the bat sat down"]) == pytest.approx(200 / 3)
    # corpus level: (1 + 0 + 2 deletions) / (3 + 2 + 2) words
    refs = ["the cat sat", "hello world", "good morning"]
    hyps = ["the cat sit", "hello world", ""]
    assert word_error_rate(refs, hyps) == pytest.approx(100 * 3 / 7)
    assert word_error_rate("a b c d", "a b c d") == 0.0
    assert word_error_rate(["a b"], ["c d e f"]) == pytest.approx(200.0)  # 2 sub + 2 ins


def test_cer_hand_computed():
    # "AB C" vs "AB D": one substitution over 4 characters (the space counts)
    assert char_error_rate(["ab c"], ["ab d"]) == pytest.approx(25.0)
    # "HELLO" vs "HELO": one deletion over 5
    assert char_error_rate(["hello"], ["helo"]) == pytest.approx(20.0)
    c = error_counts(["ab c"], ["abc"], unit="char")
    assert c == {"substitutions": 0, "deletions": 1, "insertions": 0, "hits": 3, "reference_length": 4}


def test_normalisation_is_applied():
    # case, punctuation and extra spaces are not errors; digits are written out
    assert word_error_rate(["Hello, World!"], ["hello   world"]) == 0.0
    assert char_error_rate(["It's  OK."], ["IT'S OK"]) == 0.0
    assert word_error_rate(["In 1491 he left"], ["IN FOURTEEN NINETY ONE HE LEFT"]) == 0.0
    # without normalisation the same pair is all wrong
    assert word_error_rate(["Hello, World!"], ["hello world"], normalize=False) == 100.0


def test_empty_references():
    assert word_error_rate([""], [""]) == 0.0
    assert char_error_rate(["", "  "], ["", ""]) == 0.0
    assert word_error_rate([""], ["something"]) == 100.0
    # empty reference in a mixed corpus: its hypothesis words are insertions
    assert word_error_rate(["a b", ""], ["a b", "c"]) == pytest.approx(50.0)
    assert char_error_rate(["ab", ""], ["ab", "c"]) == pytest.approx(50.0)
    # punctuation-only reference normalises to empty
    assert word_error_rate(["!!!"], [""]) == 0.0


def test_length_mismatch():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_error_rate(["a", "b"], ["a"])


def _onehot(ids: list[int], vocab_size: int) -> np.ndarray:
    x = np.full((len(ids), vocab_size), -5.0, dtype=np.float32)
    x[np.arange(len(ids)), ids] = 5.0
    return x


@pytest.fixture(scope="module")
def processor():
    return build_processor()


def test_ctc_compute_metrics(processor):
    tok = processor.tokenizer
    v = tok.get_vocab()
    V = len(v)
    pad = tok.pad_token_id
    # greedy CTC: repeats merged, blanks (pad) removed -> "HELLO A"
    seq1 = [v["H"], v["H"], pad, v["E"], v["L"], pad, v["L"], v["O"], v["|"], v["|"], v["A"]]
    # second utterance is shorter: the Trainer pads its logits with -100 -> "A"
    row2 = np.concatenate([_onehot([v["A"]] * 4, V), np.full((7, V), -100.0, np.float32)])
    logits = np.stack([_onehot(seq1, V), row2])
    labels = np.array([[v[c] for c in "HELLO|A"], [v["B"]] + [-100] * 6])

    compute = ctc_compute_metrics(processor)
    # tuple predictions (logits, extra outputs) -> the first element is used
    out = compute(EvalPrediction(predictions=(logits, np.zeros(3)), label_ids=labels))
    # references "HELLO A", "B"; hypotheses "HELLO A", "A": 1 substitution over 3 words
    assert out["wer"] == pytest.approx(100 / 3)
    # characters: "HELLO A" (7) + "B" (1): 1 substitution over 8
    assert out["cer"] == pytest.approx(100 / 8)

    # plain logits and argmax ids give the same result
    assert compute(EvalPrediction(predictions=logits, label_ids=labels)) == out
    ids = logits.argmax(-1)
    ids[1, 4:] = -100
    assert compute(EvalPrediction(predictions=ids, label_ids=labels)) == out


def test_ctc_compute_metrics_perfect(processor):
    v = processor.tokenizer.get_vocab()
    V = len(v)
    text = "HELLO|WORLD"
    frames = []
    for i, ch in enumerate(text):  # blanks between letters keep the double L
        frames += [v[ch], processor.tokenizer.pad_token_id]
    logits = _onehot(frames, V)[None]
    labels = np.array([[v[c] for c in text]])
    out = ctc_compute_metrics(processor)(EvalPrediction(predictions=logits, label_ids=labels))
    assert out == {"wer": 0.0, "cer": 0.0}
