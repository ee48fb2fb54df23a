"""Tests of hubert_ee.text: vocabulary, normaliser and processor."""

import json
import re

import pytest

from hubert_ee.text import VOCAB, build_processor, make_labels, normalize_text

HF_VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "E": 5, "T": 6, "A": 7, "O": 8,
            "N": 9, "I": 10, "H": 11, "S": 12, "R": 13, "D": 14, "L": 15, "U": 16, "M": 17,
            "W": 18, "C": 19, "F": 20, "G": 21, "Y": 22, "P": 23, "B": 24, "V": 25, "K": 26,
            "'": 27, "X": 28, "J": 29, "Q": 30, "Z": 31}


def test_vocab_is_hubert_large_ls960_ft():
    assert VOCAB == HF_VOCAB
    assert sorted(VOCAB.values()) == list(range(32))


@pytest.mark.parametrize("raw, expected", [
    # numbers
    ("In 1491, Columbus had 3 ships.", "IN FOURTEEN NINETY ONE COLUMBUS HAD THREE SHIPS"),
    ("He came 1st; she was 22nd!", "HE CAME FIRST SHE WAS TWENTY SECOND"),
    ("the 3rd and 4th of July", "THE THIRD AND FOURTH OF JULY"),
    ("123 apples", "ONE HUNDRED AND TWENTY THREE APPLES"),
    ("1,000,000 people", "ONE MILLION PEOPLE"),
    ("pi is 3.14", "PI IS THREE POINT ONE FOUR"),
    ("It costs $3.50 or 50%", "IT COSTS THREE DOLLARS FIFTY CENTS OR FIFTY PERCENT"),
    ("the 1980s and 60's", "THE NINETEEN EIGHTIES AND SIXTIES"),
    ("in 2010 at 10:30", "IN TWENTY TEN AT TEN THIRTY"),
    ("007", "SEVEN"),
    # punctuation, symbols, hyphens
    ("Hello, world!", "HELLO WORLD"),
    ("well-known -- hyphen", "WELL KNOWN HYPHEN"),
    ("salt & pepper", "SALT AND PEPPER"),
    ("a/b (c) [d] {e} <f> \"g\" ; h: i?", "A B C D E F G H I"),
    ("tabs\tand\nnewlines   spaces", "TABS AND NEWLINES SPACES"),
    # accents, ligatures, non-ASCII letters
    ("Café naïve résumé", "CAFE NAIVE RESUME"),
    ("Straße Æsir ﬁne", "STRASSE AESIR FINE"),
    # apostrophes
    ("Don't 'quote' me", "DON'T QUOTE ME"),
    ("the dogs' bones", "THE DOGS BONES"),
    ("It’s o’clock", "IT'S O'CLOCK"),
    ("rock 'n' roll", "ROCK N ROLL"),
    ("can''t", "CAN'T"),
    # nothing speakable
    ("", ""),
    ("   ", ""),
    ("!!! ... ---", ""),
    ("'", ""),
    ("日本語", ""),
])
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


@pytest.mark.parametrize("raw", [
    "In 1491, Columbus had 3 ships & 90 men.", "It's the 21st century, isn't it?",
    "Ça va? Très bien -- merci!", "$1,234.56 for 2 items (50% off)", "'tis the dogs' day",
])
def test_normalize_output_alphabet_and_idempotence(raw):
    out = normalize_text(raw)
    assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", out)
    assert all((c == " " or c in VOCAB) for c in out)
    assert not re.search(r"(^|\s)'|'($|\s)", out)
    assert normalize_text(out) == out


def test_processor_round_trip(tmp_path):
    processor = build_processor(save_dir=tmp_path)
    tok = processor.tokenizer
    ids = tok("HELLO WORLD").input_ids
    assert ids == [11, 5, 15, 15, 8, 4, 18, 8, 13, 15, 14]
    assert tok.batch_decode([ids], group_tokens=False) == ["HELLO WORLD"]
    # CTC decoding merges repeats: "LL" needs a blank (pad) in between
    assert tok.batch_decode([[11, 5, 15, 0, 15, 8, 4, 18, 8, 13, 15, 14]]) == ["HELLO WORLD"]
    assert tok.pad_token_id == 0 and tok.unk_token_id == 3
    assert tok.word_delimiter_token == "|"
    text = normalize_text("It's 4 o'clock, Dr. Jones!")
    assert tok.batch_decode([tok(text).input_ids], group_tokens=False) == [text]

    fe = processor.feature_extractor
    assert fe.sampling_rate == 16000 and fe.feature_size == 1 and fe.do_normalize
    assert fe.return_attention_mask and fe.padding_value == 0.0

    assert json.loads((tmp_path / "vocab.json").read_text()) == VOCAB
    from transformers import Wav2Vec2Processor

    again = Wav2Vec2Processor.from_pretrained(str(tmp_path))
    assert again.tokenizer.get_vocab() == VOCAB
    assert again.tokenizer("HELLO WORLD").input_ids == ids
    assert again.feature_extractor.return_attention_mask


def test_processor_batch_padding():
    import numpy as np

    processor = build_processor()
    batch = processor.tokenizer(["HELLO WORLD", "A B"], padding=True)
    assert batch.input_ids[1] == [7, 4, 24] + [0] * 8
    feats = processor(audio=[np.zeros(1600, np.float32), np.ones(800, np.float32)],
                      sampling_rate=16000, padding=True, return_tensors="np")
    assert feats.input_values.shape == (2, 1600)
    assert feats.attention_mask[1].sum() == 800


def test_make_labels_normalises_lower_case_transcripts():
    """Lower-case transcripts (as many audiofolders have) become the same labels as upper-case ones, not <unk>."""
    tokenizer = build_processor().tokenizer
    lower, upper = make_labels(["the ranger isn't gonna like it"], tokenizer), make_labels(["THE RANGER ISN'T GONNA"
                                                                                           " LIKE IT"], tokenizer)
    assert lower == upper and tokenizer.unk_token_id not in lower[0]
    assert tokenizer.decode(lower[0], group_tokens=False) == "THE RANGER ISN'T GONNA LIKE IT"


def test_make_labels_refuses_a_tokenizer_that_knows_few_of_their_characters(tmp_path):
    """A lower-case vocabulary misses every character of the normaliser's upper case: every label would be <unk>,
    and training and scoring would learn and measure nothing. The error names the column and the share."""
    from transformers import Wav2Vec2CTCTokenizer

    lower_vocab = {token if len(token) > 1 else token.lower(): index for token, index in VOCAB.items()}
    (tmp_path / "vocab.json").write_text(json.dumps(lower_vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), word_delimiter_token="|")
    with pytest.raises(ValueError, match=r"column 'transcription': 90\.9% of the label characters \(10 of 11\) are "
                                         r"unknown to the tokenizer \(<unk>\) after normalize_text"):
        make_labels(["hello world"], tokenizer, "transcription")
    missing_apostrophe = {token: index for token, index in VOCAB.items() if token != "'"}
    (tmp_path / "vocab.json").write_text(json.dumps(missing_apostrophe))
    tokenizer = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), word_delimiter_token="|")
    texts = ["it's " + "a long sentence without that character " * 3]
    assert make_labels(texts, tokenizer)[0].count(tokenizer.unk_token_id) == 1  # under 1 %: kept
