# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""HuBERT-EE configuration: a `HubertConfig` plus the fields of the early-exit branches.

This file travels to the Hub beside the weights and is executed by `trust_remote_code`: it imports only
`transformers` (and the standard library's typing helpers) and does nothing but describe the model.
"""

from transformers import HubertConfig


EXIT_BRANCHES = ("transformer", "linear")
EXIT_CRITERIA = ("confidence", "entropy", "patience")
EXIT_TRAINING_STRATEGIES = ("two-stage", "joint", "distill", "joint-distill")
CTC_LOSS_REDUCTIONS = ("sum", "mean")


def default_exit_layers(num_hidden_layers: int) -> list[int]:
    """Branches spread evenly over the depth: about five exits, never after the last layer.

    12 layers -> [2, 4, 6, 8, 10]; 24 layers (hubert-large) -> [4, 8, 12, 16, 20]; 2 layers -> [1]; 1 layer -> [].
    """
    step = max(1, round(num_hidden_layers / 6))
    return list(range(step, num_hidden_layers, step))


class HubertEEConfig(HubertConfig):
    r"""
    Configuration of [`HubertEEForCTC`]: every [`HubertConfig`] field (so any HuBERT CTC checkpoint's
    `config.json` loads into it) plus the early-exit fields below.

    exit_layers (`list[int]`, *optional*):
        1-based indices of the encoder layers after which an exit branch sits, strictly increasing, each in
        `[1, num_hidden_layers - 1]` (the last layer already has the model's own CTC head, `lm_head`). Defaults
        to about five exits spread evenly over the depth ([`default_exit_layers`]).
    exit_branch (`str`, *optional*, defaults to `"transformer"`):
        Architecture of each branch. `"transformer"` (the paper's): one HuBERT encoder layer of the same variant
        as the backbone, then a LayerNorm, dropout and a linear CTC head. `"linear"` (cheapest): LayerNorm,
        dropout and a linear CTC head. The LayerNorm matters for stable-layer-norm (pre-norm) backbones such as
        hubert-large-ls960-ft, whose intermediate hidden states are not normalised.
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
        as [`HubertForCTC`] does. Naming another exit setting for a call (`generate(x, exit_threshold=0.6)`), or
        when loading (`from_pretrained(path, exit_threshold=0.6)`), turns early exit on unless `early_exit` is
        given too: asking for a threshold means asking for exits.
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

    model_type = "hubert_ee"
    # The Trainer gathers every other output of an evaluation step as predictions: without this, `exit_layer` rides
    # along and `np.argmax(pred.predictions, axis=-1)` in a `compute_metrics` fails on a tuple of two shapes.
    # `exit_logits` is not listed: an eval-mode forward returns it only when asked (`output_exit_logits`), and then
    # the predictions are `(logits, exit_logits)` on purpose.
    keys_to_ignore_at_inference = ["exit_layer", "exit_losses"]

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

    @staticmethod
    def implied_early_exit(settings: dict) -> dict:
        """`{"early_exit": True}` when `settings` name `exit_criterion`, `exit_threshold` or `exit_patience` but not
        `early_exit`, else `{}`: asking for a criterion, threshold or patience is asking for exits, also where the
        config has them off."""
        named = [key for key in ("exit_criterion", "exit_threshold", "exit_patience") if settings.get(key) is not None]
        return {"early_exit": True} if named and settings.get("early_exit") is None else {}

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """`PreTrainedConfig.from_dict`, where an exit setting among `kwargs` turns early exit on
        (`implied_early_exit`): `from_pretrained(path, exit_threshold=0.6)`, as
        `pipeline(..., model_kwargs={"exit_threshold": 0.6})` calls it."""
        return super().from_dict(config_dict, **{**kwargs, **cls.implied_early_exit(kwargs)})

    @property
    def custom_pipelines(self) -> dict:
        """Where `pipeline("automatic-speech-recognition", model=<folder or Hub id>, trust_remote_code=True)` finds
        the pipeline that passes per-call early-exit settings on: `HubertEEAutomaticSpeechRecognitionPipeline`, in
        the model file beside the weights (so `pipeline()` asks for `trust_remote_code=True` for it, also where the
        classes are registered locally). A fresh dict each time, because `pipeline()` rewrites the entry it gets."""
        return {"automatic-speech-recognition": {
            "impl": "modeling_hubert_ee.HubertEEAutomaticSpeechRecognitionPipeline", "pt": ["AutoModelForCTC"],
        }}  # fmt: skip

    def __post_init__(self, **kwargs):
        # A HuBERT `config.json` carries `model_type: "hubert"`; this config is a "hubert_ee" one whatever it came from.
        kwargs.pop("model_type", None)
        self.__dict__.pop("model_type", None)
        if self.exit_layers is None:
            self.exit_layers = default_exit_layers(self.num_hidden_layers)
        elif isinstance(self.exit_layers, tuple):
            self.exit_layers = list(self.exit_layers)
        super().__post_init__(**kwargs)
        # `HubertConfig`'s own checks run through `@strict`, which a subclass does not inherit: run them here.
        self.validate_architecture()
        self.validate_exit_settings()

    def validate_exit_settings(self, **overrides) -> None:
        """Raise `ValueError` naming the field, its value and what is allowed, for every early-exit field.

        `overrides` (e.g. `exit_threshold=0.5`) are checked in place of the stored values without changing them;
        the model uses this for per-call overrides of `generate`/`forward`.
        """
        unknown = set(overrides) - {
            "exit_layers", "exit_branch", "exit_criterion", "exit_threshold", "exit_patience", "early_exit",
            "exit_training_strategy", "exit_loss_weight", "distill_weight", "distill_temperature",
        }  # fmt: skip
        if unknown:
            raise ValueError(f"Unknown early-exit setting(s) {sorted(unknown)}.")

        def get(name):
            return overrides[name] if name in overrides else getattr(self, name)

        def fail(name, allowed):
            raise ValueError(f"`{name}` is {get(name)!r}, but it must be {allowed}.")

        num_layers = self.num_hidden_layers
        layers = get("exit_layers")
        if not isinstance(layers, (list, tuple)) or not all(
            isinstance(layer, int) and not isinstance(layer, bool) for layer in layers
        ):
            fail("exit_layers", "a list of integer layer indices")
        for layer in layers:
            if not 1 <= layer <= num_layers - 1:
                fail(
                    "exit_layers",
                    f"1-based encoder layer indices in [1, {num_layers - 1}] (num_hidden_layers={num_layers}; "
                    f"the last layer is served by the model's own head); {layer} is out of range",
                )
        if list(layers) != sorted(set(layers)):
            fail("exit_layers", "strictly increasing, without duplicates")
        if get("exit_branch") not in EXIT_BRANCHES:
            fail("exit_branch", f"one of {list(EXIT_BRANCHES)}")
        if get("exit_criterion") not in EXIT_CRITERIA:
            fail("exit_criterion", f"one of {list(EXIT_CRITERIA)}")
        if get("exit_training_strategy") not in EXIT_TRAINING_STRATEGIES:
            fail("exit_training_strategy", f"one of {list(EXIT_TRAINING_STRATEGIES)}")
        for name in ("exit_threshold", "exit_loss_weight"):
            value = get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                fail(name, "a non-negative number")
        weight = get("distill_weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
            fail("distill_weight", "a number in [0, 1]")
        temperature = get("distill_temperature")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            fail("distill_temperature", "a positive number")
        patience = get("exit_patience")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            fail("exit_patience", "an integer >= 1")
        if not isinstance(get("early_exit"), bool):
            fail("early_exit", "True or False")
        if not isinstance(self.output_exit_logits, bool):
            fail("output_exit_logits", "True or False")
        if self.ctc_loss_reduction not in CTC_LOSS_REDUCTIONS:
            raise ValueError(
                f"`ctc_loss_reduction` is {self.ctc_loss_reduction!r}, but it must be one of {list(CTC_LOSS_REDUCTIONS)}."
            )


__all__ = ["HubertEEConfig", "default_exit_layers"]
