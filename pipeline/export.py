"""Export stage: turn a HuBERT CTC checkpoint into HuBERT-EE and write Hub-ready folders.

A Hub-ready folder holds the weights (safetensors), `config.json` with `auto_map`, both model code files
(`configuration_hubert_ee.py`, `modeling_hubert_ee.py`, copied by transformers' `save_pretrained` because the
classes are registered for Auto classes), the tokenizer and the feature extractor: everything that
`AutoModelForCTC.from_pretrained(folder, trust_remote_code=True)` and `pipeline("automatic-speech-recognition")`
need, locally or after `hubert-ee push`.
"""

from __future__ import annotations

from pathlib import Path

from transformers import HubertForCTC

from modeling_hubert_ee import HubertEEForCTC

from . import CODE_FILES, register_auto_classes
from .loading import check_vocab_matches, load_processor

__all__ = ["convert_checkpoint", "save_hub_folder", "remove_stale_weights", "check_vocab_matches", "load_processor"]

# Every stage that loads a model imports this module: the Auto classes know HuBERT-EE from here on.
register_auto_classes()


def convert_checkpoint(source: str | Path | HubertForCTC, init_from_backbone: bool = True,
                       **config_overrides) -> HubertEEForCTC:
    """Load a `HubertForCTC` checkpoint (folder or Hub id, or a `HubertForCTC` already loaded) as `HubertEEForCTC`.

    `config_overrides` set early-exit fields (`exit_layers`, `exit_branch`, ...). With `init_from_backbone`, new
    branches start as copies of the layer after them and of the final head
    ([`HubertEEForCTC.init_exit_branches_from_backbone`]); a HuBERT-EE checkpoint keeps its trained branches, and
    given other `exit_layers` or another `exit_branch` it keeps those that stay (same layer, same branch type) and
    starts the others as new ones.
    """
    if isinstance(source, HubertForCTC):
        model = _convert_loaded(source, config_overrides)
    elif isinstance(source, (str, Path)) and _changes_exits(source, config_overrides):
        return _with_other_exits(HubertEEForCTC.from_pretrained(str(source)), config_overrides, init_from_backbone)
    elif isinstance(source, (str, Path)):
        model = HubertEEForCTC.from_pretrained(str(source), **config_overrides)
    else:
        raise TypeError(
            f"convert_checkpoint takes a HubertForCTC checkpoint (a folder, a Hub id or a loaded HubertForCTC), not "
            f"a {type(source).__name__}" + (": it is HuBERT-EE already" if isinstance(source, HubertEEForCTC) else "")
        )
    if init_from_backbone and (isinstance(source, HubertForCTC) or _is_plain_hubert(source)):
        model.init_exit_branches_from_backbone()
    return model


def _convert_loaded(source: HubertForCTC, config_overrides: dict) -> HubertEEForCTC:
    """A `HubertEEForCTC` with `source`'s weights (backbone and final head, on its device and dtype), new branches."""
    from configuration_hubert_ee import HubertEEConfig

    settings = {key: value for key, value in source.config.to_dict().items()
                if key not in ("model_type", "architectures", "auto_map")}
    model = HubertEEForCTC(HubertEEConfig.from_dict({**settings, **config_overrides}))
    parameter = next(source.parameters())
    model.to(device=parameter.device, dtype=parameter.dtype)
    missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    missing = [key for key in missing if not key.startswith("exit_branches.")]
    if missing or unexpected:
        raise ValueError(f"{type(source).__name__} does not fit HuBERT-EE: missing {missing}, unexpected {unexpected}")
    model.train(source.training)
    return model


def _changes_exits(source: str | Path, config_overrides: dict) -> bool:
    """Whether `config_overrides` give a HuBERT-EE checkpoint other exit layers or another branch type."""
    from configuration_hubert_ee import HubertEEConfig

    if _is_plain_hubert(source):
        return False
    saved = HubertEEConfig.from_pretrained(str(source))
    return any(key in config_overrides and config_overrides[key] != getattr(saved, key)
               for key in ("exit_layers", "exit_branch"))


def _with_other_exits(saved: HubertEEForCTC, config_overrides: dict, init_from_backbone: bool) -> HubertEEForCTC:
    """`saved` (a HuBERT-EE model) with the exits `config_overrides` name: its backbone, final head and every branch
    that stays (same layer and type); the other branches new (from the backbone with `init_from_backbone`)."""
    from configuration_hubert_ee import HubertEEConfig

    settings = {key: value for key, value in saved.config.to_dict().items()
                if key not in ("model_type", "architectures", "auto_map")}
    model = HubertEEForCTC(HubertEEConfig.from_dict({**settings, **config_overrides}))
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


def _is_plain_hubert(source: str | Path) -> bool:
    from configuration_hubert_ee import HubertEEConfig

    config_dict, _ = HubertEEConfig.get_config_dict(str(source))
    return config_dict.get("model_type") != HubertEEConfig.model_type


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


def save_hub_folder(model: HubertEEForCTC, processor, folder: str | Path, max_shard_size: str = "15MB") -> Path:
    """Write a Hub-ready folder (see module docstring) and check that nothing is missing.

    Shards stay below `max_shard_size` so that every file fits size-limited transfers.
    """
    folder = Path(folder)
    check_vocab_matches(model, processor)
    remove_stale_weights(folder)
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    processor.save_pretrained(folder)
    missing = [name for name in CODE_FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"save_pretrained did not copy the model code files {missing} into {folder}.")
    return folder
