"""hubert_ee.checkpoints: a Trainer checkpoint counts as complete only when everything a resume reads is whole."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from transformers import Trainer, TrainingArguments

from hubert_ee.checkpoints import checkpoint_problem, newest_complete_checkpoint, resume_checkpoint
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real Trainer checkpoint (weights, optimizer, scheduler, RNG state, trainer_state.json) after one step."""
    torch.manual_seed(0)
    model = HubertEEForCTC(tiny_config(exit_training_strategy="joint"))
    data = [{"input_values": torch.randn(800), "labels": torch.tensor([5, 6, 7])} for _ in range(2)]
    run = tmp_path_factory.mktemp("run")
    args = TrainingArguments(output_dir=str(run), max_steps=1, per_device_train_batch_size=2, save_steps=1,
                             report_to="none", disable_tqdm=True, remove_unused_columns=False, use_cpu=True)
    collate = lambda items: {key: torch.stack([item[key] for item in items]) for key in items[0]}  # noqa: E731
    Trainer(model=model, args=args, train_dataset=data, data_collator=collate).train()
    return run / "checkpoint-1"


def _cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


SAVES_CUT_SHORT = {
    # what a crash at each point of the Trainer's save leaves (it writes trainer_state.json last)
    "weights cut, no state yet": (lambda c: (_cut(c / "model.safetensors"), (c / "trainer_state.json").unlink()),
                                  "no trainer_state.json"),
    "state cut short": (lambda c: _cut(c / "trainer_state.json"), "trainer_state.json is cut short"),
    "weights cut short": (lambda c: _cut(c / "model.safetensors", 0.99), "model.safetensors is cut short"),
    "optimizer cut short": (lambda c: _cut(c / "optimizer.pt"), "optimizer.pt is cut short"),
    "scheduler cut short": (lambda c: _cut(c / "scheduler.pt", 0.9), "scheduler.pt is cut short"),
    # and what a deletion of an old checkpoint stopped midway leaves
    "optimizer deleted": (lambda c: (c / "optimizer.pt").unlink(), "the optimizer state (optimizer.pt or"),
    "RNG state deleted": (lambda c: (c / "rng_state.pth").unlink(), "the RNG state"),
    "weights deleted": (lambda c: (c / "model.safetensors").unlink(), "it holds no weights"),
}


def test_a_whole_checkpoint_is_complete(checkpoint):
    assert checkpoint_problem(checkpoint) is None


@pytest.mark.parametrize("damage", list(SAVES_CUT_SHORT))
def test_a_save_cut_short_anywhere_is_never_taken_for_complete(checkpoint, tmp_path, damage):
    copy = tmp_path / "checkpoint-1"
    shutil.copytree(checkpoint, copy)
    cut, problem = SAVES_CUT_SHORT[damage]
    cut(copy)
    assert problem in checkpoint_problem(copy)


def test_resume_takes_the_newest_complete_checkpoint_and_names_the_skipped_ones(checkpoint, tmp_path, caplog):
    for step in (2, 10, 11):
        shutil.copytree(checkpoint, tmp_path / f"checkpoint-{step}")
    _cut(tmp_path / "checkpoint-11" / "model.safetensors")  # newest: a save cut short
    (tmp_path / "checkpoint-9").mkdir()  # an older, empty one is not "skipped": a newer one is complete
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name
    with caplog.at_level(logging.WARNING, logger="hubert_ee.checkpoints"):
        assert resume_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")  # 10 > 2: by number, not by name
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert messages[0].startswith(f"--resume: skipping the incomplete checkpoint {tmp_path / 'checkpoint-11'} (")
    assert messages[0].endswith(f"; resuming from {tmp_path / 'checkpoint-10'}")
    shutil.rmtree(tmp_path / "checkpoint-10")
    shutil.rmtree(tmp_path / "checkpoint-2")
    assert newest_complete_checkpoint(tmp_path)[0] is None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hubert_ee.checkpoints"):
        assert resume_checkpoint(tmp_path) is None
    assert all("no complete checkpoint is left, starting from scratch" in record.getMessage()
               for record in caplog.records) and len(caplog.records) == 2


def test_checkpoint_step_reads_the_folder_name_and_refuses_other_folders(tmp_path):
    from hubert_ee.checkpoints import checkpoint_step

    assert checkpoint_step(tmp_path / "checkpoint-1200") == 1200
    with pytest.raises(ValueError, match="not a Trainer checkpoint folder"):
        checkpoint_step(tmp_path / "checkpoint-last")
