"""Loading: a model spec to a folder or Hub id, the device, and a HuBERT-EE model with its processor.

Every stage that takes `--model` goes through here: `resolve_model_spec` (the flag, or the package's default model),
`is_local_path` (the one rule telling a folder from a Hub id, also used for dataset specs), `resolve_device` and
`load_model_and_processor`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .arguments import UsageError

__all__ = [
    "NO_DEFAULT_MODEL", "is_local_path", "resolve_model_spec", "resolve_device", "model_device", "load_processor",
    "check_vocab_matches", "load_model_and_processor",
]

NO_DEFAULT_MODEL = ("no --model given, and there is no default model: this install lacks the repository's "
                    "models/hubert-ee-compact-synth folder and HUBERT_EE_DEFAULT_MODEL is not set")

# Files that name a dataset or a clip rather than a Hub repository.
_FILE_SUFFIXES = {".csv", ".jsonl", ".json", ".arrow", ".parquet", ".wav", ".flac"}


def is_local_path(spec: str) -> bool:
    """Whether `spec` names a file or folder rather than a Hub id, whether or not it exists.

    A Hub id is `name` or `owner/name`. Anything absolute, starting with `.` or `~`, with a backslash, a trailing
    `/`, more than one `/`, or a data/audio file suffix is a path; a path that does not exist is then reported as
    missing instead of being tried on the Hub (retries, then an error about the network).
    """
    spec = str(spec)
    if spec.startswith(("/", ".", "~")) or "\\" in spec or spec.endswith("/") or spec.count("/") > 1:
        return True
    return Path(spec).is_absolute() or Path(spec).suffix.lower() in _FILE_SUFFIXES


def resolve_model_spec(model: str | None) -> str:
    """`--model`, or `hubert_ee.DEFAULT_MODEL` when that exists; else a `UsageError`."""
    if model:
        return str(model)
    package = importlib.import_module(__package__ or "hubert_ee")
    default = getattr(package, "DEFAULT_MODEL", None)
    if not default:
        raise UsageError(NO_DEFAULT_MODEL)
    return str(default)


def resolve_device(device=None):
    """A `torch.device`: `None`, `""` or `"auto"` mean CUDA when available, else the CPU."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_device(model):
    """The device of `model`'s parameters (the CPU for a model without any)."""
    import torch

    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def load_processor(source: str | Path):
    """The tokenizer + feature extractor saved beside a checkpoint, with a clear error when they are absent."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(str(source))
    except (OSError, ValueError, TypeError) as error:
        raise FileNotFoundError(
            f"No processor (tokenizer + feature extractor) could be loaded from {source}: a CTC checkpoint needs "
            f"vocab.json, tokenizer_config.json and preprocessor_config.json beside the weights ({error})."
        ) from error


def check_vocab_matches(model, processor) -> None:
    """The tokenizer must cover exactly the model's CTC outputs, or transcripts come out as garbage."""
    tokenizer_size = len(processor.tokenizer)
    if tokenizer_size != model.config.vocab_size:
        raise ValueError(
            f"Tokenizer has {tokenizer_size} tokens but the model's CTC head has vocab_size="
            f"{model.config.vocab_size}: they must match."
        )


def load_model_and_processor(spec: str | Path, device=None):
    """Load a HuBERT-EE model (folder or Hub id) and the processor saved beside it, in eval mode on `device`."""
    from . import register_auto_classes
    from modeling_hubert_ee import HubertEEForCTC

    register_auto_classes()
    spec = str(Path(spec).expanduser()) if str(spec).startswith("~") else str(spec)
    if is_local_path(spec) and not Path(spec).exists():
        raise FileNotFoundError(f"model folder {spec} does not exist")
    model = HubertEEForCTC.from_pretrained(spec)
    processor = load_processor(spec)
    check_vocab_matches(model, processor)
    return model.to(resolve_device(device)).eval(), processor
