"""Training stage: `hubert-ee train-backbone` (a plain HubertForCTC from scratch) and `hubert-ee train` (the exits).

Both use the Hugging Face `Trainer` (accelerate underneath), so they run unchanged under `accelerate launch` or
`torchrun` on several GPUs, resume from `OUTPUT/checkpoints/checkpoint-*` with `--resume`, and save a Hub-ready
folder at `OUTPUT` (weights, config, tokenizer, feature extractor; for HuBERT-EE also `auto_map` and both code
files).

`train-backbone` exists because no pretrained HuBERT can be downloaded offline: its output is an ordinary
`HubertForCTC` checkpoint that stands in for `facebook/hubert-*-ls960-ft`. `train` converts such a checkpoint (a
folder or a Hub id; a `Wav2Vec2ForCTC` one too) to its early-exit model and trains the exit branches under `--strategy two-stage|joint|distill`.
Evaluation during training reports WER at every exit and at the final head.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import HubertConfig, HubertForCTC, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from modeling_early_exit import EarlyExitForCTCMixin, frames_from_samples

from .augment import AugmentationConfig, Augmenter
from .checkpoints import checkpoint_step, resume_checkpoint
from .data import DataCollatorCTCWithPadding, load_speech_dataset, prepare_for_ctc
from .export import convert_checkpoint, remove_stale_weights, save_hub_folder
from .inference import greedy_ids
from .loading import check_vocab_matches, checkpoint_model_type, early_exit_class, load_processor
from .metrics import exit_metrics
from .packing import ClipStore, PackedCTCCollator, PackedCTCDataset, is_packable_corpus
from .text import build_processor

logger = logging.getLogger(__name__)

# Backbone sizes for `train-backbone`. "small" keeps HuBERT's proportions (12 post-norm layers, FFN = 4 x hidden,
# 20 ms frames from a 7-layer conv front end) at ~10M parameters; the front end is narrower than HuBERT's 512
# channels, most of all in its first layers, so that it stays a small share of a forward pass and exits have
# encoder layers to save. "tiny" is for tests and smoke runs.
BACKBONE_PRESETS = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(16, 16, 16), conv_stride=(5, 4, 2), conv_kernel=(10, 8, 2),
                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2),
    # The shipped default model's size: its convolutional front end is narrower than "small"'s, so it trains
    # faster on a CPU while the front end stays a small share of a forward pass (BENCHMARKS.md, "Training
    # throughput").
    "compact": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=4, intermediate_size=768,
                    conv_dim=(32, 64, 64, 128, 128, 128, 128), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                    conv_kernel=(10, 3, 3, 3, 3, 2, 2), num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=16,
                    # pre-LN (HuBERT-large's variant): stable at the high learning rate of a short run; no dropout
                    # because a run of an epoch or two on augmented speech underfits rather than overfits
                    do_stable_layer_norm=True, hidden_dropout=0.0, attention_dropout=0.0),
    "small": dict(hidden_size=256, num_hidden_layers=12, num_attention_heads=4, intermediate_size=1024,
                  conv_dim=(64, 128, 128, 256, 256, 256, 256), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                  conv_kernel=(10, 3, 3, 3, 3, 2, 2), num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=16),
}  # fmt: skip


# ---------------------------------------------------------------------------------------------- evaluation


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` whose order depends only on (seed, epoch).

    transformers' sampler draws each epoch's order from the global RNG when the epoch's iterator is created; a run
    resumed in the middle of an epoch creates it before the checkpoint's RNG state is restored, so it trains the
    rest of that epoch on other batches than the uninterrupted run would. The Trainer calls `set_epoch`.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator = torch.Generator().manual_seed(self.seed + int(epoch))


class CTCTrainer(Trainer):
    """`Trainer` whose evaluation returns greedy CTC ids of every head instead of full logits, and whose
    length-grouped training order survives `--resume` in the middle of an epoch.

    Predictions are `[batch, frames, heads]` token ids (heads in `hubert_ee.metrics.head_names` order: each exit,
    then the final head; padding frames are -100), small enough to gather over a whole dev set and enough for WER
    per exit; `hubert_ee.metrics.exit_metrics` scores them.
    """

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
        return sampler

    def __init__(self, *args, sampling_rate: int = 16000, **kwargs):
        super().__init__(*args, **kwargs)
        self.throughput = ThroughputMeter(sampling_rate)

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.throughput.add_batch(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def evaluate(self, *args, **kwargs):
        with self.throughput.paused():
            return super().evaluate(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the throughput since the last one, and the running total
            logs.update(self.throughput.report())
            logs["speech_hours"] = round(self._logged_speech_hours() + logs.pop("speech_seconds") / 3600, 4)
        super().log(logs, start_time)

    def _logged_speech_hours(self) -> float:
        """Hours of speech trained on up to the last log, counted across resumed runs (the log history travels in
        the checkpoint)."""
        for entry in reversed(self.state.log_history):
            if "speech_hours" in entry:
                return float(entry["speech_hours"])
        return 0.0

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        is_early_exit = isinstance(self.accelerator.unwrap_model(model), EarlyExitForCTCMixin)
        with torch.no_grad():
            extra = {"output_exit_logits": True} if is_early_exit else {}
            outputs = model(**inputs, **extra)
        loss = outputs.loss.detach().mean() if outputs.loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        heads = [*(outputs.exit_logits or ()), outputs.logits] if is_early_exit else [outputs.logits]
        unwrapped = self.accelerator.unwrap_model(model)
        mask = inputs.get("attention_mask")
        ids = torch.stack([greedy_ids(unwrapped, head, mask, fill=-100) for head in heads], dim=-1)
        return loss, ids, inputs.get("labels")


class ThroughputMeter:
    """Seconds of speech trained on per wall-clock second (evaluation time left out), and the share of padding.

    Speech is what a batch holds apart from padding: a packed batch says so in `speech_seconds` (popped here, the
    model does not take it), a padded one through its attention mask, and an unmasked one is all speech.
    """

    def __init__(self, sampling_rate: int):
        self.sampling_rate = sampling_rate
        self.speech = self.total = 0.0
        self.since: float | None = None  # the clock starts with the first batch: set-up is not training time
        self.paused_seconds = 0.0

    def add_batch(self, inputs: dict) -> None:
        if self.since is None:
            self.since = time.monotonic()
        values = inputs["input_values"]
        total = values.numel() / self.sampling_rate
        speech = inputs.pop("speech_seconds", None)
        if speech is None:
            mask = inputs.get("attention_mask")
            speech = total if mask is None else float(mask.sum()) / self.sampling_rate
        self.speech += float(speech)
        self.total += total

    @contextlib.contextmanager
    def paused(self):
        """Leave the time spent inside the block out of the throughput (the Trainer's evaluations)."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.paused_seconds += time.monotonic() - start

    def report(self) -> dict[str, float]:
        """`audio_s_per_s`, `padding_share` and `speech_seconds` since the last report, then start a new window."""
        now = time.monotonic()
        wall = max(now - (self.since or now) - self.paused_seconds, 1e-9)
        report = {"audio_s_per_s": round(self.speech / wall, 2),
                  "padding_share": round(1.0 - self.speech / self.total, 4) if self.total else 0.0,
                  "speech_seconds": self.speech}
        self.speech = self.total = self.paused_seconds = 0.0
        self.since = now
        return report


# ---------------------------------------------------------------------------------------------- shared set-up


class WallClockBudget(TrainerCallback):
    """Stops training once `minutes` of wall-clock time have passed since the first step began (`--max-minutes`).

    It only sets `control.should_training_stop` (and `should_save`, so that a resumable checkpoint is written) at
    the end of the step that crosses the budget; the caller's end-of-training evaluation and final save still run.
    The learning-rate schedule is not touched: it follows `--max-steps` (or `--epochs`), so pick `--max-steps` near
    what fits in the budget.
    """

    def __init__(self, minutes: float):
        if not minutes > 0:
            raise ValueError(f"--max-minutes must be > 0, got {minutes}")
        self.seconds = 60.0 * float(minutes)
        self.start: float | None = None
        self.stopped_at_step: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is not None and self.stopped_at_step is None:
            elapsed = time.monotonic() - self.start
            if elapsed >= self.seconds and not control.should_training_stop:
                self.stopped_at_step = state.global_step
                control.should_training_stop = True
                control.should_save = True
                print(f"--max-minutes {self.seconds / 60:g}: stopping after step {state.global_step} of "
                      f"{state.max_steps} ({elapsed:.0f} s of training)", flush=True)
        return control


def _load_split(args, split, max_samples, processor, config):
    if split is None:
        return None
    dataset = load_speech_dataset(
        args.dataset, split=split, config=args.dataset_config, max_samples=max_samples,
        sampling_rate=processor.feature_extractor.sampling_rate, num_proc=args.num_proc,
    )  # fmt: skip
    return drop_impossible_ctc(prepare_for_ctc(dataset, processor, num_proc=args.num_proc), config, split)


def ctc_frames_needed(labels) -> int:
    """Frames CTC needs for `labels`: one per label, plus a blank between each pair of equal neighbours."""
    labels = [label for label in labels if label >= 0]
    return len(labels) + sum(1 for left, right in zip(labels, labels[1:]) if left == right)


def drop_impossible_ctc(dataset, config, split: str):
    """Drop, and report, utterances whose transcript cannot fit their frames.

    Their CTC loss is infinite: with `ctc_zero_infinity` it would be zeroed and averaged in silently, without it it
    poisons the step with NaN gradients. Neither should happen unnoticed.
    """
    frames = frames_from_samples(config, list(dataset["input_length"]))
    fits = [have >= ctc_frames_needed(labels) for have, labels in zip(frames, dataset["labels"])]
    dropped = fits.count(False)
    if dropped:
        print(f"{split}: dropped {dropped} of {len(fits)} utterances whose transcript is longer than CTC can align "
              "to their audio (infinite loss)")
        dataset = dataset.select([index for index, fit in enumerate(fits) if fit])
    return dataset


def use_bf16(precision: str) -> bool:
    """Whether `--precision` means bf16 autocast here: `auto` picks it where the device computes bf16 natively
    (CUDA with bf16 support; CPUs with AVX512-BF16 or AMX), where it is faster than fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpu_has = [getattr(torch.cpu, name, lambda: False) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in cpu_has)


PRECISIONS = ("auto", "fp32", "bf16")


def _training_arguments(args, has_eval: bool) -> TrainingArguments:
    cuda = torch.cuda.is_available()
    packed = getattr(args, "pack_seconds", None) is not None
    options = dict(
        output_dir=str(Path(args.output) / "checkpoints"),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        lr_scheduler_type=args.lr_scheduler,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps if args.max_steps else -1,
        logging_steps=args.logging_steps,
        eval_strategy="steps" if has_eval and args.eval_steps else "no",
        eval_steps=args.eval_steps or None,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=2,
        seed=args.seed,
        data_seed=args.seed,
        bf16=use_bf16(args.precision),
        torch_compile=getattr(args, "torch_compile", False),
        dataloader_num_workers=args.dataloader_workers,
        remove_unused_columns=False,  # the collator picks its columns; the sampler needs `input_length`
        report_to="none",
        disable_tqdm=args.no_progress,
        max_grad_norm=args.max_grad_norm,
    )
    if not cuda and options["bf16"]:  # TrainingArguments accepts bf16 without a GPU only when told it runs on the CPU
        options["use_cpu"] = True
    if not cuda and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        options["ddp_backend"] = "gloo"  # torchrun / accelerate launch on CPUs: NCCL needs GPUs
    field_names = {field.name for field in dataclasses.fields(TrainingArguments)}
    if packed:  # an endless stream of equal-length rows: nothing to group, and a resumed run starts fresh passes
        # each process packs its own share of the stream (see PackedCTCDataset) instead of rank 0 dispatching
        options.update(ignore_data_skip=True, accelerator_config={"dispatch_batches": False})
    elif "train_sampling_strategy" in field_names:  # transformers 5.x replaced `group_by_length`
        options.update(train_sampling_strategy="group_by_length", length_column_name="input_length")
    else:
        options.update(group_by_length=True, length_column_name="input_length")
    return TrainingArguments(**options)


def _train(model, processor, args, train_dataset, eval_dataset) -> tuple[dict, bool]:
    """Train (and evaluate); returns (metrics, whether this process writes the outputs: rank 0 only).

    `train_dataset` is a prepared `Dataset` (padded batches) or a `PackedCTCDataset` (packed rows)."""
    packed = isinstance(train_dataset, PackedCTCDataset)
    padding = DataCollatorCTCWithPadding(processor=processor)
    training_args = _training_arguments(args, eval_dataset is not None)
    # the newest complete checkpoint: the Trainer's own choice (the newest folder) may be a save cut short
    resume = resume_checkpoint(training_args.output_dir) if args.resume else None
    if packed and resume:  # a pass the run cannot have reached: it made at most one pass per step
        train_dataset.start_pass = 1 + checkpoint_step(resume)
    trainer = CTCTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=PackedCTCCollator(unpacked=padding) if packed else padding,
        compute_metrics=exit_metrics(processor, model.config, percent=True)[0],
        callbacks=[WallClockBudget(args.max_minutes)] if getattr(args, "max_minutes", None) is not None else None,
        sampling_rate=processor.feature_extractor.sampling_rate,
    )
    result = trainer.train(resume_from_checkpoint=resume)
    metrics = dict(result.metrics)
    if eval_dataset is not None:
        metrics.update(trainer.evaluate())
        trainer.save_state()  # the final evaluation joins the log that `hubert-ee history` reads
    trainer.log_metrics("all", metrics)
    return metrics, trainer.is_world_process_zero()


def _clip_store(args, spec: str, processor) -> ClipStore:
    """The `--train-split` clips of one corpus, read in place where it is a `synth` corpus."""
    if is_packable_corpus(spec):
        return ClipStore.from_corpus(spec, args.train_split, processor.tokenizer, args.max_train_samples)
    dataset = load_speech_dataset(
        spec, split=args.train_split, config=args.dataset_config, max_samples=args.max_train_samples,
        sampling_rate=processor.feature_extractor.sampling_rate, num_proc=args.num_proc,
    )  # fmt: skip
    return ClipStore.from_speech_dataset(dataset, processor.tokenizer)


def oversample_indices(clip_seconds: Sequence[float], other_hours: float, share: float, seed: int) -> list[int]:
    """Clip indices of a corpus (clip durations `clip_seconds`) repeated so that it makes about `share` of the audio
    beside `other_hours`: whole copies, then a seeded random subset of clips for the fraction of a copy left; at
    least one copy, so that no clip is ever dropped."""
    own_hours = sum(clip_seconds) / 3600
    copies = max(1.0, share / (1 - share) * other_hours / own_hours)
    whole, fraction = int(copies), copies - int(copies)
    count = len(clip_seconds)
    extra = np.random.default_rng(seed).permutation(count)[: round(fraction * count)]
    return [index for _ in range(whole) for index in range(count)] + sorted(int(index) for index in extra)


def _oversampled(store: ClipStore, extra: ClipStore, share: float, spec: str, seed: int) -> ClipStore:
    """`store` with `extra` repeated to about `share` of the audio; the copies share the clips' arrays."""
    indices = oversample_indices([len(clip) / extra.sampling_rate for clip in extra.audio], store.hours, share, seed)
    repeated = ClipStore([extra.audio[index] for index in indices], [extra.labels[index] for index in indices],
                         extra.sampling_rate)
    mixed = ClipStore.concatenate([store, repeated])
    print(f"oversampled {spec}: {extra.hours:.2f} h x {len(indices) / len(extra):.2f} = "
          f"{repeated.hours / mixed.hours:.0%} of the training audio (asked {share:.0%})")
    return mixed


def _load_train_split(args, processor, config):
    """The training data: packed rows with `--pack-seconds`, else the prepared split (padded batches)."""
    if getattr(args, "pack_seconds", None) is None:
        for flag in ("more_train_data", "oversample_data"):
            if getattr(args, flag, None):
                raise ValueError(f"--{flag.replace('_', '-')} needs --pack-seconds")
        return _load_split(args, args.train_split, args.max_train_samples, processor, config)
    if not args.max_steps:
        raise ValueError("--pack-seconds streams rows without end: give --max-steps (the schedule needs a length)")
    if args.pack_seconds <= 0:
        raise ValueError(f"--pack-seconds must be > 0, got {args.pack_seconds:g}")
    store = ClipStore.concatenate([_clip_store(args, spec, processor)
                                   for spec in [args.dataset, *(args.more_train_data or [])]])
    for spec, share in getattr(args, "oversample_data", None) or []:
        store = _oversampled(store, _clip_store(args, spec, processor), share, spec, args.seed)
    tokenizer = processor.tokenizer
    augmenter = None if args.no_augment else Augmenter(AugmentationConfig())
    print(f"packed training: {len(store)} clips ({store.hours:.2f} h) in rows of {args.pack_seconds:g} s, "
          f"augmentation {'off' if augmenter is None else 'on'}")
    return PackedCTCDataset(
        store, tokenizer.convert_tokens_to_ids(tokenizer.word_delimiter_token), row_seconds=args.pack_seconds,
        augmenter=augmenter, seed=args.seed, normalize=processor.feature_extractor.do_normalize,
    )  # fmt: skip


def _eval_split(args):
    return None if str(args.eval_split).lower() in ("none", "") else args.eval_split


# ---------------------------------------------------------------------------------------------- train-backbone


def build_backbone_config(preset: str, vocab_size: int, **overrides) -> HubertConfig:
    """A `HubertConfig` for CTC training from scratch: a `BACKBONE_PRESETS` size, CTC-friendly defaults."""
    if preset not in BACKBONE_PRESETS:
        raise ValueError(f"--preset is {preset!r}, but it must be one of {sorted(BACKBONE_PRESETS)}.")
    settings = dict(
        vocab_size=vocab_size,
        pad_token_id=0,
        feat_extract_norm="layer",  # per-utterance exactness in padded batches (group norm mixes in padding)
        do_stable_layer_norm=False,
        ctc_loss_reduction="mean",
        ctc_zero_infinity=True,  # too-short alignments give inf losses: zero them instead of poisoning the step
        layerdrop=0.05,
        mask_time_prob=0.05,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
    )
    settings.update(BACKBONE_PRESETS[preset])  # a preset may choose the layer-norm variant too
    settings.update({key: value for key, value in overrides.items() if value is not None})
    return HubertConfig(**settings)


def load_backbone(source: str, mask_time_prob: float | None = None):
    """The plain CTC model inside a checkpoint (folder or Hub id; `HubertForCTC` or `Wav2Vec2ForCTC`): a plain one,
    or an early-exit model's backbone and final head (its exit branches are left out: they are trained on the
    finished backbone)."""
    model_class = early_exit_class(checkpoint_model_type(source))
    # only the backbone config's own keys: the early-exit ones (exit layers, criterion, ...) would make the backbone
    # look like a model with exits to whatever reads its config (e.g. the heads `exit_metrics` scores)
    config = model_class.config_class.from_pretrained(source).backbone_config()
    if mask_time_prob is not None:
        config.mask_time_prob = mask_time_prob
    config.architectures = [model_class.plain_ctc_class.__name__]
    return model_class.plain_ctc_class.from_pretrained(source, config=config)


def run_backbone(args) -> int:
    torch.manual_seed(args.seed)
    if args.init_from:
        architecture = [name for name in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                          "num_attention_heads") if getattr(args, name) is not None]
        if architecture:
            raise ValueError(f"--init-from {args.init_from} keeps that checkpoint's architecture: drop "
                             + ", ".join("--" + name.replace("_", "-") for name in architecture))
        processor = load_processor(args.init_from)
        model = load_backbone(args.init_from, mask_time_prob=args.mask_time_prob)
        config = model.config
    else:
        processor = build_processor()
        config = build_backbone_config(
            args.preset, len(processor.tokenizer), num_hidden_layers=args.num_hidden_layers,
            hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
            num_attention_heads=args.num_attention_heads, mask_time_prob=args.mask_time_prob,
        )  # fmt: skip
        model = HubertForCTC(config)
    train_dataset = _load_train_split(args, processor, config)
    eval_dataset = _load_split(args, _eval_split(args), args.max_eval_samples, processor, config)
    parameters = sum(p.numel() for p in model.parameters())
    clips = len(train_dataset.store) if isinstance(train_dataset, PackedCTCDataset) else len(train_dataset)
    start = f"from {args.init_from}" if args.init_from else "from scratch"
    print(f"{type(model).__name__} {start}: {parameters / 1e6:.1f}M parameters, {clips} training clips")
    metrics, writes_outputs = _train(model, processor, args, train_dataset, eval_dataset)
    if not writes_outputs:  # under torchrun / accelerate launch only rank 0 saves
        return 0
    output = Path(args.output)
    remove_stale_weights(output)  # an earlier run's weights in the same folder would shadow these
    model.save_pretrained(output, max_shard_size="15MB")
    processor.save_pretrained(output)
    _print_summary(output, metrics)
    return 0


# ---------------------------------------------------------------------------------------------- train (exits)


def run_exits(args) -> int:
    torch.manual_seed(args.seed)
    processor = load_processor(args.model)
    overrides = {
        "exit_layers": args.exit_layers, "exit_branch": args.exit_branch,
        "exit_training_strategy": args.strategy, "exit_loss_weight": args.exit_loss_weight,
        "distill_weight": args.distill_weight, "distill_temperature": args.distill_temperature,
        "ctc_zero_infinity": True,
    }  # fmt: skip
    model = convert_checkpoint(
        args.model, init_from_backbone=not args.random_branch_init,
        **{key: value for key, value in overrides.items() if value is not None},
    )  # fmt: skip
    model.config.exit_training_strategy = args.strategy
    model.apply_exit_training_strategy()
    check_vocab_matches(model, processor)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"HuBERT-EE: exits after layers {model.config.exit_layers} ({model.config.exit_branch}), strategy "
        f"{args.strategy}: {trainable / 1e6:.2f}M of {model.num_parameters() / 1e6:.2f}M parameters learn"
    )
    train_dataset = _load_train_split(args, processor, model.config)
    eval_dataset = _load_split(args, _eval_split(args), args.max_eval_samples, processor, model.config)
    metrics, writes_outputs = _train(model, processor, args, train_dataset, eval_dataset)
    if not writes_outputs:  # under torchrun / accelerate launch only rank 0 saves
        return 0
    output = save_hub_folder(model, processor, args.output)
    _print_summary(output, metrics)
    return 0


def _print_summary(output: Path, metrics: dict) -> None:
    shown = {key: value for key, value in metrics.items() if "wer" in key or "cer" in key or key.endswith("loss")}
    for key, value in sorted(shown.items()):
        print(f"  {key}: {value:.3f}" if isinstance(value, float) and math.isfinite(value) else f"  {key}: {value}")
    print(f"saved to {output}")
