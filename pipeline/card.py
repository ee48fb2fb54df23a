"""Model card stage: `hubert-ee card` writes the card published with a model, from evaluation JSON only.

Every number in the card comes from `hubert-ee evaluate` JSON files (no hand-typed results): the in-domain test
evaluation (`--eval`), optionally an out-of-domain one (`--ood-eval`, e.g. real human speech), both again decoded with
the folder's n-gram LM (`--lm-eval`, `--ood-lm-eval`), and the operating
point stored in the model's config by `hubert-ee calibrate`. The training commands come from a text file
(`--commands`), so the card says exactly how the model was made. The card is a Hugging Face model card: YAML
metadata (license, tags, datasets, metrics, `pipeline_tag`, `library_name`, a `model-index` with the WER results)
followed by markdown; `huggingface_hub.ModelCard` parses it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from configuration_early_exit import EarlyExitConfigMixin

from .arguments import UsageError
from .loading import MODEL_IDENTITY_FIELDS, early_exit_class, folder_identity, identity_mismatches, load_early_exit_config
from .operating_point import (
    CALIBRATED_METRIC,
    MEASURED_LINE,
    SETTING_LINE,
    operating_point,
    operating_point_setting,
)
from .outputs import check_output_path, write_bytes, write_texts
from .language_model import has_language_model
from .results import describe_decoder, markdown_report, setting_of_row
from .timing import format_speedup

logger = logging.getLogger(__name__)

# The card's metadata key recording which model it describes (`MODEL_IDENTITY_FIELDS`); `hubert-ee push` checks it.
IDENTITY_KEY = "hubert_ee_model"

CITATION = """@inproceedings{yoon2024hubertee,
  title     = {HuBERT-EE: Early Exiting HuBERT for Efficient Speech Recognition},
  author    = {Yoon, Ji Won and Woo, Beom Jun and Kim, Nam Soo},
  booktitle = {Interspeech},
  year      = {2024},
  note      = {arXiv:2204.06328}
}"""


def example_override(result: dict, config: EarlyExitConfigMixin) -> tuple[str, str]:
    """The per-call setting the card's usage shows, and what it does. Exits off in the config: the fastest setting
    of the config's criterion measured in `result` (naming it turns exits on for the call), with its speed and WER;
    exits on: a stricter one."""
    setting = config.exit_setting
    criterion = setting.criterion
    if not setting.early_exit:
        rows = [row for row in result["sweep"] if row["criterion"] == criterion]
        if rows:
            best = max(rows, key=lambda row: row.get("expected_speedup", row["speedup"]))
            best_setting = setting_of_row(best)
            shown = (f"exit_patience={best_setting.patience}" if criterion == "patience"
                     else f"exit_threshold={best_setting.threshold:g}")
            return shown, (f"early exit on for this call: {format_speedup(best)}, WER {best['wer']:.2f} % "
                           f"(full depth {result['final_wer']:.2f} %) on the test split")
        return f"exit_criterion={criterion!r}", "early exit on for this call, at the config's setting"
    stricter = {"confidence": "exit_threshold=0.99", "entropy": "exit_threshold=0.01",
                "patience": f"exit_patience={setting.patience + 1}"}[criterion]
    return stricter, "stricter: later exits, closer to full depth; this call only"


LM_METRIC = "WER (full depth, n-gram LM)"


def _metadata(repo_name: str, result: dict, point: dict | None, dataset_name: str, ood: dict | None,
              identity: dict | None, lm: dict | None = None, ood_lm: dict | None = None) -> dict:
    metrics = [{"type": "wer", "value": round(result["final_wer"], 2), "name": "WER (full depth)"}]
    if point is not None:
        metrics.append({"type": "wer", "value": round(point["wer"], 2), "name": CALIBRATED_METRIC})
    if lm is not None:
        metrics.append({"type": "wer", "value": round(lm["final_wer"], 2), "name": LM_METRIC})
    results = [{"task": {"type": "automatic-speech-recognition", "name": "Speech Recognition"},
                "dataset": {"type": dataset_name, "name": dataset_name, "split": "test"}, "metrics": metrics}]
    if ood is not None:
        ood_metrics = [{"type": "wer", "value": round(ood["final_wer"], 2), "name": "WER (full depth)"}]
        if ood_lm is not None:
            ood_metrics.append({"type": "wer", "value": round(ood_lm["final_wer"], 2), "name": LM_METRIC})
        results.append({"task": {"type": "automatic-speech-recognition", "name": "Speech Recognition"},
                        "dataset": {"type": "real-speech-dev", "name": "real human read speech (out of domain)"},
                        "metrics": ood_metrics})
    return {
        "language": ["en"],
        "license": "apache-2.0",
        "library_name": "transformers",
        "pipeline_tag": "automatic-speech-recognition",
        "tags": ["hubert", "hubert-ee", "early-exit", "ctc", "speech", "audio", "automatic-speech-recognition"],
        "datasets": [dataset_name],
        "metrics": ["wer"],
        "model-index": [{"name": repo_name, "results": results}],
        **({IDENTITY_KEY: {field: identity[field] for field in MODEL_IDENTITY_FIELDS}} if identity else {}),
    }


def build_card(model_folder: str | Path, result: dict, *, repo_id: str = "ORG/hubert-ee", dataset_name: str =
               "synthetic-english-speech", commands: str = "", ood: dict | None = None,
               plot_name: str | None = None, comparison: str = "", history: dict | None = None,
               curve_name: str | None = None, peer: dict | None = None, training_data: str = "",
               identity: dict | None = None, lm: dict | None = None, ood_lm: dict | None = None) -> str:
    """Render the card (metadata + markdown) for `model_folder` from evaluation results; `training_data` (markdown)
    is its "Training data" section: what the model learned from, and the credit each corpus asks for; `identity`
    (`folder_identity`) is recorded in the metadata for `hubert-ee push` to check; `lm` (an evaluation of the same
    split with `--decoder lm`) is the section on decoding with the folder's n-gram LM, and `ood_lm` (the same for the
    `ood` utterances) adds the LM's row to the real-speech section."""
    config = load_early_exit_config(model_folder)
    model_class = early_exit_class(config.model_type)
    plain_class = model_class.plain_ctc_class.__name__
    point = operating_point(result, config)
    metadata = yaml.safe_dump(_metadata(repo_id.split("/")[-1], result, point, dataset_name, ood, identity, lm,
                                        ood_lm), sort_keys=False)
    lines = [
        "---", metadata.rstrip(), "---", "",
        f"# {repo_id.split('/')[-1]}", "",
        f"HuBERT-EE: a CTC {model_class.backbone_name} with early-exit branches. Each utterance stops at the first "
        "branch confident enough and returns that branch's transcript, skipping the deeper encoder layers "
        "([Yoon, Woo & Kim, arXiv 2204.06328](https://arxiv.org/abs/2204.06328)).", "",
        f"- encoder layers: {config.num_hidden_layers}, hidden size {config.hidden_size}; exit branches "
        f"(`{config.exit_branch}`) after layers {config.exit_layers}",
        SETTING_LINE + operating_point_setting(config),
    ]
    if point is not None:
        lines.append(
            MEASURED_LINE + f"WER {point['wer']:.2f} % (full depth {result['final_wer']:.2f} %), "
            f"mean exit layer {point['mean_exit_layer']:.2f}, measured speedup {format_speedup(point)}"
        )
    override, effect = example_override(result, config)
    name, value = override.split("=")
    default = "early exit per utterance" if config.exit_setting.early_exit else "full depth (early exit off in the config)"
    lines += ["", "## Usage", "", "```python", "from transformers import pipeline", "",
              f'asr = pipeline("automatic-speech-recognition", model="{repo_id}", trust_remote_code=True)',
              f'print(asr("speech.wav")["text"])  # {default}',
              f'print(asr("speech.wav", {override})["text"])  # {effect}',
              f'asr("speech.wav", generate_kwargs={{"{name}": {value}}})  # the same',
              "```", "", "```python",
              "from transformers import AutoModelForCTC, AutoProcessor", "",
              f'model = AutoModelForCTC.from_pretrained("{repo_id}", trust_remote_code=True).eval()',
              f'processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)',
              'inputs = processor(audio_16khz, sampling_rate=16000, return_tensors="pt")',
              f"out = model.generate(inputs.input_values)  # {default}",
              "print(processor.tokenizer.batch_decode(out.sequences), out.exit_layer)  # greedy CTC",
              *(["print(processor.batch_decode(out.logits.numpy()).text)  # beam search with the n-gram LM"]
                if has_language_model(model_folder) else []),
              f"model.generate(inputs.input_values, {override})  # {effect}",
              f"model.generate(inputs.input_values, early_exit=False)  # full depth = {plain_class}", "```", ""]
    if training_data.strip():
        lines += ["## Training data", "", training_data.strip(), ""]
    if commands.strip():
        lines += ["## Training", "", "Made with the `hubert-ee` CLI, exactly these commands:", "", "```bash",
                  commands.strip(), "```", ""]
    lines += ["## Results (in-domain test split)", "", markdown_report(result).split("\n", 1)[1].strip(), ""]
    if plot_name:
        lines += [f"![WER against speedup]({plot_name})", ""]
    if lm is not None:
        lines += language_model_lines(lm)
    if history:
        lines += training_history_lines(history, curve_name)
    if comparison.strip():
        lines += ["## Exit-training strategies compared", "",
                  "The candidates the shipped model's training was chosen from, each evaluated on the same "
                  "utterances (`hubert-ee compare`).", "",
                  comparison.strip(), ""]
    if ood is not None:
        lines += out_of_domain_lines(ood, peer, ood_lm)
    lines += ["## Limitations", "",
              "- Accuracy depends on how close speech is to the training data (see \"Training data\" when given): "
              "on real speech unlike it, it is far lower than on the in-domain test split (see above when reported).",
              f"- The figures above: {describe_decoder(result.get('decoder'))}; upper-case characters and "
              "apostrophes only.",
              "- Speedups are wall-clock ratios against the same model at full depth, measured in the same run; they "
              "depend on hardware, batch size and how early utterances exit.", "",
              "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)


def language_model_lines(lm: dict) -> list[str]:
    """The card's section on LM decoding (what the pipeline does with a folder that has `language_model/`): the
    same test split decoded with the LM, greedy beside it, and the decode time in the speedups."""
    return ["## Results with the n-gram language model (`ctc_with_lm`)", "",
            "The ASR pipeline decodes with the folder's `language_model/` by itself. The same test split, decoded "
            f"with it ({describe_decoder(lm.get('decoder'))}); the speedups include the decode time:", "",
            markdown_report(lm).split("\n", 1)[1].strip(), ""]


def out_of_domain_lines(ood: dict, peer: dict | None = None, ood_lm: dict | None = None) -> list[str]:
    """The card's section on real human speech; with `peer` (a peer recogniser's scores on the same utterances, as
    `recipes/pocketsphinx_peer.py` writes them), a row for what a user would otherwise pick; with `ood_lm` (the same
    utterances decoded with the folder's LM), the model's row with the LM."""
    lines = ["## Out of domain: real human speech", "",
             "Real read speech from speakers and recordings the model never trained on:", "",
             markdown_report(ood).split("\n", 1)[1].strip(), ""]
    if peer is None and ood_lm is None:
        return lines
    rows = [("this model, full depth, greedy" if ood_lm is not None else "this model, full depth", ood)]
    if ood_lm is not None:
        rows.append((f"this model, full depth, n-gram LM (beam {ood_lm['decoder'].get('beam_width')})", ood_lm))
    if peer is not None:
        rows.append((peer["recogniser"], {"final_wer": peer["wer"], "final_cer": peer["cer"]}))
    count = ood.get("num_utterances") or (peer or {}).get("utterances", "")
    return lines + [f"The same {count} utterances, scored the same way (WER/CER in percent "
                    "after the same text normalisation):", "", "| recogniser | WER | CER |", "|---|---:|---:|",
                    *(f"| {name} | {scores['final_wer']:.2f} | "
                      + (f"{scores['final_cer']:.2f} |" if "final_cer" in scores else "- |") for name, scores in rows),
                    ""]


def training_history_lines(history: dict, curve_name: str | None = None) -> list[str]:
    """The card's "Training history" section: every session (`hubert-ee history`), the totals, the learning curve."""
    from .history import totals

    total = totals(history)
    lines = ["## Training history", "",
             f"{total['sessions']} training session(s) so far, {total['steps']:,} optimiser steps, "
             f"{total['speech_hours']:g} hours of speech processed in all; each session continued the last one's "
             "backbone. Dev CER: the final head on the same 200 dev utterances.", "",
             "| session | date | steps | hours of speech | dev CER (%) at its end | real-speech dev CER (%) | "
             "what it did |",
             "|---:|---|---:|---:|---:|---:|---|"]
    for session in history["sessions"]:
        cer = (session.get("dev") or [{}])[-1].get("cer")
        real = session.get("real_speech", {}).get("cer")
        lines.append(f"| {session['session']} | {session.get('date', '')} | {session.get('steps', 0):,} | "
                     f"{session.get('speech_hours', 0):g} | {'' if cer is None else f'{cer:.2f}'} | "
                     f"{'' if real is None else f'{real:.2f}'} | {session.get('note', '')} |")
    lines.append("")
    if curve_name:
        lines += [f"![learning curve: dev CER against hours of speech]({curve_name})", ""]
    return lines


def write_card(model_folder: str | Path, eval_json: str | Path, output: str | Path | None = None, **kwargs) -> Path:
    """Write the card to `model_folder/README.md` (what the Hub shows) and, when given, a copy to `output`; returns
    the README's path. Both are written whole or not at all, after their paths are checked."""
    model_folder = Path(model_folder)
    readme = check_output_path(model_folder / "README.md", "the card")
    if output is not None:
        check_output_path(output, "--output")
    identity = folder_identity(model_folder)
    result = load_evaluation_of(model_folder, identity, eval_json, "--eval")
    ood_path, peer_path = kwargs.pop("ood_json", None), kwargs.pop("peer_json", None)
    lm_path, ood_lm_path = kwargs.pop("lm_json", None), kwargs.pop("ood_lm_json", None)
    if lm_path:
        kwargs["lm"] = load_lm_evaluation_of(model_folder, identity, lm_path, "--lm-eval")
    if ood_path:
        kwargs["ood"] = load_evaluation_of(model_folder, identity, ood_path, "--ood-eval")
    if ood_lm_path:
        if not ood_path:
            raise UsageError("--ood-lm-eval needs --ood-eval: the LM's scores are shown beside the greedy ones on that set")
        kwargs["ood_lm"] = load_lm_evaluation_of(model_folder, identity, ood_lm_path, "--ood-lm-eval")
    if peer_path:
        if not ood_path:
            raise UsageError("--peer-eval needs --ood-eval: the peer's scores are shown beside the model's on that set")
        kwargs["peer"] = json.loads(Path(peer_path).read_text())
    history_path, curve = kwargs.pop("history_json", None), kwargs.pop("curve", None)
    if history_path:
        kwargs["history"] = json.loads(Path(history_path).read_text())
    if curve:
        copied = model_folder / Path(curve).name
        write_bytes(check_output_path(copied, "the learning curve's copy"), Path(curve).read_bytes())
        kwargs["curve_name"] = Path(curve).name
    plot = kwargs.pop("plot", None)
    if plot:
        copied = model_folder / Path(plot).name
        if not copied.exists() or not copied.samefile(plot):
            write_bytes(check_output_path(copied, "the plot's copy"), Path(plot).read_bytes())
        kwargs["plot_name"] = Path(plot).name
    card = build_card(model_folder, result, identity=identity, **kwargs)
    write_texts({readme: card, **({output: card} if output is not None else {})})
    return readme


def load_evaluation_of(model_folder, identity: dict, eval_json, flag: str) -> dict:
    """The evaluation JSON `eval_json`, refused (`UsageError`) unless it evaluated the model in `model_folder`:
    same geometry (layers, exits, vocabulary) and, where it records them, the same weights (`identity`:
    `folder_identity(model_folder)`). An evaluation written before fingerprints were recorded is checked on what it
    has, with a warning."""
    result = json.loads(Path(eval_json).read_text())
    mismatches = identity_mismatches(result, identity)
    if mismatches:
        raise UsageError(
            f"{flag} {eval_json} is an evaluation of another model than {model_folder}: "
            f"{'; '.join(mismatches)} (evaluation vs folder). Evaluate this folder (hubert-ee evaluate --model "
            f"{model_folder} --json ...) and pass that file."
        )
    unchecked = [field for field in MODEL_IDENTITY_FIELDS if result.get(field) is None]
    if unchecked:
        logger.warning("%s %s records no %s (written by an older hubert-ee evaluate): those are not checked "
                       "against %s", flag, eval_json, ", ".join(unchecked), model_folder)
    return result


def load_lm_evaluation_of(model_folder, identity: dict, eval_json, flag: str) -> dict:
    """`load_evaluation_of`, refused (`UsageError`) unless the evaluation decoded with the LM."""
    result = load_evaluation_of(model_folder, identity, eval_json, flag)
    if (result.get("decoder") or {}).get("name") != "lm":
        raise UsageError(f"{flag} {eval_json} was decoded greedily: evaluate with --decoder lm")
    return result


def run(args) -> int:
    commands = Path(args.commands).read_text() if args.commands else ""
    comparison = Path(args.comparison).read_text() if args.comparison else ""
    training_data = Path(args.training_data).read_text() if args.training_data else ""
    readme = write_card(args.model, args.eval, args.output, ood_json=args.ood_eval, peer_json=args.peer_eval,
                        lm_json=args.lm_eval, ood_lm_json=args.ood_lm_eval, plot=args.plot,
                        repo_id=args.repo_id, dataset_name=args.dataset_name, commands=commands,
                        comparison=comparison, history_json=args.history, curve=args.curve,
                        training_data=training_data)
    print(f"wrote {readme}" + (f" and {args.output}" if args.output else ""))
    return 0
