"""The decoder seam: CTC logits and valid frame counts in, transcripts out.

Every stage that turns logits into text (`evaluate`, `calibrate`, `transcribe`, the demo) takes a `Decoder`, built
once from the command's arguments by `decoder_from_args` (`--decoder greedy|lm`, `--beam-width`, `--lm-alpha`,
`--lm-beta`), and records `decoder.describe()` in what it writes.

* `GreedyDecoder`: argmax per frame, padding frames dropped, repeats merged and blanks dropped by the tokenizer
  (`hubert_ee.inference.greedy_decode`'s rule).
* `LanguageModelDecoder`: pyctcdecode's beam search with the model folder's KenLM n-gram
  (`hubert_ee.language_model`), on each row's log-softmax over its valid frames. `beam_width`, `alpha` and `beta`
  are the decoder's settings; alpha and beta default to the ones stored with the LM (`attrs.json`).

Both give the same text form: words separated by single spaces, the model's alphabet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .arguments import DECODERS, DEFAULT_BEAM_WIDTH
from .inference import decode

__all__ = ["DECODERS", "DEFAULT_BEAM_WIDTH", "GreedyDecoder", "LanguageModelDecoder", "build_decoder",
           "decoder_from_args"]



def _row_lengths(lengths, rows: int, frames: int) -> list[int]:
    if lengths is None:
        return [frames] * rows
    return [int(length) for length in (lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths)]


class GreedyDecoder:
    """Greedy CTC: the most likely token per valid frame, repeats merged, blanks dropped."""

    name = "greedy"

    def __init__(self, processor, blank_id: int):
        self.processor = processor
        self.blank_id = int(blank_id)

    def decode(self, logits: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None) -> list[str]:
        """Transcripts of `logits` (`[batch, frames, vocab]`); frames at or beyond each row's length are padding."""
        ids = logits.argmax(-1).cpu()
        rows = _row_lengths(lengths, ids.shape[0], ids.shape[1])
        padding = torch.arange(ids.shape[1])[None, :] >= torch.tensor(rows)[:, None]
        return decode(self.processor, ids.masked_fill(padding, self.blank_id))

    def describe(self) -> dict:
        return {"name": self.name}


class LanguageModelDecoder:
    """pyctcdecode beam search with an n-gram LM (a `BeamSearchDecoderCTC`)."""

    name = "lm"

    def __init__(self, ctc_decoder, beam_width: int = DEFAULT_BEAM_WIDTH, alpha: float | None = None,
                 beta: float | None = None, source: str | None = None):
        if beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {beam_width}")
        self.ctc_decoder = ctc_decoder
        self.beam_width = int(beam_width)
        language_model = ctc_decoder.model_container[ctc_decoder._model_key]
        if alpha is not None or beta is not None:  # pyctcdecode's documented way to change them after loading
            ctc_decoder.reset_params(alpha=None if alpha is None else float(alpha),
                                     beta=None if beta is None else float(beta))
        self.alpha, self.beta = float(language_model.alpha), float(language_model.beta)
        self.source = source

    def decode(self, logits: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None) -> list[str]:
        """Transcripts of `logits` (`[batch, frames, vocab]`), each row beam-searched over its valid frames."""
        log_probs = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
        rows = _row_lengths(lengths, log_probs.shape[0], log_probs.shape[1])
        return [self.decode_log_probs(row[:length]) for row, length in zip(log_probs, rows)]

    def decode_log_probs(self, log_probs: np.ndarray) -> str:
        """The transcript of one utterance's `[frames, vocab]` log-probabilities (e.g. long-file windows stitched)."""
        if log_probs.shape[0] == 0:
            return ""
        # `decode_beams`, as transformers' pipeline and `Wav2Vec2ProcessorWithLM` call it, so that every path
        # gives the same text (pyctcdecode's `decode` would also prune the beams' history)
        text = self.ctc_decoder.decode_beams(log_probs, beam_width=self.beam_width)[0][0]
        return " ".join(text.split())

    def describe(self) -> dict:
        return {"name": self.name, "beam_width": self.beam_width, "alpha": self.alpha, "beta": self.beta,
                "language_model": self.source}


def build_decoder(kind: str, model_spec: str | Path, processor, blank_id: int, beam_width: int = DEFAULT_BEAM_WIDTH,
                  alpha: float | None = None, beta: float | None = None):
    """The decoder named `kind` (`greedy` or `lm`) for a model; `lm` reads `model_spec`'s `language_model/`
    (`hubert_ee.language_model.load_ctc_decoder`: clear errors for a folder without one)."""
    if kind == "greedy":
        return GreedyDecoder(processor, blank_id)
    if kind != "lm":
        raise ValueError(f"unknown decoder {kind!r}; choose one of {list(DECODERS)}")
    from .language_model import LM_DIRECTORY, load_ctc_decoder

    folder = Path(model_spec)
    if not folder.is_dir():
        raise ValueError(f"--decoder lm reads the LM from a local model folder; {model_spec!r} is not one")
    tokenizer = getattr(processor, "tokenizer", processor)
    return LanguageModelDecoder(load_ctc_decoder(folder, tokenizer), beam_width, alpha, beta,
                                source=str(folder / LM_DIRECTORY))


def decoder_from_args(args, model_spec: str | Path, processor, blank_id: int):
    """The decoder a command's `--decoder` flags name (`hubert_ee.arguments.add_decoder_arguments`)."""
    return build_decoder(getattr(args, "decoder", "greedy"), model_spec, processor, blank_id,
                         beam_width=getattr(args, "beam_width", DEFAULT_BEAM_WIDTH),
                         alpha=getattr(args, "lm_alpha", None), beta=getattr(args, "lm_beta", None))
