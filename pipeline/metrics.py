"""Word and character error rates, computed offline with `jiwer`.

Never use `evaluate.load("wer")`: it fetches the metric script from the Hugging Face Hub. The same rates, as the
fractions `evaluate` users expect, are an `evaluate` metric in this package: `load_metric("wer")` (or
`evaluate.load(EVALUATE_METRIC)`, offline), e.g. in a `Trainer`'s `compute_metrics`.

Both rates are **percentages (0-100, and above 100 when there are many insertions)** and are
*corpus-level*: the edit operations of all utterances are summed and divided by the total
number of reference words (or characters), as `jiwer` does for lists.  References and
hypotheses are first normalised with `hubert_ee.text.normalize_text` (upper case,
`A-Z`, apostrophe and single spaces; numbers written out), so casing and punctuation never
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

__all__ = [
    "EVALUATE_METRIC", "word_error_rate", "char_error_rate", "error_counts", "load_metric", "exit_metrics",
    "head_names", "greedy_head_ids",
]  # fmt: skip

#: The folder `evaluate.load` takes for this module's rates as an `evaluate` metric (configs "wer", "cer").
EVALUATE_METRIC = str(Path(__file__).resolve().parent / "hubert_ee_wer")


def load_metric(name: str = "wer"):
    """`evaluate.load(EVALUATE_METRIC, name)`: WER (`"wer"`) or CER (`"cer"`) as fractions, offline."""
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

    Returns `{"substitutions", "deletions", "insertions", "hits", "reference_length"}` with
    `unit` `"word"` or `"char"` (characters include the single spaces between words).
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
    """Corpus-level word error rate in percent (0-100+), after `normalize_text`.

    `100 * (S + D + I) / N` over all pairs, N = number of reference words.  See the module
    docstring for empty references.  `normalize=False` only collapses whitespace.
    """
    return _rate(error_counts(references, hypotheses, "word", normalize))


def char_error_rate(
    references: str | Sequence[str], hypotheses: str | Sequence[str], normalize: bool = True
) -> float:
    """Corpus-level character error rate in percent (0-100+), after `normalize_text`.

    Characters include the single spaces between words.  See the module docstring for empty
    references.
    """
    return _rate(error_counts(references, hypotheses, "char", normalize))


# ---------------------------------------------------------------------------------------------- Trainer metrics


def head_names(config) -> list[str]:
    """The heads a model's evaluation reports, in the order of the last axis of `greedy_head_ids`:
    `exit_<layer>` for each branch of a HuBERT-EE config, then `final` (a plain `HubertConfig` has only `final`)."""
    return [f"exit_{layer}" for layer in getattr(config, "exit_layers", None) or ()] + ["final"]


def greedy_head_ids(logits, labels=None):
    """A `Trainer`'s `preprocess_logits_for_metrics`: the greedy CTC ids of every head, `[batch, frames, heads]`.

    `logits` is what the Trainer gathers from a forward: the final head's logits alone, or `(logits, exit_logits)`
    from a HuBERT-EE model with `output_exit_logits`. Heads come in `head_names` order (exits, then the final
    head). Ids instead of logits keep what the Trainer gathers over an evaluation set small; `labels` is unused.
    """
    import torch

    if isinstance(logits, torch.Tensor):
        heads = [logits]
    else:
        final, *rest = logits
        heads = [*(rest[0] if rest else ()), final]
    return torch.stack([head.argmax(-1) for head in heads], dim=-1)


def _check_head_ids(ids, names: Sequence[str]):
    """`ids` itself, or a `ValueError` saying how to get greedy ids of every head where it is something else."""
    import numpy as np

    if not isinstance(ids, np.ndarray) or ids.ndim != 3 or ids.shape[-1] != len(names):
        shape = f"of shape {ids.shape}" if isinstance(ids, np.ndarray) else f"of type {type(ids).__name__}"
        raise ValueError(
            f"predictions {shape} are not greedy ids [batch, frames, {len(names)}] of the heads "
            f"{list(names)}: pass preprocess_logits_for_metrics from hubert_ee.metrics.exit_metrics to the Trainer, "
            "and set model.config.output_exit_logits = True for the exits"
        )
    return ids


def exit_metrics(processor, config, percent: bool = False):
    """`(compute_metrics, preprocess_logits_for_metrics)` for a `transformers.Trainer` that reports every exit.

        model.config.output_exit_logits = True          # evaluation returns every branch's logits too
        compute_metrics, preprocess = exit_metrics(processor, model.config)
        trainer = Trainer(model, args, ..., compute_metrics=compute_metrics,
                          preprocess_logits_for_metrics=preprocess)
        trainer.evaluate()   # eval_wer, eval_cer (final head), eval_wer_exit_<layer>, eval_cer_exit_<layer>

    The rates are this package's `evaluate` metric (`load_metric`: after the project's normaliser), as fractions
    like `evaluate`'s `wer`/`cer`, or in percent with `percent=True` (as `hubert-ee train` reports them). Labels
    are decoded without merging repeats (a label sequence is not a CTC path). Padding frames inside a batch are
    decoded like the others, as in the usual `np.argmax(pred.predictions, axis=-1)`; `hubert-ee train`'s trainer,
    which sees the attention mask, marks them as padding (-100) first. `config` may be a plain `HubertConfig`
    (then only `wer`/`cer`).
    """
    import numpy as np

    names = head_names(config)
    tokenizer = processor.tokenizer
    rates = {name: load_metric(name) for name in ("wer", "cer")}
    scale = 100.0 if percent else 1.0

    def decode(ids, **options) -> list[str]:
        return tokenizer.batch_decode(np.where(ids < 0, tokenizer.pad_token_id, ids), **options)

    def compute_metrics(eval_prediction) -> dict[str, float]:
        ids = _check_head_ids(eval_prediction.predictions, names)
        references = decode(np.asarray(eval_prediction.label_ids), group_tokens=False)
        metrics = {}
        for index, name in enumerate(names):
            hypotheses = decode(ids[..., index])
            suffix = "" if name == "final" else f"_{name}"
            for rate, metric in rates.items():
                metrics[rate + suffix] = scale * metric.compute(predictions=hypotheses, references=references)
        return metrics

    return compute_metrics, greedy_head_ids
