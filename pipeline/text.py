"""Text side of HuBERT-EE: the character vocabulary, the one text normaliser and
the `Wav2Vec2Processor` factory.

`normalize_text` is *the* normaliser of the project: it is applied to the
synthetic corpus' transcripts (training labels), to references and hypotheses
before computing WER, and to anything else that needs to be compared with the
model's output.  Its output alphabet is exactly the one of the CTC vocabulary
below (`A-Z`, apostrophe and the word delimiter, which is a space in text and
`|` in token space), so every normalised string can be tokenised without
`<unk>`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import unicodedata
from decimal import Decimal, InvalidOperation

__all__ = ["VOCAB", "normalize_text", "make_labels", "build_processor", "SAMPLING_RATE",
           "MAX_UNKNOWN_LABEL_SHARE"]

SAMPLING_RATE = 16000

#: Character vocabulary of `facebook/hubert-large-ls960-ft` (token -> id).
VOCAB: dict[str, int] = {
    "<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4,
    "E": 5, "T": 6, "A": 7, "O": 8, "N": 9, "I": 10, "H": 11, "S": 12,
    "R": 13, "D": 14, "L": 15, "U": 16, "M": 17, "W": 18, "C": 19, "F": 20,
    "G": 21, "Y": 22, "P": 23, "B": 24, "V": 25, "K": 26, "'": 27, "X": 28,
    "J": 29, "Q": 30, "Z": 31,
}

# --------------------------------------------------------------------------
# normaliser
# --------------------------------------------------------------------------

# Letters that NFKD does not decompose into ASCII + combining marks.
_LETTER_MAP = {
    "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE",
    "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th",
    "Þ": "TH", "ł": "l", "Ł": "L", "ı": "i", "ŋ": "ng",
}
# Typographic apostrophes / single quotes all become "'".
_APOSTROPHES = {c: "'" for c in "\u2019\u2018\u02bc\u02bb`\u00b4\u2032"}
_TRANSLATE = str.maketrans({**_LETTER_MAP, **_APOSTROPHES})

_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"),
               "£": ("pound", "pounds", "penny", "pence"),
               "€": ("euro", "euros", "cent", "cents")}

_RE_CURRENCY = re.compile(r"([$£€])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?(?!\d)")
_RE_GROUPED = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d,]\d)")
_RE_ORDINAL = re.compile(r"(?<![\d.])(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_RE_DECADE = re.compile(r"(?<![\d.])(\d*0)'?s\b")
_RE_PERCENT = re.compile(r"(\d)\s?%")
_RE_DECIMAL = re.compile(r"(?<![\d.])(\d+)\.(\d+)(?![\d.]\d)")
_RE_INTEGER = re.compile(r"\d+")
_RE_NOT_KEPT = re.compile(r"[^A-Z' ]+")
_RE_STRAY_APOSTROPHE = re.compile(r"(?<![A-Z])'+|'+(?![A-Z])")
_RE_MULTI_APOSTROPHE = re.compile(r"'{2,}")
_RE_SPACES = re.compile(r"\s+")


def _num2words(value, to: str = "cardinal") -> str:
    from num2words import num2words  # PyPI: num2words

    return num2words(value, lang="en", to=to)


def _cardinal(digits: str) -> str:
    digits = digits.replace(",", "")
    if len(digits) > 15:  # phone numbers, ids ...: read digit by digit
        return " ".join(_num2words(int(d)) for d in digits)
    return _num2words(int(digits))


def _integer(digits: str) -> str:
    """Bare integer: 4-digit numbers 1100..2099 are read as years."""
    if len(digits) == 4 and digits[0] != "0" and 1100 <= int(digits) <= 2099:
        return _num2words(int(digits), to="year")
    return _cardinal(digits)


def _pluralize(words: str) -> str:
    head, _, last = words.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return f"{head} {last}" if head else last


def _currency(m: re.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[m.group(1)]
    amount = m.group(2).replace(",", "")
    out = f" {_cardinal(amount)} {one if amount == '1' else many}"
    if m.group(3):
        sub = int(m.group(3).ljust(2, "0"))
        if sub:
            out += f" {_cardinal(str(sub))} {sub_one if sub == 1 else sub_many}"
    return out + " "


def _decimal(m: re.Match) -> str:
    try:
        return f" {_num2words(Decimal(m.group(0)))} "
    except (InvalidOperation, ValueError, OverflowError):
        return f" {_cardinal(m.group(1))} point {' '.join(_cardinal(d) for d in m.group(2))} "


def _expand_numbers(text: str) -> str:
    text = _RE_CURRENCY.sub(_currency, text)
    text = _RE_PERCENT.sub(r"\1 percent", text)
    text = _RE_ORDINAL.sub(lambda m: f" {_num2words(int(m.group(1)), to='ordinal')} ", text)
    text = _RE_DECADE.sub(lambda m: f" {_pluralize(_integer(m.group(1)))} ", text)
    text = _RE_GROUPED.sub(lambda m: f" {_cardinal(m.group(0))} ", text)
    text = _RE_DECIMAL.sub(_decimal, text)
    text = _RE_INTEGER.sub(lambda m: f" {_integer(m.group(0))} ", text)
    return text


def normalize_text(text: str) -> str:
    """Normalise `text` to LibriSpeech-style transcript form.

    This is the single normaliser of the project, used both to make training
    labels and to score WER (apply it to references *and* hypotheses).  Rules,
    in the order they are applied:

    1. Unicode NFKD, then combining marks are dropped, so accents are stripped
       (`"café"` -> `"cafe"`, ligatures such as `"ﬁ"` -> `"fi"`); a few
       letters NFKD keeps (`ß æ œ ø ð þ ł`) are spelled in ASCII (`ss ae ...`).
    2. Typographic apostrophes and single quotes (’ ‘ ʼ ` ´) become `'`.
    3. `&` becomes ` and `.
    4. Numbers become words with `num2words` (English):
       currency `$3.50` -> `three dollars fifty cents` (also £ and €);
       `50%` -> `fifty percent`; ordinals `1st 22nd` -> ``first
       twenty second`; decades `1980s 60's` -> `nineteen eighties
       sixties`; digit groups `1,000,000` -> cardinal; decimals `3.14`` ->
       `three point one four`; a bare 4-digit integer from 1100 to 2099 is
       read as a year (`1491` -> `fourteen ninety one`, `2010` ->
       `twenty ten`); any other integer is a cardinal (`123` -> ``one
       hundred and twenty three``) and integers of more than 15 digits are read
       digit by digit.
    5. Upper-case.
    6. Every character other than `A-Z`, apostrophe and space (punctuation,
       hyphens, digits left over, symbols, non-Latin letters) becomes a space,
       so `"well-known"` -> `"WELL KNOWN"`.
    7. Apostrophes are kept only *inside* words (a letter on both sides:
       `"DON'T"`, `"O'CLOCK"`); leading/trailing ones (quotes, `dogs'`)
       are removed and runs of apostrophes collapse to one.
    8. Whitespace is collapsed to single spaces and the result is stripped.

    Returns `""` when nothing speakable is left (e.g. `"!!!"`, `""`).
    The output only uses characters of `VOCAB` (space = `|`).
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.translate(_TRANSLATE)
    text = text.replace("&", " and ")
    text = _expand_numbers(text)
    text = text.upper()
    text = _RE_NOT_KEPT.sub(" ", text)
    text = _RE_MULTI_APOSTROPHE.sub("'", text)
    text = _RE_STRAY_APOSTROPHE.sub(" ", text)
    return _RE_SPACES.sub(" ", text).strip()


# Labels are refused when more of their characters than this share are unknown to the tokenizer: a few (a letter
# a vocabulary lacks) lose little, a vocabulary of another case would turn every label into <unk>.
MAX_UNKNOWN_LABEL_SHARE = 0.01


def make_labels(texts, tokenizer, column: str = "text") -> list[list[int]]:
    """CTC label ids of `texts` (transcripts of the dataset column `column`): :func:`normalize_text`, then
    `tokenizer`; every label of the project is made here. Raises ``ValueError`` naming the column and the share
    when more than :data:`MAX_UNKNOWN_LABEL_SHARE` of the label characters are unknown to the tokenizer (e.g. a
    lower-case vocabulary, which the normaliser's upper case misses): such labels would train and score nothing."""
    normalised = [normalize_text(text or "") for text in texts]
    ids = [list(row) for row in tokenizer(normalised).input_ids]
    unk = tokenizer.unk_token_id
    total = sum(len(row) for row in ids)
    unknown = 0 if unk is None else sum(row.count(unk) for row in ids)
    if total and unknown / total > MAX_UNKNOWN_LABEL_SHARE:
        example = next(text for text, row in zip(normalised, ids) if unk in row)
        raise ValueError(
            f"column {column!r}: {unknown / total:.1%} of the label characters ({unknown} of {total}) are unknown to "
            f"the tokenizer ({tokenizer.unk_token}) after normalize_text, e.g. {example[:60]!r}; the tokenizer's "
            f"vocabulary ({sorted(tokenizer.get_vocab())[:12]}...) must hold normalize_text's characters (A-Z, "
            "apostrophe, the word delimiter)."
        )
    return ids


# --------------------------------------------------------------------------
# processor
# --------------------------------------------------------------------------

def build_processor(save_dir: str | os.PathLike | None = None):
    """Build the `Wav2Vec2Processor` matching `facebook/hubert-large-ls960-ft`.

    The tokenizer is a `Wav2Vec2CTCTokenizer` over `VOCAB` (word
    delimiter `|`, pad `<pad>`, unk `<unk>`, bos `<s>`, eos `</s>`, no
    lower-casing), loaded from a `vocab.json` written to a temporary
    directory; the feature extractor is a 16 kHz, mono, normalising
    `Wav2Vec2FeatureExtractor` that returns attention masks.

    A round-trip sanity check (`"HELLO WORLD"` -> ids -> text) is run before
    returning.  When `save_dir` is given the processor is also written there
    with `save_pretrained`.
    """
    from transformers import (Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor,
                              Wav2Vec2Processor)

    with tempfile.TemporaryDirectory(prefix="hubert_ee_vocab_") as tmp:
        vocab_file = os.path.join(tmp, "vocab.json")
        with open(vocab_file, "w", encoding="utf-8") as f:
            json.dump(VOCAB, f, ensure_ascii=False)
        tokenizer = Wav2Vec2CTCTokenizer(
            vocab_file,
            bos_token="<s>",
            eos_token="</s>",
            unk_token="<unk>",
            pad_token="<pad>",
            word_delimiter_token="|",
            do_lower_case=False,
        )
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLING_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )
    processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    # Sanity check: ids match VOCAB and decoding is the inverse of encoding.
    probe = "HELLO WORLD"
    ids = processor.tokenizer(probe).input_ids
    expected = [VOCAB["|" if c == " " else c] for c in probe]
    if list(ids) != expected:
        raise RuntimeError(f"tokenizer ids {ids} != expected {expected}")
    decoded = processor.tokenizer.batch_decode([ids], group_tokens=False)[0]
    if decoded != probe:
        raise RuntimeError(f"tokenizer round trip failed: {decoded!r} != {probe!r}")

    if save_dir is not None:
        processor.save_pretrained(str(save_dir))
    return processor
