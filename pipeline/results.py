"""An evaluation's result: the typed record `hubert-ee evaluate` returns and writes, and its reports.

`EvaluationResult` documents the JSON schema once; `markdown_report`, `plot_tradeoff` and `print_summary` read
either an `EvaluationResult` or the JSON loaded back from a file (`card`, `compare` and `history` read those).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

from configuration_early_exit import ExitSetting

from .plots import pyplot, save_figure
from .timing import BUSY_SPREAD, MIN_PAIRS, WIDE_INTERVAL, format_speedup

__all__ = ["EvaluationResult", "describe_decoder", "lm_decoding_lines", "markdown_report", "plot_tradeoff", "print_summary", "row_of_setting",
           "setting_label", "setting_of_row"]

TIMING_METHOD = ("per batch, early_exit=False (twice) and each distinct way of exiting once, interleaved; speedup = "
                 "ratio of the summed times, 95 % bootstrap interval over the batches (cost-model control variate)")
WER_NOTE = "corpus-level WER and CER in percent after hubert_ee.text.normalize_text"


def row_of_setting(setting: ExitSetting) -> dict[str, Any]:
    """A sweep row's setting fields (see `EvaluationResult`): `criterion`, `threshold` (None for patience) and, for
    patience, `patience`."""
    if setting.criterion == "patience":
        return {"criterion": "patience", "threshold": None, "patience": setting.patience}
    return {"criterion": setting.criterion, "threshold": setting.threshold}


def setting_of_row(row: Mapping) -> ExitSetting:
    """The exit setting a sweep row (or a group's sweep entry) measured: early exit on, its criterion and threshold
    or patience."""
    if row["criterion"] == "patience":
        return ExitSetting(criterion="patience", patience=int(row["patience"]))
    return ExitSetting(criterion=row["criterion"], threshold=float(row["threshold"]))


@dataclasses.dataclass
class EvaluationResult(Mapping):
    """What `hubert_ee.evaluate.evaluate_model` measured; `to_json()` is what `hubert-ee evaluate --json` writes.

    JSON schema (WER/CER: corpus-level percentages after `hubert_ee.text.normalize_text`):

    * `model`, `dataset`: names; `num_utterances` evaluated, `num_skipped_too_short` (shorter than the receptive
      field); `num_hidden_layers`; `exit_layers`; `vocab_size`; `weights_sha256`, the fingerprint of the weights
      evaluated (`hubert_ee.loading.weights_fingerprint`; `hubert-ee card` checks the model folder against these).
    * `final_wer`, `final_cer`: the final head's.
    * `exits`: `[{"layer", "wer", "cer"}]`, every exit forced, then the final head (`layer == num_hidden_layers`).
    * `sweep`: `[{"criterion", "threshold", ["patience"], "wer", "cer", "mean_exit_layer", "layers_skipped",
      "speedup", "speedup_interval", "speedup_reliable", "speedup_note", "expected_speedup", "ideal_speedup",
      "baseline_seconds", "early_exit_seconds"}]`, one row per setting; `threshold` is null for a patience row,
      which has `patience`.
    * `oracle`: the same measurement fields as a sweep row, for the earliest agreeing exit.
    * `groups` (only with `group_by`): column -> `[{"value", "utterances", "final_wer", "final_cer", "exits":
      [{"layer", "wer"}], "oracle_mean_exit_layer", "sweep": [{setting, "wer", "cer", "mean_exit_layer"}]}]`.
    * `timing`: `{"device", "batch_size", "repeats", "method", "confidence", "timed_settings", "baseline_spread",
      "busy", "exit_mismatches", "part_costs": {"rows", "frames", "embed", "layer", "branch", "criterion",
      "head"}}` (seconds per call of each part of the cost model); `wer_note`.
    * `unreadable` (only when files were left out): `[{"path", "error"}]`.
    * `decoder` (absent in results written before it: greedy): what turned logits into text (`hubert_ee.decoding`): `{"name": "greedy"}` or `{"name": "lm",
      "beam_width", "alpha", "beta", "language_model"}`. With the LM, exit rows add `greedy_wer`, `greedy_cer`,
      `decode_seconds`; sweep rows and the oracle add `greedy_wer`, `greedy_cer`, `end_to_end_speedup`,
      `end_to_end_interval`, `end_to_end_reliable`, `end_to_end_expected_speedup`, `decode_seconds`,
      `baseline_decode_seconds`; groups add `final_greedy_wer`; `timing` adds `final_head_decode_seconds`
      (`hubert_ee.evaluate`, "LM decoding").

    Speedups: `speedup = baseline_seconds / early_exit_seconds`, where the baseline is the same model run with
    `early_exit=False` (every layer, the final head) on the same batches, interleaved; `baseline_seconds` keeps
    that name in the JSON. (`hubert-ee benchmark`'s baseline is another one: `HubertForCTC` on the same weights.)
    `speedup_interval`: its 95 % bootstrap interval over the timed batches (`hubert_ee.timing.paired_speedup`);
    `speedup_reliable` is false, with the reasons in `speedup_note`, when the interval is wide, the timings too
    few, or the speedup above `ideal_speedup` (`hubert_ee.timing.speedup_verdict`): the noise could explain it.
    `expected_speedup`: the cost model's, from each utterance's exit layer and the measured cost of each part
    (`hubert_ee.cost_model`). `ideal_speedup = num_hidden_layers / mean_exit_layer` (the layers run),
    `layers_skipped = 1 - mean_exit_layer / num_hidden_layers`. Accuracy and exit layers come from one pass with
    every branch (each setting's criterion applied to its logits), not from the timed runs.

    The record reads like its JSON form too (`result["final_wer"]`), so code written for a loaded file takes
    either.
    """

    model: str
    dataset: str
    num_utterances: int
    num_skipped_too_short: int
    num_hidden_layers: int
    exit_layers: list[int]
    final_wer: float
    final_cer: float
    exits: list[dict[str, Any]]
    sweep: list[dict[str, Any]]
    oracle: dict[str, Any]
    groups: dict[str, list[dict[str, Any]]] | None = None
    timing: dict[str, Any] = dataclasses.field(default_factory=dict)
    wer_note: str = WER_NOTE
    unreadable: list[dict[str, str]] | None = None
    vocab_size: int | None = None
    weights_sha256: str | None = None
    decoder: dict[str, Any] | None = None  # None: a result written before the field (greedy)

    def to_json(self) -> dict[str, Any]:
        """The JSON form: every field in declaration order; `groups`, `unreadable`, `vocab_size` and
        `weights_sha256` only when present."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        for optional in ("groups", "unreadable", "vocab_size", "weights_sha256", "decoder"):
            if not data[optional]:
                del data[optional]
        return data

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())


def setting_label(row: dict) -> str:
    if row["criterion"] == "patience":
        return f"patience {row.get('patience')}"
    return f"{row['criterion']} {row['threshold']:g}"


SPEED_NOTE = (
    "Measured speedup: wall-clock time of the full model (`early_exit=False`) over that of early exit on the same "
    "batches, paired and interleaved, ± the larger half of its 95 % bootstrap interval. Marked unreliable (the noise "
    f"could explain it) when the interval exceeds {100 * WIDE_INTERVAL:g} % of it, when fewer than {MIN_PAIRS} "
    "batches were timed, or when it lies above the ideal. Expected: the cost model's, from each utterance's exit "
    "layer and the measured cost of the front end, one layer, one branch with its criterion and the final head. "
    "Ideal: layers / mean exit layer."
)


# Results written before speedups carried intervals (e.g. the committed default-model JSON) keep their old note and
# speedup column.
OLD_SPEED_NOTE = ("Speedup: wall-clock time of the full model (`early_exit=False`) divided by that of early exit, on "
                  "the same batches, interleaved.")


def speed_cells(row: dict, intervals: bool) -> str:
    """`measured | expected | ideal` cells; the speedup alone for a result written before intervals."""
    if not intervals:
        return f"{row['speedup']:.2f}x"
    return f"{format_speedup(row)} | {row['expected_speedup']:.2f}x | {row['ideal_speedup']:.2f}x"


def unreliable_lines(rows: list[dict], label) -> list[str]:
    """One line per row whose speedup is marked unreliable, with the reasons."""
    marked = [row for row in rows if not row.get("speedup_reliable", True)]
    return [""] + [f"- unreliable speedup, {label(row)}: {row.get('speedup_note', '')}" for row in marked] \
        if marked else []


def busy_lines(result: dict) -> list[str]:
    """The line saying the machine was busy while timing (baseline repetitions spread), if it was."""
    timing = result.get("timing") or {}
    if not timing.get("busy"):
        return []
    return [busy_message(timing["baseline_spread"]), ""]


def busy_message(baseline_spread: float) -> str:
    return (f"Note: this machine is busy: repeated full-model timings of the same work spread by "
            f"{100 * baseline_spread:.0f} % (more than {100 * BUSY_SPREAD:g} %); speed figures the noise could explain "
            "are marked unreliable.")


def markdown_report(result: dict) -> str:
    """A markdown summary of an `evaluate_model` result: per-exit WERs, the sweep and the oracle."""
    num_layers = result["num_hidden_layers"]
    intervals = "speedup_interval" in result["oracle"]
    speed_heads, speed_rule = (("measured speedup | expected | ideal |", "---:|---:|---:|") if intervals
                               else ("speedup |", "---:|"))
    lines = [
        "# HuBERT-EE evaluation",
        "",
        f"- model: `{result.get('model')}`",
        f"- dataset: `{result.get('dataset')}` ({result['num_utterances']} utterances)",
        f"- encoder layers: {num_layers}; exits after layers {result['exit_layers']}",
        f"- decoder: {describe_decoder(result.get('decoder'))}",
        f"- final head WER: {result['final_wer']:.2f} %"
        + (f", CER: {result['final_cer']:.2f} %" if "final_cer" in result else ""),
        "",
        ("WER and CER" if "final_cer" in result else "WER")
        + ": corpus-level, in percent, after `hubert_ee.text.normalize_text`. "
        + (SPEED_NOTE if intervals else OLD_SPEED_NOTE),
        "",
        *busy_lines(result),
    ]
    # Results written before CER was reported have no "cer" fields: their tables keep their old columns.
    cer = "final_cer" in result

    def rates(row):
        return f"{row['wer']:.2f} |" + (f" {row['cer']:.2f} |" if cer else "")

    rate_heads, rate_rule = ("WER (%) | CER (%) |", "---:|---:|") if cer else ("WER (%) |", "---:|")
    lines += ["## Each exit forced", "", "| layer | " + rate_heads, "|---:|" + rate_rule]
    for row in result["exits"]:
        name = f"{row['layer']} (final head)" if row["layer"] == num_layers else str(row["layer"])
        lines.append(f"| {name} | " + rates(row))
    lines += [
        "",
        "## Early-exit sweep",
        "",
        "| criterion | threshold / patience | " + rate_heads + " mean exit layer | layers skipped | " + speed_heads,
        "|---|---:|" + rate_rule + "---:|---:|" + speed_rule,
    ]
    for row in result["sweep"]:
        setting = f"patience {row['patience']}" if row["criterion"] == "patience" else f"{row['threshold']:g}"
        lines.append(
            f"| {row['criterion']} | {setting} | " + rates(row) + f" {row['mean_exit_layer']:.2f} | "
            f"{100 * row.get('layers_skipped', 1 - row['mean_exit_layer'] / num_layers):.1f} % | "
            + speed_cells(row, intervals) + " |"
        )
    oracle = result["oracle"]
    lines += [
        *unreliable_lines(result["sweep"], setting_label),
        "",
        "## Oracle",
        "",
        "Each utterance leaves at the earliest exit whose transcript equals the final head's.",
        "",
        "| " + rate_heads + " mean exit layer | " + speed_heads,
        "|" + rate_rule + "---:|" + speed_rule,
        "| " + rates(oracle) + f" {oracle['mean_exit_layer']:.2f} | " + speed_cells(oracle, intervals) + " |",
        *unreliable_lines([oracle], lambda row: "oracle"),
        "",
    ]
    lines += lm_decoding_lines(result)
    for column, entries in (result.get("groups") or {}).items():
        lines += [
            f"## By `{column}`",
            "",
            "Final head and oracle per group; each sweep setting per group is in the JSON (`groups`).",
            "",
            f"| {column} | utterances | final WER (%) | final CER (%) | oracle mean exit layer |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [f"| {entry['value']} | {entry['utterances']} | {entry['final_wer']:.2f} | {entry['final_cer']:.2f} "
                  f"| {entry['oracle_mean_exit_layer']:.2f} |" for entry in entries]
        lines.append("")
    return "\n".join(lines)


def describe_decoder(decoder: dict | None) -> str:
    """One line for the decoder a result's transcripts came from (greedy where the result predates the field)."""
    if not decoder or decoder.get("name") == "greedy":
        return "greedy CTC (no language model)"
    return (f"beam search with the n-gram LM `{decoder.get('language_model')}` (pyctcdecode + KenLM, beam width "
            f"{decoder['beam_width']}, alpha {decoder['alpha']:g}, beta {decoder['beta']:g})")


def lm_decoding_lines(result: dict) -> list[str]:
    """With LM decoding: greedy against LM WER of every exit and sweep row, the decode time beside the encoder
    time, and the end-to-end speedup (decode included); nothing for a greedy result."""
    if not any("greedy_wer" in row for row in result["exits"]):
        return []
    timing = result.get("timing") or {}
    encoder = (f" The full-depth encoder time of the same utterances: "
               f"{result['sweep'][0]['baseline_seconds'] / max(timing.get('repeats', 1), 1):.2f} s."
               if result["sweep"] else "")
    lines = ["## LM decoding against greedy", "",
             "LM decode (s): the LM decode of every utterance from that head, one utterance at a time, summed."
             + encoder, "",
             "| layer | greedy WER (%) | LM WER (%) | greedy CER (%) | LM CER (%) | LM decode (s) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for row in result["exits"]:
        lines.append(f"| {row['layer']} | {row['greedy_wer']:.2f} | {row['wer']:.2f} | {row['greedy_cer']:.2f} | "
                     f"{row['cer']:.2f} | {row['decode_seconds']:.2f} |")
    lines += ["", "| setting | greedy WER (%) | LM WER (%) | encoder speedup | end-to-end speedup (LM decode "
              "included) | expected end-to-end |", "|---|---:|---:|---:|---:|---:|"]
    for row in [*result["sweep"], {**result["oracle"], "criterion": "oracle"}]:
        if "end_to_end_speedup" not in row:
            continue
        low, high = row["end_to_end_interval"]
        marker = "" if row["end_to_end_reliable"] else " (noise-sized)"
        lines.append(f"| {setting_label(row) if row['criterion'] != 'oracle' else 'oracle'} | "
                     f"{row.get('greedy_wer', float('nan')):.2f} | {row['wer']:.2f} | {row['speedup']:.2f}x | "
                     f"{row['end_to_end_speedup']:.2f}x [{low:.2f}, {high:.2f}]{marker} | "
                     f"{row['end_to_end_expected_speedup']:.2f}x |")
    return [*lines, ""]


def plot_tradeoff(result: dict, path: str | Path) -> Path:
    """PNG of WER against measured speedup (with its interval as error bars where the result has one): one curve
    per criterion, the oracle and the final head (speedup 1)."""
    figure, axes = pyplot().subplots(figsize=(7, 4.5))
    markers = {"confidence": "o", "entropy": "s", "patience": "^"}
    for criterion in ("confidence", "entropy", "patience"):
        rows = sorted((row for row in result["sweep"] if row["criterion"] == criterion), key=lambda r: r["speedup"])
        if rows:
            speedups = [r["speedup"] for r in rows]
            errors = [[r["speedup"] - r.get("speedup_interval", [r["speedup"]] * 2)[0] for r in rows],
                      [r.get("speedup_interval", [r["speedup"]] * 2)[1] - r["speedup"] for r in rows]]
            axes.errorbar(speedups, [r["wer"] for r in rows], xerr=errors, marker=markers[criterion], capsize=2,
                          label=criterion)
    oracle = result["oracle"]
    oracle_label = "oracle"
    axes.scatter([oracle["speedup"]], [oracle["wer"]], marker="*", s=180, color="gold", edgecolor="black",
                 zorder=3, label=oracle_label)
    axes.scatter([1.0], [result["final_wer"]], marker="D", s=60, color="black", zorder=3, label="final head (no exit)")
    axes.set_xlabel("speedup over the full model (x)")
    axes.set_ylabel("WER (%)")
    axes.set_title(f"HuBERT-EE: WER vs speedup ({result.get('dataset')}, {result['num_utterances']} utterances)",
                   fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend()
    return save_figure(figure, path)


def print_summary(result: dict, file=None) -> None:
    file = file or sys.stdout
    print(f"final head WER {result['final_wer']:.2f} %, CER {result['final_cer']:.2f} % on "
          f"{result['num_utterances']} utterances", file=file)
    best = max(result["sweep"], key=lambda row: row.get("expected_speedup", row["speedup"]), default=None)
    if best is not None:
        print(f"fastest setting (cost model): {setting_label(best)}: WER {best['wer']:.2f} %, "
              f"{speed_summary(best)}", file=file)
    oracle = result["oracle"]
    print(f"oracle: WER {oracle['wer']:.2f} %, mean exit layer {oracle['mean_exit_layer']:.2f}, "
          f"{speed_summary(oracle)}", file=file)
    if (result.get("timing") or {}).get("busy"):
        print(busy_message(result["timing"]["baseline_spread"]), file=file)


def speed_summary(row: dict) -> str:
    """`measured 1.42x ± 0.03, expected 1.45x, ideal 2.10x` (what a row has of these)."""
    parts = [f"measured {format_speedup(row)}"]
    parts += [f"{name} {row[key]:.2f}x" for name, key in (("expected", "expected_speedup"), ("ideal", "ideal_speedup"))
              if row.get(key) is not None]
    return ", ".join(parts)
