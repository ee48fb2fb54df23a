"""Trainer checkpoints: which one `--resume` continues from.

The Trainer writes a checkpoint's files one after another into `checkpoint-STEP/` (weights, optimizer, scheduler,
RNG states, and `trainer_state.json` last), so a crash or a full disk while it saves leaves a folder of that name
with files missing or cut short. The Trainer's own `resume_from_checkpoint=True` takes the highest-numbered folder
whatever it holds, and then fails inside the safetensors reader without naming a path. Here a checkpoint counts
as complete only when every file a resume reads is there and whole (`checkpoint_problem`): a save cut short at any
point never passes for complete. `resume_checkpoint` picks the newest complete checkpoint and names each newer one
it skips and why. (A skipped folder stays as it is; the run writes its next checkpoint of that step over it.)
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from pathlib import Path

from safetensors import safe_open
from transformers.trainer import OPTIMIZER_NAME, OPTIMIZER_NAME_BIN, SCHEDULER_NAME, TRAINER_STATE_NAME

logger = logging.getLogger(__name__)

__all__ = ["checkpoint_problem", "checkpoint_step", "newest_complete_checkpoint", "resume_checkpoint"]

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
# What a resume reads besides the weights; the RNG states (one per process under torchrun) keep it bit-identical.
REQUIRED = {"the optimizer state": (OPTIMIZER_NAME, OPTIMIZER_NAME_BIN), "the scheduler state": (SCHEDULER_NAME,),
            "the RNG state": ("rng_state.pth", "rng_state_0.pth")}
TORCH_FILE_PATTERNS = ("*.pt", "*.pth", "*.bin")


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why the Trainer checkpoint `folder` cannot be resumed from (a file missing or cut short), or None."""
    folder = Path(folder)
    try:
        json.loads((folder / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"it has no {TRAINER_STATE_NAME} (written last: the save did not finish)"
    except ValueError:
        return f"its {TRAINER_STATE_NAME} is cut short"
    for what, names in REQUIRED.items():
        if not any((folder / name).is_file() for name in names):
            return f"{what} ({' or '.join(names)}) is missing"
    return _weights_problem(folder) or _torch_files_problem(folder)


def _weights_problem(folder: Path) -> str | None:
    weights = sorted(folder.glob("*.safetensors"))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError, AttributeError):
            return f"{index.name} is cut short"
        missing = sorted(shard for shard in shards if not (folder / shard).is_file())
        if missing:
            return f"weight shard(s) {missing} are missing"
    if not weights and not any(folder.glob("pytorch_model*.bin")):
        return "it holds no weights"
    for path in weights:
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as error:  # safetensors' SafetensorError: a header cut off, or data short of it
            return f"{path.name} is cut short ({error})"
    return None


def _torch_files_problem(folder: Path) -> str | None:
    """torch.save writes a zip archive whose directory is at its end: a file cut short has none."""
    for pattern in TORCH_FILE_PATTERNS:
        for path in sorted(folder.glob(pattern)):
            if not zipfile.is_zipfile(path):
                return f"{path.name} is cut short"
    return None


def checkpoint_step(checkpoint: str | Path) -> int:
    """The step a `checkpoint-STEP` folder was saved at."""
    match = CHECKPOINT_NAME.match(Path(checkpoint).name)
    if match is None:
        raise ValueError(f"{checkpoint} is not a Trainer checkpoint folder (checkpoint-STEP)")
    return int(match.group(1))


def newest_complete_checkpoint(folder: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest complete checkpoint in `folder` or None, [(checkpoint, problem)] of the newer incomplete ones)."""
    found = [path for path in Path(folder).glob("checkpoint-*") if path.is_dir() and CHECKPOINT_NAME.match(path.name)]
    found.sort(key=checkpoint_step, reverse=True)
    skipped = []
    for path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


def resume_checkpoint(folder: str | Path) -> str | None:
    """The checkpoint `--resume` continues from: the newest complete one in `folder` (None: start from scratch),
    with a warning naming each newer, incomplete checkpoint it skips and why."""
    newest, skipped = newest_complete_checkpoint(folder)
    then = f"resuming from {newest}" if newest else "no complete checkpoint is left, starting from scratch"
    for path, problem in skipped:
        logger.warning("--resume: skipping the incomplete checkpoint %s (%s); %s", path, problem, then)
    if newest is None and not skipped:
        logger.warning("--resume: no checkpoint in %s yet, starting from scratch", folder)
    return None if newest is None else str(newest)
