# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""The early-exit core that HuBERT-EE and Wav2Vec2-EE share (Yoon, Woo & Kim, arXiv 2204.06328).

An early-exit CTC model is its backbone's CTC model (`HubertForCTC`, `Wav2Vec2ForCTC`: same backbone module and
`lm_head`, reused from transformers) plus small CTC exit branches after chosen encoder layers. At inference each
utterance of a batch leaves at the first branch whose exit criterion is met; rows that have left are dropped from the
batch before the deeper layers run (batch compaction). This module holds what early exit adds, in named parts:

- `ExitBranch`: one exit (an optional encoder layer, a LayerNorm, a linear CTC head);
- input checks (`check_input_values`, `raise_if_not_finite`, ...) and weight-loading checks (`raise_if_*`);
- `ExitLoopState`: the batch of one early-exit pass while its rows leave (answers, compaction);
- the exit criteria (`exit_decision`, `greedy_transcripts`);
- the losses (`ctc_loss`, `distill_loss`, `strategy_loss`);
- `EarlyExitForCTCMixin`: the model's public API and passes, on top of a backbone class that says how it embeds
  audio (`embed_features`) and where its encoder is (`encoder`, the backbone's `base_model_prefix` module);
- `EarlyExitAutomaticSpeechRecognitionPipeline`: transformers' ASR pipeline passing the exit setting on.

This file travels to the Hub beside the weights (each modeling file imports it relatively, so transformers copies
it) and is executed by `trust_remote_code`: it imports only torch, transformers, the standard library's
dataclasses and its sibling `configuration_early_exit`.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.integrations.fsdp import is_fsdp_managed_module
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import ModelOutput
from transformers.pipelines.automatic_speech_recognition import AutomaticSpeechRecognitionPipeline, rescale_stride
from transformers.utils import logging


try:  # loaded as part of a package: transformers' dynamic module cache (`trust_remote_code`)
    from .configuration_early_exit import ExitSetting
except ImportError:  # loaded as a top-level module (installed by setup.py, or run from the repository root)
    from configuration_early_exit import ExitSetting


logger = logging.get_logger(__name__)

# Settings that `forward`/`generate` accept per call; they never change `config`.
PER_CALL_EXIT_SETTINGS = tuple(ExitSetting.CONFIG_FIELDS.values())
# The beam width of n-gram LM decoding when a call names none (the pipeline as `ctc_with_lm`, `hubert-ee
# --decoder lm`): pyctcdecode's own default, 100, takes about three times the search for a few WER points, which
# matters beside a small encoder on CPU (BENCHMARKS.md, "Decode cost and the beam width").
LM_BEAM_WIDTH = 32


def frames_from_samples(config, sample_lengths):
    """Frames a wav2vec2-style front end (HuBERT's, wav2vec2's) emits for utterances of `sample_lengths` samples.

    `config` is any such config (only `conv_kernel` and `conv_stride` are read); the arithmetic is that of
    transformers' `_get_feat_extract_output_lengths` without an adapter. An int gives an int, a list of ints a list
    of ints (on the host), a tensor a long tensor on its device.
    """
    if isinstance(sample_lengths, (list, tuple)):
        return [frames_from_samples(config, samples) for samples in sample_lengths]
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        sample_lengths = (sample_lengths - kernel) // stride + 1
    return sample_lengths.to(torch.long) if isinstance(sample_lengths, torch.Tensor) else sample_lengths


# ---------------------------------------------------------------------------------------------------- outputs


@dataclass
class EarlyExitCTCOutput(ModelOutput):
    """Output of an early-exit model's `forward`.

    loss (`torch.FloatTensor` of shape `()`, *optional*):
        With `labels`: the loss of `config.exit_training_strategy`, in training and in inference alike (so that an
        evaluation's loss tracks what training lowers; the final head's CTC loss when there are no branches).
    logits (`torch.FloatTensor` of shape `(batch_size, frames, vocab_size)`):
        CTC logits of the exit that answered each utterance, laid out like the backbone CTC model's.
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
class EarlyExitGenerateOutput(ModelOutput):
    """Output of an early-exit model's `generate`.

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


# ---------------------------------------------------------------------------------------------------- branches


class ExitBranch(nn.Module):
    """One exit: an optional encoder layer (the paper's branch), a LayerNorm and a linear CTC head.

    The encoder layer is the backbone's own variant (`layer_classes`: post-norm, stable-layer-norm). The LayerNorm is
    always there because stable-layer-norm backbones only normalise after the last layer, so their intermediate hidden
    states reach a branch un-normalised.
    """

    def __init__(self, config, layer_classes: tuple[type, type]):
        super().__init__()
        if config.exit_branch == "transformer":
            self.layer = layer_classes[1 if config.do_stable_layer_norm else 0](config)
        else:
            self.layer = None
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.final_dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.layer is not None:
            hidden_states = self.layer(hidden_states, attention_mask=attention_mask)
        return self.head(self.dropout(self.layer_norm(hidden_states)))


# ---------------------------------------------------------------------------------------------------- input checks


def check_input_values(input_values, attention_mask) -> None:
    """Raise naming what is wrong when `input_values` is not a float `(batch, samples)` tensor, or the attention mask
    does not fit it."""
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
    if input_values.shape[0] == 0:
        raise ValueError(
            f"`input_values` is an empty batch (shape {tuple(input_values.shape)}): give at least one utterance."
        )
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_values.shape):
        raise ValueError(
            f"`attention_mask` shape {tuple(attention_mask.shape)} does not match `input_values` shape "
            f"{tuple(input_values.shape)}."
        )


def raise_if_too_short(lengths: list[int], field: int, sampling_rate: int) -> None:
    """Raise naming the utterances shorter than `field` samples, the receptive field of one frame."""
    too_short = [index for index, length in enumerate(lengths) if length < field]
    if too_short:
        raise ValueError(
            f"Audio too short: utterance(s) {too_short} have {[lengths[i] for i in too_short]} samples, but the "
            f"convolutional front end needs at least {field} samples "
            f"({field / sampling_rate * 1000:.0f} ms at {sampling_rate} Hz) to emit one frame."
        )


def raise_if_not_finite(finite_rows) -> None:
    """`finite_rows`: a host-side list (or a device tensor, read here) of per-utterance finiteness flags."""
    if isinstance(finite_rows, torch.Tensor):
        finite_rows = finite_rows.tolist()
    bad = [row for row, finite in enumerate(finite_rows) if not finite]
    if bad:
        raise ValueError(f"`input_values` contains NaN or infinite samples (utterance(s) {bad}).")


# ---------------------------------------------------------------------------------------------------- loading checks


def raise_if_weights_unreadable(source, error: Exception) -> None:
    """Raise an `OSError` naming the checkpoint when `error` is the safetensors reader's: its own message (e.g.
    "incomplete metadata" for a file cut short by an interrupted download or copy) names neither file nor folder.
    Which file it is takes reading the files, which this model code does not do (`hubert_ee.loading` names it)."""
    if type(error).__name__ != "SafetensorError":
        return
    raise OSError(
        f"a *.safetensors weight file of {source} is incomplete or damaged ({error}); was its download or copy "
        "interrupted? Download or copy it again."
    ) from error


def raise_if_mismatched(source, loading_info) -> None:
    """Raise naming keys and shapes when loaded weights do not fit the shapes the config asks for."""
    mismatched = sorted(loading_info.get("mismatched_keys") or [])
    if mismatched:
        shown = [f"{key} (checkpoint {tuple(saved)}, model {tuple(built)})" for key, saved, built in mismatched[:8]]
        raise ValueError(
            f"{source}: {len(mismatched)} weight(s) do not fit the shapes its config asks for (was config.json "
            f"edited?): {', '.join(shown)}{' ...' if len(mismatched) > 8 else ''}"
        )


def raise_if_backbone_missing(source, loading_info, prefix: str, backbone_name: str) -> None:
    """Raise naming the keys when backbone weights (`prefix`.*) are missing: the checkpoint is not of this backbone."""
    missing = sorted(loading_info["missing_keys"])
    missing_backbone = [key for key in missing if key.startswith(f"{prefix}.") and "masked_spec_embed" not in key]
    if missing_backbone:
        raise ValueError(
            f"{source} is not a {backbone_name} checkpoint this model can load: backbone weights are missing: "
            f"{missing_backbone[:8]}{' ...' if len(missing_backbone) > 8 else ''}"
        )


def check_branch_weights(source, config, loading_info) -> None:
    """Loaded from an early-exit checkpoint: every configured branch has its weights and they fit `exit_branch`;
    trained branches that `exit_layers` leaves out are reported."""
    missing = sorted(key for key in loading_info["missing_keys"] if key.startswith("exit_branches."))
    if missing:
        raise ValueError(
            f"HuBERT-EE checkpoint {source} lacks exit-branch weights for the configured "
            f"exit_layers={config.exit_layers}: {missing}"
        )
    unexpected = sorted(key for key in loading_info["unexpected_keys"] if key.startswith("exit_branches."))
    configured = tuple(f"exit_branches.{layer}." for layer in config.exit_layers)
    misfit = [key for key in unexpected if key.startswith(configured)]
    if misfit:  # e.g. transformer-branch weights under exit_branch="linear": the exits would compute nonsense
        raise ValueError(
            f"HuBERT-EE checkpoint {source} has exit-branch weights that the configured "
            f"exit_branch={config.exit_branch!r} has no place for (was `exit_branch` in config.json "
            f"changed?): {misfit[:8]}{' ...' if len(misfit) > 8 else ''}"
        )
    dropped = sorted({int(key.split(".")[1]) for key in unexpected} - set(config.exit_layers))
    if dropped:
        logger.warning(
            f"HuBERT-EE: {source} has trained exit branches after encoder layers {dropped} that "
            f"exit_layers={config.exit_layers} leaves out; they are not loaded."
        )


# ---------------------------------------------------------------------------------------------------- the exit loop


def decision_in_flight(leaving):
    """`(decision, event)`: on CUDA a pinned host copy of `leaving` started without blocking and the event that
    marks it done; elsewhere `leaving` itself and None."""
    if leaving.device.type != "cuda":
        return leaving, None
    host = torch.empty(leaving.shape, dtype=leaving.dtype, pin_memory=True)
    host.copy_(leaving, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return host, ready


class ExitLoopState:
    """The batch of one early-exit pass while its rows leave (`EarlyExitForCTCMixin._early_exit_pass`).

    Holds the running rows' hidden states, attention mask, valid frames and criterion state, which original row
    each running row is, and the answer so far: `logits` `(batch, frames, vocab)` and `exit_layer` `(batch,)`,
    allocated at the first answer. Its operations: `act_on` an exit's decision, which `answer`s the rows that
    leave and `compact`s the batch to the rows that stay.
    """

    def __init__(self, model, hidden_states, frame_mask, frame_lengths, unread_finite):
        self.model = model
        self.hidden_states = hidden_states
        self.valid = frame_mask  # None: no padding, every frame counts (the criteria then skip their masking)
        self.mask = model.encoder_attention_mask(hidden_states, frame_mask)
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
            raise_if_not_finite(self.unread_finite)

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
            raise_if_not_finite(decision[len(leaving) :])
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
        self.mask = self.model.encoder_attention_mask(self.hidden_states, self.valid)


# ---------------------------------------------------------------------------------------------------- exit criteria
#
# Each criterion is written for few kernels: at batch 1 on a GPU an exit consulted costs mostly the host time to
# launch its branch and criterion kernels plus one synchronisation, against the launches of a whole encoder layer
# (op counts in BENCHMARKS.md). So the float32 cast is folded into the softmax, the mean-versus-threshold test is a
# sign test on a sum (no division, no clamp), and `valid` is None when the batch has no padding (every frame counts,
# nothing to mask). A mean over a row's frames is compared with the threshold as the sign of the sum of
# (value - threshold) over those frames, which is the same test for every row (each has at least one frame).


def greedy_transcripts(token_ids, valid, blank: int):
    """Greedy CTC transcripts as left-aligned token rows padded with -1, comparable with `==` across exits."""
    if valid is not None:
        token_ids = token_ids.masked_fill(~valid, blank)
    previous = nn.functional.pad(token_ids[:, :-1], (1, 0), value=blank)
    kept = (token_ids != blank) & (token_ids != previous)
    frames = token_ids.shape[1]
    # each kept token goes to its rank among its row's kept tokens; the others all land in a spare last column
    slots = torch.where(kept, kept.cumsum(1) - 1, frames)
    transcripts = token_ids.new_full((token_ids.shape[0], frames + 1), -1)
    return transcripts.scatter_(1, slots, token_ids)[:, :frames]


def patience_decision(logits, valid, patience: int, state: dict, blank: int):
    """Rows whose greedy transcript has been the same at `patience` consecutive exits (this one included)."""
    transcripts = greedy_transcripts(logits.argmax(-1), valid, blank)
    if state.get("transcripts") is None:
        agreeing = torch.ones(len(transcripts), dtype=torch.long, device=transcripts.device)
    else:
        same = (transcripts == state["transcripts"]).all(-1)
        agreeing = torch.where(same, state["agreeing"] + 1, 1)
    state["transcripts"], state["agreeing"] = transcripts, agreeing
    return agreeing >= patience


def confidence_decision(logits, valid, threshold: float, blank: int):
    """Rows whose mean top probability over their valid non-blank frames (all valid frames if all are blank) is at
    least `threshold`."""
    top_prob, top_id = logits.softmax(-1, dtype=torch.float32).max(-1)
    counted = top_id != blank
    if valid is not None:
        counted &= valid
    counted = torch.where(counted.any(-1, keepdim=True), counted, True if valid is None else valid)
    return torch.where(counted, top_prob - threshold, 0.0).sum(-1) >= 0


def entropy_decision(logits, valid, threshold: float):
    """Rows whose mean posterior entropy (nats) over their valid frames is at most `threshold`."""
    log_probs = logits.log_softmax(-1, dtype=torch.float32)
    # threshold - entropy per frame (not torch.special.entr: one kernel fewer, but a slower one on CPU)
    margin = (log_probs.exp() * log_probs).sum(-1) + threshold
    if valid is not None:
        margin = torch.where(valid, margin, 0.0)
    return margin.sum(-1) >= 0


def exit_decision(logits, valid, setting: ExitSetting, state: dict, blank: int):
    """Bool [rows]: which rows leave at this branch under `setting.criterion` (see `EarlyExitConfigMixin`).

    `logits`: the branch's `(rows, frames, vocab_size)` logits. `valid`: bool [rows, frames] of the frames that are
    not padding, or None when none is. `state`: a dict, empty at a forward's first exit, that carries the patience
    criterion's history from one exit to the next. `blank`: the CTC blank (pad) id.
    """
    if setting.criterion == "patience":
        return patience_decision(logits, valid, setting.patience, state, blank)
    if setting.criterion == "confidence":
        return confidence_decision(logits, valid, setting.threshold, blank)
    return entropy_decision(logits, valid, setting.threshold)


# ---------------------------------------------------------------------------------------------------- losses


def ctc_loss(config, logits, labels, logit_lengths, reduction=None):
    """CTC loss as the backbone CTC models compute it (pad id = blank; -100 and pad in `labels` are padding)."""
    blank = config.pad_token_id
    labels_mask = (labels >= 0) & (labels != blank)
    log_probs = nn.functional.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
    with torch.backends.cudnn.flags(enabled=False):
        return nn.functional.ctc_loss(
            log_probs,
            labels.masked_select(labels_mask),
            logit_lengths,
            labels_mask.sum(-1),
            blank=blank,
            reduction=reduction or config.ctc_loss_reduction,
            zero_infinity=config.ctc_zero_infinity,
        )


def distill_loss(config, student_logits, teacher_logits, labels, logit_lengths):
    """T^2 x KL(teacher || student) summed over valid frames, reduced over the batch like the CTC loss."""
    temperature = config.distill_temperature
    teacher = nn.functional.log_softmax(teacher_logits.float() / temperature, dim=-1)
    student = nn.functional.log_softmax(student_logits.float() / temperature, dim=-1)
    per_frame = (teacher.exp() * (teacher - student)).sum(-1)
    frames = torch.arange(per_frame.shape[1], device=per_frame.device)[None, :] < logit_lengths[:, None]
    per_utterance = (per_frame * frames).sum(-1) * temperature**2
    if config.ctc_loss_reduction == "mean":  # CTC "mean" divides by target length, then averages
        target_lengths = ((labels >= 0) & (labels != config.pad_token_id)).sum(-1).clamp(min=1)
        return (per_utterance / target_lengths).mean()
    return per_utterance.sum()


def strategy_loss(config, logits, exit_logits, labels, logit_lengths):
    """`(loss, exit_losses)` of `config.exit_training_strategy` for the final `logits` and the branches'."""
    exit_losses = [ctc_loss(config, branch_logits, labels, logit_lengths) for branch_logits in exit_logits]
    strategy = config.exit_training_strategy
    if strategy in ("distill", "joint-distill"):
        weight = config.distill_weight
        teacher = logits.detach()
        exit_losses = [
            (1 - weight) * ctc + weight * distill_loss(config, branch_logits, teacher, labels, logit_lengths)
            for ctc, branch_logits in zip(exit_losses, exit_logits)
        ]
    stacked = torch.stack(exit_losses) if exit_losses else logits.new_zeros(0)
    mean_exit_loss = stacked.mean() if exit_losses else logits.new_zeros(())
    if strategy in ("joint", "joint-distill"):
        loss = ctc_loss(config, logits, labels, logit_lengths) + config.exit_loss_weight * mean_exit_loss
    elif exit_losses:
        loss = mean_exit_loss
    else:
        raise ValueError(f"exit_training_strategy={strategy!r} trains only the branches, but exit_layers is empty.")
    return loss, stacked.detach()


def evaluation_loss(config, logits, exit_logits, labels, logit_lengths):
    """The loss of an inference-mode forward with labels: the training strategy's, so that the Trainer's `eval_loss`
    measures what training lowers (under `two-stage`/`distill` only the branches learn, and the final head's loss
    would never move); the final head's CTC loss when there is no branch to train."""
    if exit_logits or not config.backbone_is_frozen:
        return strategy_loss(config, logits, exit_logits, labels, logit_lengths)
    return ctc_loss(config, logits, labels, logit_lengths), logits.new_zeros(0)


# ---------------------------------------------------------------------------------------------------- the model


class EarlyExitLoadingMixin:
    """Loading an early-exit model: its own checkpoints, and its backbone's plain CTC checkpoints and models, which
    it converts (part of `EarlyExitForCTCMixin`)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, that also converts the backbone's plain CTC checkpoint.

        From a plain CTC checkpoint (`model_type` "hubert" for HuBERT-EE, "wav2vec2" for Wav2Vec2-EE) the backbone
        and final head load and only the exit branches are initialised, reported in one log line. From an
        early-exit checkpoint, missing branch weights are an error naming the keys, and so are branch weights the
        configured `exit_branch` has no place for. Weights whose shapes do not fit the config, and backbone weights
        missing altogether (a checkpoint of another backbone), are errors naming the keys.
        """
        name = pretrained_model_name_or_path
        output_loading_info = kwargs.pop("output_loading_info", False)
        # transformers' own size-mismatch error only points at its log: load, then raise naming keys and shapes.
        check_sizes = not kwargs.pop("ignore_mismatched_sizes", False)
        kwargs, source_type = cls._load_kwargs(name, kwargs)
        converting = source_type != cls.config_class.model_type
        try:
            model, loading_info = super().from_pretrained(
                name, *model_args, output_loading_info=True, ignore_mismatched_sizes=True,
                **({"exit_branches_are_new": True} if converting else {}), **kwargs,
            )  # fmt: skip
        except Exception as error:
            raise_if_weights_unreadable(name, error)
            raise
        if check_sizes:
            raise_if_mismatched(name, loading_info)
        raise_if_backbone_missing(name, loading_info, cls.base_model_prefix, cls.backbone_name)
        if converting:
            logger.warning(
                f"HuBERT-EE: loaded backbone and final head from the {source_type!r} checkpoint {name}; initialised "
                f"new {model.config.exit_branch!r} exit branches after encoder layers {model.config.exit_layers}. "
                "Train them before relying on early exit."
            )
        else:
            check_branch_weights(name, model.config, loading_info)
        # transformers builds the loaded parameters anew, all trainable: the frozen backbone of `two-stage` and
        # `distill` must be frozen again, or an optimizer over `model.parameters()` would update it.
        model.apply_exit_training_strategy()
        return (model, loading_info) if output_loading_info else model

    @classmethod
    def _load_kwargs(cls, name, kwargs) -> tuple[dict, str | None]:
        """`from_pretrained`'s kwargs for transformers' loader, and the checkpoint's `model_type`. Early-exit kwargs
        (`exit_layers=...`) belong to the config; a plain checkpoint's config is converted into an early-exit one."""
        kwargs = dict(kwargs)
        config_class = cls.config_class
        if kwargs.get("config") is None:
            kwargs.update(config_class.implied_early_exit(kwargs))
        hub_kwargs = {
            key: kwargs[key]
            for key in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
            if key in kwargs
        }
        config_dict, _ = config_class.get_config_dict(name, **hub_kwargs)
        source_type = config_dict.get("model_type")
        if source_type != config_class.model_type and kwargs.get("config") is None:
            # Build the early-exit config from the plain one ourselves: the checkpoint's `model_type`/`architectures`
            # describe the source, not this model.
            field_names = set(config_class.__dataclass_fields__)
            config_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key in field_names}
            source = {key: value for key, value in config_dict.items() if key not in ("model_type", "architectures")}
            kwargs["config"] = config_class.from_dict({**source, **config_kwargs})
        return kwargs, source_type

    @classmethod
    def from_plain_model(cls, source, **config_overrides):
        """An early-exit model with the weights of `source`, a loaded plain CTC model of this backbone (its backbone
        and final head, on its device and dtype, in its train/eval mode), and new exit branches."""
        settings = {key: value for key, value in source.config.to_dict().items()
                    if key not in ("model_type", "architectures", "auto_map")}
        model = cls(cls.config_class.from_dict({**settings, **config_overrides}))
        parameter = next(source.parameters())
        model.to(device=parameter.device, dtype=parameter.dtype)
        missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
        missing = [key for key in missing if not key.startswith("exit_branches.")]
        if missing or unexpected:
            raise ValueError(
                f"{type(source).__name__} does not fit {cls.__name__}: missing {missing}, unexpected {unexpected}"
            )
        model.train(source.training)
        return model


class EarlyExitPassesMixin:
    """The encoder layer by layer, and the two passes over it: every exit on every row (training, evaluation), and
    early exit with batch compaction (inference); part of `EarlyExitForCTCMixin`."""

    def embed(self, input_values, attention_mask=None, mask_time_indices=None):
        """Front end and encoder prologue, as the backbone model and its encoder run them.

        Returns `(hidden_states, frame_mask)`: the hidden states entering encoder layer 1, `(batch, frames,
        hidden_size)`, and the bool `(batch, frames)` mask of the frames that are not padding (None without
        `attention_mask`). Written out here because the exit loop must own the layer loop that the encoder's
        `forward` hides; tooling uses it to time the front end alone.
        """
        frame_mask = None
        if attention_mask is not None:
            frames = self.frame_lengths(input_values.shape[1])
            lengths = self.frame_lengths(attention_mask.sum(-1, dtype=torch.long))
            frame_mask = torch.arange(frames, device=input_values.device)[None, :] < lengths[:, None]
        hidden_states = self.embed_features(input_values, frame_mask, mask_time_indices)
        encoder = self.encoder
        if frame_mask is not None:
            hidden_states = hidden_states.masked_fill(~frame_mask.unsqueeze(-1), 0.0)
        hidden_states = hidden_states + encoder.pos_conv_embed(hidden_states)
        if not self.config.do_stable_layer_norm:
            hidden_states = encoder.layer_norm(hidden_states)
        hidden_states = encoder.dropout(hidden_states)
        return hidden_states, frame_mask

    def encoder_attention_mask(self, hidden_states, frame_mask):
        """The encoder's attention mask. `frame_mask` is None when no row has padding frames (`_prepare_inputs`
        drops an all-ones mask), so a given mask does pad something: transformers is told not to check whether it
        could skip it, a check that reads the mask back from the device."""
        if frame_mask is None:
            return None
        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states, attention_mask=frame_mask,
                                         allow_is_bidirectional_skip=False)

    def _run_layer(self, index, hidden_states, attention_mask, synced_gpus):
        """Encoder layer `index` (0-based), with the backbone's layerdrop in training."""
        if self.training and self.config.layerdrop > 0.0 and not synced_gpus:
            if torch.rand([]) < self.config.layerdrop:
                return hidden_states
        return self.encoder.layers[index](hidden_states, attention_mask=attention_mask)

    def final_head(self, hidden_states):
        """The final head's CTC logits for the hidden states leaving the last encoder layer (with stable layer
        norm, the encoder's final LayerNorm first), as the backbone CTC model computes them."""
        if self.config.do_stable_layer_norm:
            hidden_states = self.encoder.layer_norm(hidden_states)
        return self.lm_head(self.dropout(hidden_states))

    def _synced_gpus(self) -> bool:
        return is_deepspeed_zero3_enabled() or is_fsdp_managed_module(self)

    # ------------------------------------------------------------------ passes

    def _all_exits_pass(self, input_values, attention_mask, mask_time_indices):
        """Every layer on every row; every branch's logits and the final head's. The frozen-backbone strategies
        run the backbone without autograd in training, since nothing there learns."""
        backbone_grad = torch.is_grad_enabled() and not (self.training and self.config.backbone_is_frozen)
        synced_gpus = self._synced_gpus()
        exit_logits = []
        with torch.set_grad_enabled(backbone_grad):
            hidden_states, frame_mask = self.embed(input_values, attention_mask, mask_time_indices)
            mask = self.encoder_attention_mask(hidden_states, frame_mask)
        for index in range(self.config.num_hidden_layers):
            with torch.set_grad_enabled(backbone_grad):
                hidden_states = self._run_layer(index, hidden_states, mask, synced_gpus)
            if str(index + 1) in self.exit_branches:
                exit_logits.append(self.exit_branches[str(index + 1)](hidden_states, mask))
        with torch.set_grad_enabled(backbone_grad):
            logits = self.final_head(hidden_states)
        return logits, tuple(exit_logits)

    def _early_exit_pass(self, input_values, attention_mask, setting, frame_lengths, finite=None):
        """Per-utterance early exit with batch compaction.

        One host synchronisation per exit layer (to learn which rows leave); rows that left are removed from the
        hidden states, masks and criterion state, and trailing frames that are padding for every remaining row are
        cut, so deeper layers only compute for what is still running (`ExitLoopState`). Logits at padding frames
        are not meaningful (as in the backbone CTC model); frames cut this way are left at 0. `attention_mask` is
        None unless some row has padding frames, and `frame_lengths` are the host-side frame counts
        (`_prepare_inputs`).

        `finite`: `_prepare_inputs`'s unread finiteness flags. They are read with the first decision (or at the end
        when no exit is consulted), so checking the input adds no wait of its own.

        With `overlap_exit_decisions` the decision is copied to the host without blocking and the next layer is
        queued for every row before the host waits for it: the GPU stays busy during the synchronisation, at the
        price of one layer computed for rows that turn out to leave. Results are the same either way.
        """
        num_layers = self.config.num_hidden_layers
        hidden_states, frame_mask = self.embed(input_values, attention_mask)
        running = ExitLoopState(self, hidden_states, frame_mask, frame_lengths, finite)
        exits = set(self.config.exit_layers) if setting.early_exit else set()
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
            branch_logits, leaving = self._consult_exit(running, layer, setting)
            if self.overlap_exit_decisions:
                pending = (layer, branch_logits, *decision_in_flight(leaving))
            else:
                leaving = leaving.tolist()  # the one read per exit, as above
                if not running.act_on(layer, branch_logits, leaving):
                    return running.logits, running.exit_layer
        # Exits are before the last layer (the config checks it), so no decision is pending here.
        running.check_unread_finite()
        running.answer(None, self.final_head(running.hidden_states), num_layers)
        return running.logits, running.exit_layer

    def _consult_exit(self, running, layer, setting):
        """The branch after `layer` on the running rows, and its decision (on the device): `exit_decider`'s when
        one is set, else `exit_decision`'s; the input's unread finiteness flags ride along at the first exit."""
        branch_logits = self.exit_branches[str(layer)](running.hidden_states, running.mask)
        decide = self.exit_decision if self.exit_decider is None else self.exit_decider
        arguments = () if self.exit_decider is None else (layer,)
        leaving = decide(*arguments, branch_logits, running.valid, setting, running.criterion_state)
        return branch_logits, running.with_unread_finite(leaving)

    def exit_decision(self, logits, valid, setting: ExitSetting, state: dict):
        """Bool [rows]: which rows leave at this branch; `exit_decision` of this module with this model's blank."""
        return exit_decision(logits, valid, setting, state, self.config.pad_token_id)


class EarlyExitForCTCMixin(EarlyExitLoadingMixin, EarlyExitPassesMixin):
    """Early exit for a backbone's CTC model; mixed in before the backbone's `PreTrainedModel` class.

    The backbone class (`HubertEEForCTC`, `Wav2Vec2EEForCTC`) builds its backbone module (named by its
    `base_model_prefix`), `dropout` and `lm_head` as its transformers CTC model does, then calls
    `add_exit_branches`; it says how audio becomes the hidden states entering the encoder's prologue
    (`embed_features`) and sets the class attributes below. Everything else is here.
    """

    # The backbone's transformers CTC class (conversion and tooling use it), its two encoder layer variants
    # (post-norm, stable-layer-norm) for "transformer" branches, and its name in messages.
    plain_ctc_class = None
    encoder_layer_classes: tuple = ()
    backbone_name = ""
    asr_pipeline_class = None
    # The losses never use `num_items_in_batch`: the Trainer must scale the loss for gradient accumulation itself,
    # which it only does when the model says it does not accept loss kwargs (transformers issue 47688).
    accepts_loss_kwargs = False

    def add_exit_branches(self, exit_branches_are_new: bool = False) -> None:
        """Build the exit branches, the per-instance inference switches and `auto_map`, then `post_init`.

        `exit_branches_are_new`: the weights come from a plain CTC checkpoint, which has no branch weights, so
        their absence is not reported (this instance's `_keys_to_ignore_on_load_missing`, which `post_init`
        creates and transformers' loader reads).
        """
        config = self.config
        # `exit_decider`: None, or a callable `(layer, logits, valid, setting, state) -> bool [rows]` that the exit
        # loop consults at each exit instead of `exit_decision` (same arguments, plus `layer`, the 1-based encoder
        # layer of the exit); tooling uses it to send rows to chosen layers. Not saved with the model.
        self.exit_decider = None
        # `overlap_exit_decisions`: queue the layer after an exit before waiting for the exit's decision (see
        # `_early_exit_pass`). Off by default: the queued layer is wasted on the rows that leave (the two are
        # compared in BENCHMARKS.md, "Waiting for each exit's decision").
        self.overlap_exit_decisions = False
        # Keyed by the 1-based layer so that checkpoint keys and error messages name the layer
        # (`exit_branches.4.head.weight` is the branch after encoder layer 4).
        self.exit_branches = nn.ModuleDict(
            {str(layer): ExitBranch(config, self.encoder_layer_classes) for layer in config.exit_layers}
        )
        # `register_for_auto_class` records one Auto class per model class; the design asks for both.
        modeling, configuration = type(self).__module__.split(".")[-1], type(config).__module__.split(".")[-1]
        config.auto_map = {
            **(getattr(config, "auto_map", None) or {}),
            "AutoConfig": f"{configuration}.{type(config).__name__}",
            "AutoModel": f"{modeling}.{type(self).__name__}",
            "AutoModelForCTC": f"{modeling}.{type(self).__name__}",
        }
        self.post_init()
        if exit_branches_are_new:
            self._keys_to_ignore_on_load_missing.add(r"^exit_branches\.")
        self.apply_exit_training_strategy()

    # ------------------------------------------------------------------ what the backbone class provides

    def embed_features(self, input_values, frame_mask, mask_time_indices):
        """The projected (and, in training, SpecAugment-masked) features entering the encoder's prologue."""
        raise NotImplementedError(f"{type(self).__name__} must say how it embeds audio (`embed_features`).")

    @property
    def encoder(self):
        """The backbone's encoder: `pos_conv_embed`, `layer_norm`, `dropout` and `layers`, as transformers has them."""
        return self.base_model.encoder

    # ------------------------------------------------------------------ set-up

    def freeze_feature_encoder(self):
        """Stop gradients into the convolutional front end (as the backbone CTC model's `freeze_feature_encoder`)."""
        self.base_model.feature_extractor._freeze_parameters()

    def apply_exit_training_strategy(self):
        """Set `requires_grad` for `config.exit_training_strategy`: frozen backbone and final head for
        `two-stage`/`distill` (so no optimizer ever updates them), everything trainable for `joint` and
        `joint-distill` (except a front end frozen with `freeze_feature_encoder`). Call again after changing the
        strategy."""
        frozen = self.config.backbone_is_frozen
        for module in (self.base_model, self.lm_head):
            for parameter in module.parameters():
                parameter.requires_grad = not frozen
        if not self.base_model.feature_extractor._requires_grad:
            self.base_model.feature_extractor._freeze_parameters()
        for parameter in self.exit_branches.parameters():
            parameter.requires_grad = True

    def training_summary(self) -> str:
        """One line on what training updates: the parameters that require gradients, out of all, the parts they
        belong to, and how to change it. `train()` logs it (once per distinct line), so a plain `Trainer` run shows it
        when training starts."""
        parts = {"backbone": self.base_model, "final head": self.lm_head, "exit branches": self.exit_branches}
        trained = [name for name, part in parts.items() if any(p.requires_grad for p in part.parameters())]
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        strategy = self.config.exit_training_strategy
        if self.config.backbone_is_frozen:
            why = (f"exit_training_strategy={strategy!r} freezes the backbone and the final head); load the model with "
                   "exit_training_strategy='joint' (or set it and call apply_exit_training_strategy()) to train everything")
        else:
            why = f"exit_training_strategy={strategy!r}); 'two-stage' or 'distill' train the exit branches alone"
        what = f"{trained[0]} only" if len(trained) == 1 else ", ".join(trained) if trained else "nothing"
        size = f"{total / 1e6:.1f}M" if total >= 1e6 else f"{total:,}"
        return f"{self.backbone_name}-EE: training {trainable:,} of {size} parameters: {what} ({why}"

    def train(self, mode: bool = True):
        """`nn.Module.train`; entering training mode logs `training_summary()` (once per distinct line)."""
        if mode:
            logger.warning_once(self.training_summary())
        return super().train(mode)

    @torch.no_grad()
    def init_exit_branches_from_backbone(self):
        """Start each branch as "one more backbone layer, then the final head": its encoder layer copies the
        backbone layer that follows the exit, its head copies `lm_head`, and (stable-layer-norm) its LayerNorm
        copies the encoder's final LayerNorm. Branches then begin near what deeper layers would predict instead
        of at random."""
        for layer, branch in self.exit_branches.items():
            if branch.layer is not None:
                branch.layer.load_state_dict(self.encoder.layers[int(layer)].state_dict())
            branch.head.load_state_dict(self.lm_head.state_dict())
            if self.config.do_stable_layer_norm:
                branch.layer_norm.load_state_dict(self.encoder.layer_norm.state_dict())

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

    @property
    def sampling_rate(self) -> int:
        """16 kHz, the rate HuBERT and wav2vec2 are trained at; the feature extractor owns resampling decisions."""
        return 16000

    # ------------------------------------------------------------------ input checks

    def _prepare_inputs(self, input_values, attention_mask, labels):
        """Clear errors for bad input, and what the passes need. Returns `(input_values, frame_lengths,
        attention_mask, finite)`: the input in the model's floating dtype (float64 from numpy, or float32 into a
        float16/bfloat16 model, is converted), the frames the front end emits per utterance (host-side), the
        attention mask or None when no utterance has
        padding frames (an all-ones mask, what a feature extractor returns for one utterance, changes no output,
        and without it nothing downstream masks), and the per-utterance "no NaN/inf sample" flags if they are
        still to be read (else None).

        Reading a value back from a GPU makes the host wait for it, and at batch 1 such a wait is a large share of
        an exit's cost (BENCHMARKS.md). So the flags are read together with something that is read anyway: the
        attention mask's lengths here, or else the first exit's decision in `_early_exit_pass`. Only a pass that
        reads nothing else reads them on their own (`raise_if_not_finite`)."""
        check_input_values(input_values, attention_mask)
        input_values = input_values.to(self.dtype)
        finite = torch.isfinite(input_values).all(-1)
        finite_rows = None
        if attention_mask is not None:  # one read for the lengths and the flags
            lengths, finite_rows = torch.stack((attention_mask.sum(-1, dtype=torch.long), finite.long())).tolist()
            finite = None
        else:
            lengths = [input_values.shape[1]] * len(input_values)
        raise_if_too_short(lengths, self.receptive_field(), self.sampling_rate)
        if finite_rows is not None:
            raise_if_not_finite(finite_rows)
        if labels is not None and labels.numel() and labels.max() >= self.config.vocab_size:
            raise ValueError(f"Label values must be < vocab_size ({self.config.vocab_size}), got {int(labels.max())}.")
        frame_lengths = self.frame_lengths(lengths)
        if attention_mask is not None and min(frame_lengths) == self.frame_lengths([input_values.shape[1]])[0]:
            attention_mask = None
        return input_values, frame_lengths, attention_mask, finite

    # ------------------------------------------------------------------ public API

    def exit_setting(self, exit_setting: ExitSetting | None = None, **overrides) -> ExitSetting:
        """The exit setting a call runs with: `exit_setting`, else the config's, with `overrides` (`early_exit`,
        `exit_criterion`, `exit_threshold`, `exit_patience`; None: not given) applied. Naming a criterion or
        threshold turns early exit on (as for `generate`); bad values raise a `ValueError`, unknown names a
        `TypeError`. `config` is never changed."""
        setting = self.config.exit_setting if exit_setting is None else exit_setting
        return ExitSetting.coerce(setting).with_overrides(**overrides)

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
        exit_setting: ExitSetting | None = None,
        **kwargs,
    ) -> EarlyExitCTCOutput:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, samples)`): normalised 16 kHz waveforms.
        attention_mask (`torch.LongTensor` of shape `(batch_size, samples)`, *optional*): 1 for real samples.
        labels (`torch.LongTensor` of shape `(batch_size, target_length)`, *optional*): CTC targets, -100 = padding.
        output_exit_logits (`bool`, *optional*): run every layer and every branch on every row and return all
            branches' logits (`exit_logits`); always the case in training mode. Defaults to
            `config.output_exit_logits`.
        exit_setting (`ExitSetting`, *optional*): the exit setting of this call (default: the config's).
        early_exit, exit_criterion, exit_threshold, exit_patience: per-call overrides of that setting's fields.

        Training mode (or `output_exit_logits`): full depth, `logits` are the final head's, `loss` follows
        `config.exit_training_strategy`. Inference: each utterance leaves at its own exit (see the config's
        `exit_criterion`), `exit_layer` says where; with `labels`, every branch also runs on every row to give
        `loss` (the strategy's, as in training) and `exit_losses`.
        """
        self._refuse_unsupported(kwargs)
        setting = self.exit_setting(exit_setting, early_exit=early_exit, exit_criterion=exit_criterion,
                                    exit_threshold=exit_threshold, exit_patience=exit_patience)
        if output_exit_logits is None:
            output_exit_logits = self.config.output_exit_logits
        input_values, frame_lengths, attention_mask, finite = self._prepare_inputs(input_values, attention_mask, labels)
        # Built only for a loss: a host->device copy is a blocking one, which inference need not pay.
        logit_lengths = torch.tensor(frame_lengths, device=input_values.device) if labels is not None else None
        if self.training or output_exit_logits:
            return self._full_depth_forward(input_values, attention_mask, labels, logit_lengths, finite,
                                            mask_time_indices)
        loss = exit_losses = None
        if labels is not None:
            if finite is not None:
                raise_if_not_finite(finite)
                finite = None
            final_logits, exit_logits = self._all_exits_pass(input_values, attention_mask, None)
            loss, exit_losses = evaluation_loss(self.config, final_logits, exit_logits, labels, logit_lengths)
            if not setting.early_exit:  # the answer is the final head's, already computed
                exit_layer = self._final_exit_layer(input_values.shape[0], final_logits.device)
                return EarlyExitCTCOutput(loss=loss, logits=final_logits, exit_layer=exit_layer,
                                          exit_losses=exit_losses)
        logits, exit_layer = self._early_exit_pass(input_values, attention_mask, setting, frame_lengths, finite)
        return EarlyExitCTCOutput(loss=loss, logits=logits, exit_layer=exit_layer, exit_losses=exit_losses)

    def _refuse_unsupported(self, kwargs) -> None:
        """`forward`'s other keyword arguments: `return_dict` is accepted (outputs are always a `ModelOutput`),
        asking for attentions or hidden states is refused (layers past an exit never run), anything else too."""
        for name in ("output_attentions", "output_hidden_states"):
            if kwargs.pop(name, None):
                raise ValueError(f"`{name}=True` is not supported by {type(self).__name__}: layers past an exit never run.")
        kwargs.pop("return_dict", None)
        if kwargs:
            raise TypeError(f"{type(self).__name__}.forward got unexpected argument(s) {sorted(kwargs)}.")

    def _final_exit_layer(self, batch_size, device):
        return torch.full((batch_size,), self.config.num_hidden_layers, dtype=torch.long, device=device)

    def _full_depth_forward(self, input_values, attention_mask, labels, logit_lengths, finite, mask_time_indices):
        """Training mode or `output_exit_logits`: every layer and branch on every row, the strategy's loss."""
        if finite is not None:
            raise_if_not_finite(finite)
        logits, exit_logits = self._all_exits_pass(input_values, attention_mask, mask_time_indices)
        loss = exit_losses = None
        if labels is not None:
            loss, exit_losses = strategy_loss(self.config, logits, exit_logits, labels, logit_lengths)
        return EarlyExitCTCOutput(loss=loss, logits=logits, exit_layer=self._final_exit_layer(len(logits), logits.device),
                                  exit_logits=exit_logits, exit_losses=exit_losses)

    def _inference_view(self):
        """This model as eval mode runs it, without changing its mode: itself when in eval mode, else a copy of the
        module tree in eval mode that shares every parameter, buffer and hook with it (a few hundred small objects,
        no tensor copied). Built per call, so it always sees the model as it is now."""
        # torch has no public way to run a module tree in eval mode without writing each module's `training` flag,
        # which a training step in another thread reads; so the view is a shallow per-module copy.
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
    def generate(self, input_values, attention_mask=None, exit_setting: ExitSetting | None = None,
                 **overrides) -> EarlyExitGenerateOutput:
        """Early-exit greedy CTC decoding.

        `exit_setting` (default: the config's) and `overrides` of its fields (`early_exit`, `exit_criterion`,
        `exit_threshold`, `exit_patience`) apply to this call only.
        Runs the inference path (no dropout, layerdrop or time masking) whatever the module's train/eval mode, and
        never changes that mode, so threads may share one model. Returns `sequences` (per-frame greedy ids,
        padding frames set to the pad/blank id, ready for `processor.batch_decode`) and `exit_layer`.
        """
        setting = self.exit_setting(exit_setting, **overrides)
        input_values, frame_lengths, attention_mask, finite = self._prepare_inputs(input_values, attention_mask, None)
        logits, exit_layer = self._inference_view()._early_exit_pass(
            input_values, attention_mask, setting, frame_lengths, finite
        )
        sequences = logits.argmax(-1)
        if attention_mask is not None:  # frame counts from the host-side lengths: no second pass over the mask
            lengths = torch.tensor(frame_lengths, device=sequences.device)
            padding = torch.arange(sequences.shape[1], device=sequences.device)[None, :] >= lengths[:, None]
            sequences = sequences.masked_fill(padding, self.config.pad_token_id)
        return EarlyExitGenerateOutput(sequences=sequences, exit_layer=exit_layer, logits=logits)


# ---------------------------------------------------------------------------------------------------- ASR pipeline


class EarlyExitAutomaticSpeechRecognitionPipeline(AutomaticSpeechRecognitionPipeline):
    """transformers' `automatic-speech-recognition` pipeline, decoding with the model's `generate`.

    For a CTC model transformers' pipeline runs `model(input_values, attention_mask)` and drops every other
    argument, so `asr(x, exit_threshold=0.6)` would silently run at the config's setting. This one takes the
    settings of `generate` at the top level (`asr(x, exit_threshold=0.6)`) or in `generate_kwargs`, at the call or
    when the pipeline is built; naming one turns early exit on, as for `generate`. Any other generation argument is
    refused. A folder with a `language_model/` decodes with pyctcdecode's beam search (`ctc_with_lm`) at
    `default_decoder_kwargs()` unless `decoder_kwargs` says otherwise.

    Each result holds `text` and `exit_layer`, the encoder layer the utterance left at (for audio cut into windows
    with `chunk_length_s`, the deepest window's, and `chunk_exit_layers` per window). A batch (`batch_size`) gives
    what one call per input gives: `generate` sets the padding frames of each row to the blank, and a front end that
    normalises over time (`feat_extract_norm="group"`), where padding would change the statistics, runs each row at
    its own length. Audio at another rate (`{"raw": x, "sampling_rate": 44100}`, a `datasets` audio row) is
    resampled with soxr (`resample`), as `hubert-ee transcribe` does; integer PCM is scaled to [-1, 1].
    `pipeline("automatic-speech-recognition", model=<folder or Hub id>, trust_remote_code=True)` builds it (the
    config's `custom_pipelines`); for a model object, pass `pipeline_class=model.asr_pipeline_class`.
    """

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
                f"HuBERT-EE's speech recognition pipeline does not take {unknown}: its settings are the early-exit "
                f"ones {list(PER_CALL_EXIT_SETTINGS)} (directly or in generate_kwargs) and, for a model folder with "
                "a language_model/, the beam search's decoder_kwargs (beam_width, ...)."
            )
        settings = {key: value for key, value in settings.items() if value is not None}
        setting = self.model.config.exit_setting.with_overrides(**settings)  # a bad value fails here, not per call
        preprocess, forward, postprocess = super()._sanitize_parameters(
            chunk_length_s=chunk_length_s, stride_length_s=stride_length_s, ignore_warning=ignore_warning,
            decoder_kwargs=decoder_kwargs, return_timestamps=return_timestamps, return_language=return_language,
        )  # fmt: skip
        if settings:
            forward["exit_setting"] = setting
        return preprocess, forward, postprocess

    def preprocess(self, inputs, chunk_length_s=0, stride_length_s=None):
        """transformers' preprocessing, of float audio at the feature extractor's rate (`as_model_audio`)."""
        yield from super().preprocess(self.as_model_audio(inputs), chunk_length_s, stride_length_s)

    def as_model_audio(self, inputs):
        """`inputs` with integer PCM scaled to float32 in [-1, 1] and audio at another rate resampled to the
        feature extractor's: a bare array (taken as at that rate), a dict `{"raw" or "array": audio,
        "sampling_rate": rate, ...}` (mono `(samples,)` or `(channels, samples)`, channels averaged) or a torchcodec
        `AudioDecoder` (what a `datasets` audio column holds). Anything else (a file name, bytes) is returned as it
        is, for transformers to read."""
        if hasattr(inputs, "get_all_samples"):  # a torchcodec AudioDecoder: (channels, samples) at the file's rate
            samples = inputs.get_all_samples()
            inputs = {"raw": samples.data, "sampling_rate": samples.sample_rate}
        if not isinstance(inputs, dict):
            return self.as_float_audio(inputs) if hasattr(inputs, "dtype") else inputs
        if "raw" not in inputs and "array" not in inputs:
            return inputs  # transformers' own message says what the dict needs
        inputs = dict(inputs)
        rate = self.feature_extractor.sampling_rate
        source = inputs.pop("sampling_rate", rate)
        audio = self.as_float_audio(inputs.pop("raw") if "raw" in inputs else inputs.pop("array"))
        inputs.pop("path", None)  # a `datasets` row's file name: transformers drops it too
        if source == rate:
            return {**inputs, "raw": audio, "sampling_rate": rate}
        audio = torch.as_tensor(audio)
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

    @staticmethod
    def as_float_audio(audio):
        """A numpy array or tensor of samples as floating point: integer PCM scaled to [-1, 1] (8-bit PCM is
        unsigned, centred on 128), float left as it is; other types (bool, complex) are refused by name."""
        tensor = torch.as_tensor(audio)
        if tensor.is_floating_point():
            return audio
        if tensor.dtype == torch.uint8:
            scaled = (tensor.to(torch.float32) - 128.0) / 128.0
        elif tensor.dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
            scaled = (tensor.to(torch.float64) / -float(torch.iinfo(tensor.dtype).min)).to(torch.float32)
        else:
            raise TypeError(f"Audio samples of dtype {tensor.dtype}: give float or integer PCM samples.")
        return scaled if isinstance(audio, torch.Tensor) else scaled.numpy()

    @staticmethod
    def resample(audio, orig_rate: int, new_rate: int) -> torch.Tensor:
        """Mono `audio` `(samples,)` from `orig_rate` to `new_rate` Hz, as float32, with soxr ("HQ"), as
        `hubert-ee transcribe` resamples. soxr is imported here, not with this file, since the file travels to the
        Hub and needs only torch and transformers otherwise; without it the error says how to get it."""
        orig_rate, new_rate = int(orig_rate), int(new_rate)
        if orig_rate <= 0 or new_rate <= 0:
            raise ValueError(f"Sampling rates must be positive integers, got {orig_rate} Hz to {new_rate} Hz.")
        audio = torch.as_tensor(audio).to(torch.float32)
        if orig_rate == new_rate:
            return audio
        try:
            import soxr
        except ImportError as error:
            raise ImportError(
                f"Resampling {orig_rate} Hz audio to {new_rate} Hz needs the soxr package: `pip install soxr` (a "
                f"small CPU wheel), or pass audio at {new_rate} Hz."
            ) from error
        return torch.from_numpy(soxr.resample(audio.cpu().numpy(), orig_rate, new_rate, quality="HQ")).to(torch.float32)

    def _forward(self, model_inputs, return_timestamps=False, exit_setting=None):
        # transformers' CTC branch of `_forward`, decoding with `generate` and the setting
        attention_mask = model_inputs.pop("attention_mask", None)
        stride = model_inputs.pop("stride", None)
        model_inputs.pop("num_frames", None)
        is_last = model_inputs.pop("is_last")
        output = self.decode(model_inputs.pop(self.model.main_input_name), attention_mask, exit_setting)
        out = {"logits": output.logits} if self.type == "ctc_with_lm" else {"tokens": output.sequences}
        if stride is not None:  # windows of chunked audio: their context, in frames, for `postprocess`
            ratio = 1 / self._align_to
            out["stride"] = rescale_stride([stride], ratio)[0] if isinstance(stride, tuple) else rescale_stride(
                stride, ratio)
        return {"is_last": is_last, **out, **model_inputs, "exit_layer": output.exit_layer}

    def decode(self, input_values, attention_mask, exit_setting) -> EarlyExitGenerateOutput:
        """`generate` on a (padded) batch, each row decoded as it would be alone. A front end with
        `feat_extract_norm="group"` normalises each channel over all frames, padding included, so there each row
        of a padded batch runs alone at its own length; elsewhere the batch runs as one."""
        if attention_mask is None or self.model.config.feat_extract_norm != "group":
            return self.model.generate(input_values, attention_mask=attention_mask, exit_setting=exit_setting)
        rows = [self.model.generate(values[None, :length], exit_setting=exit_setting)
                for values, length in zip(input_values, attention_mask.sum(-1).tolist())]
        frames = self.model.frame_lengths([input_values.shape[1]])[0]
        pad = self.model.config.pad_token_id
        sequences = torch.stack([nn.functional.pad(row.sequences[0], (0, frames - row.sequences.shape[1]), value=pad)
                                 for row in rows])
        logits = torch.stack([nn.functional.pad(row.logits[0], (0, 0, 0, frames - row.logits.shape[1]))
                              for row in rows])
        exit_layer = torch.cat([row.exit_layer for row in rows])
        return EarlyExitGenerateOutput(sequences=sequences, exit_layer=exit_layer, logits=logits)

    def default_decoder_kwargs(self) -> dict:
        """The beam search's settings when neither the call nor the pipeline names them (`ctc_with_lm` only):
        `beam_width` `LM_BEAM_WIDTH`; alpha and beta are the ones stored with the LM."""
        return {"beam_width": LM_BEAM_WIDTH}

    def postprocess(self, model_outputs, decoder_kwargs=None, **kwargs):
        """transformers' result (`text`, ...) with `exit_layer`: the layer the input left at, or for windows of
        chunked audio the deepest window's, with `chunk_exit_layers` listing each window's. LM decoding runs with
        `decoder_kwargs` over `default_decoder_kwargs()`."""
        layers = [int(output.pop("exit_layer").reshape(-1)[0]) for output in model_outputs]
        if self.type == "ctc_with_lm":
            decoder_kwargs = {**self.default_decoder_kwargs(), **(decoder_kwargs or {})}
        result = super().postprocess(model_outputs, decoder_kwargs=decoder_kwargs, **kwargs)
        result["exit_layer"] = max(layers)
        if len(layers) > 1:
            result["chunk_exit_layers"] = layers
        return result


__all__ = [
    "EarlyExitAutomaticSpeechRecognitionPipeline", "EarlyExitCTCOutput", "EarlyExitForCTCMixin", "EarlyExitLoadingMixin",
    "EarlyExitPassesMixin",
    "EarlyExitGenerateOutput", "ExitBranch", "ExitLoopState", "LM_BEAM_WIDTH", "PER_CALL_EXIT_SETTINGS", "exit_decision",
    "frames_from_samples", "greedy_transcripts",
]
