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

from . import arguments

# subcommand -> (module running it, function running it, function adding its arguments, one-line help). The
# arguments come from `hubert_ee.arguments` (light: no torch), except for the two stages named by module
# ("synth", "benchmark"), whose flags live beside them; a stage module is imported only to run it.
COMMANDS = {
    "synth": ("synth", "run_synth", "synth.add_synth_arguments", "Build a synthetic English speech corpus offline."),
    "train-backbone": ("train", "run_backbone", "add_backbone_arguments",
                       "Train a plain HubertForCTC from scratch with CTC (the Trainer)."),
    "train": ("train", "run_exits", "add_exit_arguments",
              "Convert a HubertForCTC checkpoint to HuBERT-EE and train its exit branches (the Trainer)."),
    "evaluate": ("evaluate", "run", "add_evaluate_arguments",
                 "WER of every exit, threshold sweeps with measured speedup, and the oracle."),
    "compare": ("compare", "run", "add_compare_arguments",
                "Compare several `hubert-ee evaluate` results in one table (and one plot)."),
    "calibrate": ("calibrate", "run", "add_calibrate_arguments",
                  "Choose the fastest criterion/threshold within a WER budget and store it in the config (and card) "
                  "of the model folder that --model names."),
    "transcribe": ("transcribe", "run", "add_transcribe_arguments",
                   "Transcribe audio files or folders with early exit."),
    "benchmark": ("benchmark", "run", "benchmark.add_arguments",
                  "Latency/throughput against HubertForCTC on the same weights."),
    "card": ("card", "run", "add_card_arguments",
             "Write the model card (MODEL/README.md) from evaluation JSON (no hand-typed numbers)."),
    "history": ("history", "run", "add_history_arguments",
                "Record a training session's dev evaluations and draw the learning curve across sessions."),
    "push": ("push", "run", "add_push_arguments", "Upload a Hub-ready model folder to the Hugging Face Hub."),
    "build-lm": ("language_model", "run", "add_build_lm_arguments",
                 "Build the n-gram LM for LM decoding (ctc_with_lm) into a model folder, from text with no dev/test "
                 "sentence."),
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
    """The `hubert-ee` parser. Only the subcommands in `commands` (all when None) get their flags; the others are
    listed with their one-line help. Flags come from `hubert_ee.arguments`, so building the parser imports no stage
    (synth's and benchmark's flags live in their modules: naming those imports them)."""
    parser = argparse.ArgumentParser(
        prog="hubert-ee", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Show informational log messages.")
    parser.add_argument("--version", action="version", version=version_line(),
                        help="Show the versions of hubert-ee, torch and transformers, and exit.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, run_name, add_name, help_text) in COMMANDS.items():
        if commands is not None and name not in commands:
            subparsers.add_parser(name, help=help_text, description=help_text)
            continue
        try:
            add = _arguments_function(add_name)
        except ModuleNotFoundError as error:  # a stage whose optional dependency is missing stays listed
            sub = subparsers.add_parser(name, help=f"{help_text} (unavailable: {error})")
            sub.set_defaults(handler=lambda args, error=error: _unavailable(error))
            continue
        sub = subparsers.add_parser(name, help=help_text, description=help_text, formatter_class=DefaultsHelpFormatter)
        add(sub)
        sub.set_defaults(handler=_runner(module_name, run_name))
    return parser


def version_line() -> str:
    """`hubert-ee X (torch Y, transformers Z)`, from the installed distributions' metadata (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"hubert-ee {installed('hubert-ee')} (torch {installed('torch')}, transformers {installed('transformers')})"


def _arguments_function(name: str):
    """`add_x` of `hubert_ee.arguments`, or `module.add_x` of a stage that keeps its own flags."""
    if "." not in name:
        return getattr(arguments, name)
    module_name, function = name.split(".")
    return getattr(importlib.import_module(f"{__package__}.{module_name}"), function)


def _runner(module_name: str, run_name: str):
    """The stage's run function, its module imported only when the command runs."""

    def run(args):
        try:
            module = importlib.import_module(f"{__package__}.{module_name}")
        except ModuleNotFoundError as error:
            return _unavailable(error)
        return getattr(module, run_name)(args)

    return run


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
        print(f"hubert-ee {args.command}: error: {message}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0  # a stage may return its result object


def _error_line(error: Exception) -> str | None:
    """One line for a failure the user can act on (bad input, a file, the network), or None for a bug, whose
    traceback is worth seeing."""
    from .data import network_error_types

    text = " ".join(str(error).split())
    if isinstance(error, network_error_types()):
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return (f"the Hugging Face Hub is not used: HF_HUB_OFFLINE is set ({type(error).__name__}: {text}); "
                    "unset it to reach the Hub, or name a local folder")
        return (f"could not reach the Hugging Face Hub ({type(error).__name__}: {text}); check the network and "
                "the token, or set HF_HUB_OFFLINE=1 to use only what is cached")
    if isinstance(error, (OSError, ValueError)):
        return text
    return None


if __name__ == "__main__":
    sys.exit(main())
