"""HuBERT-EE tooling around the model: data, training, evaluation, calibration, benchmarks, export and the CLI.

Importing this package is light (no torch, no transformers), so that `hubert-ee --help` answers at once. The model
classes come with their first use: `hubert_ee.HubertEEConfig`, `hubert_ee.HubertEEForCTC`,
`hubert_ee.Wav2Vec2EEConfig`, `hubert_ee.Wav2Vec2EEForCTC`, `hubert_ee.register_auto_classes()` and every stage that
loads a model (`hubert_ee.export`, and the stages built on it) register them with transformers' Auto classes
(`AutoConfig`, `AutoModel`, `AutoModelForCTC`), so local code can use them without `trust_remote_code`. The models
live in the root modules listed in `CODE_FILES`, the files that travel to the Hub.
"""

import os
from pathlib import Path


# The model files that travel to the Hub beside the weights (and that `trust_remote_code` runs), per early-exit
# `model_type`: the backbone's configuration and modeling files, and the shared early-exit modules they import.
SHARED_CODE_FILES = ("configuration_early_exit.py", "modeling_early_exit.py")
CODE_FILES_BY_MODEL_TYPE = {
    "hubert_ee": ("configuration_hubert_ee.py", "modeling_hubert_ee.py", *SHARED_CODE_FILES),
    "wav2vec2_ee": ("configuration_wav2vec2_ee.py", "modeling_wav2vec2_ee.py", *SHARED_CODE_FILES),
}
CODE_FILES = CODE_FILES_BY_MODEL_TYPE["hubert_ee"]
# The model classes, by the name this package gives them (`hubert_ee.HubertEEForCTC`), with their root module.
MODEL_CLASSES = {
    "HubertEEConfig": "configuration_hubert_ee", "HubertEEForCTC": "modeling_hubert_ee",
    "Wav2Vec2EEConfig": "configuration_wav2vec2_ee", "Wav2Vec2EEForCTC": "modeling_wav2vec2_ee",
}


def register_auto_classes() -> None:
    """Make `model_type` "hubert_ee" and "wav2vec2_ee" known to transformers' Auto classes in this process
    (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCTC

    from configuration_hubert_ee import HubertEEConfig
    from configuration_wav2vec2_ee import Wav2Vec2EEConfig
    from modeling_hubert_ee import HubertEEForCTC
    from modeling_wav2vec2_ee import Wav2Vec2EEForCTC

    for config_class, model_class in ((HubertEEConfig, HubertEEForCTC), (Wav2Vec2EEConfig, Wav2Vec2EEForCTC)):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoModelForCTC.register(config_class, model_class, exist_ok=True)


def __getattr__(name: str):
    """The model classes of `MODEL_CLASSES`, imported (and registered) on first use."""
    if name in MODEL_CLASSES:
        import importlib

        register_auto_classes()
        return getattr(importlib.import_module(MODEL_CLASSES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The trained model shipped in the repository (models/, beside pipeline/; see its README.md, the model card) and the
# clips it is demonstrated on. `hubert-ee transcribe / evaluate / calibrate / benchmark` use it when no --model is
# given. HUBERT_EE_DEFAULT_MODEL (a folder or a Hub id) replaces it; an install without the repository's models/
# folder (a wheel) has no default, and those commands then ask for --model.
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = REPOSITORY_ROOT / "models" / "hubert-ee-compact-synth"
EXAMPLES = REPOSITORY_ROOT / "examples"
DEFAULT_MODEL: str | None = os.environ.get("HUBERT_EE_DEFAULT_MODEL") or (
    str(SHIPPED_MODEL) if (SHIPPED_MODEL / "config.json").is_file() else None
)

__all__ = [
    "CODE_FILES", "CODE_FILES_BY_MODEL_TYPE", "DEFAULT_MODEL", "EXAMPLES", "HubertEEConfig", "HubertEEForCTC",
    "SHIPPED_MODEL", "Wav2Vec2EEConfig", "Wav2Vec2EEForCTC", "register_auto_classes",
]
