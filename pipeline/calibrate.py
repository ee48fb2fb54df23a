"""Calibrate stage: choose an operating point on a dev set and write it into the model's `config.json`.

`hubert-ee calibrate --model FOLDER --dataset DEV [--max-wer-increase 0.5]` runs the evaluation of
`hubert_ee.evaluate` (exits, threshold sweep with measured speedups), then picks the sweep row with the largest
measured speedup whose WER stays within `--max-wer-increase` absolute percentage points of the final head's
(ties: the lower WER), and stores it as the model's default (`exit_criterion`, `exit_threshold`, `exit_patience`,
`early_exit`), so `from_pretrained` + `generate` use it without arguments.

It writes into the folder that `--model` names, and only there: `config.json`'s early-exit fields and, when the
folder has a card written by `hubert-ee card` (README.md), the card's operating-point line, both replaced at once
(`hubert_ee.outputs.write_texts`). The folder's code files are never touched. Without `--model` (the default model)
nothing is written into a model folder; the choice is printed (and saved with `--json`).

A row only counts when it is actually faster than the full model (`speedup > --min-speedup`, default 1.0): an
early-exit setting that is slower than not exiting is never worth choosing. If no row qualifies, early exit is
switched off (`early_exit=False`: the model then behaves exactly like `HubertForCTC`).

Calibrate on a development split, never on the test split you report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .card import SETTING_LINE, card_with_operating_point
from .evaluate import (
    UsageError,
    add_evaluation_arguments,
    add_model_argument,
    evaluate_from_args,
    resolve_model_spec,
)
from .outputs import OutputPathError, check_output_path, output_file, write_json, write_texts

__all__ = ["choose_operating_point", "write_operating_point", "add_arguments", "run"]

WER_TOLERANCE = 1e-9  # float noise in "WER <= final_wer + max_wer_increase"


def choose_operating_point(result: dict, max_wer_increase: float, min_speedup: float = 1.0) -> dict[str, Any]:
    """Pick the operating point from an `evaluate_model` result.

    Among the `sweep` rows with `wer <= final_wer + max_wer_increase` (absolute percentage points),
    `speedup > min_speedup` and some utterance exiting early (`mean_exit_layer < num_hidden_layers`), the one
    with the largest `speedup`; ties go to the lower WER, then to the earlier row.

    Returns `{"early_exit", "exit_criterion", "exit_threshold", "exit_patience", "wer", "speedup",
    "mean_exit_layer", "final_wer", "max_wer", "row"}`. For a confidence/entropy row `exit_patience` is None (keep
    the config's), for a patience row `exit_threshold` is None. When no row qualifies: `early_exit=False`, the
    criterion fields None, `wer = final_wer`, `speedup = 1.0`, `mean_exit_layer = num_hidden_layers`, `row=None`.
    """
    if max_wer_increase < 0:
        raise ValueError(f"max_wer_increase must be >= 0 (percentage points), got {max_wer_increase}")
    final_wer = float(result["final_wer"])
    max_wer = final_wer + float(max_wer_increase)
    num_layers = result.get("num_hidden_layers")
    qualifying = [
        (index, row) for index, row in enumerate(result.get("sweep") or [])
        if row["wer"] <= max_wer + WER_TOLERANCE and row["speedup"] > min_speedup
        # a setting under which no utterance exits cannot be faster: a measured speedup > 1 there is timing noise
        and not (num_layers and row["mean_exit_layer"] >= num_layers)
    ]
    choice: dict[str, Any] = {"final_wer": final_wer, "max_wer": max_wer}
    if not qualifying:
        choice.update(
            early_exit=False, exit_criterion=None, exit_threshold=None, exit_patience=None, wer=final_wer,
            speedup=1.0, mean_exit_layer=float(result.get("num_hidden_layers", 0)) or None, row=None,
        )
        return choice
    _, row = min(qualifying, key=lambda item: (-item[1]["speedup"], item[1]["wer"], item[0]))
    patience_row = row["criterion"] == "patience"
    choice.update(
        early_exit=True,
        exit_criterion=row["criterion"],
        exit_threshold=None if patience_row else float(row["threshold"]),
        exit_patience=int(row["patience"]) if patience_row else None,
        wer=float(row["wer"]),
        speedup=float(row["speedup"]),
        mean_exit_layer=float(row["mean_exit_layer"]),
        row=dict(row),
    )
    return choice


def write_operating_point(folder: str | Path, choice: dict, note: str = "chosen by `hubert-ee calibrate`"
                          ) -> dict[str, Any]:
    """Write `choice` (from `choose_operating_point`) into `folder/config.json`; returns the fields written.

    Only the early-exit fields of config.json change (validated first; every other field, `auto_map` included, is
    kept as it is). When `folder/README.md` is a card written by `hubert-ee card`, its operating-point line is
    updated too, followed by `note` (`hubert_ee.card.card_with_operating_point`). Both files are replaced at once,
    each through a temporary file in the folder, so a failed write leaves the folder as it was; the code files
    are not touched. Fields the choice leaves at None (the unused threshold or patience, or everything when early
    exit is off) keep their values.
    """
    from configuration_hubert_ee import HubertEEConfig

    folder = Path(folder)
    config_path = check_output_path(folder / "config.json", "the model's config")
    config = HubertEEConfig.from_pretrained(str(folder))
    fields: dict[str, Any] = {"early_exit": bool(choice["early_exit"])}
    for name in ("exit_criterion", "exit_threshold", "exit_patience"):
        if choice.get(name) is not None:
            fields[name] = choice[name]
    config.validate_exit_settings(**fields)
    for name, value in fields.items():
        setattr(config, name, value)
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    files = {config_path: json.dumps({**saved, **fields}, indent=2, sort_keys=True) + "\n"}
    card_path = folder / "README.md"
    if card_path.is_file():
        card = card_with_operating_point(card_path.read_text(encoding="utf-8"), config, note)
        if card is None:
            print(f"note: {card_path} is not a card written by `hubert-ee card` (no operating-point line): left "
                  "unchanged", file=sys.stderr)
        else:
            files[check_output_path(card_path, "the model's card")] = card
    write_texts(files)
    return fields


def _local_model_folder(spec: str) -> Path:
    folder = Path(spec).expanduser()
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise UsageError(
            f"calibrate writes the chosen operating point into the model's config.json, so --model must be a local "
            f"model folder holding config.json; got {spec!r}. Download or export the model into a folder first "
            "(e.g. the output folder of `hubert-ee train`, or `hf download ID --local-dir FOLDER`)."
        )
    return folder


def _folder_to_write(args) -> Path | None:
    """The model folder calibrate will write (checked before the evaluation), or None: no --model."""
    if not args.model:
        return None
    folder = _local_model_folder(args.model)
    if not args.dry_run:
        check_output_path(folder / "config.json", "the model's config")
        if (folder / "README.md").exists():
            check_output_path(folder / "README.md", "the model's card")
    return folder


def describe_choice(choice: dict, num_layers: int | None = None) -> str:
    if not choice["early_exit"]:
        return (
            f"no early-exit setting is both faster than the full model and within WER {choice['max_wer']:.2f} % "
            f"(final head {choice['final_wer']:.2f} %): early exit switched off (early_exit=False)"
        )
    if choice["exit_criterion"] == "patience":
        setting = f"patience criterion, exit_patience={choice['exit_patience']}"
    else:
        setting = f"{choice['exit_criterion']} criterion, exit_threshold={choice['exit_threshold']:g}"
    layers = f"/{num_layers}" if num_layers else ""
    return (
        f"{setting}: expected WER {choice['wer']:.2f} % (final head {choice['final_wer']:.2f} %, "
        f"{choice['wer'] - choice['final_wer']:+.2f} points), expected speedup {choice['speedup']:.2f}x (measured), "
        f"mean exit layer {choice['mean_exit_layer']:.2f}{layers}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `hubert-ee calibrate`."""
    add_model_argument(parser, " For calibrate it must be a local folder, whose config.json (and card, README.md) "
                       "get the choice. Without --model nothing is written into a model folder: the choice is "
                       "printed (and written to --json).")
    add_evaluation_arguments(parser)
    parser.add_argument(
        "--max-wer-increase", type=float, default=0.5,
        help="Largest WER increase over the final head that is acceptable, in absolute percentage points "
        "(default: 0.5, e.g. 5.0 %% -> at most 5.5 %%).",
    )
    parser.add_argument(
        "--min-speedup", type=float, default=1.0,
        help="A setting is only chosen when its measured speedup is above this (default: 1.0, i.e. faster than "
        "the full model); if none is, early exit is switched off.",
    )
    parser.add_argument("--json", default=None, type=output_file,
                        help="Also write the evaluation and the choice as JSON to this file.")
    parser.add_argument("--dry-run", action="store_true",
                        help="Evaluate and print the choice, but do not change the model folder.")


def run(args) -> int:
    """`hubert-ee calibrate`: 0 on success, 1 on a failure while evaluating, 2 on a usage error."""
    try:
        if args.max_wer_increase < 0:
            raise UsageError(f"--max-wer-increase must be >= 0, got {args.max_wer_increase}")
        folder = _folder_to_write(args)
        result = evaluate_from_args(args, str(folder) if folder else resolve_model_spec(None))
    except (UsageError, OutputPathError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    choice = choose_operating_point(result, args.max_wer_increase, args.min_speedup)
    print(f"chose {describe_choice(choice, result['num_hidden_layers'])}")
    written = None
    if folder is None:
        print(f"the default model ({resolve_model_spec(None)}) is left unchanged: calibrate writes into a model "
              "folder only when --model names it")
    elif args.dry_run:
        print(f"dry run: {folder} left unchanged")
    else:
        note = f"chosen by `hubert-ee calibrate` on {result.get('dataset')}: {describe_choice(choice)}"
        written = write_operating_point(folder, choice, note)
        card = folder / "README.md"
        card_updated = card.is_file() and SETTING_LINE in card.read_text(encoding="utf-8")
        print(f"wrote {', '.join(f'{k}={v}' for k, v in written.items())} to {folder / 'config.json'}"
              + (f" and the operating point in {card}" if card_updated else ""))
    if args.json:
        write_json({"choice": choice, "config_fields_written": written, "max_wer_increase": args.max_wer_increase,
                    "evaluation": result}, args.json)
        print(f"wrote {args.json}")
    return 0
