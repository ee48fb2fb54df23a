"""HuBERT-EE tooling around the model: data, training, evaluation, calibration, benchmarks, export and the CLI.

Importing this package registers `HubertEEConfig`/`HubertEEForCTC` with transformers' Auto classes
(`AutoConfig`, `AutoModel`, `AutoModelForCTC`), so local code can use them without `trust_remote_code`.
The model itself lives in the two root modules `configuration_hubert_ee` and `modeling_hubert_ee`, the files
that travel to the Hub.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCTC

from configuration_hubert_ee import HubertEEConfig
from modeling_hubert_ee import HubertEEForCTC


def register_auto_classes() -> None:
    """Make `model_type="hubert_ee"` known to transformers' Auto classes in this process (idempotent)."""
    AutoConfig.register(HubertEEConfig.model_type, HubertEEConfig, exist_ok=True)
    AutoModel.register(HubertEEConfig, HubertEEForCTC, exist_ok=True)
    AutoModelForCTC.register(HubertEEConfig, HubertEEForCTC, exist_ok=True)


register_auto_classes()

__all__ = ["HubertEEConfig", "HubertEEForCTC", "register_auto_classes"]
