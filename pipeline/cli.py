"""`hubert-ee`: one console script, one subcommand per stage of the workflow.

    hubert-ee synth            build a synthetic English speech corpus offline (espeak-ng, flite, festival)
    hubert-ee train-backbone   train a plain HubertForCTC from scratch or continue one (stand-in for hubert-*-ls960-ft)
    hubert-ee train            convert a HubertForCTC checkpoint to HuBERT-EE and train its exits
    hubert-ee evaluate         per-exit WER, threshold sweeps with measured speedup, the oracle
    hubert-ee compare          several evaluate results side by side (e.g. one per exit-training strategy)
    hubert-ee calibrate        pick the fastest criterion/threshold within a WER budget; write it to --model's config
    hubert-ee transcribe       transcribe files/folders with early exit
    hubert-ee benchmark        speed against HubertForCTC on the same weights
    hubert-ee card             the model card, generated from evaluation JSON
    hubert-ee history          training sessions and the learning curve across them
    hubert-ee push             upload a Hub-ready folder to the Hugging Face Hub
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module, function adding its arguments, function running it, one-line help)
COMMANDS = {
    "synth": ("synth", "add_synth_arguments", "run_synth", "Build a synthetic English speech corpus offline."),
    "train-backbone": ("train", "add_backbone_arguments", "run_backbone",
                       "Train a plain HubertForCTC from scratch with CTC (the Trainer)."),
    "train": ("train", "add_exit_arguments", "run_exits",
              "Convert a HubertForCTC checkpoint to HuBERT-EE and train its exit branches (the Trainer)."),
    "evaluate": ("evaluate", "add_arguments", "run",
                 "WER of every exit, threshold sweeps with measured speedup, and the oracle."),
    "compare": ("compare", "add_arguments", "run",
                "Compare several `hubert-ee evaluate` results in one table (and one plot)."),
    "calibrate": ("calibrate", "add_arguments", "run",
                  "Choose the fastest criterion/threshold within a WER budget and store it in the config (and card) "
                  "of the model folder that --model names."),
    "transcribe": ("transcribe", "add_arguments", "run", "Transcribe audio files or folders with early exit."),
    "benchmark": ("benchmark", "add_arguments", "run", "Latency/throughput against HubertForCTC on the same weights."),
    "card": ("card", "add_arguments", "run",
             "Write the model card (MODEL/README.md) from evaluation JSON (no hand-typed numbers)."),
    "history": ("history", "add_arguments", "run",
                "Record a training session's dev evaluations and draw the learning curve across sessions."),
    "push": ("push", "add_arguments", "run", "Upload a Hub-ready model folder to the Hugging Face Hub."),
}  # fmt: skip


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Each flag's help ends with its default, unless the help already names one or there is none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        nothing = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "default" in text.lower() or nothing or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The `hubert-ee` parser. Only the subcommands in `commands` (all when None) get their flags, which means
    importing their stage (torch, transformers, datasets...); the others are listed with their one-line help, so
    `hubert-ee --help` and each `hubert-ee COMMAND --help` import no more than they show."""
    parser = argparse.ArgumentParser(
        prog="hubert-ee", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Show informational log messages.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, add_name, run_name, help_text) in COMMANDS.items():
        if commands is not None and name not in commands:
            subparsers.add_parser(name, help=help_text, description=help_text)
            continue
        try:
            module = importlib.import_module(f"{__package__}.{module_name}")
        except ModuleNotFoundError as error:  # a stage whose optional dependency is missing stays listed
            sub = subparsers.add_parser(name, help=f"{help_text} (unavailable: {error})")
            sub.set_defaults(handler=lambda args, error=error: _unavailable(error))
            continue
        sub = subparsers.add_parser(name, help=help_text, description=help_text, formatter_class=DefaultsHelpFormatter)
        getattr(module, add_name)(sub)
        sub.set_defaults(handler=getattr(module, run_name))
    return parser


def _command_named(argv: list[str]) -> list[str]:
    """The subcommand in `argv` (the first word that is not a flag: the only top-level flag takes no value)."""
    return [word for word in argv if not word.startswith("-")][:1]


def _unavailable(error) -> int:
    print(f"error: this command cannot run here: {error}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_named(argv)).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        code = args.handler(args)
    except Exception as error:
        message = _error_line(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0  # a stage may return its result object


def _error_line(error: Exception) -> str | None:
    """One line for a failure the user can act on (bad input, a file, the network), or None for a bug, whose
    traceback is worth seeing."""
    from .data import network_error_types

    text = " ".join(str(error).split())
    if isinstance(error, network_error_types()):
        return (f"could not reach the Hugging Face Hub ({type(error).__name__}: {text}); check the network and "
                "the token, or set HF_HUB_OFFLINE=1 to use only what is cached")
    if isinstance(error, (OSError, ValueError)):
        return text
    return None


if __name__ == "__main__":
    sys.exit(main())
