# Copyright 2026 The HuBERT-EE authors. Licensed under the Apache License, Version 2.0.
"""`hubert-ee benchmark`'s options and the run they describe: workloads on every device and dtype, then the report
(JSON, Markdown, plot), or the profile (`--profile`), or a plot of earlier reports (`--plot-from`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import transformers

from ..arguments import UsageError, str_list
from ..loading import resolve_model_spec
from ..outputs import output_file, write_text
from .forced import run_forced
from .models import ARCHS, COMPILE_MODES, dtype_name
from .profiling import profile_overhead
from .report import plot_efficiency, to_markdown
from .trained import run_trained


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `hubert-ee benchmark` options."""
    parser.add_argument("--workloads", default="trained,forced",
                        help="comma-separated among trained,forced (default: both; trained is skipped without a "
                             "model)")
    parser.add_argument("--json", metavar="OUT", type=output_file, help="write the report as JSON here")
    parser.add_argument("--markdown", metavar="OUT.md", type=output_file, help="write the tables as Markdown here")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, or auto: CPU, plus CUDA when present (comma-separated list allowed)")
    parser.add_argument("--dtypes", default=None,
                        help="comma-separated among fp32,fp16,bf16 (default: fp32 on CPU; fp32,fp16,bf16 on CUDA)")
    parser.add_argument("--batch-sizes", default="1,8,16", help="comma-separated (default: 1,8,16)")
    parser.add_argument("--repeats", type=int, default=10, help="recorded repetitions; medians are reported "
                                                                "(default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded warm-up repetitions (default: 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (torch.set_num_threads; default: torch's). On a shared, busy CPU "
                             "fewer threads than cores avoids OpenMP oversubscription stalls")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="torch.backends.cudnn.benchmark = True (cuDNN picks its convolution algorithms by "
                             "timing them; both models alike)")
    parser.add_argument("--plot", metavar="OUT.png", type=output_file,
                        help="write measured against ideal speedup as a PNG")
    parser.add_argument("--plot-from", nargs="+", metavar="REPORT.json", default=None,
                        help="benchmark nothing: plot the rows of these earlier --json reports into --plot")
    parser.add_argument("--overlap-exit-decisions", choices=("auto", "on", "off"), default="auto",
                        help="queue the layer after an exit before waiting for the exit's decision (the models' "
                             "overlap_exit_decisions; auto: the model's default)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bars")
    _add_forced_arguments(parser.add_argument_group("forced workload (random weights, forced exit layers)"))
    _add_trained_arguments(parser.add_argument_group("trained workload"))
    return parser


def _add_forced_arguments(forced) -> None:
    forced.add_argument("--archs", default="base,large", help=f"comma-separated among {','.join(ARCHS)},custom "
                                                              "(default: base,large)")
    forced.add_argument("--branch", default="transformer",
                        help="exit branch type(s), comma-separated among transformer,linear (default: transformer)")
    forced.add_argument("--exit-layers", default=None,
                        help="exit layers for every arch, e.g. 4,8 (default: base 4,8; large 8,16)")
    forced.add_argument("--exit-distribution", action="append", default=None, metavar="LAYER:SHARE,...",
                        help="share of utterances leaving after each layer, e.g. 4:0.25,8:0.25,12:0.5 ('final' = "
                             "the last layer); repeat the option for several (default per arch: a mixed one and "
                             "all-at-each-exit). Distributions naming layers that are not exits of an arch are skipped "
                             "for it.")
    forced.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds (default: 10)")
    forced.add_argument("--overhead-detail", action="store_true",
                        help="also time early_exit=False, separating the layer loop's cost from the branches'")
    forced.add_argument("--component-min-ms", type=float, default=20.0,
                        help="each component timer (front end, one layer, one branch, head, criterion: timed "
                             "interleaved with the full forwards) spans at least this long, calling the component "
                             "several times (default: 20)")
    forced.add_argument("--compile", default="off", choices=COMPILE_MODES, metavar="MODE",
                        help="torch.compile both models and every timed component alike: off (default), or a "
                             "torch.compile mode: " + ", ".join(COMPILE_MODES[1:]) + " (on CUDA, reduce-overhead "
                             "replays each piece between two exit decisions as one CUDA graph). Compilation happens "
                             "in the warm-up, which is raised to at least 3 repetitions")
    forced.add_argument("--compile-backend", default="inductor", metavar="NAME",
                        help="torch.compile backend with --compile (default: inductor; e.g. cudagraphs, aot_eager)")
    forced.add_argument("--arch-config", default=None, help=argparse.SUPPRESS)  # JSON: 'custom' arch / overrides
    forced.add_argument("--profile", metavar="OUT.txt", default=None, type=output_file,
                        help="instead of benchmarking, write torch.profiler tables of HubertForCTC and of HuBERT-EE "
                             "with exits never taken (first arch, branch, dtype, device and batch size)")
    forced.add_argument("--profile-rows", type=int, default=30, help=argparse.SUPPRESS)


def _add_trained_arguments(trained) -> None:
    trained.add_argument("--model", default=None,
                         help="trained HuBERT-EE folder or Hub id (default: hubert_ee.DEFAULT_MODEL if defined)")
    trained.add_argument("--dataset", default=None, help="test set (folder or Hub id, see load_speech_dataset)")
    trained.add_argument("--split", default="test", help="dataset split (default: test)")
    trained.add_argument("--max-samples", type=int, default=64, help="utterances used (default: 64)")
    trained.add_argument("--thresholds", default=None,
                         help="comma-separated exit thresholds (patience values for the patience criterion; "
                              "default: the config's)")
    trained.add_argument("--exit-criterion", default=None, choices=("confidence", "entropy", "patience"),
                         help="default: the config's")


# ---------------------------------------------------------------------------------------------- option values

def _numbers(value, kind, flag: str) -> list:
    try:
        return [kind(item) for item in str_list(value)]
    except ValueError as error:
        raise UsageError(f"{flag} {value!r}: {error}") from error


def _parsed(args: argparse.Namespace) -> argparse.Namespace:
    """A copy of `args` whose comma-separated options are lists (of ints for batch sizes and exit layers, of
    floats for thresholds), checked."""
    parsed = argparse.Namespace(**vars(args))
    parsed.workloads, parsed.archs, parsed.branch = str_list(args.workloads), str_list(args.archs), str_list(args.branch)
    parsed.exit_distribution = str_list(args.exit_distribution)
    parsed.batch_sizes = _numbers(args.batch_sizes, int, "--batch-sizes")
    parsed.exit_layers = _numbers(args.exit_layers, int, "--exit-layers")
    parsed.thresholds = _numbers(args.thresholds, float, "--thresholds")
    unknown = set(parsed.workloads) - {"trained", "forced"}
    if unknown:
        raise UsageError(f"unknown workload(s) {sorted(unknown)}; choose among trained,forced")
    for branch in parsed.branch:
        if branch not in ("transformer", "linear"):
            raise UsageError(f"--branch {branch!r}: choose among transformer,linear")
    if args.compile not in ("off", "default") and args.compile_backend != "inductor":
        raise UsageError(f"--compile {args.compile} is a mode of the inductor backend; with "
                           f"--compile-backend {args.compile_backend} use --compile default")
    if args.compile != "off":
        parsed.warmup = max(args.warmup, 3)  # compiling, then (CUDA graphs) recording, then replaying
    return parsed


def _devices(spec: str) -> list[torch.device]:
    devices = []
    for name in str_list(spec):
        if name == "auto":
            devices.append(torch.device("cpu"))
            if torch.cuda.is_available():
                devices.append(torch.device("cuda"))
        elif name.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError("--device cuda, but CUDA is not available")
        else:
            devices.append(torch.device(name))
    return list(dict.fromkeys(devices))


def _dtypes_for(device: torch.device, spec: str | None) -> list[str]:
    if not spec:
        return ["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32"]
    try:
        return [dtype_name(name) for name in str_list(spec)]
    except ValueError as error:
        raise UsageError(f"--dtypes {spec!r}: {error}") from error


# ---------------------------------------------------------------------------------------------- the run

def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by parsed `add_arguments` options; 0 on success."""
    if args.plot_from:
        return _plot_earlier_reports(args.plot_from, args.plot)
    args = _parsed(args)
    with _recompile_limits_raised(args.compile != "off"):
        return _run(args)


@contextlib.contextmanager
def _recompile_limits_raised(compiling: bool):
    """With `--compile`, dynamo compiles one graph per stretch of the exit loop between two host reads, and one
    variant per exit path and batch shape. The benchmark runs many of both, so its recompile limits are raised
    far above them for the run: past a limit dynamo falls back to eager mode, which the timings would not show."""
    if not compiling:
        yield
        return
    import torch._dynamo

    names = ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit")
    config = torch._dynamo.config
    with config.patch(**{name: max(getattr(config, name), 512) for name in names if hasattr(config, name)}):
        yield


def _log(message: str) -> None:
    print(message, flush=True)


def _plot_earlier_reports(files: Sequence[str], plot: str | None) -> int:
    """`--plot-from`: the rows of earlier --json reports, plotted into `plot`."""
    if not plot:
        raise UsageError("--plot-from needs --plot OUT.png")
    rows = []
    for file in files:
        try:
            rows += json.loads(Path(file).read_text())["rows"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise UsageError(f"--plot-from {file}: not a benchmark --json report ({error})") from error
    try:
        _log(f"wrote {plot_efficiency(rows, plot)}")
    except ValueError as error:
        raise UsageError(f"--plot-from: {error}") from error
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    devices = _devices(args.device)
    if args.profile:
        device = devices[-1]
        text = profile_overhead(args, device, _dtypes_for(device, args.dtypes)[0], args.archs[0], args.branch[0],
                                args.batch_sizes[0], _log)
        write_text(args.profile, text + "\n")
        return 0
    report = _new_report(args, devices)
    _note_settings(report, args, devices)
    if "trained" in args.workloads:
        _run_trained_workload(report, args, devices)
    if "forced" in args.workloads:
        for device in devices:
            for dtype in _dtypes_for(device, args.dtypes):
                for arch in args.archs:
                    for branch in args.branch:
                        _merge(report, run_forced(args, device, dtype, arch, branch, _log))
    _write_report(report, args)
    return 0


def _new_report(args: argparse.Namespace, devices: list[torch.device]) -> dict:
    """An empty report with the run's `meta`: versions, devices and settings."""
    device_names = {device.type: (torch.cuda.get_device_name(device) if device.type == "cuda"
                                  else platform.processor() or platform.machine()) for device in devices}
    meta = {"created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu_threads": torch.get_num_threads(), "device_names": device_names,
            "repeats": args.repeats, "warmup": args.warmup, "seconds": args.seconds,
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "overlap_exit_decisions": args.overlap_exit_decisions, "compile": args.compile, "argv": sys.argv[1:]}
    return {"meta": meta, "rows": [], "branch_cost": [], "overhead": [], "components": [], "notes": []}


def _note(report: dict, message: str) -> None:
    report["notes"].append(message)
    _log(f"note: {message}")


def _note_settings(report: dict, args: argparse.Namespace, devices: list[torch.device]) -> None:
    """Notes on settings that shape what the numbers mean."""
    if args.compile != "off":
        _note(report, f"forced workload compiled: torch.compile(mode={args.compile!r}, "
                      f"backend={args.compile_backend!r}) on HubertForCTC, HuBERT-EE and every timed component alike; "
                      "the trained workload runs eagerly")
    if any(device.type == "cuda" for device in devices) and not torch.backends.cudnn.benchmark:
        _note(report, "CUDA without --cudnn-benchmark: cuDNN's default convolution algorithms can make the fp16/bf16 "
                      "front end dominate the forward (both models alike), which hides what the exits save")


def _run_trained_workload(report: dict, args: argparse.Namespace, devices: list[torch.device]) -> None:
    """The trained workload on every device and dtype, or a note saying why it is skipped."""
    try:
        args.model = resolve_model_spec(args.model)
    except UsageError:
        _note(report, "trained workload skipped: no --model given and hubert_ee.DEFAULT_MODEL is not defined")
        return
    if not args.dataset:
        _note(report, "trained workload skipped: no --dataset given")
        return
    for device in devices:
        for dtype in _dtypes_for(device, args.dtypes):
            _merge(report, run_trained(args, device, dtype, _log))


def _write_report(report: dict, args: argparse.Namespace) -> None:
    """The plot (`--plot`), the Markdown tables on stdout and in `--markdown`, the JSON in `--json`."""
    if args.plot:
        if report["rows"]:
            _log(f"wrote {plot_efficiency(report['rows'], args.plot)}")
        else:
            _note(report, "no plot: the run produced no speedup rows")
    markdown = to_markdown(report)
    print(markdown)
    if args.json:
        write_text(args.json, json.dumps(report, indent=2) + "\n")
    if args.markdown:
        write_text(args.markdown, markdown)


def _merge(report: dict, part: dict) -> None:
    for key in ("rows", "branch_cost", "overhead", "components"):
        report[key].extend(part.get(key, []))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m hubert_ee.benchmark`: a usage error prints one line and exits 2, as `hubert-ee benchmark` does."""
    parser = argparse.ArgumentParser(
        prog="hubert-ee benchmark",
        description="Latency/throughput of HuBERT-EE against HubertForCTC on the same weights: a trained model on a "
                    "test set, and forced exit distributions on HuBERT-base/large shapes; ideal speedup, efficiency, "
                    "branch costs and the overhead of exits that are never taken.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UsageError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
