"""HuBERT-EE tooling around the model: data, training, evaluation, calibration, benchmarks, export and the CLI.

Importing this package is light (no torch, no transformers), so that `hubert-ee --help` answers at once. The model
classes come with their first use: `hubert_ee.HubertEEConfig`, `hubert_ee.HubertEEForCTC`,
`hubert_ee.register_auto_classes()` and every stage that loads a model (`hubert_ee.export`, and the stages built
on it) register them with transformers' Auto classes (`AutoConfig`, `AutoModel`, `AutoModelForCTC`), so local code
can use them without `trust_remote_code`. The model itself lives in the two root modules `configuration_hubert_ee`
and `modeling_hubert_ee`, the files that travel to the Hub.
"""

import os
from pathlib import Path


# The model files that travel to the Hub beside the weights (and that `trust_remote_code` runs).
CODE_FILES = ("configuration_hubert_ee.py", "modeling_hubert_ee.py")


def register_auto_classes() -> None:
    """Make `model_type="hubert_ee"` known to transformers' Auto classes in this process (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCTC

    from configuration_hubert_ee import HubertEEConfig
    from modeling_hubert_ee import HubertEEForCTC

    AutoConfig.register(HubertEEConfig.model_type, HubertEEConfig, exist_ok=True)
    AutoModel.register(HubertEEConfig, HubertEEForCTC, exist_ok=True)
    AutoModelForCTC.register(HubertEEConfig, HubertEEForCTC, exist_ok=True)


def __getattr__(name: str):
    """`HubertEEConfig` and `HubertEEForCTC`, imported (and registered) on first use."""
    if name in ("HubertEEConfig", "HubertEEForCTC"):
        register_auto_classes()
        import configuration_hubert_ee
        import modeling_hubert_ee

        return getattr(configuration_hubert_ee if name == "HubertEEConfig" else modeling_hubert_ee, name)
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
    "CODE_FILES", "DEFAULT_MODEL", "EXAMPLES", "HubertEEConfig", "HubertEEForCTC", "SHIPPED_MODEL",
    "register_auto_classes",
]
