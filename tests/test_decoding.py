"""hubert_ee.decoding: the decoder seam (greedy and n-gram LM beam search), built from a command's flags."""

from __future__ import annotations

import argparse
import shutil

import pytest
import torch

from hubert_ee.arguments import add_decoder_arguments
from hubert_ee.decoding import GreedyDecoder, LanguageModelDecoder, build_decoder, decoder_from_args
from hubert_ee.inference import greedy_decode
from hubert_ee.language_model import LanguageModelError, build_arpa, save_language_model
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def lm_folder(hub_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("decoding")
    arpa = build_arpa(["THE CAT SAT", "A CAT RAN", "THE DOG SAT"] * 3, root / "2gram.arpa", order=2)
    folder = root / "model"
    shutil.copytree(hub_folder, folder)
    save_language_model(folder, arpa, alpha=0.7, beta=1.0)
    return folder


@pytest.fixture(scope="module")
def tokenizer(lm_folder):
    from transformers import Wav2Vec2CTCTokenizer

    return Wav2Vec2CTCTokenizer.from_pretrained(lm_folder)


def spelled(tokenizer, frames_scores):
    """Logits `[1, frames, vocab]`: -5 everywhere but the scores given per frame."""
    vocab = tokenizer.get_vocab()
    logits = torch.full((1, len(frames_scores), len(vocab)), -5.0)
    for frame, scores in enumerate(frames_scores):
        for token, score in scores.items():
            logits[0, frame, vocab[token]] = score
    return logits


COT_OR_CAT = [{"C": 5}, {"<pad>": 5}, {"O": 2.0, "A": 1.5}, {"<pad>": 5}, {"T": 5}, {"<pad>": 5}]


def test_greedy_decoder_is_the_project_greedy_rule_and_drops_padding_frames(tokenizer):
    model = tiny_model()
    logits = torch.randn(3, 20, len(tokenizer.get_vocab())) * 3
    decoder = GreedyDecoder(tokenizer, tokenizer.pad_token_id)
    assert decoder.decode(logits, None) == greedy_decode(model, tokenizer, logits, None)
    texts = decoder.decode(logits, torch.tensor([20, 12, 5]))
    assert texts == [decoder.decode(logits[row : row + 1, :frames], None)[0]
                     for row, frames in enumerate([20, 12, 5])]
    assert decoder.describe() == {"name": "greedy"}


def test_lm_decoder_prefers_the_lm_words_and_ignores_padding(lm_folder, tokenizer):
    logits = spelled(tokenizer, COT_OR_CAT + [{"D": 9}] * 4)  # the last frames are padding
    greedy = build_decoder("greedy", lm_folder, tokenizer, tokenizer.pad_token_id)
    with_lm = build_decoder("lm", lm_folder, tokenizer, tokenizer.pad_token_id, beam_width=8)
    assert isinstance(with_lm, LanguageModelDecoder)
    assert greedy.decode(logits, [6]) == ["COT"]
    assert with_lm.decode(logits, [6]) == ["CAT"]  # "CAT" is in the LM, "COT" is not
    assert with_lm.decode(logits, [0]) == [""]
    assert with_lm.describe() == {"name": "lm", "beam_width": 8, "alpha": 0.7, "beta": 1.0,
                                  "language_model": str(lm_folder / "language_model")}


def test_decoder_flags_build_the_decoder_and_bad_ones_fail_clearly(lm_folder, hub_folder, tokenizer):
    parser = argparse.ArgumentParser()
    add_decoder_arguments(parser)
    args = parser.parse_args(["--decoder", "lm", "--beam-width", "4", "--lm-alpha", "0.2", "--lm-beta", "3"])
    decoder = decoder_from_args(args, lm_folder, tokenizer, tokenizer.pad_token_id)
    assert (decoder.beam_width, decoder.alpha, decoder.beta) == (4, 0.2, 3.0)
    assert isinstance(decoder_from_args(parser.parse_args([]), hub_folder, tokenizer, 0), GreedyDecoder)
    with pytest.raises(LanguageModelError, match="no language_model/ directory"):
        decoder_from_args(parser.parse_args(["--decoder", "lm"]), hub_folder, tokenizer, 0)
    with pytest.raises(ValueError, match="not one"):
        build_decoder("lm", "org/not-a-local-folder", tokenizer, 0)
    with pytest.raises(ValueError, match="unknown decoder 'viterbi'"):
        build_decoder("viterbi", lm_folder, tokenizer, 0)
    with pytest.raises(ValueError, match="beam_width must be >= 1"):
        build_decoder("lm", lm_folder, tokenizer, 0, beam_width=0)
