"""Shared fixtures: tiny random HuBERT and wav2vec2 configs (both encoder variants) and helpers, so the suite stays
fast."""

import os

import pytest
import torch

# Deterministic and cheap on the 2-core CI machine.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from configuration_hubert_ee import HubertEEConfig  # noqa: E402

TINY = dict(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=2,
    intermediate_size=37,
    conv_dim=(16, 16, 16),
    conv_stride=(5, 4, 2),
    conv_kernel=(10, 8, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    vocab_size=32,
    feat_extract_norm="layer",
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
    final_dropout=0.0,
    layerdrop=0.0,
    mask_time_prob=0.0,
)


# The backbones early exit is built on: the early-exit config and model classes (by root module) of each.
BACKBONES = {"hubert": ("configuration_hubert_ee.HubertEEConfig", "modeling_hubert_ee.HubertEEForCTC"),
             "wav2vec2": ("configuration_wav2vec2_ee.Wav2Vec2EEConfig", "modeling_wav2vec2_ee.Wav2Vec2EEForCTC")}


def backbone_class(backbone: str, which: int):
    """The early-exit config (`which=0`) or model (`which=1`) class of `backbone` ("hubert", "wav2vec2")."""
    import importlib

    module, name = BACKBONES[backbone][which].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def tiny_config(backbone: str = "hubert", **overrides) -> HubertEEConfig:
    return backbone_class(backbone, 0)(**{**TINY, "exit_layers": [1, 2, 3], **overrides})


def tiny_hubert_kwargs(**overrides) -> dict:
    """Keyword arguments of a tiny plain `HubertConfig` (no early-exit fields)."""
    return {**TINY, **overrides}


def sharpen_branches(model, scale: float = 8.0, seed: int = 0):
    """Random branches are near-uniform and never confident; scaled random heads give a spread of confidences
    (different per utterance and per exit), so the exit logic has something to decide."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for branch in model.exit_branches.values():
            branch.head.weight.copy_(torch.randn(branch.head.weight.shape, generator=generator) * scale)
    return model


def tiny_model(backbone: str = "hubert", **overrides):
    """A tiny early-exit model of `backbone` in eval mode (seed 0, sharpened branches, exit threshold 0.5 unless
    overridden)."""
    torch.manual_seed(0)
    config = tiny_config(backbone, **{"exit_threshold": 0.5, **overrides})
    return sharpen_branches(backbone_class(backbone, 1)(config)).eval()


def noise(seconds, rate: int = 16000, seed: int = 0, scale: float = 0.3):
    """`seconds` of white noise at `rate`, float32: stands in for speech wherever only the shape matters."""
    import numpy as np

    return (scale * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    """`tiny_model()` saved with its processor as a Hub folder (code files included), once per test module."""
    from hubert_ee.export import save_hub_folder
    from hubert_ee.text import build_processor

    return save_hub_folder(tiny_model(), build_processor(), tmp_path_factory.mktemp("hub") / "hub")


def saved_tiny_model(parent, name: str = "ckpt", **overrides):
    """`tiny_model(**overrides)` saved with `save_pretrained` to `parent / name`; returns that folder."""
    folder = parent / name
    tiny_model(**overrides).save_pretrained(folder)
    return folder


def edit_config_json(folder, **fields):
    """Overwrite `fields` in `folder/config.json` as a hand edit would (no validation on the way)."""
    import json

    config = json.loads((folder / "config.json").read_text())
    config.update(fields)
    (folder / "config.json").write_text(json.dumps(config))


def padded_batch(lengths, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    input_values = torch.randn(len(lengths), longest, generator=generator)
    attention_mask = torch.zeros(len(lengths), longest, dtype=torch.long)
    for row, length in enumerate(lengths):
        attention_mask[row, :length] = 1
        input_values[row, length:] = 0.0
    return input_values, attention_mask


@pytest.fixture(params=[False, True], ids=["post-norm", "stable-layer-norm"])
def stable_layer_norm(request):
    return request.param


REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_with_file_size_limit(code: str, limit_bytes: int):
    """Run Python `code` in a fresh process that may write no file past `limit_bytes`, as on a full disk (a write
    past it fails with EFBIG; Python ignores the SIGXFSZ signal). Returns the CompletedProcess."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=limit,
                          cwd=REPOSITORY_ROOT, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, timeout=300)


def repository_status(*paths: str) -> str:
    """`git status --porcelain` of `paths` in this repository (skips the test outside a git checkout)."""
    import subprocess

    try:
        result = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", *paths],
                                cwd=REPOSITORY_ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return result.stdout


def folder_contents(folder) -> dict:
    """{relative path: bytes} of every file under `folder`: equal before and after means nothing changed."""
    from pathlib import Path

    folder = Path(folder)
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}
