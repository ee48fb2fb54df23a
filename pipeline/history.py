"""Training history across sessions: `hubert-ee history` records a run's dev evaluations and draws the learning curve.

A model trained over several sessions (each continuing from the last with `train-backbone --init-from`) keeps one
JSON file of sessions. Each session holds what its run logged: steps, hours of speech trained on (the
`speech_hours` the trainer logs, counted across resumed runs) and its dev evaluations (`eval_cer`, `eval_wer`). The
x axis of the curve is the total speech processed since the first session, so sessions line up end to end.

    hubert-ee history --run outputs/backbone --history benchmarks/results/training_history.json \\
        --session 2 --note "..." --plot benchmarks/results/learning_curve.png

A session may also be recorded from an evaluation alone (`--eval-json`, with `--speech-hours`), for a run whose
trainer state is gone; the entry then says so in its `source`.

`--real-speech-eval` adds a second yardstick to a session: a `hubert-ee evaluate` JSON of the session's final model on
held-out real human speech (final-head CER/WER). The curve draws it beside the synthetic dev CER, at the session's
end. Given with `--session` alone, it is added to that session's existing entry.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from .outputs import write_text
from .plots import pyplot, save_figure

__all__ = ["read_run", "add_session", "learning_curve", "real_speech_curve", "session_ends", "power_law_fit",
           "hours_to_reach", "plot_learning_curve"]


def _newest_state(run: Path) -> Path:
    """The newest trainer_state.json of `run` (a training output folder or its checkpoints/): the finished run's
    own (written after its final evaluation) when it is at least as far as the newest checkpoint's."""
    from .checkpoints import checkpoint_step

    folder = run / "checkpoints" if (run / "checkpoints").is_dir() else run
    states = sorted(folder.glob("checkpoint-*/trainer_state.json"), key=lambda path: checkpoint_step(path.parent))
    final = folder / "trainer_state.json"
    if final.is_file() and (not states or _global_step(final) >= _global_step(states[-1])):
        return final
    if not states:
        raise FileNotFoundError(f"no checkpoint with a trainer_state.json under {folder}")
    return states[-1]


def _global_step(state_path: Path) -> int:
    return int(json.loads(state_path.read_text())["global_step"])


def read_run(run: str | Path, speech_seconds_per_step: float | None = None) -> dict:
    """Steps, speech hours and dev evaluations of one run, from its newest trainer state (see `_newest_state`).

    Logs written without `speech_hours` (older code) count `speech_seconds_per_step` for each of their steps; a
    run resumed from such logs counts its own `speech_hours` on top of them.
    """
    state = json.loads(_newest_state(Path(run)).read_text())
    hours_at, hours, previous_step, base = {}, 0.0, 0, None
    for entry in state["log_history"]:
        step = int(entry["step"])
        if "speech_hours" in entry:
            base = hours if base is None else base
            hours = base + float(entry["speech_hours"])
        elif "loss" in entry and speech_seconds_per_step:
            hours += (step - previous_step) * speech_seconds_per_step / 3600
        if "loss" in entry:
            previous_step = step
        hours_at[step] = hours
    evaluations = [{"step": int(entry["step"]), "speech_hours": round(hours_at.get(int(entry["step"]), hours), 3),
                    "cer": round(float(entry["eval_cer"]), 2), "wer": round(float(entry["eval_wer"]), 2)}
                   for entry in state["log_history"] if "eval_cer" in entry]  # fmt: skip
    # a run whose last step is also an evaluation step logs that evaluation twice (the final one repeats it)
    evaluations = [evaluation for index, evaluation in enumerate(evaluations)
                   if index == 0 or evaluation != evaluations[index - 1]]
    return {"steps": int(state["global_step"]), "speech_hours": round(hours, 3), "dev": evaluations}


def add_session(history_path: str | Path, session: int, entry: dict) -> dict:
    """Put `entry` into the history file as session `session` (replacing an earlier entry of that number)."""
    path = Path(history_path)
    history = json.loads(path.read_text()) if path.is_file() else {"sessions": []}
    sessions = [item for item in history["sessions"] if item["session"] != session]
    sessions.append({"session": session, **entry})
    history["sessions"] = sorted(sessions, key=lambda item: item["session"])
    write_text(path, json.dumps(history, indent=2) + "\n")
    return history


def learning_curve(history: dict) -> list[tuple[float, float, int]]:
    """(total speech hours, dev CER, session) for every dev evaluation, sessions laid end to end."""
    points, offset = [], 0.0
    for session in history["sessions"]:
        for evaluation in session.get("dev", []):
            points.append((offset + evaluation["speech_hours"], evaluation["cer"], session["session"]))
        offset += session.get("speech_hours", 0.0)
    return points


def real_speech_curve(history: dict) -> list[tuple[float, float, int]]:
    """(total speech hours at the session's end, real-speech CER, session) for every session that has one."""
    points, offset = [], 0.0
    for session in history["sessions"]:
        offset += session.get("speech_hours", 0.0)
        if "real_speech" in session:
            points.append((offset, session["real_speech"]["cer"], session["session"]))
    return points


def session_ends(history: dict) -> list[tuple[float, float]]:
    """(total speech hours, dev CER) at the last dev evaluation of each session: the points where each session's
    schedule has annealed, free of the bump a warm restart puts at the start of the next."""
    ends = {}
    for hours, cer, session in learning_curve(history):
        ends[session] = (hours, cer)
    return [ends[session] for session in sorted(ends)]


def power_law_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """`(a, b)` of `CER = a * hours ** -b`, least squares in log-log space; needs two points at different hours."""
    import numpy as np

    if len({hours for hours, _ in points}) < 2:
        raise ValueError("a learning-curve fit needs dev points from at least two sessions")
    slope, intercept = np.polyfit(np.log([h for h, _ in points]), np.log([c for _, c in points]), 1)
    return float(np.exp(intercept)), float(-slope)


def hours_to_reach(fit: tuple[float, float], cer: float) -> float:
    """Total hours of speech at which the fitted curve reaches `cer` (infinite if the curve does not fall)."""
    a, b = fit
    return float("inf") if b <= 0 else (a / cer) ** (1.0 / b)


def totals(history: dict) -> dict:
    sessions = history["sessions"]
    return {"sessions": len(sessions), "steps": sum(item.get("steps", 0) for item in sessions),
            "speech_hours": round(sum(item.get("speech_hours", 0.0) for item in sessions), 2)}


def plot_learning_curve(history: dict, path: str | Path, target_cer: float | None = None,
                        target_real_cer: float | None = None) -> Path:
    """The dev CER of every session against total hours; with `target_cer` (`target_real_cer`), the power-law fit of
    the sessions' last synthetic (real-speech) dev points drawn on, dashed, up to that CER, or to ten times the hours
    so far if it lies further."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(9, 4))
    points = learning_curve(history)
    for session in sorted({point[2] for point in points}):
        xs = [x for x, _, s in points if s == session]
        ys = [y for _, y, s in points if s == session]
        axes.plot(xs, ys, marker="o", label=f"session {session}")
    real = real_speech_curve(history)
    if real:
        axes.plot([x for x, _, _ in real], [y for _, y, _ in real], "k", marker="s", linestyle="-.",
                  label="real-speech dev, session ends")
    fits = [(session_ends(history), target_cer, "synthetic dev", "k"),
            ([(hours, cer) for hours, cer, _ in real], target_real_cer, "real-speech dev", "tab:red")]
    drawn_to = [_draw_fit(axes, ends, target, name, colour, last=points[-1][0])
                for ends, target, name, colour in fits if target is not None and len({h for h, _ in ends}) >= 2]
    if drawn_to:
        axes.set_xscale("log")
        first, last = points[0][0], max(drawn_to)
        ticks = [t for t in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000) if first / 1.5 <= t <= last * 1.5]
        axes.set_xticks(ticks, [f"{t:g}" for t in ticks])
        axes.xaxis.set_minor_formatter("")
    axes.set_xlabel("hours of speech trained on (all sessions)")
    axes.set_ylabel("CER (%): synthetic dev" + (", real-speech dev" if real else ""))
    axes.set_title("Learning curve of the default model's backbone")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")  # outside: no point is hidden
    return save_figure(figure, path)


def _draw_fit(axes, ends: list[tuple[float, float]], target: float, name: str, colour: str, last: float) -> float:
    """Draws the power-law fit of `ends` from their first point to where it reaches `target` (at most ten times
    `last` hours), and the target line; returns the hours the drawn fit ends at."""
    import numpy as np

    fit = power_law_fit(ends)
    hours = np.geomspace(min(hours for hours, _ in ends), min(hours_to_reach(fit, target), 10 * last), 100)
    axes.plot(hours, fit[0] * hours ** -fit[1], color=colour, linestyle="--", linewidth=1,
              label=f"fit of {name} session ends: {fit[0]:.0f}·h^-{fit[1]:.2f}")
    axes.axhline(target, color=colour, linewidth=0.8, linestyle=":", label=f"target {name} CER {target:g} %")
    return float(hours[-1])


def _entry_from_eval(eval_json: str, speech_hours: float | None) -> dict:
    if speech_hours is None:
        raise ValueError("--eval-json needs --speech-hours (how much that session trained on)")
    result = json.loads(Path(eval_json).read_text())
    return {"speech_hours": speech_hours, "steps": 0, "source": f"evaluation {Path(eval_json).name}",
            "dev": [{"step": 0, "speech_hours": speech_hours, "cer": round(result["final_cer"], 2),
                     "wer": round(result["final_wer"], 2)}]}  # fmt: skip


def real_speech_entry(eval_json: str | Path) -> dict:
    """The `real_speech` field of a session: final-head CER/WER of an evaluation on real speech."""
    result = json.loads(Path(eval_json).read_text())
    return {"cer": round(result["final_cer"], 2), "wer": round(result["final_wer"], 2),
            "utterances": result.get("num_utterances"), "dataset": result.get("dataset"),
            "source": f"evaluation {Path(eval_json).name}"}  # fmt: skip


def _session_entry(args, history_path: Path) -> dict:
    """The entry `--session` records: from `--run` or `--eval-json`; from the history itself when only
    `--real-speech-eval` is given (that session's entry, to which the real-speech point is added)."""
    if args.run is not None and args.eval_json is not None:
        raise ValueError("--session takes one of --run or --eval-json, not both")
    if args.run is not None:
        entry = {**read_run(args.run, args.speech_seconds_per_step), "source": f"trainer state of {args.run}"}
    elif args.eval_json is not None:
        entry = _entry_from_eval(args.eval_json, args.speech_hours)
    elif args.real_speech_eval is not None:
        sessions = json.loads(history_path.read_text())["sessions"] if history_path.is_file() else []
        found = [item for item in sessions if item["session"] == args.session]
        if not found:
            raise ValueError(f"--real-speech-eval alone adds to a recorded session, but {history_path} has no "
                             f"session {args.session}: give --run or --eval-json too")
        return {key: value for key, value in found[0].items() if key != "session"} | {
            "real_speech": real_speech_entry(args.real_speech_eval)}
    else:
        raise ValueError("--session needs --run, --eval-json or --real-speech-eval")
    if args.real_speech_eval is not None:
        entry["real_speech"] = real_speech_entry(args.real_speech_eval)
    entry.update(date=datetime.date.today().isoformat(), note=args.note)
    return entry


def run(args) -> int:
    if args.session is not None:
        history = add_session(args.history, args.session, _session_entry(args, Path(args.history)))
    else:
        history = json.loads(Path(args.history).read_text())
    summary = totals(history)
    print(f"{summary['sessions']} session(s), {summary['steps']} steps, {summary['speech_hours']} h of speech")
    for hours, cer, session in learning_curve(history):
        print(f"  session {session}: {hours:7.2f} h  dev CER {cer:.2f} %")
    for hours, cer, session in real_speech_curve(history):
        print(f"  session {session}: {hours:7.2f} h  real-speech dev CER {cer:.2f} %")
    so_far = learning_curve(history)[-1][0] if learning_curve(history) else 0.0
    if args.target_cer is not None:
        _print_extrapolation(session_ends(history), args.target_cer, "dev", so_far)
    if args.target_real_cer is not None:
        real_ends = [(hours, cer) for hours, cer, _ in real_speech_curve(history)]
        _print_extrapolation(real_ends, args.target_real_cer, "real-speech dev", so_far)
    if args.plot:
        print(f"wrote {plot_learning_curve(history, args.plot, args.target_cer, args.target_real_cer)}")
    return 0


def _print_extrapolation(ends: list[tuple[float, float]], target_cer: float, name: str, so_far: float) -> None:
    if len({hours for hours, _ in ends}) < 2:
        print(f"{name} CER {target_cer:g} %: the fit needs points from at least two sessions")
        return
    fit = power_law_fit(ends)
    needed = hours_to_reach(fit, target_cer)
    print(f"power-law fit of the {len(ends)} sessions' last {name} points: CER = {fit[0]:.1f} * hours^-{fit[1]:.3f}; "
          f"{name} CER {target_cer:g} % at about {needed:,.0f} h of speech ({max(needed - so_far, 0):,.0f} h more "
          f"than the {so_far:.1f} h so far)")
