# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""The early-exit half of every HuBERT-EE configuration: its fields, their checks, and the typed exit setting.

`configuration_hubert_ee.HubertEEConfig` and `configuration_wav2vec2_ee.Wav2Vec2EEConfig` are their backbone's
config plus `EarlyExitConfigMixin`. `ExitSetting` is what one inference runs with (on/off, criterion, threshold,
patience): the config holds the default one, and a call may name another.

This file travels to the Hub beside the weights (each configuration file imports it relatively, so transformers
copies it) and is executed by `trust_remote_code`: it imports only the standard library's dataclasses.
"""

from dataclasses import dataclass, replace


EXIT_BRANCHES = ("transformer", "linear")
EXIT_CRITERIA = ("confidence", "entropy", "patience")
EXIT_TRAINING_STRATEGIES = ("two-stage", "joint", "distill", "joint-distill")
CTC_LOSS_REDUCTIONS = ("sum", "mean")
# The strategies under which the backbone and the final head are frozen and only the branches learn.
FROZEN_BACKBONE_STRATEGIES = ("two-stage", "distill")


def default_exit_layers(num_hidden_layers: int) -> list[int]:
    """Branches spread evenly over the depth: about five exits, never after the last layer.

    12 layers -> [2, 4, 6, 8, 10]; 24 layers (large) -> [4, 8, 12, 16, 20]; 2 layers -> [1]; 1 layer -> [].
    """
    step = max(1, round(num_hidden_layers / 6))
    return list(range(step, num_hidden_layers, step))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ExitSetting:
    """What one early-exit inference runs with; checked when built, so a setting that exists is a valid one.

    early_exit (`bool`): whether utterances may leave before the last layer (`False`: the backbone's own CTC model).
    criterion (`str`): one of `EXIT_CRITERIA` (see `EarlyExitConfigMixin`'s docstring).
    threshold (`float`): the criterion's threshold: a minimum confidence or a maximum entropy (nats), >= 0.
    patience (`int`): consecutive agreeing exits the `"patience"` criterion needs, >= 1.
    """

    early_exit: bool = True
    criterion: str = "confidence"
    threshold: float = 0.9
    patience: int = 2

    # The config field that holds each attribute (the names `forward`, `generate` and the pipeline take); not
    # annotated, so a class constant rather than a field.
    CONFIG_FIELDS = {"early_exit": "early_exit", "criterion": "exit_criterion", "threshold": "exit_threshold",
                     "patience": "exit_patience"}  # fmt: skip

    def __post_init__(self):
        if not isinstance(self.early_exit, bool):
            raise ValueError(f"`early_exit` is {self.early_exit!r}, but it must be True or False.")
        if self.criterion not in EXIT_CRITERIA:
            raise ValueError(f"`exit_criterion` is {self.criterion!r}, but it must be one of {list(EXIT_CRITERIA)}.")
        if not _is_number(self.threshold) or not self.threshold >= 0:
            raise ValueError(f"`exit_threshold` is {self.threshold!r}, but it must be a non-negative number.")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 1:
            raise ValueError(f"`exit_patience` is {self.patience!r}, but it must be an integer >= 1.")

    @classmethod
    def coerce(cls, value) -> "ExitSetting":
        """`value` as this class: itself, or rebuilt from its four fields. A model loaded with `trust_remote_code`
        may get its config and its model code from two copies of this module (transformers caches each file's
        imports apart), whose `ExitSetting` classes differ; anything else is a `TypeError`."""
        if isinstance(value, cls):
            return value
        if not all(hasattr(value, name) for name in cls.CONFIG_FIELDS):
            raise TypeError(f"`exit_setting` must be an ExitSetting, got {type(value).__name__}.")
        return cls(**{name: getattr(value, name) for name in cls.CONFIG_FIELDS})

    @classmethod
    def from_config(cls, config) -> "ExitSetting":
        """The setting a config stores (its `early_exit`, `exit_criterion`, `exit_threshold`, `exit_patience`)."""
        return cls(**{name: getattr(config, field) for name, field in cls.CONFIG_FIELDS.items()})

    def with_overrides(self, **overrides) -> "ExitSetting":
        """This setting with the config-named `overrides` (`exit_threshold=0.6`, ...; None: not given) applied.

        Naming a criterion, threshold or patience without `early_exit` turns early exit on: asking for a threshold
        is asking for exits. An unknown name is a `TypeError` listing the known ones.
        """
        names = {field: name for name, field in self.CONFIG_FIELDS.items()}
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"Unknown exit setting(s) {unknown}; the per-call exit settings are {list(names)}.")
        given = {names[field]: value for field, value in overrides.items() if value is not None}
        if given and "early_exit" not in given:
            given["early_exit"] = True
        return replace(self, **given) if given else self

    def as_config_fields(self) -> dict:
        """`{"early_exit": ..., "exit_criterion": ..., "exit_threshold": ..., "exit_patience": ...}`: the keyword
        arguments of `generate`/`forward`/`from_pretrained` and the config fields that give this setting."""
        return {field: getattr(self, name) for name, field in self.CONFIG_FIELDS.items()}

    def decides_like(self, other: "ExitSetting") -> bool:
        """Whether `other` makes the same exit decisions: the same on/off and criterion, and the same threshold (for
        confidence and entropy) or patience (for patience); the field the criterion does not read may differ."""
        if not (self.early_exit and other.early_exit):
            return self.early_exit == other.early_exit
        if self.criterion != other.criterion:
            return False
        if self.criterion == "patience":
            return self.patience == other.patience
        return abs(self.threshold - other.threshold) < 1e-9

    def describe(self) -> str:
        """The setting in words: `"full depth"`, `"confidence >= 0.9"`, `"entropy <= 0.5"`, `"patience 2"`."""
        if not self.early_exit:
            return "full depth"
        if self.criterion == "patience":
            return f"patience {self.patience}"
        return f"{self.criterion} {'>=' if self.criterion == 'confidence' else '<='} {self.threshold:g}"


def implied_early_exit(settings: dict) -> dict:
    """`{"early_exit": True}` when `settings` name `exit_criterion`, `exit_threshold` or `exit_patience` but not
    `early_exit`, else `{}`: asking for a criterion, threshold or patience is asking for exits, also where the
    config has them off."""
    named = [key for key in ("exit_criterion", "exit_threshold", "exit_patience") if settings.get(key) is not None]
    return {"early_exit": True} if named and settings.get("early_exit") is None else {}


@dataclass(kw_only=True, repr=False, eq=False, init=False)
class EarlyExitConfigMixin:
    r"""
    The early-exit fields of a HuBERT-EE configuration, beside its backbone's (so any CTC checkpoint's
    `config.json` of that backbone loads into it).

    exit_layers (`list[int]`, *optional*):
        1-based indices of the encoder layers after which an exit branch sits, strictly increasing, each in
        `[1, num_hidden_layers - 1]` (the last layer already has the model's own CTC head, `lm_head`). Defaults
        to about five exits spread evenly over the depth ([`default_exit_layers`]).
    exit_branch (`str`, *optional*, defaults to `"transformer"`):
        Architecture of each branch. `"transformer"` (the paper's): one encoder layer of the same variant as the
        backbone, then a LayerNorm, dropout and a linear CTC head. `"linear"` (cheapest): LayerNorm, dropout and a
        linear CTC head. The LayerNorm matters for stable-layer-norm (pre-norm) backbones such as
        hubert-large-ls960-ft or wav2vec2-large-960h-lv60-self, whose intermediate hidden states are not normalised.
    exit_criterion (`str`, *optional*, defaults to `"confidence"`):
        When an utterance leaves at a branch during inference:
        - `"confidence"` (the paper's): the utterance's confidence is the mean, over its valid (non-padding)
          frames whose greedy label is not the CTC blank, of the frame's top posterior probability; it exits when
          confidence >= `exit_threshold`. Blank frames are left out because they are the large majority of CTC
          frames and are almost always near-certain, so including them would hide the few uncertain character
          frames that decide the transcript. An utterance whose frames are all blank uses all its valid frames.
        - `"entropy"` (DeeBERT / DAISY): the mean over valid frames of the entropy (nats) of the frame's
          posterior; it exits when entropy <= `exit_threshold`.
        - `"patience"` (PABEE, batched here): it exits at the branch where the greedy CTC transcripts of
          `exit_patience` consecutive exits (this one included) are identical; `exit_threshold` is not used.
        Posteriors are computed in float32 whatever the model's dtype, so a half-precision model decides as its
        float32 logits would.
    exit_threshold (`float`, *optional*, defaults to 0.9):
        Threshold of the criterion (see `exit_criterion`): a minimum confidence, or a maximum entropy in nats.
        A confidence threshold above 1 never exits; an entropy threshold of 0 almost never exits.
    exit_patience (`int`, *optional*, defaults to 2):
        Number of consecutive exits whose transcripts must agree for the `"patience"` criterion (1: the first
        exit always answers).
    early_exit (`bool`, *optional*, defaults to `True`):
        Whether inference leaves early. `False` runs the full depth and returns the final head's logits, exactly
        as the backbone's own CTC model does. Naming another exit setting for a call (`generate(x,
        exit_threshold=0.6)`), or when loading (`from_pretrained(path, exit_threshold=0.6)`), turns early exit on
        unless `early_exit` is given too: asking for a threshold means asking for exits.
    exit_training_strategy (`str`, *optional*, defaults to `"two-stage"`):
        How `labels` train the model:
        - `"two-stage"` (paper, DeeBERT): backbone and final head are frozen, only the branches learn (loss: mean
          of the branches' CTC losses), so the final head's accuracy is untouched by construction.
        - `"joint"` (paper): everything learns; loss = final CTC loss + `exit_loss_weight` x mean branch CTC loss.
        - `"distill"`: backbone frozen; each branch learns from the labels and from the final head's posteriors:
          branch loss = (1 - `distill_weight`) x CTC + `distill_weight` x T^2 x KL(final || branch) at
          temperature T = `distill_temperature`, KL summed over valid frames and reduced over the batch like the
          CTC loss (`ctc_loss_reduction`), so both terms live on one scale.
        - `"joint-distill"`: everything learns, as in `"joint"`, and each branch's loss is the `"distill"` one, its
          teacher the final head's posteriors of the same step (detached, so the teacher learns from the labels only).
    exit_loss_weight (`float`, *optional*, defaults to 1.0):
        Weight of the mean branch loss next to the final loss for the `"joint"` and `"joint-distill"` strategies.
    distill_weight (`float`, *optional*, defaults to 0.5):
        Share of the KL term in a branch's loss for the `"distill"` and `"joint-distill"` strategies, in [0, 1].
    distill_temperature (`float`, *optional*, defaults to 1.0):
        Softmax temperature of teacher and student for the `"distill"` strategy, > 0.
    output_exit_logits (`bool`, *optional*, defaults to `False`):
        What `forward` does when a call does not say (as `output_hidden_states` in transformers' models): `True`
        runs every layer and every branch on every row, also in eval mode, and returns every branch's logits
        (`exit_logits`) beside the final head's, so that a `Trainer`'s evaluation sees each exit
        (`hubert_ee.metrics.exit_metrics`). Early exit then never happens in `forward` (the ASR pipeline included):
        an evaluation setting, not an inference one. `generate` is not affected.
    """

    # The Trainer gathers every other output of an evaluation step as predictions: without this, `exit_layer` rides
    # along and `np.argmax(pred.predictions, axis=-1)` in a `compute_metrics` fails on a tuple of two shapes.
    # `exit_logits` is not listed: an eval-mode forward returns it only when asked (`output_exit_logits`), and then
    # the predictions are `(logits, exit_logits)` on purpose.
    keys_to_ignore_at_inference = ["exit_layer", "exit_losses"]
    # Set by each early-exit config: its backbone's own config class (`HubertConfig`, ...), and the module (beside the
    # weights) that defines the model class and its speech recognition pipeline.
    backbone_config_class = None
    modeling_module = ""
    pipeline_class_name = ""

    exit_layers: list[int] | None = None
    exit_branch: str = "transformer"
    exit_criterion: str = "confidence"
    exit_threshold: float | int = 0.9
    exit_patience: int = 2
    early_exit: bool = True
    exit_training_strategy: str = "two-stage"
    exit_loss_weight: float | int = 1.0
    distill_weight: float | int = 0.5
    distill_temperature: float | int = 1.0
    output_exit_logits: bool = False

    implied_early_exit = staticmethod(implied_early_exit)

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """`PreTrainedConfig.from_dict`, where an exit setting among `kwargs` turns early exit on
        (`implied_early_exit`): `from_pretrained(path, exit_threshold=0.6)`, as
        `pipeline(..., model_kwargs={"exit_threshold": 0.6})` calls it."""
        return super().from_dict(config_dict, **{**kwargs, **implied_early_exit(kwargs)})

    @property
    def exit_setting(self) -> ExitSetting:
        """The stored exit setting (`early_exit`, `exit_criterion`, `exit_threshold`, `exit_patience`), typed."""
        return ExitSetting.from_config(self)

    def backbone_config(self):
        """The backbone's own config (`backbone_config_class`) with this config's values for its fields: the
        early-exit fields, `model_type`, `architectures` and `auto_map` are left out."""
        own = set(self.backbone_config_class().to_dict()) - {"model_type", "architectures", "auto_map",
                                                             "transformers_version"}
        plain = self.backbone_config_class.from_dict({key: value for key, value in self.to_dict().items()
                                                      if key in own})
        plain._attn_implementation = self._attn_implementation
        return plain

    @property
    def backbone_is_frozen(self) -> bool:
        """Whether `exit_training_strategy` trains the branches only (backbone and final head frozen)."""
        return self.exit_training_strategy in FROZEN_BACKBONE_STRATEGIES

    @property
    def custom_pipelines(self) -> dict:
        """Where `pipeline("automatic-speech-recognition", model=<folder or Hub id>, trust_remote_code=True)` finds
        the pipeline that passes per-call early-exit settings on, in the model file beside the weights (so
        `pipeline()` asks for `trust_remote_code=True` for it, also where the classes are registered locally). A
        fresh dict each time, because `pipeline()` rewrites the entry it gets."""
        return {"automatic-speech-recognition": {
            "impl": f"{self.modeling_module}.{self.pipeline_class_name}", "pt": ["AutoModelForCTC"],
        }}  # fmt: skip

    def __post_init__(self, **kwargs):
        # A backbone's `config.json` carries its own `model_type`; this config is the early-exit one whatever it came from.
        kwargs.pop("model_type", None)
        self.__dict__.pop("model_type", None)
        if self.exit_layers is None:
            self.exit_layers = default_exit_layers(self.num_hidden_layers)
        elif isinstance(self.exit_layers, tuple):
            self.exit_layers = list(self.exit_layers)
        super().__post_init__(**kwargs)
        # The backbone config's own checks run through `@strict`, which a subclass does not inherit: run them here.
        self.validate_architecture()
        self.validate_exit_settings()

    def validate_exit_settings(self, **overrides) -> None:
        """Raise `ValueError` naming the field, its value and what is allowed, for every early-exit field.

        `overrides` (e.g. `exit_threshold=0.5`) are checked in place of the stored values without changing them.
        """
        known = {"exit_layers", "exit_branch", "exit_training_strategy", "exit_loss_weight", "distill_weight",
                 "distill_temperature", *ExitSetting.CONFIG_FIELDS.values()}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"Unknown early-exit setting(s) {sorted(unknown)}.")
        values = {name: overrides.get(name, getattr(self, name)) for name in known}
        ExitSetting(**{name: values[field] for name, field in ExitSetting.CONFIG_FIELDS.items()})
        self._validate_exit_layers(values["exit_layers"])
        self._validate_training_fields(values)
        if not isinstance(self.output_exit_logits, bool):
            raise ValueError(f"`output_exit_logits` is {self.output_exit_logits!r}, but it must be True or False.")
        if self.ctc_loss_reduction not in CTC_LOSS_REDUCTIONS:
            raise ValueError(f"`ctc_loss_reduction` is {self.ctc_loss_reduction!r}, but it must be one of "
                             f"{list(CTC_LOSS_REDUCTIONS)}.")

    def _validate_exit_layers(self, layers) -> None:
        num_layers = self.num_hidden_layers
        if not isinstance(layers, (list, tuple)) or not all(
            isinstance(layer, int) and not isinstance(layer, bool) for layer in layers
        ):
            raise ValueError(f"`exit_layers` is {layers!r}, but it must be a list of integer layer indices.")
        for layer in layers:
            if not 1 <= layer <= num_layers - 1:
                raise ValueError(
                    f"`exit_layers` is {layers!r}, but it must be 1-based encoder layer indices in [1, {num_layers - 1}] "
                    f"(num_hidden_layers={num_layers}; the last layer is served by the model's own head); {layer} "
                    "is out of range."
                )
        if list(layers) != sorted(set(layers)):
            raise ValueError(f"`exit_layers` is {layers!r}, but it must be strictly increasing, without duplicates.")

    @staticmethod
    def _validate_training_fields(values: dict) -> None:
        def fail(name, allowed):
            raise ValueError(f"`{name}` is {values[name]!r}, but it must be {allowed}.")

        if values["exit_branch"] not in EXIT_BRANCHES:
            fail("exit_branch", f"one of {list(EXIT_BRANCHES)}")
        if values["exit_training_strategy"] not in EXIT_TRAINING_STRATEGIES:
            fail("exit_training_strategy", f"one of {list(EXIT_TRAINING_STRATEGIES)}")
        if not _is_number(values["exit_loss_weight"]) or not values["exit_loss_weight"] >= 0:
            fail("exit_loss_weight", "a non-negative number")
        if not _is_number(values["distill_weight"]) or not 0 <= values["distill_weight"] <= 1:
            fail("distill_weight", "a number in [0, 1]")
        if not _is_number(values["distill_temperature"]) or not values["distill_temperature"] > 0:
            fail("distill_temperature", "a positive number")


__all__ = [
    "EXIT_BRANCHES", "EXIT_CRITERIA", "EXIT_TRAINING_STRATEGIES", "EarlyExitConfigMixin", "ExitSetting",
    "default_exit_layers", "implied_early_exit",
]
