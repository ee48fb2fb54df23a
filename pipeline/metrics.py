"""Word and character error rates, computed offline with ``jiwer``.

Never use ``evaluate.load("wer")``: it fetches the metric script from the Hugging Face Hub. The same rates, as the
fractions ``evaluate`` users expect, are an ``evaluate`` metric in this package: ``load_metric("wer")`` (or
``evaluate.load(EVALUATE_METRIC)``, offline), e.g. in a ``Trainer``'s ``compute_metrics``.

Both rates are **percentages (0-100, and above 100 when there are many insertions)** and are
*corpus-level*: the edit operations of all utterances are summed and divided by the total
number of reference words (or characters), as ``jiwer`` does for lists.  References and
hypotheses are first normalised with :func:`hubert_ee.text.normalize_text` (upper case,
``A-Z``, apostrophe and single spaces; numbers written out), so casing and punctuation never
count as errors.  Say so wherever a WER computed here is reported.

Empty references: an utterance whose normalised reference is empty adds its hypothesis words
(characters) as insertions and nothing to the denominator.  If *every* reference is empty the
rate is 0.0 when every hypothesis is empty too, and 100.0 otherwise (the ratio is undefined;
100 is a conventional cap meaning "everything hypothesised is wrong").
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import jiwer

from .text import normalize_text

__all__ = ["EVALUATE_METRIC", "word_error_rate", "char_error_rate", "error_counts", "load_metric"]

#: The folder ``evaluate.load`` takes for this module's rates as an ``evaluate`` metric (configs "wer", "cer").
EVALUATE_METRIC = str(Path(__file__).resolve().parent / "hubert_ee_wer")


def load_metric(name: str = "wer"):
    """``evaluate.load(EVALUATE_METRIC, name)``: WER (``"wer"``) or CER (``"cer"``) as fractions, offline."""
    import evaluate

    return evaluate.load(EVALUATE_METRIC, name)


def _as_list(x: str | Iterable[str], name: str) -> list[str]:
    if isinstance(x, str):
        return [x]
    out = list(x)
    for i, s in enumerate(out):
        if s is None:
            out[i] = ""
        elif not isinstance(s, str):
            raise TypeError(f"{name}[{i}] is {type(s).__name__}, expected str")
    return out


def error_counts(
    references: str | Sequence[str],
    hypotheses: str | Sequence[str],
    unit: str = "word",
    normalize: bool = True,
) -> dict[str, int]:
    """Summed edit operations over all pairs.

    Returns ``{"substitutions", "deletions", "insertions", "hits", "reference_length"}`` with
    ``unit`` ``"word"`` or ``"char"`` (characters include the single spaces between words).
    """
    refs = _as_list(references, "references")
    hyps = _as_list(hypotheses, "hypotheses")
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    if normalize:
        refs = [normalize_text(r) for r in refs]
        hyps = [normalize_text(h) for h in hyps]
    else:
        refs = [" ".join(r.split()) for r in refs]
        hyps = [" ".join(h.split()) for h in hyps]

    counts = {"substitutions": 0, "deletions": 0, "insertions": 0, "hits": 0, "reference_length": 0}
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    for r, h in zip(refs, hyps):
        if not r:  # empty reference: every hypothesis unit is an insertion
            counts["insertions"] += len(h.split()) if unit == "word" else len(h)
    if pairs:
        rs, hs = [p[0] for p in pairs], [p[1] for p in pairs]
        out = jiwer.process_words(rs, hs) if unit == "word" else jiwer.process_characters(rs, hs)
        counts["substitutions"] += out.substitutions
        counts["deletions"] += out.deletions
        counts["insertions"] += out.insertions
        counts["hits"] += out.hits
    counts["reference_length"] = counts["substitutions"] + counts["deletions"] + counts["hits"]
    return counts


def _rate(counts: dict[str, int]) -> float:
    errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    n = counts["reference_length"]
    if n == 0:
        return 0.0 if errors == 0 else 100.0
    return 100.0 * errors / n


def word_error_rate(
    references: str | Sequence[str], hypotheses: str | Sequence[str], normalize: bool = True
) -> float:
    """Corpus-level word error rate in percent (0-100+), after ``normalize_text``.

    ``100 * (S + D + I) / N`` over all pairs, N = number of reference words.  See the module
    docstring for empty references.  ``normalize=False`` only collapses whitespace.
    """
    return _rate(error_counts(references, hypotheses, "word", normalize))


def char_error_rate(
    references: str | Sequence[str], hypotheses: str | Sequence[str], normalize: bool = True
) -> float:
    """Corpus-level character error rate in percent (0-100+), after ``normalize_text``.

    Characters include the single spaces between words.  See the module docstring for empty
    references.
    """
    return _rate(error_counts(references, hypotheses, "char", normalize))
