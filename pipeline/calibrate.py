"""Calibrate stage: choose an operating point on a dev set and write it into the model's `config.json`.

`hubert-ee calibrate --model FOLDER --dataset DEV [--max-wer-increase 0.5]` runs the evaluation of
`hubert_ee.evaluate` (exits, threshold sweep with measured and expected speedups), then picks the sweep row with the
largest speedup whose WER stays within `--max-wer-increase` absolute percentage points of the final head's (ties: the
lower WER), and stores it as the model's default (`exit_criterion`, `exit_threshold`, `exit_patience`,
`early_exit`), so `from_pretrained` + `generate` use it without arguments.

It writes into the folder that `--model` names, and only there: `config.json`'s early-exit fields and, when the
folder has a card written by `hubert-ee card` (README.md), the card's operating-point line, both replaced at once
(`hubert_ee.outputs.write_texts`). The folder's code files are never touched. Without `--model` (the default model)
nothing is written into a model folder; the choice is printed (and saved with `--json`).

The speedup it chooses by is the cost model's expected one (`--choose-by expected`, the default: from each
utterance's exit layer and the measured cost of each part of the model, so timing noise cannot sway it), or the
measured one (`--choose-by measured`: rows whose measured speedup is marked unreliable do not count); the choice
names it. A row only counts when it is faster than the full model (`speedup > --min-speedup`, default 1.0) and some
utterance leaves early (a setting that skips no layer is never faster). If no row qualifies, early exit is switched
off (`early_exit=False`: the model then behaves exactly like `HubertForCTC`).

Calibrate on a development split, never on the test split you report.
"""

from __future__ import annotations

from pathlib import Path

from .arguments import UsageError
from .evaluate import evaluate_from_args
from .loading import resolve_model_spec
from .operating_point import SETTING_LINE, choose_operating_point, describe_choice, write_operating_point
from .outputs import check_output_path, write_json

__all__ = ["run"]


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


def run(args) -> int:
    """`hubert-ee calibrate`: 0 on success. Usage errors raise (`cli.main`: one line, exit code 2)."""
    if args.max_wer_increase < 0:
        raise UsageError(f"--max-wer-increase must be >= 0, got {args.max_wer_increase}")
    folder = _folder_to_write(args)
    result = evaluate_from_args(args, str(folder) if folder else resolve_model_spec(None))
    choice = choose_operating_point(result, args.max_wer_increase, args.min_speedup, args.choose_by)
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
                    "evaluation": result.to_json()}, args.json)
        print(f"wrote {args.json}")
    return 0
