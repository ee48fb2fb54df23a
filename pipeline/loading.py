"""Loading: a model spec to a folder or Hub id, the device, and an early-exit model with its processor.

Every stage that takes `--model` goes through here: `resolve_model_spec` (the flag, or the package's default model),
`is_local_path` (the one rule telling a folder from a Hub id, also used for dataset specs), `resolve_device`,
`early_exit_class` (HuBERT-EE or Wav2Vec2-EE, from the checkpoint's `model_type`), `load_early_exit_model` and
`load_model_and_processor`.
"""

from __future__ import annotations

import importlib
import json
import struct
from pathlib import Path

from .arguments import UsageError

__all__ = [
    "NO_DEFAULT_MODEL", "EARLY_EXIT_MODEL_TYPES", "is_local_path", "resolve_model_spec", "resolve_device",
    "model_device", "load_processor", "check_vocab_matches", "early_exit_class", "hub_load_kwargs",
    "load_early_exit_config", "load_early_exit_model", "is_complete_safetensors", "load_model_and_processor",
    "weight_files", "weights_fingerprint", "folder_weights_fingerprint", "MODEL_IDENTITY_FIELDS", "folder_identity",
    "identity_mismatches",
]

# The early-exit model class (a root module and its class) for each checkpoint `model_type` it loads: its own, and
# the plain CTC checkpoint of its backbone, which it converts.
EARLY_EXIT_MODEL_TYPES = {
    "hubert_ee": ("modeling_hubert_ee", "HubertEEForCTC"), "hubert": ("modeling_hubert_ee", "HubertEEForCTC"),
    "wav2vec2_ee": ("modeling_wav2vec2_ee", "Wav2Vec2EEForCTC"), "wav2vec2": ("modeling_wav2vec2_ee", "Wav2Vec2EEForCTC"),
}

# What says which model an evaluation or a card describes: its geometry (config.json) and its weights.
MODEL_IDENTITY_FIELDS = ("num_hidden_layers", "exit_layers", "vocab_size", "weights_sha256")

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


def expand_spec(spec: str | Path) -> str:
    """`spec` as a string, with a leading `~` expanded to the home folder."""
    return str(Path(spec).expanduser()) if str(spec).startswith("~") else str(spec)


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


def load_processor(source: str | Path, **hub_kwargs):
    """The tokenizer + feature extractor saved beside a checkpoint, with a clear error when they are absent."""
    from transformers import AutoProcessor

    from processing_early_exit import plain_processor

    from .language_model import has_language_model

    try:
        if Path(source).is_dir() and has_language_model(source):
            # the LM belongs to the decoder seam (`--decoder lm`, hubert_ee.decoding); the tooling's processor is
            # the feature extractor and tokenizer, loaded without the folder's remote processor code
            return plain_processor(str(source))
        return AutoProcessor.from_pretrained(str(source), **hub_kwargs)
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


def hub_load_kwargs(repo_id: str, timeout: float = 10.0) -> dict:
    """How to load the Hub model `repo_id` without waiting on a Hub that cannot be reached: one request, without
    the retries (about half a minute of them) that a download makes first. Reachable, or `HF_HUB_OFFLINE` set:
    `{}` (load as usual). Unreachable: `{"local_files_only": True}` when a copy is cached (a warning says so),
    else the `ConnectionError` naming the repository."""
    import logging

    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError

    from .data import network_error_types

    if constants.HF_HUB_OFFLINE:
        return {}
    try:
        HfApi().model_info(repo_id, timeout=timeout)
    except network_error_types() as error:
        if isinstance(error, HfHubHTTPError):  # the Hub answered (no such repository, no access): its own error
            raise
        if not isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            raise ConnectionError(f"{repo_id}: {' '.join(str(error).split())}") from error
        logging.getLogger(__name__).warning("the Hugging Face Hub cannot be reached (%s): loading the cached copy "
                                            "of %s", type(error).__name__, repo_id)
        return {"local_files_only": True}
    return {}


def early_exit_class(model_type: str):
    """The early-exit model class that loads a checkpoint of `model_type` (see `EARLY_EXIT_MODEL_TYPES`)."""
    if model_type not in EARLY_EXIT_MODEL_TYPES:
        raise ValueError(
            f"model_type {model_type!r} has no early-exit model: HuBERT-EE loads {sorted(EARLY_EXIT_MODEL_TYPES)} "
            "checkpoints (a HuBERT or wav2vec2 CTC checkpoint, or an early-exit one)."
        )
    from . import register_auto_classes

    register_auto_classes()
    module, name = EARLY_EXIT_MODEL_TYPES[model_type]
    return getattr(importlib.import_module(module), name)


def checkpoint_model_type(spec: str | Path, local_files_only: bool = False) -> str | None:
    """The `model_type` in a checkpoint's `config.json` (folder or Hub id), read without building the config."""
    from transformers import PretrainedConfig

    config_dict, _ = PretrainedConfig.get_config_dict(str(spec), local_files_only=local_files_only)
    return config_dict.get("model_type")


def load_early_exit_config(spec: str | Path):
    """The early-exit config of a checkpoint (folder or Hub id): `HubertEEConfig` or `Wav2Vec2EEConfig` by its
    `model_type`, a plain checkpoint's config converted."""
    return early_exit_class(checkpoint_model_type(spec)).config_class.from_pretrained(str(spec))


def is_complete_safetensors(path: str | Path) -> bool:
    """Whether the safetensors file at `path` has a readable header and every byte that header promises.

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's byte range, then the
    data; a file cut short by an interrupted download or copy fails one of these checks.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        return False
    with path.open("rb") as file:
        (header_length,) = struct.unpack("<Q", file.read(8))
        if 8 + header_length > size:
            return False
        try:
            header = json.loads(file.read(header_length))
        except ValueError:
            return False
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    return 8 + header_length + max(ends, default=0) <= size


def load_early_exit_model(spec: str | Path, **kwargs):
    """The early-exit model of a checkpoint (folder or Hub id): HuBERT-EE or Wav2Vec2-EE by its `model_type`, a
    plain HuBERT or wav2vec2 CTC checkpoint converted (`kwargs` go to `from_pretrained`). A weight file cut short
    is named (the model code says only which checkpoint, since it reads no files itself)."""
    spec = expand_spec(spec)
    if is_local_path(spec) and not Path(spec).exists():
        raise FileNotFoundError(f"model folder {spec} does not exist")
    model_class = early_exit_class(checkpoint_model_type(spec, local_files_only=kwargs.get("local_files_only", False)))
    try:
        return model_class.from_pretrained(spec, **kwargs)
    except OSError as error:
        folder = Path(spec, kwargs.get("subfolder") or "")
        damaged = [str(path) for path in sorted(folder.glob("*.safetensors")) if not is_complete_safetensors(path)]
        if "is incomplete or damaged" in str(error) and damaged:
            raise OSError(f"{', '.join(damaged)} is incomplete or damaged ({error.__cause__}); was its download or "
                          "copy interrupted? Download or copy it again.") from error
        raise


def load_model_and_processor(spec: str | Path, device=None):
    """Load an early-exit model (folder or Hub id, see `load_early_exit_model`) and the processor saved beside it,
    in eval mode on `device`. A Hub id is checked once first (`hub_load_kwargs`), so that an unreachable Hub fails
    fast or loads the cached copy."""
    spec = expand_spec(spec)
    hub_kwargs = {} if Path(spec).exists() else hub_load_kwargs(spec)
    model = load_early_exit_model(spec, **hub_kwargs)
    processor = load_processor(spec, **hub_kwargs)
    check_vocab_matches(model, processor)
    return model.to(resolve_device(device)).eval(), processor


def weight_files(folder: str | Path) -> list[str]:
    """The safetensors files of a `save_pretrained` folder, relative to it: `model.safetensors`, or the index and
    every shard it names; `[]` when they are missing (or a shard is)."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [index.name, *shards] if all((folder / shard).is_file() for shard in shards) else []
    return ["model.safetensors"] if (folder / "model.safetensors").is_file() else []


def weights_fingerprint(state_dict) -> str:
    """sha256 of a model's weights (`state_dict()`): each tensor's name, dtype, shape and bytes, in name order. A
    model's fingerprint equals that of the folder `save_pretrained` wrote from it (`folder_weights_fingerprint`),
    whatever the sharding and the files' metadata."""
    return _fingerprint((name, state_dict[name]) for name in sorted(state_dict))


def folder_weights_fingerprint(folder: str | Path) -> str:
    """`weights_fingerprint` of the weights saved in `folder`, read one tensor at a time."""
    from safetensors import safe_open

    folder = Path(folder)
    files = [name for name in weight_files(folder) if name.endswith(".safetensors")]
    if not files:
        raise FileNotFoundError(f"{folder} has no model.safetensors (or its index and shards)")
    handles = [safe_open(str(folder / name), framework="pt") for name in files]
    holder = {name: handle for handle in handles for name in handle.keys()}
    return _fingerprint((name, holder[name].get_tensor(name)) for name in sorted(holder))


def _fingerprint(named_tensors) -> str:
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in named_tensors:
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def folder_identity(folder: str | Path) -> dict:
    """`MODEL_IDENTITY_FIELDS` of a saved model folder: geometry from its config.json, fingerprint of its weights."""
    config = json.loads((Path(folder) / "config.json").read_text())
    return {"num_hidden_layers": config.get("num_hidden_layers"), "exit_layers": config.get("exit_layers"),
            "vocab_size": config.get("vocab_size"), "weights_sha256": folder_weights_fingerprint(folder)}


def identity_mismatches(described: dict, folder: dict) -> list[str]:
    """The `MODEL_IDENTITY_FIELDS` where `described` (an evaluation, a card) and `folder` differ, as "field X
    (described) vs Y (folder)"; a field `described` lacks is not compared."""
    return [f"{field} {described[field]} vs {folder.get(field)}" for field in MODEL_IDENTITY_FIELDS
            if described.get(field) is not None and described[field] != folder.get(field)]
