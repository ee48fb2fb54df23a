"""Push stage: `hubert-ee push --model FOLDER --repo-id ORG/NAME [--private]` uploads a Hub-ready folder.

What is uploaded is decided and checked here (`files_to_upload`); the upload itself is one thin
`huggingface_hub.HfApi` call. The token comes from the usual places (`HF_TOKEN`, `huggingface-cli login`).
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import HfApi, ModelCard

from . import CODE_FILES_BY_MODEL_TYPE
from .loading import folder_identity, identity_mismatches, weight_files

REQUIRED = ("config.json", "vocab.json", "tokenizer_config.json", "README.md")
OPTIONAL = ("special_tokens_map.json", "preprocessor_config.json", "processor_config.json", "added_tokens.json",
            "generation_config.json")


def files_to_upload(folder: str | Path) -> list[str]:
    """Names of the files to upload, relative to `folder`; raises naming whatever a Hub user would miss."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--model {folder} is not a folder.")
    config_file = folder / "config.json"
    model_type = json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
    required = (*REQUIRED, *CODE_FILES_BY_MODEL_TYPE.get(model_type, ()))
    missing = [name for name in required if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        missing.append("preprocessor_config.json or processor_config.json (feature extractor)")
    weights = weight_files(folder)
    if not weights:
        missing.append("model.safetensors (or model.safetensors.index.json and its shards)")
    if missing:
        how = []
        if set(CODE_FILES_BY_MODEL_TYPE.get(model_type, ())) & set(missing):
            how.append("save it with hubert_ee.export.save_hub_folder (weights, config, code files, processor)")
        if "README.md" in missing:
            how.append(f"write the model card with `hubert-ee card --model {folder} --eval EVAL.json` (EVAL.json: "
                       f"`hubert-ee evaluate --model {folder} --json EVAL.json`)")
        raise FileNotFoundError(f"{folder} is not Hub-ready, it lacks: {missing}" + "".join(f"; {h}" for h in how))
    config = json.loads(config_file.read_text())
    if model_type not in CODE_FILES_BY_MODEL_TYPE or "AutoModelForCTC" not in (config.get("auto_map") or {}):
        raise ValueError(f"{folder}/config.json is not an early-exit config ({sorted(CODE_FILES_BY_MODEL_TYPE)}) "
                         "with auto_map; save it with save_hub_folder.")
    check_card_describes(folder, ModelCard.load(folder / "README.md"))  # parses, or the Hub page is broken
    optional = [name for name in OPTIONAL if (folder / name).is_file()]
    extra = [path.name for path in folder.glob("*.png")]  # plots the card shows
    return sorted({*required, *optional, *weights, *extra, *language_model_files(folder)})


def language_model_files(folder: Path) -> list[str]:
    """The n-gram LM's files (`hubert_ee.language_model`'s layout): `alphabet.json`, `language_model/*` and the
    processor code that `processor_config.json` names; raises naming what a folder with an LM lacks."""
    from .language_model import ALPHABET_FILE, LM_DIRECTORY, PROCESSOR_CODE_FILE

    if not (folder / LM_DIRECTORY).is_dir():
        return []
    files = [ALPHABET_FILE, PROCESSOR_CODE_FILE, *(f"{LM_DIRECTORY}/{path.name}"
                                                  for path in sorted((folder / LM_DIRECTORY).iterdir()))]
    missing = [name for name in files[:2] + [f"{LM_DIRECTORY}/attrs.json"] if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} has a {LM_DIRECTORY}/ directory but lacks {missing}: rebuild it with "
                                "`hubert-ee build-lm`.")
    return files


def check_card_describes(folder: Path, card: ModelCard) -> None:
    """Refuse a card that `hubert-ee card` wrote for another model: the geometry and weights fingerprint it records
    (its metadata's `hubert_ee_model`) must be the folder's. A card without that record is not checked."""
    from .card import IDENTITY_KEY

    recorded = card.data.to_dict().get(IDENTITY_KEY)
    if not recorded:
        return
    mismatches = identity_mismatches(recorded, folder_identity(folder))
    if mismatches:
        raise ValueError(
            f"{folder}/README.md describes another model than the folder holds: {'; '.join(mismatches)} (card vs "
            f"folder); write the card again with `hubert-ee card --model {folder} --eval EVAL.json`."
        )


def push(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None,
         commit_message: str = "Upload HuBERT-EE model") -> str:
    """Create the repository (if needed) and upload exactly `files_to_upload(folder)`; returns the commit URL."""
    files = files_to_upload(folder)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                               allow_patterns=files, commit_message=commit_message)
    return str(getattr(commit, "commit_url", commit))


def run(args) -> int:
    files = files_to_upload(args.model)
    print(f"{len(files)} files from {args.model}: " + ", ".join(files))
    if args.dry_run:
        return 0
    print(f"uploaded: {push(args.model, args.repo_id, private=args.private, token=args.token)}")
    return 0
