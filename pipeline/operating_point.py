"""The operating point: the early-exit setting a model folder stores, chosen from an evaluation and stated in its card.

`choose_operating_point` picks it from a `hubert-ee evaluate` result (what `calibrate` and `compare` report),
`write_operating_point` stores it in a model folder's `config.json` and, when the folder has a card written by
`hubert-ee card`, in the card's operating-point line (both files at once), and `operating_point` finds the
evaluation's row for a config's stored setting (what the card reports).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from .outputs import check_output_path, write_texts
from .results import setting_of_row
from .timing import format_speedup

__all__ = [
    "SETTING_LINE", "MEASURED_LINE", "CALIBRATED_METRIC", "CHOOSE_BY", "choose_operating_point", "describe_choice",
    "operating_point", "operating_point_setting", "card_with_operating_point", "write_operating_point",
]

def operating_point(result: dict, config) -> dict | None:
    """The sweep row that measured the config's stored exit setting (what `calibrate` wrote), if any."""
    setting = config.exit_setting
    if not setting.early_exit:
        return None
    return next((row for row in result["sweep"] if setting_of_row(row).decides_like(setting)), None)


# The card's lines about the operating point, and its metric there: `calibrate` rewrites them when it changes the
# config, so that a card never describes another setting than the config beside it.
SETTING_LINE = "- shipped operating point: "
MEASURED_LINE = "- at that point on the test split: "
CALIBRATED_METRIC = "WER (early exit, calibrated)"


def operating_point_setting(config) -> str:
    """The config's stored early-exit setting, as the card states it."""
    setting = config.exit_setting
    if not setting.early_exit:
        return "early exit disabled (full depth)"
    return f"`exit_criterion={setting.criterion!r}`, " + (
        f"`exit_patience={setting.patience}`" if setting.criterion == "patience"
        else f"`exit_threshold={setting.threshold}`"
    )


WER_TOLERANCE = 1e-9  # float noise in "WER <= final_wer + max_wer_increase"


CHOOSE_BY = ("expected", "measured")


def chosen_speedup(row: dict, by: str) -> float | None:
    """The speedup a row is chosen by: the cost model's (`expected_speedup`) or the measured one; None where the row
    cannot be chosen by it (a measured speedup marked unreliable). A result written before the cost model has only
    the measured speedup, which then serves for both. A row evaluated with LM decoding is chosen by its end-to-end
    speedup (decode time included, `hubert_ee.evaluate`, "LM decoding"): a slow decoder shrinks what exiting saves."""
    prefix = "end_to_end_" if "end_to_end_speedup" in row else ""
    if by == "expected" and row.get(f"{prefix}expected_speedup") is not None:
        return float(row[f"{prefix}expected_speedup"])
    if prefix:
        return float(row["end_to_end_speedup"]) if row.get("end_to_end_reliable", True) else None
    return float(row["speedup"]) if row.get("speedup_reliable", True) else None


def choose_operating_point(result: dict, max_wer_increase: float, min_speedup: float = 1.0, by: str = "expected"
                           ) -> dict[str, Any]:
    """Pick the operating point from an `evaluate_model` result.

    Among the `sweep` rows with `wer <= final_wer + max_wer_increase` (absolute percentage points), some utterance
    exiting early (`mean_exit_layer < num_hidden_layers`: a setting that skips no layer cannot be faster, whatever
    a clock said) and a speedup above `min_speedup`, the one with the largest speedup; ties go to the lower WER,
    then to the earlier row. `by` names the speedup: `"expected"` (the cost model's, from the row's exit layers and
    the measured cost of each part: no timing noise sways it) or `"measured"` (only rows whose measured speedup is
    reliable count; `hubert_ee.timing.speedup_verdict`).

    Returns `{"early_exit", "exit_criterion", "exit_threshold", "exit_patience", "wer", "speedup",
    "expected_speedup", "chosen_by", "mean_exit_layer", "final_wer", "max_wer", "row"}` (`speedup`: the measured
    one). For a confidence/entropy row `exit_patience` is None (keep the config's), for a patience row
    `exit_threshold` is None. When no row qualifies: `early_exit=False`, the criterion fields None, `wer =
    final_wer`, `speedup = 1.0`, `mean_exit_layer = num_hidden_layers`, `row=None`.
    """
    if max_wer_increase < 0:
        raise ValueError(f"max_wer_increase must be >= 0 (percentage points), got {max_wer_increase}")
    if by not in CHOOSE_BY:
        raise ValueError(f"choose by {by!r}: choose among {list(CHOOSE_BY)}")
    final_wer = float(result["final_wer"])
    max_wer = final_wer + float(max_wer_increase)
    num_layers = result.get("num_hidden_layers")
    rows = result.get("sweep") or []
    chosen_by = by if by == "measured" or any(row.get("expected_speedup") is not None for row in rows) else "measured"
    qualifying = [
        (index, row, chosen_speedup(row, by)) for index, row in enumerate(rows)
        if row["wer"] <= max_wer + WER_TOLERANCE and not (num_layers and row["mean_exit_layer"] >= num_layers)
    ]
    qualifying = [item for item in qualifying if item[2] is not None and item[2] > min_speedup]
    choice: dict[str, Any] = {"final_wer": final_wer, "max_wer": max_wer, "chosen_by": chosen_by}
    if not qualifying:
        choice.update(
            early_exit=False, exit_criterion=None, exit_threshold=None, exit_patience=None, wer=final_wer,
            speedup=1.0, expected_speedup=1.0, mean_exit_layer=float(result.get("num_hidden_layers", 0)) or None,
            row=None,
        )
        return choice
    _, row, _ = min(qualifying, key=lambda item: (-item[2], item[1]["wer"], item[0]))
    patience_row = row["criterion"] == "patience"
    choice.update(
        early_exit=True,
        exit_criterion=row["criterion"],
        exit_threshold=None if patience_row else float(row["threshold"]),
        exit_patience=int(row["patience"]) if patience_row else None,
        wer=float(row["wer"]),
        speedup=float(row["speedup"]),
        expected_speedup=None if row.get("expected_speedup") is None else float(row["expected_speedup"]),
        mean_exit_layer=float(row["mean_exit_layer"]),
        row=dict(row),
    )
    if "end_to_end_speedup" in row:  # evaluated with LM decoding: what it was chosen by, decode time included
        choice.update(end_to_end_speedup=float(row["end_to_end_speedup"]),
                      end_to_end_expected_speedup=float(row["end_to_end_expected_speedup"]))
    return choice


def write_operating_point(folder: str | Path, choice: dict, note: str = "chosen by `hubert-ee calibrate`"
                          ) -> dict[str, Any]:
    """Write `choice` (from `choose_operating_point`) into `folder/config.json`; returns the fields written.

    Only the early-exit fields of config.json change (validated first; every other field, `auto_map` included, is
    kept as it is). When `folder/README.md` is a card written by `hubert-ee card`, its operating-point line is
    updated too, followed by `note` (`card_with_operating_point`). Both files are replaced at once,
    each through a temporary file in the folder, so a failed write leaves the folder as it was; the code files
    are not touched. Fields the choice leaves at None (the unused threshold or patience, or everything when early
    exit is off) keep their values.
    """
    from .loading import load_early_exit_config

    folder = Path(folder)
    config_path = check_output_path(folder / "config.json", "the model's config")
    config = load_early_exit_config(folder)
    fields: dict[str, Any] = {"early_exit": bool(choice["early_exit"])}
    for name in ("exit_criterion", "exit_threshold", "exit_patience"):
        if choice.get(name) is not None:
            fields[name] = choice[name]
    setting = config.exit_setting.with_overrides(**fields)  # raises naming a bad value before anything is written
    for name, value in setting.as_config_fields().items():
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


def describe_choice(choice: dict, num_layers: int | None = None) -> str:
    if not choice["early_exit"]:
        return (
            f"no early-exit setting is both faster than the full model ({choice.get('chosen_by', 'measured')} "
            f"speedup) and within WER {choice['max_wer']:.2f} % (final head {choice['final_wer']:.2f} %): early exit "
            "switched off (early_exit=False)"
        )
    if choice["exit_criterion"] == "patience":
        setting = f"patience criterion, exit_patience={choice['exit_patience']}"
    else:
        setting = f"{choice['exit_criterion']} criterion, exit_threshold={choice['exit_threshold']:g}"
    layers = f"/{num_layers}" if num_layers else ""
    row = choice["row"]
    measured = format_speedup(row) if row else f"{choice['speedup']:.2f}x"
    speed = (f"expected speedup {choice['expected_speedup']:.2f}x (cost model; chosen by it), measured {measured}"
             if choice.get("chosen_by") == "expected" and choice.get("expected_speedup") is not None
             else f"measured speedup {measured} (chosen by it)")
    if "end_to_end_speedup" in choice:
        speed = (f"end-to-end speedup (decoding included) {choice['end_to_end_expected_speedup']:.2f}x expected, "
                 f"{choice['end_to_end_speedup']:.2f}x measured (chosen by the {choice.get('chosen_by')} one); "
                 f"encoder alone: {speed}")
    return (
        f"{setting}: expected WER {choice['wer']:.2f} % (final head {choice['final_wer']:.2f} %, "
        f"{choice['wer'] - choice['final_wer']:+.2f} points), {speed}, "
        f"mean exit layer {choice['mean_exit_layer']:.2f}{layers}"
    )


def card_with_operating_point(card: str, config, note: str) -> str | None:
    """`card` (as `build_card` writes it) stating `config`'s operating point, followed by `note` (where it comes
    from); None when `card` has no operating-point line (not a `hubert-ee card` card).

    The test-split measurement of the previous point (its line, and its metric in the model-index) goes: it
    belongs to another setting. `hubert-ee card` with a new evaluation puts the new point's numbers back."""
    front, separator, body = card.partition("\n---\n") if card.startswith("---\n") else ("", "", card)
    lines = body.split("\n")
    setting = [index for index, line in enumerate(lines) if line.startswith(SETTING_LINE)]
    if not setting:
        return None
    lines[setting[0]] = f"{SETTING_LINE}{operating_point_setting(config)} ({note})"
    body = "\n".join(line for line in lines if not line.startswith(MEASURED_LINE))
    if not separator:
        return body
    metadata = yaml.safe_load(front.removeprefix("---\n")) or {}
    for model in metadata.get("model-index") or []:
        for result in model.get("results") or []:
            result["metrics"] = [metric for metric in result.get("metrics") or []
                                 if metric.get("name") != CALIBRATED_METRIC]
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False) + "---\n" + body
