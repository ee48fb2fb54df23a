"""Compare stage: several `hubert-ee evaluate` results side by side (e.g. one per exit-training strategy).

`hubert-ee compare NAME=EVAL.json ... [--markdown OUT.md] [--plot OUT.png] [--budgets 0.5,2]`

One row per model: the WER of the final head and of every exit forced, the fastest setting whose WER stays within
each budget (absolute WER points above that model's own final head, chosen as `hubert-ee calibrate` would choose, by
the cost model's expected speedup: `operating_point.choose_operating_point`) with its measured speedup and interval,
and the oracle. The plot draws every model's sweep (WER against
measured speedup) in one figure. The results should come from the same test set, device and batch size; a
mismatch is reported as an error rather than compared.
"""

from __future__ import annotations

from pathlib import Path

from .arguments import UsageError
from .operating_point import choose_operating_point
from .outputs import write_text
from .plots import pyplot, save_figure
from .timing import format_speedup

__all__ = ["comparison_markdown", "plot_comparison", "run"]


def _check_comparable(results: dict[str, dict]) -> None:
    def signature(result: dict) -> tuple:
        timing = result.get("timing", {})
        return (result.get("dataset"), result.get("num_utterances"), timing.get("device"), timing.get("batch_size"))

    signatures = {name: signature(result) for name, result in results.items()}
    if len(set(signatures.values())) > 1:
        listed = "; ".join(f"{name}: dataset={s[0]}, utterances={s[1]}, device={s[2]}, batch={s[3]}"
                           for name, s in signatures.items())
        raise ValueError(f"the results were measured on different data or settings, so they cannot be compared: "
                         f"{listed}")


def comparison_markdown(results: dict[str, dict], budgets: tuple[float, ...] = (0.5, 2.0)) -> str:
    """A markdown table comparing `evaluate_model` results (name -> result)."""
    if not results:
        raise ValueError("nothing to compare: give at least one NAME=EVAL.json")
    _check_comparable(results)
    first = next(iter(results.values()))
    layers = sorted({row["layer"] for result in results.values() for row in result["exits"]})
    num_layers = first["num_hidden_layers"]
    header = ["model", "final WER"] + [f"exit {layer}" for layer in layers if layer != num_layers]
    header += [f"best within +{budget:g} WER" for budget in budgets] + ["oracle WER / layer / speedup"]
    lines = [
        f"Test set: `{first.get('dataset')}` ({first['num_utterances']} utterances), device "
        f"{first.get('timing', {}).get('device')}, batch {first.get('timing', {}).get('batch_size')}. WER in percent "
        "(corpus level, after `normalize_text`); exit columns: every utterance forced out at that exit. "
        "'best within +b': the sweep setting with the largest speedup whose WER is at most the model's own "
        "final-head WER + b points, chosen by the cost model's expected speedup as `hubert-ee calibrate` chooses "
        "(WER, measured speedup ± its 95 % interval, setting).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for name, result in results.items():
        by_layer = {row["layer"]: row["wer"] for row in result["exits"]}
        cells = [name, f"{result['final_wer']:.2f}"]
        cells += [f"{by_layer[layer]:.2f}" if layer in by_layer else "-" for layer in layers if layer != num_layers]
        for budget in budgets:
            choice = choose_operating_point(result, budget)
            if not choice["early_exit"]:
                cells.append("none faster")
                continue
            setting = (f"patience {choice['exit_patience']}" if choice["exit_criterion"] == "patience"
                       else f"{choice['exit_criterion']} {choice['exit_threshold']:g}")
            cells.append(f"{choice['wer']:.2f}, {format_speedup(choice['row'])} ({setting})")
        oracle = result["oracle"]
        cells.append(f"{oracle['wer']:.2f} / {oracle['mean_exit_layer']:.2f} / {format_speedup(oracle)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(results: dict[str, dict], path: str | Path) -> Path:
    """PNG: each model's sweep as WER against measured speedup (confidence and entropy rows), final heads at 1x."""
    figure, axis = pyplot().subplots(figsize=(7, 4.5))
    for name, result in results.items():
        rows = sorted((row for row in result["sweep"] if row["criterion"] != "patience"), key=lambda r: r["speedup"])
        line, = axis.plot([1.0] + [row["speedup"] for row in rows],
                          [result["final_wer"]] + [row["wer"] for row in rows], marker="o", markersize=3, label=name)
        oracle = result["oracle"]
        axis.scatter([oracle["speedup"]], [oracle["wer"]], marker="*", s=90, color=line.get_color())
    axis.set_xlabel("measured speedup over the full model (x)")
    axis.set_ylabel("WER (%)")
    axis.set_title("Early-exit trade-off per model (star: oracle)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return save_figure(figure, path)


def run(args) -> int:
    budgets = tuple(args.budgets)
    results = dict(args.results)
    if len(results) != len(args.results):
        raise UsageError("each NAME must be given once")
    table = comparison_markdown(results, budgets)
    print(table)
    if args.markdown:
        write_text(args.markdown, table)
    if args.plot:
        plot_comparison(results, args.plot)
    return 0
