"""HuBERT-EE's word and character error rates as an `evaluate` metric, loadable offline from this folder.

    import evaluate
    from hubert_ee.metrics import EVALUATE_METRIC   # this folder (or the repository path pipeline/hubert_ee_wer)

    wer = evaluate.load(EVALUATE_METRIC)           # config "wer" (the default) or "cer"
    wer.compute(predictions=["HELLO WORLD"], references=["hello, world!"])   # 0.0

Like the Hub's `wer`/`cer` metrics it returns a fraction (0.25 = 25 %), corpus-level (the edit operations of all
pairs summed, over all reference words or characters). Unlike them it first normalises both sides with the
project's normaliser (`hubert_ee.text.normalize_text`: upper case, numbers spelled out, punctuation dropped), the
one that made the training labels, so casing and punctuation never count as errors; `normalize=False` compares the
texts as given (whitespace collapsed). The rates are those of `hubert_ee.metrics`, divided by 100.
"""

import datasets
import evaluate

from hubert_ee.metrics import char_error_rate, word_error_rate

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): transcripts to score.
    references (`list[str]`): the reference transcripts, one per prediction.
    normalize (`bool`, defaults to `True`): apply `hubert_ee.text.normalize_text` to both sides first.
Returns:
    `float`: the word error rate (config "wer") or character error rate (config "cer"), as a fraction.
"""
RATES = {"default": word_error_rate, "wer": word_error_rate, "cer": char_error_rate}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HubertEEWer(evaluate.Metric):
    def _info(self):
        if self.config_name not in RATES:
            raise ValueError(f"config {self.config_name!r} is not one of this metric's: 'wer' (default) or 'cer'.")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, normalize=True):
        return RATES[self.config_name](references, predictions, normalize=normalize) / 100.0
