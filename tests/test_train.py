"""hubert_ee.train, Trainer-based training on tiny data: train-backbone, then exits under each strategy, through the
CLI; resume equal to an uninterrupted run; CTC alignments that cannot exist, and what the Trainer then logs."""

import json
import logging
import math
import shutil

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file
from transformers import HubertConfig, HubertForCTC, Trainer, TrainerCallback, TrainingArguments

from hubert_ee.cli import main
from hubert_ee.data import DataCollatorCTCWithPadding
from hubert_ee.text import build_processor
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import tiny_model

TEXTS = ["HELLO WORLD", "EARLY EXIT", "SPEECH", "FAST MODEL", "A TEST", "HUBERT", "GOOD DAY", "YES NO"]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    rng = np.random.default_rng(0)

    def split(texts):
        return Dataset.from_dict({
            "audio": [{"array": (0.1 * rng.standard_normal(int(16000 * (0.4 + 0.05 * len(t))))).astype(np.float32),
                       "sampling_rate": 16000} for t in texts],
            "text": texts,
        })  # fmt: skip

    folder = tmp_path_factory.mktemp("corpus") / "tiny"
    DatasetDict({"train": split(TEXTS), "dev": split(TEXTS[:4])}).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def backbone(tiny_corpus, tmp_path_factory):
    output = tmp_path_factory.mktemp("backbone") / "ctc"
    code = main(["train-backbone", "--dataset", str(tiny_corpus), "--preset", "tiny", "--output", str(output),
                 "--max-steps", "4", "--batch-size", "4", "--eval-steps", "0", "--save-steps", "2",
                 "--warmup-steps", "0", "--logging-steps", "2", "--no-progress"])
    assert code == 0
    return output


def test_train_backbone_saves_a_plain_hubert_ctc_checkpoint(backbone):
    config = json.loads((backbone / "config.json").read_text())
    assert config["model_type"] == "hubert" and config["architectures"] == ["HubertForCTC"]
    assert (backbone / "vocab.json").is_file()
    assert isinstance(HubertForCTC.from_pretrained(backbone), HubertForCTC)


@pytest.mark.parametrize("strategy", ["two-stage", "joint", "distill"])
def test_train_exits_cli_saves_hub_folder_and_reports_wer_per_exit(backbone, tiny_corpus, tmp_path, strategy,
                                                                    capsys):
    output = tmp_path / "ee"
    code = main(["train", "--model", str(backbone), "--dataset", str(tiny_corpus), "--output", str(output),
                 "--exit-layers", "1", "--exit-branch", "linear", "--strategy", strategy, "--max-steps", "3",
                 "--batch-size", "4", "--eval-steps", "0", "--save-steps", "3", "--warmup-steps", "0",
                 "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "eval_wer_exit_1" in printed and "eval_wer" in printed
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "hubert_ee" and config["exit_training_strategy"] == strategy
    assert (output / "modeling_hubert_ee.py").is_file() and (output / "vocab.json").is_file()
    trained = HubertEEForCTC.from_pretrained(output)
    original = HubertForCTC.from_pretrained(backbone)
    same_backbone = torch.equal(trained.hubert.encoder.layers[1].feed_forward.output_dense.weight,
                                original.hubert.encoder.layers[1].feed_forward.output_dense.weight)
    assert same_backbone == (strategy != "joint")  # frozen strategies leave the backbone untouched


def test_trainer_really_lowers_exit_losses_and_resumes(backbone, tiny_corpus, tmp_path):
    from hubert_ee.data import load_speech_dataset, prepare_for_ctc
    from hubert_ee.export import convert_checkpoint
    from hubert_ee.train import CTCTrainer

    processor = build_processor()
    torch.manual_seed(0)
    model = convert_checkpoint(backbone, exit_layers=[1], exit_branch="transformer", init_from_backbone=False)
    data = prepare_for_ctc(load_speech_dataset(str(tiny_corpus), split="train"), processor)
    collator = DataCollatorCTCWithPadding(processor=processor)
    batch = collator([data[i] for i in range(len(data))])

    def exit_loss():
        model.eval()
        with torch.no_grad():
            return model(**batch, output_exit_logits=True).exit_losses[0].item()

    before = exit_loss()
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=30, per_device_train_batch_size=8,
                             learning_rate=3e-3, report_to="none", save_steps=15, logging_steps=10,
                             remove_unused_columns=False, disable_tqdm=True, seed=0)
    Trainer(model=model, args=args, train_dataset=data, data_collator=collator).train()
    after = exit_loss()
    assert after < 0.7 * before, (before, after)
    assert isinstance(CTCTrainer, type)


def test_resume_skips_a_checkpoint_cut_short_and_continues_from_the_newest_complete_one(backbone, tiny_corpus,
                                                                                       tmp_path, caplog):
    """A crash while checkpoint-4 was being saved (weights cut short, no trainer_state.json yet): `--resume` names
    the checkpoint it skips (not safetensors' "invalid header length" without a path), resumes from checkpoint-2
    and ends where the uninterrupted run ended."""
    import shutil

    from safetensors.torch import load_file

    run = tmp_path / "ctc"
    shutil.copytree(backbone, run)
    for path in run.iterdir():  # the final model was not saved yet
        if path.is_file():
            path.unlink()
    broken = run / "checkpoints" / "checkpoint-4"
    weights = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    (broken / "trainer_state.json").unlink()
    with caplog.at_level(logging.WARNING):
        code = main(["train-backbone", "--dataset", str(tiny_corpus), "--preset", "tiny", "--output", str(run),
                     "--max-steps", "4", "--batch-size", "4", "--eval-steps", "0", "--save-steps", "2",
                     "--warmup-steps", "0", "--logging-steps", "2", "--no-progress", "--resume"])
    assert code == 0
    assert any(f"skipping the incomplete checkpoint {broken} (it has no trainer_state.json" in record.getMessage()
               and f"resuming from {run / 'checkpoints' / 'checkpoint-2'}" in record.getMessage()
               for record in caplog.records), [record.getMessage() for record in caplog.records]
    expected, resumed = load_file(backbone / "model.safetensors"), load_file(run / "model.safetensors")
    assert max((expected[key] - resumed[key]).abs().max().item() for key in expected) <= 1e-6


def test_invalid_training_arguments_are_reported(tiny_corpus, tmp_path, capsys):
    code = main(["train", "--model", str(tmp_path / "nope"), "--dataset", str(tiny_corpus), "--output",
                 str(tmp_path / "o")])
    assert code == 2 and "nope" in capsys.readouterr().err


def test_max_minutes_stops_training_but_still_evaluates_and_saves(tiny_corpus, tmp_path, capsys):
    output = tmp_path / "ctc"
    code = main(["train-backbone", "--dataset", str(tiny_corpus), "--preset", "tiny", "--output", str(output),
                 "--max-steps", "50", "--max-minutes", "1e-6", "--batch-size", "4", "--eval-steps", "0",
                 "--save-steps", "100", "--warmup-steps", "0", "--logging-steps", "1", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "--max-minutes 1e-06: stopping after step 1 of 50" in out
    assert "eval_wer" in out or "wer" in out  # the end-of-training evaluation ran
    assert isinstance(HubertForCTC.from_pretrained(output), HubertForCTC)  # the final save ran
    state = json.loads((output / "checkpoints" / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and state["max_steps"] == 50  # the schedule still spans --max-steps
    code = main(["train-backbone", "--dataset", str(tiny_corpus), "--preset", "tiny", "--output", str(output),
                 "--max-minutes", "0"])
    assert code == 2 and "--max-minutes" in capsys.readouterr().err


def test_train_exits_under_torchrun_with_two_processes(backbone, tiny_corpus, tmp_path):
    """The same command under torchrun (2 CPU processes, gloo): trains data-parallel, rank 0 alone saves."""
    import os
    import subprocess
    import sys

    output = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "hubert_ee.cli"]
    result = subprocess.run(
        [*torchrun, "train", "--model", str(backbone), "--dataset", str(tiny_corpus), "--output", str(output),
         "--exit-layers", "1", "--exit-branch", "linear", "--max-steps", "2", "--batch-size", "2",
         "--eval-steps", "0", "--save-steps", "2", "--warmup-steps", "0", "--no-progress"],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("saved to") == 1
    assert (output / "modeling_hubert_ee.py").is_file()
    assert json.loads((output / "config.json").read_text())["model_type"] == "hubert_ee"


def test_utterances_ctc_cannot_align_are_dropped_and_reported(tmp_path, capsys):
    from hubert_ee.train import ctc_frames_needed

    assert ctc_frames_needed([5, 5, 6, -100]) == 4  # L, blank, L, O: a repeat needs a blank between
    rng = np.random.default_rng(0)
    clips = [{"array": (0.1 * rng.standard_normal(n)).astype(np.float32), "sampling_rate": 16000}
             for n in (16000, 16000, 1200)]
    texts = ["HELLO", "GOOD DAY", "A VERY LONG SENTENCE FOR SO LITTLE AUDIO"]  # 1200 samples = 3 tiny frames
    folder = tmp_path / "corpus"
    DatasetDict({"train": Dataset.from_dict({"audio": clips, "text": texts})}).save_to_disk(str(folder))
    code = main(["train-backbone", "--dataset", str(folder), "--preset", "tiny", "--output", str(tmp_path / "o"),
                 "--eval-split", "none", "--max-steps", "1", "--batch-size", "2", "--save-steps", "1",
                 "--warmup-steps", "0", "--no-progress"])
    assert code == 0
    assert "train: dropped 1 of 3 utterances" in capsys.readouterr().out


def test_gradient_accumulation_matches_the_full_batch(backbone, tiny_corpus, tmp_path):
    """`accepts_loss_kwargs = False`: the Trainer scales the loss for accumulation itself (transformers #47688);
    2 steps of 2 clips must make the same update as 1 step of 4."""
    from hubert_ee.data import load_speech_dataset, prepare_for_ctc
    from hubert_ee.export import convert_checkpoint

    assert HubertEEForCTC.accepts_loss_kwargs is False
    processor = build_processor()
    data = prepare_for_ctc(load_speech_dataset(str(tiny_corpus), split="dev"), processor)
    data = data.select(range(4))
    weights = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        torch.manual_seed(0)
        model = convert_checkpoint(backbone, exit_layers=[1], exit_branch="linear", ctc_loss_reduction="mean",
                                   layerdrop=0.0, mask_time_prob=0.0, hidden_dropout=0.0, attention_dropout=0.0,
                                   final_dropout=0.0)  # no randomness: the two runs must see the same numbers
        args = TrainingArguments(output_dir=str(tmp_path / f"ga{accumulation}"), max_steps=1, learning_rate=0.5,
                                 per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
                                 optim="sgd", lr_scheduler_type="constant", report_to="none", save_strategy="no",
                                 remove_unused_columns=False, disable_tqdm=True, seed=0, max_grad_norm=0.0,
                                 train_sampling_strategy="sequential")
        Trainer(model=model, args=args, train_dataset=data,
                data_collator=DataCollatorCTCWithPadding(processor=processor)).train()
        weights.append(model.exit_branches["1"].head.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-4, atol=1e-5)


def test_packed_training_continues_a_checkpoint_and_logs_throughput(backbone, tiny_corpus, tmp_path, capsys):
    """--init-from keeps the checkpoint's weights as the start; --pack-seconds trains on packed rows (two corpora
    here) and every training log carries audio-s/s and the padding share."""
    output = tmp_path / "continued"
    code = main(["train-backbone", "--init-from", str(backbone), "--dataset", str(tiny_corpus),
                 "--more-train-data", str(tiny_corpus), "--pack-seconds", "2", "--output", str(output),
                 "--max-steps", "2", "--batch-size", "2", "--eval-steps", "0", "--save-steps", "2",
                 "--warmup-steps", "0", "--logging-steps", "1", "--learning-rate", "0", "--precision", "fp32",
                 "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "packed training: 16 clips" in out and f"HubertForCTC from {backbone}" in out
    assert "audio_s_per_s" in out and "padding_share" in out and "speech_hours" in out
    state = json.loads((output / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    hours = [entry["speech_hours"] for entry in state["log_history"] if "speech_hours" in entry]
    assert len(hours) == 2 and 0 < hours[0] < hours[1] <= 2 * 2 * 2 / 3600  # 2 steps of 2 rows of 2 s at most
    start, continued = HubertForCTC.from_pretrained(backbone), HubertForCTC.from_pretrained(output)
    for name, value in start.state_dict().items():  # learning rate 0: the continued model is the start
        torch.testing.assert_close(continued.state_dict()[name], value)


def test_oversampled_corpus_is_repeated_to_its_share_of_the_packed_audio(backbone, tiny_corpus, tmp_path, capsys):
    """--oversample-data DATASET=SHARE repeats a corpus whole (here the same 8 clips: 3 copies make 3/4 of the
    audio); the copies are the same clips, augmented anew in each row."""
    code = main(["train-backbone", "--init-from", str(backbone), "--dataset", str(tiny_corpus),
                 "--oversample-data", f"{tiny_corpus}=0.75", "--pack-seconds", "2", "--output", str(tmp_path / "o"),
                 "--max-steps", "1", "--batch-size", "2", "--eval-split", "none", "--save-steps", "1",
                 "--warmup-steps", "0", "--precision", "fp32", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "x 3.00 = 75% of the training audio (asked 75%)" in out and "packed training: 32 clips" in out


@pytest.mark.parametrize("other_hours, share, copies", [(36.0, 0.25, 3.0), (27.0, 0.25, 2.25), (1.0, 0.25, 1.0),
                                                       (10.0, 0.5, 2.5)])
def test_oversample_indices_repeat_whole_copies_then_a_random_share_of_one(other_hours, share, copies):
    from hubert_ee.train import oversample_indices

    seconds = [36.0] * 400  # 4 h
    indices = oversample_indices(seconds, other_hours, share, seed=0)
    assert len(indices) == round(copies * 400)
    whole = int(copies)
    assert sorted(indices[: whole * 400]) == sorted(list(range(400)) * whole)  # every clip in every whole copy
    assert len(set(indices[whole * 400:])) == len(indices) - whole * 400  # the partial copy has no clip twice
    assert indices == oversample_indices(seconds, other_hours, share, seed=0)
    assert copies == whole or indices != oversample_indices(seconds, other_hours, share, seed=1)


def test_init_from_a_hubert_ee_folder_takes_its_backbone(backbone, tmp_path):
    from hubert_ee.export import convert_checkpoint, save_hub_folder
    from hubert_ee.metrics import head_names
    from hubert_ee.train import load_backbone

    early_exit = convert_checkpoint(backbone, exit_layers=[1], exit_branch="linear")
    folder = save_hub_folder(early_exit, build_processor(), tmp_path / "ee")
    loaded = load_backbone(str(folder), mask_time_prob=0.2)
    assert type(loaded) is HubertForCTC and loaded.config.mask_time_prob == 0.2
    assert not hasattr(loaded.config, "exit_layers") and head_names(loaded.config) == ["final"]
    torch.testing.assert_close(loaded.lm_head.weight, early_exit.lm_head.weight)
    torch.testing.assert_close(loaded.hubert.encoder.layers[1].feed_forward.output_dense.weight,
                               early_exit.hubert.encoder.layers[1].feed_forward.output_dense.weight)


@pytest.mark.parametrize("arguments, message", [
    (["--pack-seconds", "2"], "--max-steps"),
    (["--pack-seconds", "0", "--max-steps", "1"], "--pack-seconds must be > 0"),
    (["--more-train-data", "x", "--max-steps", "1"], "--more-train-data needs --pack-seconds"),
    (["--oversample-data", "x=0.25", "--max-steps", "1"], "--oversample-data needs --pack-seconds"),
    (["--init-from", "BACKBONE", "--hidden-size", "8", "--max-steps", "1"], "drop --hidden-size"),
])  # fmt: skip
def test_packed_and_continued_training_refuse_inconsistent_flags(backbone, tiny_corpus, tmp_path, capsys, arguments,
                                                                 message):
    arguments = [str(backbone) if item == "BACKBONE" else item for item in arguments]
    code = main(["train-backbone", "--dataset", str(tiny_corpus), "--output", str(tmp_path / "o"), "--preset",
                 "tiny", *arguments])
    assert code == 2 and message in capsys.readouterr().err


def test_throughput_meter_counts_speech_not_padding_and_leaves_evaluation_out():
    from hubert_ee.train import ThroughputMeter

    meter = ThroughputMeter(sampling_rate=100)
    packed = {"input_values": torch.zeros(2, 100), "speech_seconds": torch.tensor(1.5)}
    meter.add_batch(packed)
    assert "speech_seconds" not in packed  # the model does not take it
    meter.add_batch({"input_values": torch.zeros(2, 100), "attention_mask": torch.tensor([[1] * 100, [1] * 50 + [0] * 50])})
    meter.add_batch({"input_values": torch.zeros(1, 100)})
    with meter.paused():
        import time

        time.sleep(0.2)
    report = meter.report()
    assert report["speech_seconds"] == pytest.approx(4.0)
    assert report["padding_share"] == pytest.approx(1 - (1.5 + 1.5 + 1.0) / 5.0)
    assert report["audio_s_per_s"] > 4.0 / 0.2  # the paused 0.2 s are not counted
    assert meter.report()["padding_share"] == 0.0  # a new window


def test_precision_auto_is_bf16_only_where_the_device_computes_it_natively(monkeypatch):
    from hubert_ee.train import use_bf16

    assert use_bf16("fp32") is False and use_bf16("bf16") is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert use_bf16("auto") is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert use_bf16("auto") is True
    with pytest.raises(ValueError, match="--precision"):
        use_bf16("fp16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's TrainingArguments")
def test_bf16_and_torch_compile_reach_the_training_arguments_on_a_cpu(tmp_path):
    """bf16 on a CPU needs TrainingArguments told that it runs there (it refuses bf16 without a GPU otherwise)."""
    import argparse

    from hubert_ee.arguments import add_backbone_arguments
    from hubert_ee.train import _training_arguments

    parser = argparse.ArgumentParser()
    add_backbone_arguments(parser)
    common = ["--dataset", "d", "--output", str(tmp_path), "--max-steps", "1"]
    compiled = _training_arguments(parser.parse_args([*common, "--precision", "bf16", "--torch-compile"]), False)
    assert compiled.bf16 and compiled.use_cpu and compiled.torch_compile
    eager = _training_arguments(parser.parse_args([*common, "--precision", "fp32"]), False)
    assert not (eager.bf16 or eager.torch_compile)


BLOG_COLLATOR_AND_METRICS = '''
@dataclass
class DataCollatorCTCWithPadding:
    processor: Wav2Vec2Processor
    padding: bool | str = True

    def __call__(self, features):
        input_features = [{"input_values": feature["input_values"]} for feature in features]
        label_features = [{"input_ids": feature["labels"]} for feature in features]
        batch = self.processor.pad(input_features, padding=self.padding, return_tensors="pt")
        labels_batch = self.processor.pad(labels=label_features, padding=self.padding, return_tensors="pt")
        batch["labels"] = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
        return batch


def compute_metrics(pred):
    pred_ids = np.argmax(pred.predictions, axis=-1)
    pred.label_ids[pred.label_ids == -100] = processor.tokenizer.pad_token_id
    pred_str = processor.batch_decode(pred_ids)
    label_str = processor.batch_decode(pred.label_ids, group_tokens=False)
    return {"wer": wer_metric.compute(predictions=pred_str, references=label_str)}
'''


def blog_style_setup(tmp_path, clips: int = 8, **config):
    """What the blog's fine-tuning sets up, as a user writes it: a HuBERT-EE folder loaded through the Auto classes
    with `trust_remote_code`, examples/test-subset through `load_dataset("audiofolder")` and the blog's
    `prepare_dataset`, collator and `compute_metrics` (with the project's `evaluate` metric, offline)."""
    from dataclasses import dataclass
    from pathlib import Path

    import evaluate
    from datasets import Audio, load_dataset
    from transformers import AutoModelForCTC, AutoProcessor, Wav2Vec2Processor

    from hubert_ee.export import save_hub_folder
    from hubert_ee.metrics import EVALUATE_METRIC
    from tests.conftest import tiny_config

    torch.manual_seed(0)
    save_hub_folder(HubertEEForCTC(tiny_config(**config)), build_processor(), tmp_path / "model")
    model = AutoModelForCTC.from_pretrained(tmp_path / "model", trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(tmp_path / "model", trust_remote_code=True)
    subset = Path(__file__).resolve().parents[1] / "examples" / "test-subset"
    data = load_dataset("audiofolder", data_dir=str(subset), split="train",
                        cache_dir=str(tmp_path / "cache")).select(range(clips))
    data = data.cast_column("audio", Audio(sampling_rate=16000))

    def prepare_dataset(batch):
        audio = batch["audio"]
        batch["input_values"] = processor(audio["array"], sampling_rate=audio["sampling_rate"]).input_values[0]
        batch["labels"] = processor(text=batch["transcription"]).input_ids
        return batch

    data = data.map(prepare_dataset, remove_columns=data.column_names)
    namespace = {"dataclass": dataclass, "Wav2Vec2Processor": Wav2Vec2Processor, "np": np, "processor": processor,
                 "wer_metric": evaluate.load(EVALUATE_METRIC)}
    exec(BLOG_COLLATOR_AND_METRICS, namespace)
    return model, processor, data, namespace["DataCollatorCTCWithPadding"](processor=processor), namespace


def blog_training_arguments(tmp_path, steps: int = 10) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path / "run"), per_device_train_batch_size=4,
                             per_device_eval_batch_size=4, max_steps=steps, learning_rate=3e-3, warmup_steps=0,
                             save_strategy="no", report_to="none", disable_tqdm=True, seed=0)


def test_a_users_own_trainer_with_blog_style_collator_and_compute_metrics(tmp_path):
    """The Hugging Face blog's CTC fine-tuning, as a user writes it, on a HuBERT-EE folder configured like the
    shipped model (distill, early exit off) and examples/test-subset: `compute_metrics` gets the logits alone, the
    project's `evaluate` metric loads offline, only the branches learn, and `eval_loss` shows them learning."""
    model, processor, data, collator, namespace = blog_style_setup(
        tmp_path, exit_training_strategy="distill", early_exit=False)
    final_head = model.lm_head.weight.detach().clone()
    trainer = Trainer(model=model, train_dataset=data, eval_dataset=data, data_collator=collator,
                      compute_metrics=namespace["compute_metrics"], args=blog_training_arguments(tmp_path))
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert isinstance(after["eval_wer"], float) and after["eval_wer"] >= 0.0  # the blog's metric ran
    assert after["eval_loss"] < 0.9 * before["eval_loss"], (before, after)  # the branches' loss, as trained
    assert torch.equal(model.lm_head.weight, final_head)  # distill: the final head is frozen
    trainable = {name.split(".")[0] for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == {"exit_branches"}


def test_a_users_own_trainer_reports_every_exit_with_exit_metrics(tmp_path):
    """A plain `Trainer` with the blog's collator, `output_exit_logits` in the config and
    `hubert_ee.metrics.exit_metrics`: the evaluation reports WER and CER of the final head and of each exit, the
    exits' rates move with training while the frozen final head's stay put, and the saved config keeps the field."""
    from transformers import AutoConfig

    from hubert_ee.metrics import exit_metrics

    model, processor, data, collator, _ = blog_style_setup(
        tmp_path, exit_training_strategy="distill", early_exit=False, exit_layers=[1, 2])
    model.config.output_exit_logits = True
    compute_metrics, preprocess_logits_for_metrics = exit_metrics(processor, model.config)
    trainer = Trainer(model=model, train_dataset=data, eval_dataset=data, data_collator=collator,
                      compute_metrics=compute_metrics, preprocess_logits_for_metrics=preprocess_logits_for_metrics,
                      args=blog_training_arguments(tmp_path, steps=12))
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    rates = ["eval_wer", "eval_cer", "eval_wer_exit_1", "eval_cer_exit_1", "eval_wer_exit_2", "eval_cer_exit_2"]
    assert set(rates) <= set(after), sorted(after)
    assert all(isinstance(after[key], float) and after[key] >= 0.0 for key in rates)
    assert (before["eval_wer"], before["eval_cer"]) == (after["eval_wer"], after["eval_cer"])  # frozen final head
    exits = [key for key in rates if "exit" in key]
    assert [before[key] for key in exits] != [after[key] for key in exits], (before, after)
    trainer.save_model(str(tmp_path / "saved"))
    assert AutoConfig.from_pretrained(tmp_path / "saved", trust_remote_code=True).output_exit_logits is True


def test_exit_metrics_without_exit_logits_says_what_to_set(tmp_path):
    """`exit_metrics` with a model whose evaluation returns only the final logits (`output_exit_logits` off) fails
    at the first evaluation with one line naming the setting, instead of reporting the final head alone."""
    from hubert_ee.metrics import exit_metrics

    model, processor, data, collator, _ = blog_style_setup(tmp_path, clips=4, exit_layers=[1, 2])
    compute_metrics, preprocess_logits_for_metrics = exit_metrics(processor, model.config)
    trainer = Trainer(model=model, eval_dataset=data, data_collator=collator, compute_metrics=compute_metrics,
                      preprocess_logits_for_metrics=preprocess_logits_for_metrics,
                      args=blog_training_arguments(tmp_path))
    with pytest.raises(ValueError, match=r"\[batch, frames, 3\].*output_exit_logits = True"):
        trainer.evaluate()


def test_evaluation_of_a_plain_backbone_with_an_attention_mask_blanks_its_padding(tmp_path):
    """`train-backbone` evaluates a plain `HubertForCTC`: its predictions come through the same greedy decode as
    HuBERT-EE's (padding frames -100), although it has no `frame_lengths` of its own."""
    from hubert_ee.train import CTCTrainer

    processor = build_processor()
    torch.manual_seed(0)
    config = HubertConfig(vocab_size=len(processor.tokenizer), hidden_size=16, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 4),
                          conv_kernel=(10, 4), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
                          feat_extract_norm="layer", pad_token_id=0)
    model = HubertForCTC(config).eval()
    trainer = CTCTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none",
                                                             use_cpu=True))
    inputs = {"input_values": torch.randn(2, 800), "attention_mask": torch.tensor([[1] * 800, [1] * 300 + [0] * 500]),
              "labels": torch.tensor([[5, 6], [5, -100]])}
    _, ids, _ = trainer.prediction_step(model, inputs, prediction_loss_only=False)
    short = int(model._get_feat_extract_output_lengths(torch.tensor(300)))
    assert ids.shape[-1] == 1 and (ids[1, short:, 0] == -100).all() and (ids[1, :short, 0] >= 0).all()


def _train_backbone(corpus, output, save_steps, *extra):
    # 8 clips, batch 4: 2 steps per epoch, 6 steps = 3 epochs; dropout, layerdrop and time masking all on (preset)
    code = main(["train-backbone", "--dataset", str(corpus), "--preset", "tiny", "--output", str(output),
                 "--max-steps", "6", "--batch-size", "4", "--eval-split", "none", "--save-steps", str(save_steps),
                 "--warmup-steps", "1", "--learning-rate", "1e-2", "--logging-steps", "1", "--seed", "7",
                 "--no-progress", *extra])
    assert code == 0


def _interrupt_after(run, folder, step):
    """A copy of `run` as if it had died right after checkpoint-`step`: later checkpoints and the model are gone."""
    shutil.copytree(run, folder)
    for path in folder.iterdir():
        if path.is_file():
            path.unlink()
    for checkpoint in (folder / "checkpoints").glob("checkpoint-*"):
        if int(checkpoint.name.split("-")[1]) > step:
            shutil.rmtree(checkpoint)
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [f"checkpoint-{step}"]


def _losses(run):
    state = json.loads((run / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def _max_difference(first, second):
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys()
    return max((a[key] - b[key]).abs().max().item() for key in a)


def test_resume_gives_the_uninterrupted_result(tiny_corpus, tmp_path):
    from hubert_ee.train import CTCTrainer

    mid_epoch_run, epoch_end_run = tmp_path / "save3", tmp_path / "save2"
    _train_backbone(tiny_corpus, mid_epoch_run, 3)  # checkpoints 3 (mid-epoch) and 6
    _train_backbone(tiny_corpus, epoch_end_run, 2)  # checkpoints 4 (end of epoch 2) and 6 (the limit keeps 2)
    assert _max_difference(mid_epoch_run, epoch_end_run) == 0.0  # same seed, same result; saving changes nothing
    assert _max_difference(mid_epoch_run, tmp_path / "save3" / "checkpoints" / "checkpoint-3") > 1e-3

    resumed_at_epoch_end = tmp_path / "resumed4"
    _interrupt_after(epoch_end_run, resumed_at_epoch_end, 4)
    _train_backbone(tiny_corpus, resumed_at_epoch_end, 2, "--resume")
    assert _max_difference(epoch_end_run, resumed_at_epoch_end) <= 1e-6
    assert _losses(resumed_at_epoch_end) == _losses(epoch_end_run)  # steps 5-6 logged again, identically

    resumed_mid_epoch = tmp_path / "resumed3"
    _interrupt_after(mid_epoch_run, resumed_mid_epoch, 3)
    _train_backbone(tiny_corpus, resumed_mid_epoch, 3, "--resume")
    difference = _max_difference(mid_epoch_run, resumed_mid_epoch)
    if difference > 1e-6 and "_get_train_sampler" not in CTCTrainer.__dict__:
        # transformers' LengthGroupedSampler draws each epoch's order from the global RNG when the epoch starts, so
        # the epoch resumed mid-way gets another order (proposed fix: an epoch-seeded sampler in CTCTrainer)
        pytest.xfail(f"mid-epoch resume differs by {difference:.2e} (group_by_length sampler not resumable)")
    assert difference <= 1e-6
    assert _losses(resumed_mid_epoch) == _losses(mid_epoch_run)


class _Logs(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logs.append(dict(logs))


def _ctc_batch(impossible_rows, rows=2, samples=400):
    """Tiny conv front end: 400 samples -> 9 frames. 20 labels cannot be aligned to 9 frames; 3 can."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.full((rows, 20), -100)
    for row in range(rows):
        labels[row] = torch.arange(5, 25) if row in impossible_rows else labels[row].index_fill(0, torch.arange(3), 6)
    return torch.randn(rows, samples, generator=generator), labels


def test_impossible_alignment_gives_zero_loss_for_that_item():
    input_values, labels = _ctc_batch(impossible_rows={1})
    for reduction in ("sum", "mean"):
        model = tiny_model(ctc_zero_infinity=True, ctc_loss_reduction=reduction, exit_training_strategy="joint")
        with torch.no_grad():
            alone = model(input_values[:1], labels=labels[:1], output_exit_logits=True)
            both = model(input_values, labels=labels, output_exit_logits=True)
            inference = model(input_values, labels=labels)  # early-exit path computes a loss too
        assert torch.isfinite(inference.loss)
        scale = 1.0 if reduction == "sum" else 0.5  # "mean" averages over the batch: the 0 counts
        torch.testing.assert_close(both.loss, alone.loss * scale)
        torch.testing.assert_close(both.exit_losses, alone.exit_losses * scale)
        model.train()
        loss = model(input_values, labels=labels).loss
        loss.backward()
        assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters()
                                            if p.grad is not None)
    # without ctc_zero_infinity (HubertConfig's default) the same batch is infinite: train.py turns it on
    model = tiny_model(ctc_zero_infinity=False, exit_training_strategy="joint")
    with torch.no_grad():
        assert math.isinf(model(input_values, labels=labels, output_exit_logits=True).loss.item())
    from hubert_ee.train import build_backbone_config

    assert build_backbone_config("tiny", 32).ctc_zero_infinity is True


@pytest.mark.parametrize("zero_infinity", [True, False])
def test_what_the_trainer_logs_for_impossible_batches(tmp_path, zero_infinity):
    input_values, labels = _ctc_batch(impossible_rows={0, 1, 2, 3}, rows=4)
    data = [{"input_values": input_values[i], "labels": labels[i]} for i in range(4)]
    model = tiny_model(ctc_zero_infinity=zero_infinity, exit_training_strategy="joint")
    before = {key: value.clone() for key, value in model.state_dict().items()}
    logs = _Logs()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2,
                             learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none",
                             disable_tqdm=True, remove_unused_columns=False, use_cpu=True)
    collate = lambda items: {key: torch.stack([item[key] for item in items]) for key in items[0]}  # noqa: E731
    Trainer(model=model, args=args, train_dataset=data, data_collator=collate, callbacks=[logs]).train()
    after = model.state_dict()
    assert [log["loss"] for log in logs.logs] == [0.0, 0.0]  # the Trainer shows a loss of 0 either way
    if zero_infinity:  # every item zeroed: no gradient, nothing changes, nothing breaks
        assert [log["grad_norm"] for log in logs.logs] == [0.0, 0.0]
        assert all(torch.equal(before[key], after[key]) for key in before)
    else:  # inf loss, filtered out of the log (logging_nan_inf_filter), but NaN gradients ruin the weights
        assert all(math.isnan(log["grad_norm"]) for log in logs.logs)
        assert not all(torch.isfinite(value).all() for value in after.values())
