"""Tests of hubert_ee.metrics: offline WER/CER and the Trainer compute_metrics."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import EvalPrediction

from hubert_ee.metrics import char_error_rate, error_counts, word_error_rate
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


def test_exit_metrics_decodes_every_head():
    """`exit_metrics`' `compute_metrics`: per-frame ids [batch, frames, heads] with -100 padding, CTC-decoded per
    head, named after the config's exits; labels decoded without merging repeats ("HELLO" keeps its double L)."""
    from types import SimpleNamespace

    from hubert_ee.metrics import exit_metrics

    processor = build_processor()
    tokenizer = processor.tokenizer
    hello = tokenizer("HELLO").input_ids  # H E L L O
    blank = tokenizer.pad_token_id
    frames = [hello[0], hello[1], hello[2], blank, hello[3], hello[4], -100]  # CTC spelling of HELLO, then padding
    wrong = [hello[0], hello[1], hello[2], hello[3], hello[4], blank, -100]  # repeats merged: HELO
    ids = np.stack([np.array([wrong]), np.array([frames])], axis=-1)  # heads: exit_2, final
    labels = np.array([hello + [-100]])
    compute_metrics, _ = exit_metrics(processor, SimpleNamespace(exit_layers=[2]), percent=True)
    metrics = compute_metrics(EvalPrediction(predictions=ids, label_ids=labels))
    assert metrics == {"wer": 0.0, "cer": 0.0, "wer_exit_2": 100.0, "cer_exit_2": 20.0}
    fractions, _ = exit_metrics(processor, SimpleNamespace(exit_layers=[2]))
    assert fractions(EvalPrediction(predictions=ids, label_ids=labels))["cer_exit_2"] == pytest.approx(0.2)


def test_greedy_head_ids_stacks_exits_then_the_final_head():
    """`preprocess_logits_for_metrics` of `exit_metrics`: the Trainer's `(logits, exit_logits)` (or the logits
    alone) become argmax ids [batch, frames, heads], exits first, in the order `head_names` gives."""
    import torch

    from hubert_ee.metrics import greedy_head_ids, head_names
    from tests.conftest import tiny_config

    final, first, second = (torch.randn(2, 5, 7) for _ in range(3))
    ids = greedy_head_ids((final, (first, second)), None)
    assert ids.shape == (2, 5, 3)
    assert torch.equal(ids[..., 0], first.argmax(-1)) and torch.equal(ids[..., 2], final.argmax(-1))
    assert torch.equal(greedy_head_ids(final, None)[..., 0], final.argmax(-1))
    assert head_names(tiny_config(exit_layers=[1, 3])) == ["exit_1", "exit_3", "final"]


def test_evaluate_metric_gives_the_project_rates_as_fractions_offline():
    """`evaluate.load(<the package's metric folder>)`, as a blog-style `compute_metrics` calls it: no Hub, the
    project's normaliser, fractions like the Hub's `wer`/`cer`; `hubert-ee train` reports the same rates."""
    import evaluate

    from hubert_ee.metrics import EVALUATE_METRIC, exit_metrics, load_metric
    from transformers import HubertConfig

    wer, cer = evaluate.load(EVALUATE_METRIC), load_metric("cer")
    references, hypotheses = ["the cat sat", "Hello, world!", "it cost $5"], ["the cat sit", "HELLO WORLD", ""]
    assert wer.compute(predictions=hypotheses, references=references) == pytest.approx(
        word_error_rate(references, hypotheses) / 100)
    assert cer.compute(predictions=hypotheses, references=references) == pytest.approx(
        char_error_rate(references, hypotheses) / 100)
    assert wer.compute(predictions=["HELLO WORLD"], references=["hello, world!"]) == 0.0  # normalised first
    assert wer.compute(predictions=["HELLO WORLD"], references=["hello world"], normalize=False) == 1.0
    assert evaluate.load(EVALUATE_METRIC, "wer").compute(predictions=["a b"], references=["a c"]) == 0.5
    with pytest.raises(ValueError, match="'wer' \\(default\\) or 'cer'"):
        load_metric("bleu")
    processor = build_processor()
    ids = np.array([processor.tokenizer("A C").input_ids])
    labels = np.array([processor.tokenizer("A B").input_ids])
    compute_metrics, _ = exit_metrics(processor, HubertConfig(), percent=True)  # as `hubert-ee train-backbone`
    metrics = compute_metrics(EvalPrediction(predictions=ids[..., None], label_ids=labels))
    assert metrics["wer"] == pytest.approx(50.0) and metrics["cer"] == pytest.approx(100 / 3)
