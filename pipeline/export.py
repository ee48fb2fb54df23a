"""Export stage: turn a HuBERT or wav2vec2 CTC checkpoint into its early-exit model and write Hub-ready folders.

A Hub-ready folder holds the weights (safetensors), `config.json` with `auto_map`, the model code files
(`CODE_FILES_BY_MODEL_TYPE`: the backbone's configuration and modeling files, copied by transformers'
`save_pretrained` because the classes are registered for Auto classes, and the shared early-exit modules they
import relatively, which it copies with them), the tokenizer and the feature extractor: everything that
`AutoModelForCTC.from_pretrained(folder, trust_remote_code=True)` and `pipeline("automatic-speech-recognition")`
need, locally or after `hubert-ee push`.
"""

from __future__ import annotations

from pathlib import Path

from . import CODE_FILES, CODE_FILES_BY_MODEL_TYPE, register_auto_classes
from .loading import (
    EARLY_EXIT_MODEL_TYPES, check_vocab_matches, checkpoint_model_type, early_exit_class, load_early_exit_config,
    load_early_exit_model, load_processor,
)

__all__ = ["CODE_FILES", "convert_checkpoint", "code_files", "save_hub_folder", "remove_stale_weights",
           "check_vocab_matches", "load_processor"]

# Every stage that loads a model imports this module: the Auto classes know the early-exit models from here on.
register_auto_classes()


def convert_checkpoint(source, init_from_backbone: bool = True, **config_overrides):
    """Load a plain CTC checkpoint as its early-exit model: a `HubertForCTC` as `HubertEEForCTC`, a `Wav2Vec2ForCTC`
    as `Wav2Vec2EEForCTC`.

    `source`: a folder or Hub id (an early-exit checkpoint too, which keeps its trained branches, and given other
    `exit_layers` or another `exit_branch` keeps those that stay, same layer and branch type, and starts the others
    as new ones), or a plain CTC model already loaded. `config_overrides` set early-exit fields (`exit_layers`,
    `exit_branch`, ...). With `init_from_backbone`, new branches start as copies of the layer after them and of the
    final head (`init_exit_branches_from_backbone`).
    """
    if isinstance(source, (str, Path)):
        source_type = checkpoint_model_type(source)
        if _changes_exits(source, source_type, config_overrides):
            return _with_other_exits(load_early_exit_model(source), config_overrides, init_from_backbone)
        model = load_early_exit_model(source, **config_overrides)
        converted = source_type != model.config.model_type
    else:
        model_type = getattr(getattr(source, "config", None), "model_type", None)
        model_class = early_exit_class(model_type) if model_type in EARLY_EXIT_MODEL_TYPES else None
        if model_class is None or not isinstance(source, model_class.plain_ctc_class):
            raise TypeError(
                f"convert_checkpoint takes a plain CTC checkpoint (a folder, a Hub id or a loaded HubertForCTC or "
                f"Wav2Vec2ForCTC), not a {type(source).__name__}"
                + (": it is HuBERT-EE already" if model_class and isinstance(source, model_class) else "")
            )
        model, converted = model_class.from_plain_model(source, **config_overrides), True
    if init_from_backbone and converted:
        model.init_exit_branches_from_backbone()
    return model


def code_files(model) -> tuple[str, ...]:
    """The code files that travel beside `model`'s weights (`CODE_FILES_BY_MODEL_TYPE`)."""
    return CODE_FILES_BY_MODEL_TYPE[model.config.model_type]


def _changes_exits(source: str | Path, source_type: str | None, config_overrides: dict) -> bool:
    """Whether `config_overrides` give an early-exit checkpoint other exit layers or another branch type."""
    if source_type not in CODE_FILES_BY_MODEL_TYPE:  # a plain CTC checkpoint: every branch is new anyway
        return False
    saved = load_early_exit_config(source)
    return any(key in config_overrides and config_overrides[key] != getattr(saved, key)
               for key in ("exit_layers", "exit_branch"))


def _with_other_exits(saved, config_overrides: dict, init_from_backbone: bool):
    """`saved` (an early-exit model) with the exits `config_overrides` name: its backbone, final head and every
    branch that stays (same layer and type); the other branches new (from the backbone with `init_from_backbone`)."""
    settings = {key: value for key, value in saved.config.to_dict().items()
                if key not in ("model_type", "architectures", "auto_map")}
    model = type(saved)(type(saved.config).from_dict({**settings, **config_overrides}))
    target = model.state_dict()
    fitting = {key: value for key, value in saved.state_dict().items()
               if key in target and value.shape == target[key].shape}
    backbone = {key: value for key, value in fitting.items() if not key.startswith("exit_branches.")}
    missing = [key for key in target if not key.startswith("exit_branches.") and key not in backbone]
    if missing:
        raise ValueError(f"the checkpoint's backbone does not fit its own config: missing {missing}")
    model.load_state_dict(backbone, strict=False)
    if init_from_backbone:
        model.init_exit_branches_from_backbone()
    if saved.config.exit_branch == model.config.exit_branch:
        model.load_state_dict({key: value for key, value in fitting.items() if key.startswith("exit_branches.")},
                              strict=False)
    model.to(dtype=next(saved.parameters()).dtype)
    model.apply_exit_training_strategy()
    model.train(saved.training)
    return model


WEIGHT_FILE_PATTERNS = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
                        "pytorch_model.bin.index.json")


def remove_stale_weights(folder: str | Path) -> list[Path]:
    """Delete the weight files of an earlier save in `folder` (returns them).

    Saving into a folder that already holds a model leaves files that the new save does not overwrite, e.g. an
    unsharded `model.safetensors` beside new shards, and `from_pretrained` then loads the stale file.
    """
    folder = Path(folder)
    stale = [path for pattern in WEIGHT_FILE_PATTERNS for path in folder.glob(pattern) if path.is_file()]
    for path in stale:
        path.unlink()
    return stale


def save_hub_folder(model, processor, folder: str | Path, max_shard_size: str = "15MB") -> Path:
    """Write a Hub-ready folder (see module docstring) and check that nothing is missing.

    Shards stay below `max_shard_size` so that every file fits size-limited transfers.
    """
    folder = Path(folder)
    check_vocab_matches(model, processor)
    remove_stale_weights(folder)
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    processor.save_pretrained(folder)
    missing = [name for name in code_files(model) if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"save_pretrained did not copy the model code files {missing} into {folder}.")
    return folder
