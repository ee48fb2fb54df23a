# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""HuBERT-EE: early-exit HuBERT for CTC speech recognition (Yoon, Woo & Kim, arXiv 2204.06328).

`HubertEEForCTC` is `HubertForCTC` (same `hubert.*` backbone and `lm_head` final head, reused from transformers)
plus small CTC exit branches after chosen encoder layers. At inference each utterance of a batch leaves at the
first branch whose exit criterion is met; rows that have left are dropped from the batch before the deeper layers
run (batch compaction). What HuBERT-EE adds is stated here: the branches, the exit loop, the criteria and the
losses; everything else is transformers' Hubert code.

This file travels to the Hub beside the weights and is executed by `trust_remote_code`: it imports only torch,
transformers and the standard library's dataclasses and threading, and does nothing but build and run the model.
"""

import threading
from dataclasses import dataclass

import torch
from torch import nn
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.integrations.fsdp import is_fsdp_managed_module
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import ModelOutput
from transformers.pipelines.automatic_speech_recognition import AutomaticSpeechRecognitionPipeline, rescale_stride
from transformers.models.hubert.modeling_hubert import (
    HubertEncoderLayer,
    HubertEncoderLayerStableLayerNorm,
    HubertModel,
    HubertPreTrainedModel,
)
from transformers.utils import logging


try:  # loaded as part of a package: transformers' dynamic module cache (`trust_remote_code`)
    from .configuration_hubert_ee import HubertEEConfig
except ImportError:  # loaded as a top-level module (installed by setup.py, or run from the repository root)
    from configuration_hubert_ee import HubertEEConfig


logger = logging.get_logger(__name__)

# Settings that `forward`/`generate` accept per call; they never change `config`.
PER_CALL_EXIT_SETTINGS = ("early_exit", "exit_criterion", "exit_threshold", "exit_patience")



def frames_from_samples(config, sample_lengths):
    """Frames a HuBERT front end emits for utterances of `sample_lengths` samples.

    `config` is any HuBERT config (`HubertConfig` or `HubertEEConfig`: only `conv_kernel` and `conv_stride` are
    read); the arithmetic is that of transformers' `_get_feat_extract_output_lengths`. An int gives an int, a list
    of ints a list of ints (on the host), a tensor a long tensor on its device.
    """
    if isinstance(sample_lengths, (list, tuple)):
        return [frames_from_samples(config, samples) for samples in sample_lengths]
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        sample_lengths = (sample_lengths - kernel) // stride + 1
    return sample_lengths.to(torch.long) if isinstance(sample_lengths, torch.Tensor) else sample_lengths


@dataclass
class HubertEECTCOutput(ModelOutput):
    """Output of [`HubertEEForCTC.forward`].

    loss (`torch.FloatTensor` of shape `()`, *optional*):
        With `labels`: the loss of `config.exit_training_strategy`, in training and in inference alike (so that an
        evaluation's loss tracks what training lowers; the final head's CTC loss when there are no branches).
    logits (`torch.FloatTensor` of shape `(batch_size, frames, vocab_size)`):
        CTC logits of the exit that answered each utterance, laid out like `HubertForCTC`'s.
    exit_layer (`torch.LongTensor` of shape `(batch_size,)`):
        1-based encoder layer of the exit used by each utterance; `num_hidden_layers` for the final head.
    exit_logits (`tuple(torch.FloatTensor)`, *optional*):
        In training or with `output_exit_logits=True`: every branch's logits, in `config.exit_layers` order.
    exit_losses (`torch.FloatTensor` of shape `(num_exits,)`, *optional*):
        With `labels`: each branch's loss under the strategy, for logging.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    exit_layer: torch.LongTensor | None = None
    exit_logits: tuple[torch.FloatTensor, ...] | None = None
    exit_losses: torch.FloatTensor | None = None


@dataclass
class HubertEEGenerateOutput(ModelOutput):
    """Output of [`HubertEEForCTC.generate`].

    sequences (`torch.LongTensor` of shape `(batch_size, frames)`):
        Greedy CTC token ids per frame (padding frames set to the blank/pad id), ready for
        `processor.batch_decode`, which merges repeats and drops blanks.
    exit_layer (`torch.LongTensor` of shape `(batch_size,)`):
        1-based encoder layer of the exit that answered each utterance (`num_hidden_layers`: the final head).
    logits (`torch.FloatTensor` of shape `(batch_size, frames, vocab_size)`):
        The logits the sequences were read from.
    """

    sequences: torch.LongTensor | None = None
    exit_layer: torch.LongTensor | None = None
    logits: torch.FloatTensor | None = None


class HubertEEExitBranch(nn.Module):
    """One exit: an optional HuBERT encoder layer (the paper's branch), a LayerNorm and a linear CTC head.

    The encoder layer is the backbone's own variant (post-norm or stable-layer-norm). The LayerNorm is always
    there because stable-layer-norm backbones (hubert-large/xlarge-ls960-ft) only normalise after the last layer,
    so their intermediate hidden states reach a branch un-normalised.
    """

    def __init__(self, config: HubertEEConfig):
        super().__init__()
        if config.exit_branch == "transformer":
            layer_class = HubertEncoderLayerStableLayerNorm if config.do_stable_layer_norm else HubertEncoderLayer
            self.layer = layer_class(config)
        else:
            self.layer = None
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.final_dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.layer is not None:
            hidden_states = self.layer(hidden_states, attention_mask=attention_mask)
        return self.head(self.dropout(self.layer_norm(hidden_states)))


def _raise_if_weights_unreadable(source, error: Exception) -> None:
    """Raise an `OSError` naming the weight file when `error` is the safetensors reader's: its own message (e.g.
    "incomplete metadata" for a file cut short by an interrupted download or copy) names neither file nor folder."""
    if type(error).__name__ != "SafetensorError":
        return
    file = _file_being_read(error) or f"a *.safetensors weight file in {source}"
    raise OSError(
        f"{file} is incomplete or damaged ({error}); was its download or copy interrupted? Download or copy it again."
    ) from error


def _file_being_read(error: Exception) -> str | None:
    """The safetensors file a failed load was opening, from the loader's own frames (transformers keeps the file it
    opens in a local variable): the innermost frame that holds exactly one such file name. No file is touched."""
    frames = []
    traceback = error.__traceback__
    while traceback is not None:
        frames.append(traceback.tb_frame)
        traceback = traceback.tb_next
    for frame in reversed(frames):
        values = frame.f_locals.values()
        names = {value for value in values if isinstance(value, str) and value.endswith(".safetensors")}
        if len(names) == 1:
            return names.pop()
    return None


def _raise_if_mismatched(source, loading_info) -> None:
    """Raise naming keys and shapes when loaded weights do not fit the shapes the config asks for."""
    mismatched = sorted(loading_info.get("mismatched_keys") or [])
    if mismatched:
        shown = [f"{key} (checkpoint {tuple(saved)}, model {tuple(built)})" for key, saved, built in mismatched[:8]]
        raise ValueError(
            f"{source}: {len(mismatched)} weight(s) do not fit the shapes its config asks for (was config.json "
            f"edited?): {', '.join(shown)}{' ...' if len(mismatched) > 8 else ''}"
        )


def _raise_if_backbone_missing(source, loading_info) -> None:
    """Raise naming the keys when backbone weights are missing: the checkpoint is not a HuBERT one."""
    missing = sorted(loading_info["missing_keys"])
    missing_backbone = [key for key in missing if key.startswith("hubert.") and "masked_spec_embed" not in key]
    if missing_backbone:
        raise ValueError(
            f"{source} is not a HuBERT checkpoint this model can load: backbone weights are missing: "
            f"{missing_backbone[:8]}{' ...' if len(missing_backbone) > 8 else ''}"
        )


def _raise_if_not_finite(finite_rows) -> None:
    """`finite_rows`: a host-side list (or a device tensor, read here) of per-utterance finiteness flags."""
    if isinstance(finite_rows, torch.Tensor):
        finite_rows = finite_rows.tolist()
    bad = [row for row, finite in enumerate(finite_rows) if not finite]
    if bad:
        raise ValueError(f"`input_values` contains NaN or infinite samples (utterance(s) {bad}).")


def _decision_in_flight(leaving):
    """`(decision, event)`: on CUDA a pinned host copy of `leaving` started without blocking and the event that
    marks it done; elsewhere `leaving` itself and None."""
    if leaving.device.type != "cuda":
        return leaving, None
    host = torch.empty(leaving.shape, dtype=leaving.dtype, pin_memory=True)
    host.copy_(leaving, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return host, ready


class _ExitLoopState:
    """The batch of one early-exit pass while its rows leave (`HubertEEForCTC._early_exit_pass`).

    Holds the running rows' hidden states, attention mask, valid frames and criterion state, which original row
    each running row is, and the answer so far: `logits` `(batch, frames, vocab)` and `exit_layer` `(batch,)`,
    allocated at the first answer. Its operations: `act_on` an exit's decision, which `answer`s the rows that
    leave and `compact`s the batch to the rows that stay.
    """

    def __init__(self, model, hidden_states, frame_mask, frame_lengths, unread_finite):
        self.model = model
        self.hidden_states = hidden_states
        self.valid = frame_mask  # None: no padding, every frame counts (the criteria then skip their masking)
        self.mask = model._attention_mask(hidden_states, frame_mask)
        self.frame_lengths = frame_lengths  # host-side, per original row
        self.batch_size, self.total_frames = hidden_states.shape[:2]
        self.device = hidden_states.device
        self.active_rows = list(range(self.batch_size))  # original row of each row still running
        self.active = None  # the same on the device, copied from `active_rows` once rows have left
        self.criterion_state = {}
        self.logits = None
        self.exit_layer = None
        self.unread_finite = unread_finite  # [batch] bool on the device until the first read

    def with_unread_finite(self, leaving):
        """`leaving`, with the input's finiteness flags appended while they are unread: one read for both."""
        if self.unread_finite is None:
            return leaving
        leaving, self.unread_finite = torch.cat((leaving, self.unread_finite)), None
        return leaving

    def check_unread_finite(self) -> None:
        """Read the finiteness flags on their own: no exit was consulted to read them with."""
        if self.unread_finite is not None:
            _raise_if_not_finite(self.unread_finite)

    def answer(self, rows, row_logits, layer) -> None:
        """`row_logits`, from `layer`, answer some running rows: `rows` = (their positions among the running rows,
        their original rows), device indices; None: every running row."""
        if self.logits is None and rows is None:  # nobody answered before, so this is the whole batch as it came
            self.logits = row_logits
            self.exit_layer = torch.full((self.batch_size,), layer, dtype=torch.long, device=self.device)
            return
        if self.logits is None:
            self.logits = row_logits.new_zeros((self.batch_size, self.total_frames, row_logits.shape[-1]))
            self.exit_layer = torch.full((self.batch_size,), self.model.config.num_hidden_layers, dtype=torch.long,
                                         device=self.device)
        positions, originals = (None, self.active) if rows is None else rows
        self.logits[originals, : row_logits.shape[1]] = row_logits if positions is None else row_logits[positions]
        self.exit_layer[originals] = layer

    def act_on(self, layer, branch_logits, decision) -> bool:
        """Answer the rows that leave and compact the rest; False when no row is left. `decision`: the host-side
        list of which running rows leave, followed, at the first exit, by the input's finiteness flags."""
        leaving = decision[: len(self.active_rows)]
        if len(decision) > len(leaving):
            _raise_if_not_finite(decision[len(leaving) :])
        if not any(leaving):
            return True
        if all(leaving):
            self.answer(None, branch_logits, layer)
            return False
        leaving_rows = [row for row, left in enumerate(leaving) if left]
        staying_rows = [row for row, left in enumerate(leaving) if not left]
        leaving_originals = [self.active_rows[row] for row in leaving_rows]
        self.active_rows = [self.active_rows[row] for row in staying_rows]
        # every index the device needs, in one host->device copy: who leaves (position, original row), who stays
        indices = torch.tensor(leaving_rows + leaving_originals + staying_rows + self.active_rows, device=self.device)
        gone, kept = len(leaving_rows), len(staying_rows)
        self.answer((indices[:gone], indices[gone : 2 * gone]), branch_logits, layer)
        self.active = indices[2 * gone + kept :]
        self.compact(indices[2 * gone : 2 * gone + kept])
        return True

    def compact(self, staying) -> None:
        """Keep the running rows at positions `staying` (device indices), and cut the trailing frames that are
        padding for every one of them; `active_rows` already names them."""
        self.hidden_states = self.hidden_states[staying]
        self.criterion_state = {key: value[staying] for key, value in self.criterion_state.items()}
        if self.valid is None:  # no padding left: nothing to cut, the (absent) mask stays absent
            return
        frames = max(self.frame_lengths[row] for row in self.active_rows)
        self.hidden_states = self.hidden_states[:, :frames]
        self.criterion_state = {key: value[:, :frames] if key == "transcripts" else value
                                for key, value in self.criterion_state.items()}
        # the host knows whether the rows still running have padding; without any, nothing masks from here on
        shortest = min(self.frame_lengths[row] for row in self.active_rows)
        self.valid = self.valid[staying, :frames] if shortest < frames else None
        self.mask = self.model._attention_mask(self.hidden_states, self.valid)


# Serialises `HubertEEForCTC.from_pretrained`, which sets a class attribute for the length of a load.
_FROM_PRETRAINED_LOCK = threading.RLock()


class HubertEEForCTC(HubertPreTrainedModel):
    """`HubertForCTC` with early-exit CTC branches; see the module docstring and [`HubertEEConfig`]."""

    config: HubertEEConfig
    config_class = HubertEEConfig
    # The losses below never use `num_items_in_batch`: the Trainer must scale the loss for gradient accumulation
    # itself, which it only does when the model says it does not accept loss kwargs (transformers issue 47688).
    accepts_loss_kwargs = False

    def __init__(self, config: HubertEEConfig):
        super().__init__(config)
        # Per-instance inference switches (neither is saved with the model):
        # `exit_decider`: None, or a callable `(layer, logits, valid, settings, state) -> bool [rows]` that the exit
        # loop consults at each exit instead of `exit_decision` (same arguments, plus `layer`, the 1-based encoder
        # layer of the exit); tooling uses it to send rows to chosen layers.
        self.exit_decider = None
        # `overlap_exit_decisions`: queue the layer after an exit before waiting for the exit's decision (see
        # `_early_exit_pass`). Off by default: the queued layer is wasted on the rows that leave (the two are
        # compared in BENCHMARKS.md, "Waiting for each exit's decision").
        self.overlap_exit_decisions = False
        self.hubert = HubertModel(config)
        self.dropout = nn.Dropout(config.final_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        # Keyed by the 1-based layer so that checkpoint keys and error messages name the layer
        # (`exit_branches.4.head.weight` is the branch after encoder layer 4).
        self.exit_branches = nn.ModuleDict({str(layer): HubertEEExitBranch(config) for layer in config.exit_layers})
        # `register_for_auto_class` records one Auto class per model class; the design asks for both.
        self.config.auto_map = {
            **(getattr(config, "auto_map", None) or {}),
            "AutoConfig": "configuration_hubert_ee.HubertEEConfig",
            "AutoModel": "modeling_hubert_ee.HubertEEForCTC",
            "AutoModelForCTC": "modeling_hubert_ee.HubertEEForCTC",
        }
        self.post_init()
        self.apply_exit_training_strategy()

    # ------------------------------------------------------------------ set-up helpers

    def freeze_feature_encoder(self):
        """Stop gradients into the convolutional front end (as `HubertForCTC.freeze_feature_encoder`)."""
        self.hubert.feature_extractor._freeze_parameters()

    @property
    def _backbone_is_frozen(self) -> bool:
        return self.config.exit_training_strategy in ("two-stage", "distill")

    def apply_exit_training_strategy(self):
        """Set `requires_grad` for `config.exit_training_strategy`: frozen backbone and final head for
        `two-stage`/`distill` (so no optimizer ever updates them), everything trainable for `joint` and
        `joint-distill` (except a front end frozen with `freeze_feature_encoder`). Call again after changing the strategy."""
        frozen = self._backbone_is_frozen
        for module in (self.hubert, self.lm_head):
            for parameter in module.parameters():
                parameter.requires_grad = not frozen
        if not self.hubert.feature_extractor._requires_grad:
            self.hubert.feature_extractor._freeze_parameters()
        for parameter in self.exit_branches.parameters():
            parameter.requires_grad = True

    def training_summary(self) -> str:
        """One line on what training updates: the parameters that require gradients, out of all, the parts they
        belong to, and how to change it. `train()` logs it (once per distinct line), so a plain `Trainer` run shows it
        when training starts."""
        parts = {"backbone": self.hubert, "final head": self.lm_head, "exit branches": self.exit_branches}
        trained = [name for name, part in parts.items() if any(p.requires_grad for p in part.parameters())]
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        strategy = self.config.exit_training_strategy
        if self._backbone_is_frozen:
            why = (f"exit_training_strategy={strategy!r} freezes the backbone and the final head); load the model with "
                   "exit_training_strategy='joint' (or set it and call apply_exit_training_strategy()) to train everything")
        else:
            why = (f"exit_training_strategy={strategy!r}); 'two-stage' or 'distill' train the exit branches alone")
        what = f"{trained[0]} only" if len(trained) == 1 else ", ".join(trained) if trained else "nothing"
        size = f"{total / 1e6:.1f}M" if total >= 1e6 else f"{total:,}"
        return f"HuBERT-EE: training {trainable:,} of {size} parameters: {what} ({why}"

    def train(self, mode: bool = True):
        """`nn.Module.train`; entering training mode logs `training_summary()` (once per distinct line)."""
        if mode:
            logger.warning_once(self.training_summary())
        return super().train(mode)

    @torch.no_grad()
    def init_exit_branches_from_backbone(self):
        """Start each branch as "one more backbone layer, then the final head": its encoder layer copies the
        backbone layer that follows the exit, its head copies `lm_head`, and (stable-layer-norm) its LayerNorm
        copies the encoder's final LayerNorm. Branches then begin near what deeper layers would predict, which
        makes exit training converge much faster than from random weights."""
        encoder = self.hubert.encoder
        for layer, branch in self.exit_branches.items():
            if branch.layer is not None:
                branch.layer.load_state_dict(encoder.layers[int(layer)].state_dict())
            branch.head.load_state_dict(self.lm_head.state_dict())
            if self.config.do_stable_layer_norm:
                branch.layer_norm.load_state_dict(encoder.layer_norm.state_dict())

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, that also converts a plain `HubertForCTC` checkpoint.

        From a HuBERT CTC checkpoint (`model_type` "hubert", e.g. `facebook/hubert-large-ls960-ft`) the backbone
        and final head load and only the exit branches are initialised, reported in one log line. From a HuBERT-EE
        checkpoint, missing branch weights are an error naming the keys, and so are branch weights the configured
        `exit_branch` has no place for. Weights whose shapes do not fit the config are an error naming keys and shapes.
        """
        name = pretrained_model_name_or_path
        output_loading_info = kwargs.pop("output_loading_info", False)
        # transformers' own size-mismatch error only points at its log: load, then raise naming keys and shapes.
        check_sizes = not kwargs.pop("ignore_mismatched_sizes", False)
        kwargs, source_type = cls._load_kwargs(name, kwargs)
        converting = source_type != HubertEEConfig.model_type
        model, loading_info = cls._load_guarded(name, model_args, kwargs, converting)
        if check_sizes:
            _raise_if_mismatched(name, loading_info)
        _raise_if_backbone_missing(name, loading_info)
        if converting:
            logger.warning(
                f"HuBERT-EE: loaded backbone and final head from the {source_type!r} checkpoint {name}; initialised "
                f"new {model.config.exit_branch!r} exit branches after encoder layers {model.config.exit_layers}. "
                "Train them before relying on early exit."
            )
        else:
            model._check_branch_weights(name, loading_info)
        # transformers builds the loaded parameters anew, all trainable: the frozen backbone of `two-stage` and
        # `distill` must be frozen again, or an optimizer over `model.parameters()` would update it.
        model.apply_exit_training_strategy()
        return (model, loading_info) if output_loading_info else model

    @classmethod
    def _load_kwargs(cls, name, kwargs) -> tuple[dict, str | None]:
        """`from_pretrained`'s kwargs for transformers' loader, and the checkpoint's `model_type`. Early-exit kwargs
        (`exit_layers=...`) belong to the config; a HuBERT checkpoint's config is converted into a HuBERT-EE one."""
        kwargs = dict(kwargs)
        if kwargs.get("config") is None:
            kwargs.update(HubertEEConfig.implied_early_exit(kwargs))
        hub_kwargs = {
            key: kwargs[key]
            for key in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
            if key in kwargs
        }
        config_dict, _ = HubertEEConfig.get_config_dict(name, **hub_kwargs)
        source_type = config_dict.get("model_type")
        if source_type != HubertEEConfig.model_type and kwargs.get("config") is None:
            # Build the HuBERT-EE config from the HuBERT one ourselves: the checkpoint's `model_type`/`architectures`
            # describe the source, not this model.
            field_names = set(HubertEEConfig.__dataclass_fields__)
            config_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key in field_names}
            source = {key: value for key, value in config_dict.items() if key not in ("model_type", "architectures")}
            kwargs["config"] = HubertEEConfig.from_dict({**source, **config_kwargs})
        return kwargs, source_type

    @classmethod
    def _load_guarded(cls, name, model_args, kwargs, converting):
        """transformers' load (sizes unchecked, loading info returned), with new branches kept out of its missing-key
        report when converting, and a damaged weight file named."""
        # The class attribute below is what transformers reads; the lock keeps a load in another thread from seeing
        # it (it would drop that load's missing-branch keys, which are an error there).
        with _FROM_PRETRAINED_LOCK:
            previous_ignore = cls._keys_to_ignore_on_load_missing
            if converting:
                cls._keys_to_ignore_on_load_missing = [r"^exit_branches\."]
            try:
                return super().from_pretrained(
                    name, *model_args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
                )
            except Exception as error:
                _raise_if_weights_unreadable(name, error)
                raise
            finally:
                cls._keys_to_ignore_on_load_missing = previous_ignore

    def _check_branch_weights(self, name, loading_info) -> None:
        """Loaded from a HuBERT-EE checkpoint: every configured branch has its weights and they fit `exit_branch`;
        trained branches that `exit_layers` leaves out are reported."""
        missing = sorted(key for key in loading_info["missing_keys"] if key.startswith("exit_branches."))
        if missing:
            raise ValueError(
                f"HuBERT-EE checkpoint {name} lacks exit-branch weights for the configured "
                f"exit_layers={self.config.exit_layers}: {missing}"
            )
        unexpected = sorted(key for key in loading_info["unexpected_keys"] if key.startswith("exit_branches."))
        configured = tuple(f"exit_branches.{layer}." for layer in self.config.exit_layers)
        misfit = [key for key in unexpected if key.startswith(configured)]
        if misfit:  # e.g. transformer-branch weights under exit_branch="linear": the exits would compute nonsense
            raise ValueError(
                f"HuBERT-EE checkpoint {name} has exit-branch weights that the configured "
                f"exit_branch={self.config.exit_branch!r} has no place for (was `exit_branch` in config.json "
                f"changed?): {misfit[:8]}{' ...' if len(misfit) > 8 else ''}"
            )
        dropped = sorted({int(key.split(".")[1]) for key in unexpected} - set(self.config.exit_layers))
        if dropped:
            logger.warning(
                f"HuBERT-EE: {name} has trained exit branches after encoder layers {dropped} that "
                f"exit_layers={self.config.exit_layers} leaves out; they are not loaded."
            )

    # ------------------------------------------------------------------ front-end geometry

    def receptive_field(self) -> int:
        """Samples the convolutional front end needs to emit one frame; a shorter utterance cannot run."""
        field, hop = 1, 1
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride):
            field += (kernel - 1) * hop
            hop *= stride
        return field

    def samples_per_frame(self) -> int:
        """Samples between consecutive frames: the product of the convolution strides."""
        hop = 1
        for stride in self.config.conv_stride:
            hop *= stride
        return hop

    def frame_lengths(self, sample_lengths):
        """Frames the front end emits for each utterance length in samples (`frames_from_samples` on this config).

        A list of ints gives a list of ints, computed on the host; a tensor gives a long tensor on its device.
        """
        return frames_from_samples(self.config, sample_lengths)

    # ------------------------------------------------------------------ input checks

    def _prepare_inputs(self, input_values, attention_mask, labels):
        """Clear errors for bad input, and what the passes need. Returns `(frame_lengths, attention_mask, finite)`:
        the frames the front end emits per utterance (host-side), the attention mask or None when no utterance has
        padding frames (an all-ones mask, what a feature extractor returns for one utterance, changes no output,
        and without it nothing downstream masks), and the per-utterance "no NaN/inf sample" flags if they are
        still to be read (else None).

        Reading a value back from a GPU makes the host wait for it, and at batch 1 such a wait is a large share of
        an exit's cost (BENCHMARKS.md). So the flags are read together with something that is read anyway: the attention
        mask's lengths here, or else the first exit's decision in `_early_exit_pass`. Only a pass that reads
        nothing else reads them on their own (`_raise_if_not_finite`)."""
        if not isinstance(input_values, torch.Tensor):
            raise TypeError(
                f"`input_values` must be a torch.Tensor of shape (batch, samples), got {type(input_values).__name__}; "
                "prepare audio with the feature extractor: processor(audio, sampling_rate=16000, return_tensors='pt')."
            )
        if input_values.dim() != 2:
            raise ValueError(
                f"`input_values` must have shape (batch, samples), got shape {tuple(input_values.shape)}"
                + (" (a single utterance: use input_values[None])" if input_values.dim() == 1 else "")
                + (" (channels? downmix to mono first)" if input_values.dim() == 3 else "")
                + "."
            )
        if not input_values.is_floating_point():
            raise TypeError(
                f"`input_values` must be floating point (normalised waveform), got {input_values.dtype}; integer PCM "
                "must go through the feature extractor first."
            )
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_values.shape):
            raise ValueError(
                f"`attention_mask` shape {tuple(attention_mask.shape)} does not match `input_values` shape "
                f"{tuple(input_values.shape)}."
            )
        finite = torch.isfinite(input_values).all(-1)
        finite_rows = None
        if attention_mask is not None:  # one read for the lengths and the flags
            lengths, finite_rows = torch.stack((attention_mask.sum(-1, dtype=torch.long), finite.long())).tolist()
            finite = None
        else:
            lengths = [input_values.shape[1]] * len(input_values)
        field = self.receptive_field()
        too_short = [index for index, length in enumerate(lengths) if length < field]
        if too_short:
            raise ValueError(
                f"Audio too short: utterance(s) {too_short} have {[lengths[i] for i in too_short]} samples, but the "
                f"convolutional front end needs at least {field} samples "
                f"({field / self._sampling_rate * 1000:.0f} ms at {self._sampling_rate} Hz) to emit one frame."
            )
        if finite_rows is not None:
            _raise_if_not_finite(finite_rows)
        if labels is not None and labels.numel() and labels.max() >= self.config.vocab_size:
            raise ValueError(f"Label values must be < vocab_size ({self.config.vocab_size}), got {int(labels.max())}.")
        frame_lengths = self.frame_lengths(lengths)
        if attention_mask is not None and min(frame_lengths) == self.frame_lengths([input_values.shape[1]])[0]:
            attention_mask = None
        return frame_lengths, attention_mask, finite

    @property
    def _sampling_rate(self) -> int:
        return 16000  # HuBERT's rate; the feature extractor owns resampling decisions

    # ------------------------------------------------------------------ the encoder, layer by layer

    def embed(self, input_values, attention_mask=None, mask_time_indices=None):
        """Front end and encoder prologue, as `HubertModel.forward` and `HubertEncoder*.forward` run them.

        Returns `(hidden_states, frame_mask)`: the hidden states entering encoder layer 1, `(batch, frames,
        hidden_size)`, and the bool `(batch, frames)` mask of the frames that are not padding (None without
        `attention_mask`). Written out here because the exit loop must own the layer loop that
        `HubertEncoder.forward` hides; tooling uses it to time the front end alone.
        """
        extract_features = self.hubert.feature_extractor(input_values).transpose(1, 2)
        frame_mask = None
        if attention_mask is not None:
            frame_mask = self.hubert._get_feature_vector_attention_mask(extract_features.shape[1], attention_mask)
        hidden_states = self.hubert.feature_projection(extract_features)
        hidden_states = self.hubert._mask_hidden_states(hidden_states, mask_time_indices=mask_time_indices)

        encoder = self.hubert.encoder
        if frame_mask is not None:
            hidden_states = hidden_states.masked_fill(~frame_mask.unsqueeze(-1), 0.0)
        hidden_states = hidden_states + encoder.pos_conv_embed(hidden_states)
        if not self.config.do_stable_layer_norm:
            hidden_states = encoder.layer_norm(hidden_states)
        hidden_states = encoder.dropout(hidden_states)
        return hidden_states, frame_mask

    def _attention_mask(self, hidden_states, frame_mask):
        """The encoder's attention mask. `frame_mask` is None when no row has padding frames (`_prepare_inputs`
        drops an all-ones mask), so a given mask does pad something: transformers is told not to check whether it
        could skip it, a check that reads the mask back from the device."""
        if frame_mask is None:
            return None
        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states, attention_mask=frame_mask,
                                         allow_is_bidirectional_skip=False)

    def _run_layer(self, index, hidden_states, attention_mask, synced_gpus):
        """Encoder layer `index` (0-based), with HuBERT's layerdrop in training."""
        if self.training and self.config.layerdrop > 0.0 and not synced_gpus:
            if torch.rand([]) < self.config.layerdrop:
                return hidden_states
        return self.hubert.encoder.layers[index](hidden_states, attention_mask=attention_mask)

    def final_head(self, hidden_states):
        """The final head's CTC logits for the hidden states leaving the last encoder layer (with stable layer
        norm, the encoder's final LayerNorm first), as `HubertForCTC` computes them."""
        if self.config.do_stable_layer_norm:
            hidden_states = self.hubert.encoder.layer_norm(hidden_states)
        return self.lm_head(self.dropout(hidden_states))

    def _synced_gpus(self) -> bool:
        return is_deepspeed_zero3_enabled() or is_fsdp_managed_module(self)

    # ------------------------------------------------------------------ full-depth pass (training / analysis)

    def _all_exits_pass(self, input_values, attention_mask, mask_time_indices):
        """Every layer on every row; every branch's logits and the final head's. The frozen-backbone strategies
        run the backbone without autograd in training, since nothing there learns."""
        no_backbone_grad = self.training and self._backbone_is_frozen
        synced_gpus = self._synced_gpus()
        exit_logits = []
        with torch.set_grad_enabled(torch.is_grad_enabled() and not no_backbone_grad):
            hidden_states, frame_mask = self.embed(input_values, attention_mask, mask_time_indices)
            mask = self._attention_mask(hidden_states, frame_mask)
        for index in range(self.config.num_hidden_layers):
            with torch.set_grad_enabled(torch.is_grad_enabled() and not no_backbone_grad):
                hidden_states = self._run_layer(index, hidden_states, mask, synced_gpus)
            branch = self.exit_branches[str(index + 1)] if str(index + 1) in self.exit_branches else None
            if branch is not None:
                exit_logits.append(branch(hidden_states, mask))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not no_backbone_grad):
            logits = self.final_head(hidden_states)
        return logits, tuple(exit_logits)

    # ------------------------------------------------------------------ exit criteria (batched, no host syncs)
    #
    # Each criterion is written for few kernels: at batch 1 on a GPU an exit consulted costs mostly the host time
    # to launch its branch and criterion kernels plus one synchronisation, against the launches of a whole encoder
    # layer (op counts in BENCHMARKS.md). So the float32 cast is folded into the softmax, the mean-versus-threshold
    # test is a sign test on a sum (no division, no clamp), and `valid` is None when the batch has no padding
    # (every frame counts, nothing to mask).

    def _greedy_transcripts(self, token_ids, valid):
        """Greedy CTC transcripts as left-aligned token rows padded with -1, comparable with `==` across exits."""
        blank = self.config.pad_token_id
        if valid is not None:
            token_ids = token_ids.masked_fill(~valid, blank)
        previous = nn.functional.pad(token_ids[:, :-1], (1, 0), value=blank)
        kept = (token_ids != blank) & (token_ids != previous)
        frames = token_ids.shape[1]
        # each kept token goes to its rank among its row's kept tokens; the others all land in a spare last column
        slots = torch.where(kept, kept.cumsum(1) - 1, frames)
        transcripts = token_ids.new_full((token_ids.shape[0], frames + 1), -1)
        return transcripts.scatter_(1, slots, token_ids)[:, :frames]

    def exit_decision(self, logits, valid, settings, state):
        """Bool [rows]: which rows leave at this branch (the criteria of `HubertEEConfig.exit_criterion`).

        `logits`: the branch's `(rows, frames, vocab_size)` logits. `valid`: bool [rows, frames] of the frames that
        are not padding, or None when none is. `settings`: from `exit_settings`. `state`: a dict, empty at a
        forward's first exit, that carries the patience criterion's history from one exit to the next. A mean over
        a row's frames is compared with the threshold as the sign of the sum of (value - threshold) over those
        frames, which is the same test for every row (each has at least one frame) without a division.
        """
        criterion = settings["exit_criterion"]
        if criterion == "patience":
            transcripts = self._greedy_transcripts(logits.argmax(-1), valid)
            if state.get("transcripts") is None:
                agreeing = torch.ones(len(transcripts), dtype=torch.long, device=transcripts.device)
            else:
                same = (transcripts == state["transcripts"]).all(-1)
                agreeing = torch.where(same, state["agreeing"] + 1, 1)
            state["transcripts"], state["agreeing"] = transcripts, agreeing
            return agreeing >= settings["exit_patience"]
        threshold = settings["exit_threshold"]
        if criterion == "confidence":
            top_prob, top_id = logits.softmax(-1, dtype=torch.float32).max(-1)
            counted = top_id != self.config.pad_token_id
            if valid is not None:
                counted &= valid
            # a row whose frames are all blank is judged on all its valid frames
            counted = torch.where(counted.any(-1, keepdim=True), counted, True if valid is None else valid)
            return torch.where(counted, top_prob - threshold, 0.0).sum(-1) >= 0
        log_probs = logits.log_softmax(-1, dtype=torch.float32)
        # threshold - entropy per frame (not torch.special.entr: one kernel fewer, but a slower one on CPU)
        margin = (log_probs.exp() * log_probs).sum(-1) + threshold
        if valid is not None:
            margin = torch.where(valid, margin, 0.0)
        return margin.sum(-1) >= 0

    # ------------------------------------------------------------------ early-exit inference

    def _early_exit_pass(self, input_values, attention_mask, settings, frame_lengths, finite=None):
        """Per-utterance early exit with batch compaction.

        One host synchronisation per exit layer (to learn which rows leave); rows that left are removed from the
        hidden states, masks and criterion state, and trailing frames that are padding for every remaining row are
        cut, so deeper layers only compute for what is still running (`_ExitLoopState`). Logits at padding frames
        are not meaningful (as in `HubertForCTC`); frames cut this way are left at 0. `attention_mask` is None
        unless some row has padding frames, and `frame_lengths` are the host-side frame counts (`_prepare_inputs`).

        `finite`: `_prepare_inputs`'s unread finiteness flags. They are read with the first decision (or at the end
        when no exit is consulted), so checking the input adds no wait of its own.

        With `overlap_exit_decisions` the decision is copied to the host without blocking and the next layer is
        queued for every row before the host waits for it: the GPU stays busy during the synchronisation, at the
        price of one layer computed for rows that turn out to leave. Results are the same either way.
        """
        num_layers = self.config.num_hidden_layers
        hidden_states, frame_mask = self.embed(input_values, attention_mask)
        running = _ExitLoopState(self, hidden_states, frame_mask, frame_lengths, finite)
        exits = set(self.config.exit_layers) if settings["early_exit"] else set()
        synced_gpus = self._synced_gpus()
        pending = None  # (layer, branch logits, decision on its way to the host, event): not yet acted on
        for index in range(num_layers):
            running.hidden_states = self._run_layer(index, running.hidden_states, running.mask, synced_gpus)
            if pending is not None:  # the layer above was queued before waiting for the previous exit's decision
                decided_layer, branch_logits, decision, ready = pending
                pending = None
                if ready is not None:
                    ready.synchronize()
                # The one read per exit. It is a statement of its own, so that under torch.compile nothing else is
                # on the stack at this graph break (not `act_on`, which dynamo cannot rebuild) and tracing resumes.
                decision = decision.tolist()
                if not running.act_on(decided_layer, branch_logits, decision):
                    return running.logits, running.exit_layer
            layer = index + 1
            if layer not in exits:
                continue
            branch_logits, leaving = self._consult_exit(running, layer, settings)
            if self.overlap_exit_decisions:
                pending = (layer, branch_logits, *_decision_in_flight(leaving))
            else:
                leaving = leaving.tolist()  # the one read per exit, as above
                if not running.act_on(layer, branch_logits, leaving):
                    return running.logits, running.exit_layer
        # Exits are before the last layer (`HubertEEConfig` checks it), so no decision is pending here.
        running.check_unread_finite()
        running.answer(None, self.final_head(running.hidden_states), num_layers)
        return running.logits, running.exit_layer

    def _consult_exit(self, running, layer, settings):
        """The branch after `layer` on the running rows, and its decision (on the device): `exit_decider`'s when
        one is set, else `exit_decision`'s; the input's unread finiteness flags ride along at the first exit."""
        branch_logits = self.exit_branches[str(layer)](running.hidden_states, running.mask)
        if self.exit_decider is None:
            leaving = self.exit_decision(branch_logits, running.valid, settings, running.criterion_state)
        else:
            leaving = self.exit_decider(layer, branch_logits, running.valid, settings, running.criterion_state)
        return branch_logits, running.with_unread_finite(leaving)

    # ------------------------------------------------------------------ losses

    def _ctc_loss(self, logits, labels, logit_lengths, reduction=None):
        """CTC loss as `HubertForCTC` computes it (pad id = blank; -100 and pad in `labels` are padding)."""
        blank = self.config.pad_token_id
        labels_mask = (labels >= 0) & (labels != blank)
        log_probs = nn.functional.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
        with torch.backends.cudnn.flags(enabled=False):
            return nn.functional.ctc_loss(
                log_probs,
                labels.masked_select(labels_mask),
                logit_lengths,
                labels_mask.sum(-1),
                blank=blank,
                reduction=reduction or self.config.ctc_loss_reduction,
                zero_infinity=self.config.ctc_zero_infinity,
            )

    def _distill_loss(self, student_logits, teacher_logits, labels, logit_lengths):
        """T^2 x KL(teacher || student) summed over valid frames, reduced over the batch like the CTC loss."""
        temperature = self.config.distill_temperature
        teacher = nn.functional.log_softmax(teacher_logits.float() / temperature, dim=-1)
        student = nn.functional.log_softmax(student_logits.float() / temperature, dim=-1)
        per_frame = (teacher.exp() * (teacher - student)).sum(-1)
        frames = torch.arange(per_frame.shape[1], device=per_frame.device)[None, :] < logit_lengths[:, None]
        per_utterance = (per_frame * frames).sum(-1) * temperature**2
        if self.config.ctc_loss_reduction == "mean":  # CTC "mean" divides by target length, then averages
            target_lengths = ((labels >= 0) & (labels != self.config.pad_token_id)).sum(-1).clamp(min=1)
            return (per_utterance / target_lengths).mean()
        return per_utterance.sum()

    def _strategy_loss(self, logits, exit_logits, labels, logit_lengths):
        exit_losses = [self._ctc_loss(branch_logits, labels, logit_lengths) for branch_logits in exit_logits]
        strategy = self.config.exit_training_strategy
        if strategy in ("distill", "joint-distill"):
            weight = self.config.distill_weight
            teacher = logits.detach()
            exit_losses = [
                (1 - weight) * ctc + weight * self._distill_loss(branch_logits, teacher, labels, logit_lengths)
                for ctc, branch_logits in zip(exit_losses, exit_logits)
            ]
        stacked = torch.stack(exit_losses) if exit_losses else logits.new_zeros(0)
        mean_exit_loss = stacked.mean() if exit_losses else logits.new_zeros(())
        if strategy in ("joint", "joint-distill"):
            loss = self._ctc_loss(logits, labels, logit_lengths) + self.config.exit_loss_weight * mean_exit_loss
        elif exit_losses:
            loss = mean_exit_loss
        else:
            raise ValueError(
                f"exit_training_strategy={strategy!r} trains only the branches, but exit_layers is empty."
            )
        return loss, stacked.detach()

    def _evaluation_loss(self, logits, exit_logits, labels, logit_lengths):
        """The loss of an inference-mode forward with labels: the training strategy's, so that the Trainer's
        `eval_loss` measures what training lowers (under `two-stage`/`distill` only the branches learn, and the final
        head's loss would never move); the final head's CTC loss when there is no branch to train."""
        if exit_logits or self.config.exit_training_strategy in ("joint", "joint-distill"):
            return self._strategy_loss(logits, exit_logits, labels, logit_lengths)
        return self._ctc_loss(logits, labels, logit_lengths), logits.new_zeros(0)

    # ------------------------------------------------------------------ public API

    def exit_settings(self, **overrides) -> dict:
        """The early-exit settings a call runs with: `PER_CALL_EXIT_SETTINGS` from `overrides` where given (not
        None), else from the config. Naming a criterion or threshold turns early exit on (as for `generate`); bad
        values raise a `ValueError`, unknown names a `TypeError`. `config` is never changed."""
        unknown = set(overrides) - set(PER_CALL_EXIT_SETTINGS)
        if unknown:
            raise TypeError(
                f"Unknown argument(s) {sorted(unknown)}; per-call early-exit settings are {list(PER_CALL_EXIT_SETTINGS)}."
            )
        given = {key: value for key, value in overrides.items() if value is not None}
        given.update(HubertEEConfig.implied_early_exit(given))
        self.config.validate_exit_settings(**given)
        return {key: given.get(key, getattr(self.config, key)) for key in PER_CALL_EXIT_SETTINGS}

    def forward(
        self,
        input_values: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        output_exit_logits: bool | None = None,
        early_exit: bool | None = None,
        exit_criterion: str | None = None,
        exit_threshold: float | None = None,
        exit_patience: int | None = None,
        **kwargs,
    ) -> HubertEECTCOutput:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, samples)`): normalised 16 kHz waveforms.
        attention_mask (`torch.LongTensor` of shape `(batch_size, samples)`, *optional*): 1 for real samples.
        labels (`torch.LongTensor` of shape `(batch_size, target_length)`, *optional*): CTC targets, -100 = padding.
        output_exit_logits (`bool`, *optional*): run every layer and every branch on every row and return all
            branches' logits (`exit_logits`); always the case in training mode. Defaults to
            `config.output_exit_logits`.
        early_exit, exit_criterion, exit_threshold, exit_patience: per-call overrides of the config fields.

        Training mode (or `output_exit_logits`): full depth, `logits` are the final head's, `loss` follows
        `config.exit_training_strategy`. Inference: each utterance leaves at its own exit (see
        `HubertEEConfig.exit_criterion`), `exit_layer` says where; with `labels`, every branch also runs on every
        row to give `loss` (the strategy's, as in training) and `exit_losses`.
        """
        for name in ("output_attentions", "output_hidden_states"):
            if kwargs.pop(name, None):
                raise ValueError(f"`{name}=True` is not supported by HubertEEForCTC: layers past an exit never run.")
        kwargs.pop("return_dict", None)
        if kwargs:
            raise TypeError(f"HubertEEForCTC.forward got unexpected argument(s) {sorted(kwargs)}.")
        settings = self.exit_settings(early_exit=early_exit, exit_criterion=exit_criterion,
                                      exit_threshold=exit_threshold, exit_patience=exit_patience)
        if output_exit_logits is None:
            output_exit_logits = self.config.output_exit_logits
        frame_lengths, attention_mask, finite = self._prepare_inputs(input_values, attention_mask, labels)
        # Built only for a loss: a host->device copy is a blocking one, which inference need not pay.
        logit_lengths = torch.tensor(frame_lengths, device=input_values.device) if labels is not None else None

        if self.training or output_exit_logits:
            if finite is not None:
                _raise_if_not_finite(finite)
            logits, exit_logits = self._all_exits_pass(input_values, attention_mask, mask_time_indices)
            loss = exit_losses = None
            if labels is not None:
                loss, exit_losses = self._strategy_loss(logits, exit_logits, labels, logit_lengths)
            exit_layer = torch.full(
                (input_values.shape[0],), self.config.num_hidden_layers, dtype=torch.long, device=logits.device
            )
            return HubertEECTCOutput(
                loss=loss, logits=logits, exit_layer=exit_layer, exit_logits=exit_logits, exit_losses=exit_losses
            )

        loss = exit_losses = None
        if labels is not None:
            if finite is not None:
                _raise_if_not_finite(finite)
                finite = None
            final_logits, exit_logits = self._all_exits_pass(input_values, attention_mask, None)
            loss, exit_losses = self._evaluation_loss(final_logits, exit_logits, labels, logit_lengths)
            if not settings["early_exit"]:  # the answer is the final head's, already computed
                exit_layer = torch.full((input_values.shape[0],), self.config.num_hidden_layers, dtype=torch.long,
                                        device=final_logits.device)
                return HubertEECTCOutput(loss=loss, logits=final_logits, exit_layer=exit_layer, exit_losses=exit_losses)
        logits, exit_layer = self._early_exit_pass(input_values, attention_mask, settings, frame_lengths, finite)
        return HubertEECTCOutput(loss=loss, logits=logits, exit_layer=exit_layer, exit_losses=exit_losses)

    def _inference_view(self) -> "HubertEEForCTC":
        """This model as eval mode runs it, without changing its mode: itself when in eval mode, else a copy of the
        module tree in eval mode that shares every parameter, buffer and hook with it (a few hundred small objects,
        no tensor copied). Built per call, so it always sees the model as it is now."""
        if not self.training:
            return self
        copies = {}
        for module in self.modules():
            copy = object.__new__(type(module))  # not copy.copy: parametrized modules (weight norm) refuse it
            copy.__dict__.update(module.__dict__, training=False)
            copies[module] = copy
        for module, copy in copies.items():
            copy.__dict__["_modules"] = {
                name: None if child is None else copies[child] for name, child in module._modules.items()
            }
        return copies[self]

    @torch.inference_mode()
    def generate(self, input_values, attention_mask=None, **overrides) -> HubertEEGenerateOutput:
        """Early-exit greedy CTC decoding.

        `overrides` (`early_exit`, `exit_criterion`, `exit_threshold`, `exit_patience`) apply to this call only.
        Runs the inference path (no dropout, layerdrop or time masking) whatever the module's train/eval mode, and
        never changes that mode, so threads may share one model. Returns `sequences` (per-frame greedy ids,
        padding frames set to the pad/blank id, ready for `processor.batch_decode`) and `exit_layer`.
        """
        settings = self.exit_settings(**overrides)
        frame_lengths, attention_mask, finite = self._prepare_inputs(input_values, attention_mask, None)
        logits, exit_layer = self._inference_view()._early_exit_pass(
            input_values, attention_mask, settings, frame_lengths, finite
        )
        sequences = logits.argmax(-1)
        if attention_mask is not None:  # frame counts from the host-side lengths: no second pass over the mask
            lengths = torch.tensor(frame_lengths, device=sequences.device)
            padding = torch.arange(sequences.shape[1], device=sequences.device)[None, :] >= lengths[:, None]
            sequences = sequences.masked_fill(padding, self.config.pad_token_id)
        return HubertEEGenerateOutput(sequences=sequences, exit_layer=exit_layer, logits=logits)


class HubertEEAutomaticSpeechRecognitionPipeline(AutomaticSpeechRecognitionPipeline):
    """transformers' `automatic-speech-recognition` pipeline, decoding with `HubertEEForCTC.generate`.

    For a CTC model transformers' pipeline runs `model(input_values, attention_mask)` and drops every other
    argument, so `asr(x, exit_threshold=0.6)` would silently run at the config's setting. This one takes the
    settings of `HubertEEForCTC.generate` at the top level (`asr(x, exit_threshold=0.6)`) or in `generate_kwargs`,
    at the call or when the pipeline is built; naming one turns early exit on, as for `generate`. Any other
    generation argument is refused: CTC decoding here is greedy, there is nothing else to set.

    A batch (`batch_size`) gives what one call per input gives: `generate` sets the padding frames of each row to
    the blank, and a backbone whose front end normalises over time (`feat_extract_norm="group"`), where padding
    would change the statistics, runs each row at its own length. Audio at another rate (`{"raw": x,
    "sampling_rate": 44100}`, a `datasets` audio row) is resampled here (`resample`), without torchaudio.
    `pipeline("automatic-speech-recognition", model=<folder or Hub id>, trust_remote_code=True)` builds it (the
    config's `custom_pipelines`); for a model object, pass `pipeline_class=model.asr_pipeline_class`.
    """

    # The Kaiser-windowed sinc filter of librosa's "kaiser_best" (zero crossings, roll-off, window beta).
    RESAMPLING_ZERO_CROSSINGS = 64
    RESAMPLING_ROLLOFF = 0.9475937167399596
    RESAMPLING_BETA = 14.769656459379492
    # Filter-bank size (phases x taps) above which `resample` refuses a pair of rates (e.g. 44101 Hz to 16 kHz).
    RESAMPLING_MAX_FILTER_SIZE = 2**24

    def _sanitize_parameters(self, chunk_length_s=None, stride_length_s=None, ignore_warning=None,
                             decoder_kwargs=None, return_timestamps=None, return_language=None, **kwargs):
        if "sampling_rate" in kwargs:
            rate = kwargs["sampling_rate"]
            raise ValueError(
                f"asr(audio, sampling_rate={rate}): give the rate with the audio instead, as "
                f"asr({{\"raw\": audio, \"sampling_rate\": {rate}}}); the pipeline resamples it to "
                f"{self.feature_extractor.sampling_rate} Hz."
            )
        settings = dict(kwargs.pop("generate_kwargs", None) or {})
        twice = sorted(set(settings) & set(kwargs))
        if twice:
            raise ValueError(f"{twice} given both directly and in generate_kwargs: give each setting once.")
        settings.update(kwargs)
        unknown = sorted(set(settings) - set(PER_CALL_EXIT_SETTINGS))
        if unknown:
            raise ValueError(
                f"HuBERT-EE's speech recognition pipeline does not take {unknown}: its decoding is greedy CTC, and "
                f"its only settings are the early-exit ones {list(PER_CALL_EXIT_SETTINGS)} (directly or in "
                "generate_kwargs)."
            )
        settings = {key: value for key, value in settings.items() if value is not None}
        settings.update(HubertEEConfig.implied_early_exit(settings))
        self.model.config.validate_exit_settings(**settings)
        preprocess, forward, postprocess = super()._sanitize_parameters(
            chunk_length_s=chunk_length_s, stride_length_s=stride_length_s, ignore_warning=ignore_warning,
            decoder_kwargs=decoder_kwargs, return_timestamps=return_timestamps, return_language=return_language,
        )  # fmt: skip
        if settings:
            forward["exit_settings"] = settings
        return preprocess, forward, postprocess

    def preprocess(self, inputs, chunk_length_s=0, stride_length_s=None):
        """transformers' preprocessing, of the audio at the feature extractor's rate (`at_model_rate`)."""
        yield from super().preprocess(self.at_model_rate(inputs), chunk_length_s, stride_length_s)

    def at_model_rate(self, inputs):
        """`inputs` with audio at another rate resampled to the feature extractor's: a dict `{"raw" or "array":
        audio, "sampling_rate": rate, ...}` (mono `(samples,)` or `(channels, samples)`, channels averaged) or a
        torchcodec `AudioDecoder` (what a `datasets` audio column holds). Anything else is returned as it is."""
        if hasattr(inputs, "get_all_samples"):  # a torchcodec AudioDecoder: (channels, samples) at the file's rate
            samples = inputs.get_all_samples()
            inputs = {"raw": samples.data, "sampling_rate": samples.sample_rate}
        rate = self.feature_extractor.sampling_rate
        if not isinstance(inputs, dict) or inputs.get("sampling_rate", rate) == rate:
            return inputs
        if "raw" not in inputs and "array" not in inputs:
            return inputs  # transformers' own message says what the dict needs
        inputs = dict(inputs)
        source = inputs.pop("sampling_rate")
        audio = torch.as_tensor(inputs.pop("raw") if "raw" in inputs else inputs.pop("array"))
        inputs.pop("path", None)  # a `datasets` row's file name: transformers drops it too
        if audio.dim() == 2 and audio.shape[0] <= 2:  # (channels, samples), as transformers reads a 2-D input
            audio = audio.to(torch.float32).mean(0)
        if audio.dim() != 1:
            raise ValueError(
                f"Audio at {source} Hz of shape {tuple(audio.shape)}: give mono (samples,) or (channels, samples) "
                "audio; channels-last (samples, channels), as soundfile.read returns it, must be transposed first."
            )
        if "stride" in inputs:  # (left, right) in samples at the given rate
            inputs["stride"] = tuple(int(round(side * rate / source)) for side in inputs["stride"])
        return {**inputs, "raw": self.resample(audio, source, rate).numpy(), "sampling_rate": rate}

    @classmethod
    def resample(cls, audio, orig_rate: int, new_rate: int) -> torch.Tensor:
        """Mono `audio` `(samples,)` from `orig_rate` to `new_rate` Hz, as float32: band-limited interpolation with
        a Kaiser-windowed sinc filter (librosa's "kaiser_best", computed as torchaudio's `resample` does), in torch
        alone, since this file travels to the Hub and imports nothing else. Output length
        `ceil(samples * new_rate / orig_rate)`. The tooling (`hubert_ee.data`) resamples with soxr."""
        orig_rate, new_rate = int(orig_rate), int(new_rate)
        if orig_rate <= 0 or new_rate <= 0:
            raise ValueError(f"Sampling rates must be positive integers, got {orig_rate} Hz to {new_rate} Hz.")
        audio = torch.as_tensor(audio).to(torch.float32)
        if orig_rate == new_rate:
            return audio
        divisor = int(torch.gcd(torch.tensor(orig_rate), torch.tensor(new_rate)))
        orig, new = orig_rate // divisor, new_rate // divisor
        zeros = cls.RESAMPLING_ZERO_CROSSINGS
        cutoff = min(orig, new) * cls.RESAMPLING_ROLLOFF  # in units of the reduced rates
        width = int(-(-zeros * orig // cutoff))
        if new * (2 * width + orig) > cls.RESAMPLING_MAX_FILTER_SIZE:
            raise ValueError(
                f"Resampling {orig_rate} Hz to {new_rate} Hz needs a filter bank of {new} phases x "
                f"{2 * width + orig} taps, too large here; resample the audio first (e.g. soxr.resample)."
            )
        # phase p of the output reads the inputs around p * orig / new: the filter, sampled at those offsets
        offsets = torch.arange(-width, width + orig, dtype=torch.float64) / orig
        times = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None] / new + offsets) * cutoff
        times = times.clamp(-zeros, zeros)
        beta = torch.tensor(cls.RESAMPLING_BETA, dtype=torch.float64)
        window = torch.special.i0(beta * (1 - (times / zeros) ** 2).sqrt()) / torch.special.i0(beta)
        kernel = (torch.special.sinc(times) * window * (cutoff / orig)).to(torch.float32)
        padded = nn.functional.pad(audio[None, None], (width, width + orig))
        phases = nn.functional.conv1d(padded, kernel[:, None], stride=orig)  # (1, new, steps)
        return phases[0].t().reshape(-1)[: -(-audio.shape[0] * new // orig)]

    def _forward(self, model_inputs, return_timestamps=False, exit_settings=None):
        # transformers' CTC branch of `_forward`, decoding with `generate` and the settings
        attention_mask = model_inputs.pop("attention_mask", None)
        stride = model_inputs.pop("stride", None)
        model_inputs.pop("num_frames", None)
        is_last = model_inputs.pop("is_last")
        output = self.decode(model_inputs.pop(self.model.main_input_name), attention_mask, exit_settings or {})
        out = {"logits": output.logits} if self.type == "ctc_with_lm" else {"tokens": output.sequences}
        if stride is not None:  # windows of chunked audio: their context, in frames, for `postprocess`
            ratio = 1 / self._align_to
            out["stride"] = rescale_stride([stride], ratio)[0] if isinstance(stride, tuple) else rescale_stride(
                stride, ratio)
        return {"is_last": is_last, **out, **model_inputs}

    def decode(self, input_values, attention_mask, settings) -> HubertEEGenerateOutput:
        """`generate` on a (padded) batch, each row decoded as it would be alone. A front end with
        `feat_extract_norm="group"` normalises each channel over all frames, padding included, so there each row
        of a padded batch runs alone at its own length; elsewhere the batch runs as one."""
        if attention_mask is None or self.model.config.feat_extract_norm != "group":
            return self.model.generate(input_values, attention_mask=attention_mask, **settings)
        rows = [self.model.generate(values[None, :length], **settings)
                for values, length in zip(input_values, attention_mask.sum(-1).tolist())]
        frames = self.model.frame_lengths([input_values.shape[1]])[0]
        pad = self.model.config.pad_token_id
        sequences = torch.stack([nn.functional.pad(row.sequences[0], (0, frames - row.sequences.shape[1]), value=pad)
                                 for row in rows])
        logits = torch.stack([nn.functional.pad(row.logits[0], (0, 0, 0, frames - row.logits.shape[1]))
                              for row in rows])
        exit_layer = torch.cat([row.exit_layer for row in rows])
        return HubertEEGenerateOutput(sequences=sequences, exit_layer=exit_layer, logits=logits)


HubertEEForCTC.asr_pipeline_class = HubertEEAutomaticSpeechRecognitionPipeline

HubertEEConfig.register_for_auto_class()
HubertEEForCTC.register_for_auto_class("AutoModelForCTC")

__all__ = [
    "HubertEEForCTC", "HubertEECTCOutput", "HubertEEGenerateOutput", "HubertEEExitBranch",
    "HubertEEAutomaticSpeechRecognitionPipeline", "frames_from_samples",
]
