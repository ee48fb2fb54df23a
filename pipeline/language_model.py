"""The n-gram language model a HuBERT-EE folder carries, in Hugging Face's `ctc_with_lm` layout.

`hubert-ee build-lm --dataset CORPUS --model FOLDER` builds it and saves it into the folder:

* **Text** (`lm_sentences`): the corpus' training split's transcripts plus, with `--extra-text wordnet`, the
  glosses of Debian's `wordnet-base` (about 117 000 definitions of general English), each normalised by
  `hubert_ee.text.normalize_text` into the model's alphabet (`A-Z`, apostrophe, space). No dev or test
  sentence of the corpus may be in it (`check_held_out`): the build stops naming one that is.
* **Builder** (`build_arpa`): `kaldingram`, a pure-Python interpolated modified Kneser-Ney trainer with SRILM-style
  entropy pruning (`--prune`), chosen over KenLM's `lmplz` by measurement (BENCHMARKS.md, "n-gram language model"):
  its model is the same kind and it installs from PyPI without Boost or a C++ build.
* **Layout** (`save_language_model`): `Wav2Vec2ProcessorWithLM.save_pretrained`, through the folder's own
  subclass `processing_early_exit.EarlyExitProcessorWithLM` (transformers 5.25's `from_pretrained` of the class
  is broken), writes `processor_config.json` (that class, in `auto_map`), its code file, `alphabet.json` (the tokenizer's vocabulary as pyctcdecode labels)
  and `language_model/` (the ARPA file, `unigrams.txt`, `attrs.json` with alpha and beta). `AutoProcessor` and
  `pipeline("automatic-speech-recognition")` then decode with the LM by themselves.

`load_ctc_decoder` reads it back with a clear error for a folder without an LM, a missing or corrupt LM file, and an
LM whose alphabet does not match the tokenizer's vocabulary.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from .text import normalize_text

__all__ = ["LM_DIRECTORY", "ALPHABET_FILE", "PROCESSOR_CODE_FILE", "DEFAULT_ALPHA", "DEFAULT_BETA", "LanguageModelError", "has_language_model",
           "wordnet_glosses", "corpus_sentences", "lm_sentences", "check_held_out", "build_arpa", "arpa_counts",
           "ctc_labels", "save_language_model", "load_ctc_decoder", "check_alphabet", "build_lm", "run"]

LM_DIRECTORY = "language_model"  # pyctcdecode's and transformers' name for it
ALPHABET_FILE = "alphabet.json"
PROCESSOR_CODE_FILE = "processing_early_exit.py"  # the processor class a folder with an LM loads (remote code)
WORDNET = Path("/usr/share/wordnet")
# pyctcdecode's defaults; `build-lm --alpha/--beta` stores others (tuned on dev, BENCHMARKS.md)
DEFAULT_ALPHA = 0.5
DEFAULT_BETA = 1.5
# A gloss's quoted usage examples are cut at these: each piece is one sentence of the LM text
_GLOSS_SPLIT = re.compile(r';\s*|"\s*')


class LanguageModelError(ValueError):
    """A model folder's language model is missing, unreadable or does not fit the model's tokenizer."""


def has_language_model(folder: str | Path) -> bool:
    """Whether a local model folder carries a `language_model/` directory."""
    return (Path(folder) / LM_DIRECTORY).is_dir()


# ---------------------------------------------------------------------------------------------- text

def wordnet_glosses(folder: Path = WORDNET) -> list[str]:
    """The glosses of WordNet's data files (`data.noun`, `data.verb`, `data.adj`, `data.adv`), split at `;` and at
    quotes into their definitions and usage examples, normalised; empty pieces left out."""
    files = [folder / f"data.{part}" for part in ("noun", "verb", "adj", "adv")]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"WordNet's data files are missing: {missing} (Debian package wordnet-base).")
    sentences = []
    for path in files:
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or "|" not in line:  # the licence header's lines start with spaces
                continue
            for piece in _GLOSS_SPLIT.split(line.split("|", 1)[1]):
                text = normalize_text(piece)
                if text:
                    sentences.append(text)
    return sentences


def corpus_sentences(dataset, text_column: str = "text") -> list[str]:
    """The normalised transcripts of a `datasets` split (or any sequence of rows with a text column)."""
    if hasattr(dataset, "column_names"):
        texts = dataset.select_columns([text_column])[text_column]  # the audio column is never decoded
    else:
        texts = [row[text_column] for row in dataset]
    return [text for text in (normalize_text(str(item)) for item in texts) if text]


def lm_sentences(train_sentences: Iterable[str], extra_texts: Sequence[str] = (), held_out: Iterable[str] = ()
                 ) -> list[str]:
    """The LM's text: the training sentences, then each extra source (`wordnet`) less the held-out sentences (a
    synthetic corpus draws its dev and test sentences from such sources, WordNet's usage examples among them)."""
    sources = {"wordnet": wordnet_glosses}
    unknown = [name for name in extra_texts if name not in sources]
    if unknown:
        raise ValueError(f"unknown extra text source(s) {unknown}; known: {sorted(sources)}")
    held = {normalize_text(text) for text in held_out}
    sentences = list(train_sentences)
    for name in extra_texts:
        sentences.extend(sentence for sentence in sources[name]() if sentence not in held)
    return sentences


def check_held_out(sentences: Iterable[str], held_out: Iterable[str]) -> None:
    """Raise naming the held-out (dev or test) sentences that the LM text contains, compared normalised."""
    held = {normalize_text(text) for text in held_out} - {""}
    leaked = sorted(held.intersection(sentences))
    if leaked:
        raise LanguageModelError(f"{len(leaked)} dev/test sentence(s) are in the LM text, e.g. {leaked[:3]}: an LM "
                                 "that has seen them would flatter the evaluation.")


# ---------------------------------------------------------------------------------------------- ARPA

def build_arpa(sentences: Sequence[str], output: str | Path, order: int = 3, prune: float = 0.0,
               min_counts: Sequence[int] = ()) -> Path:
    """Train an interpolated modified Kneser-Ney `order`-gram on `sentences` with kaldingram and write it as ARPA
    to `output`; `prune` > 0 entropy-prunes it (SRILM's relative-perplexity threshold), `min_counts` drops n-grams
    seen fewer times (per order, from the unigrams up)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        text = Path(work) / "text.txt"
        text.write_text("\n".join(sentences) + "\n", encoding="utf-8")
        trained = Path(work) / "trained.arpa" if prune > 0 else output
        cutoffs = [f"--gt{n}min={count}" for n, count in enumerate(min_counts, start=1) if count]
        _kaldingram("train", f"--ngram-order={order}", f"--text={text}", f"--lm={trained}", *cutoffs)
        if prune > 0:
            _kaldingram("prune", f"--threshold={prune}", f"--lm={trained}", f"--write-lm={output}", "--verbose=5")
    return output


def _kaldingram(*arguments: str) -> None:
    done = subprocess.run([sys.executable, "-m", "kaldingram.cli", *arguments], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"kaldingram {arguments[0]} failed: {done.stderr.strip()[-2000:]}")


def arpa_counts(path: str | Path) -> dict[int, int]:
    """The n-gram counts of an ARPA file's `\\data\\` header; raises naming the file when it has none."""
    counts = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("ngram "):
                order, count = line[6:].split("=")
                counts[int(order)] = int(count)
            elif counts and not line.strip():
                break
    if not counts:
        raise LanguageModelError(f"{path} is not an ARPA language model: it has no \\data\\ header with n-gram counts.")
    return counts


# ---------------------------------------------------------------------------------------------- decoder

def ctc_labels(tokenizer) -> list[str]:
    """The tokenizer's vocabulary in id order: pyctcdecode's labels (it maps `<pad>` to the blank, `<unk>` to its
    unknown token and, with no space in the labels, the word delimiter `|` to a space)."""
    vocabulary = tokenizer.get_vocab()
    return [token for token, _ in sorted(vocabulary.items(), key=lambda item: item[1])]


def _arpa_unigrams(path: Path) -> list[str]:
    """The words of an ARPA file's 1-gram section, sentence markers left out."""
    words, inside = [], False
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("\\1-grams:"):
                inside = True
            elif inside and line.startswith("\\"):
                break
            elif inside and line.strip():
                word = line.split("\t")[1].strip()
                if word not in ("<s>", "</s>", "<unk>"):
                    words.append(word)
    return words


def save_language_model(folder: str | Path, arpa: str | Path, alpha: float = DEFAULT_ALPHA,
                        beta: float = DEFAULT_BETA, processor=None) -> Path:
    """Save the ARPA model into the model folder as `Wav2Vec2ProcessorWithLM` does (see the module docstring); the
    folder's processor (feature extractor and tokenizer) is read from it unless given. Returns the LM directory."""
    from pyctcdecode import build_ctcdecoder
    from processing_early_exit import EarlyExitProcessorWithLM, plain_processor

    folder, arpa = Path(folder), Path(arpa)
    arpa_counts(arpa)
    processor = processor if processor is not None else plain_processor(folder)
    tokenizer = processor.tokenizer
    unigrams = _arpa_unigrams(arpa)
    _check_words(unigrams, ctc_labels(tokenizer), arpa)
    decoder = build_ctcdecoder(ctc_labels(tokenizer), kenlm_model_path=str(arpa), unigrams=unigrams, alpha=alpha,
                               beta=beta)
    target = folder / LM_DIRECTORY
    if target.exists():  # save_to_dir adds files; a model built earlier must not stay beside this one
        for path in target.iterdir():
            path.unlink()
        target.rmdir()
    EarlyExitProcessorWithLM.register_for_auto_class("AutoProcessor")  # auto_map + its code file in the folder
    EarlyExitProcessorWithLM(feature_extractor=processor.feature_extractor, tokenizer=tokenizer,
                             decoder=decoder).save_pretrained(str(folder))
    mark_feature_extractor(folder / "processor_config.json")
    return target


def mark_feature_extractor(config_file: Path) -> None:
    """Name the processor class inside the feature extractor's part of `processor_config.json` too: the
    `automatic-speech-recognition` pipeline reads only that part when it decides whether to load the LM, and
    transformers 5.25's processor saving writes the class at the top level alone."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["feature_extractor"]["processor_class"] = config["processor_class"]
    config["feature_extractor"].pop("auto_map", None)  # the processor's; the feature extractor is transformers' own
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _check_words(words: Sequence[str], labels: Sequence[str], where) -> None:
    """Raise when the LM's words use characters the model cannot emit (e.g. a lower-case LM for an upper-case
    vocabulary): such words could never be hypothesised, and the LM would only penalise."""
    alphabet = {label for label in labels if len(label) == 1 and label != "|"}
    foreign = sorted({char for word in words for char in word} - alphabet)
    if foreign:
        raise LanguageModelError(
            f"{where}: the language model's words use characters {foreign[:20]} that the tokenizer's vocabulary "
            f"lacks (its characters: {''.join(sorted(alphabet))}); build the LM from text normalised to the "
            "model's alphabet (hubert-ee build-lm does so).")


def check_alphabet(decoder, tokenizer, where) -> None:
    """Raise when a pyctcdecode decoder's labels and unigrams do not fit `tokenizer` (the check transformers' own
    `Wav2Vec2ProcessorWithLM` makes, plus the unigrams' characters), naming `where`."""
    from transformers import Wav2Vec2ProcessorWithLM

    missing = Wav2Vec2ProcessorWithLM.get_missing_alphabet_tokens(decoder, tokenizer)
    if missing:
        raise LanguageModelError(f"{where}: the tokenizer's tokens {sorted(missing)} are not in the decoder's "
                                 f"alphabet ({ALPHABET_FILE}); rebuild the LM for this tokenizer.")
    unigrams = getattr(decoder.model_container[decoder._model_key], "_unigram_set", None) or ()
    labels = [" " if label == " " else label for label in decoder._alphabet.labels]
    _check_words(list(unigrams), [label for label in labels if label], where)


def load_ctc_decoder(folder: str | Path, tokenizer):
    """The pyctcdecode decoder of a local model folder's `language_model/`, checked against `tokenizer`; clear
    errors for a folder without an LM, missing or corrupt files, and an alphabet mismatch."""
    folder = Path(folder)
    lm_dir = folder / LM_DIRECTORY
    if not lm_dir.is_dir():
        raise LanguageModelError(f"{folder} has no {LM_DIRECTORY}/ directory: --decoder lm needs a model folder "
                                 "with an n-gram LM (hubert-ee build-lm --model FOLDER builds one).")
    for required in (folder / ALPHABET_FILE, lm_dir / "attrs.json"):
        if not required.is_file():
            raise LanguageModelError(f"{required} is missing: {lm_dir} is incomplete (rebuild it with build-lm).")
    models = [path for path in lm_dir.iterdir() if path.suffix in (".arpa", ".bin")]
    if not models:
        raise LanguageModelError(f"{lm_dir} holds no KenLM model (.arpa or .bin).")
    try:
        import kenlm

        kenlm.Model(str(models[0]))
    except ImportError as error:
        raise LanguageModelError(f"LM decoding needs the kenlm and pyctcdecode packages ({error}); "
                                 "`make setup` installs them.") from error
    except (OSError, RuntimeError) as error:
        raise LanguageModelError(f"{models[0]} is not a readable KenLM model: {error}") from error
    from pyctcdecode import BeamSearchDecoderCTC

    try:
        decoder = BeamSearchDecoderCTC.load_from_dir(str(folder))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
        raise LanguageModelError(f"{lm_dir} cannot be loaded by pyctcdecode: {error}") from error
    check_alphabet(decoder, tokenizer, lm_dir)
    return decoder


# ---------------------------------------------------------------------------------------------- command line

def build_lm(args) -> dict:
    """Read the corpus, check the held-out splits, build the ARPA and save it into the model folder (or, with
    `--arpa`, save that one); returns what the command reports."""
    if (args.dataset is None) == (args.arpa is None):
        raise ValueError("build-lm needs either --dataset (build an LM from its text) or --arpa (save an existing "
                         "one), not both")
    if args.arpa is not None:
        return save_existing_arpa(args.model, Path(args.arpa), args.alpha, args.beta)
    from datasets import load_from_disk

    corpus = load_from_disk(args.dataset)
    missing = [split for split in [args.split, *args.held_out_splits] if split not in corpus]
    if missing:
        raise ValueError(f"{args.dataset} has no split(s) {missing}; its splits: {list(corpus)}")
    held_out = [text for split in args.held_out_splits for text in corpus_sentences(corpus[split])]
    sentences = lm_sentences(corpus_sentences(corpus[args.split]), args.extra_text, held_out)
    check_held_out(sentences, held_out)
    with tempfile.TemporaryDirectory() as work:
        arpa = build_arpa(sentences, Path(work) / f"{args.order}gram.arpa", order=args.order, prune=args.prune,
                          min_counts=args.min_counts)
        counts = arpa_counts(arpa)
        lm_dir = save_language_model(args.model, arpa, alpha=args.alpha, beta=args.beta)
    size = sum(path.stat().st_size for path in lm_dir.iterdir())
    return {"sentences": len(sentences), "held_out_checked": len(held_out), "ngram_counts": counts,
            "bytes": size, "directory": str(lm_dir)}


def save_existing_arpa(model: str | Path, arpa: Path, alpha: float, beta: float) -> dict:
    """Save an ARPA built elsewhere into `model` (`build-lm --arpa`). It is read from a copy, since it may be the
    LM the folder holds now, which saving replaces."""
    if not arpa.is_file():
        raise FileNotFoundError(f"--arpa {arpa}: no such file")
    with tempfile.TemporaryDirectory() as work:
        copy = Path(work) / arpa.name
        shutil.copyfile(arpa, copy)
        counts = arpa_counts(copy)
        lm_dir = save_language_model(model, copy, alpha=alpha, beta=beta)
    size = sum(path.stat().st_size for path in lm_dir.iterdir())
    return {"source": str(arpa), "ngram_counts": counts, "bytes": size, "directory": str(lm_dir)}


def run(args) -> int:
    """`hubert-ee build-lm`: 0 on success."""
    report = build_lm(args)
    source = (f"{report['source']}" if "source" in report else
              f"{report['sentences']} sentences ({report['held_out_checked']} dev/test sentences checked absent)")
    print(f"{source}; n-grams {report['ngram_counts']}; {report['bytes'] / 2**20:.1f} MiB in {report['directory']}")
    return 0

