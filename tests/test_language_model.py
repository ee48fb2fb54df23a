"""hubert_ee.language_model: the LM's text (no dev/test sentence), the ARPA build, the ctc_with_lm layout in a model
folder (AutoProcessor, pipeline, push), and the clear errors for missing, corrupt and mismatched LMs."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from hubert_ee import language_model
from hubert_ee.language_model import (
    LanguageModelError, arpa_counts, build_arpa, check_held_out, corpus_sentences, lm_sentences, load_ctc_decoder,
    save_language_model, wordnet_glosses,
)
from processing_early_exit import plain_processor
from tests.conftest import noise

SENTENCES = ["THE CAT SAT ON THE MAT", "A CAT SAT", "THE DOG RAN HOME", "THE CAT RAN"] * 3


@pytest.fixture(scope="module")
def tiny_arpa(tmp_path_factory):
    return build_arpa(SENTENCES, tmp_path_factory.mktemp("arpa") / "3gram.arpa", order=3)


@pytest.fixture(scope="module")
def lm_folder(hub_folder, tiny_arpa, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm") / "model"
    shutil.copytree(hub_folder, folder)
    save_language_model(folder, tiny_arpa, alpha=0.7, beta=1.0)
    return folder


def test_held_out_sentences_are_named_when_the_lm_text_holds_them():
    check_held_out(["THE CAT SAT"], ["A DOG RAN", "the cat  sat on"])  # compared normalised: no exact match
    with pytest.raises(LanguageModelError, match="THE CAT SAT"):
        check_held_out(["THE CAT SAT", "A DOG"], ["The cat sat!"])


def test_lm_text_keeps_the_train_sentences_and_drops_held_out_ones_from_the_extra_text(monkeypatch):
    monkeypatch.setattr(language_model, "wordnet_glosses", lambda: ["A BIG FISH", "THE HELD OUT ONE", "SOME GLOSS"])
    sentences = lm_sentences(["TRAIN ONE", "TRAIN TWO"], ["wordnet"], held_out=["The held-out one."])
    assert sentences[:2] == ["TRAIN ONE", "TRAIN TWO"] and "A BIG FISH" in sentences
    assert not any("HELD" in sentence for sentence in sentences)
    with pytest.raises(ValueError, match="unknown extra text"):
        lm_sentences([], ["bible"])


def test_wordnet_glosses_are_split_into_normalised_definitions_and_examples(tmp_path):
    header = "  1 This software and database is being provided\n"
    for part in ("noun", "verb", "adj", "adv"):
        (tmp_path / f"data.{part}").write_text(
            header + f'00001 03 n 01 cat 0 | feline mammal; "the {part} cat sat"\n', encoding="latin-1")
    glosses = wordnet_glosses(tmp_path)
    assert glosses[:2] == ["FELINE MAMMAL", "THE NOUN CAT SAT"] and len(glosses) == 8
    (tmp_path / "data.adv").unlink()
    with pytest.raises(FileNotFoundError, match="data.adv"):
        wordnet_glosses(tmp_path)


def test_build_lm_never_puts_a_dev_or_test_sentence_in_the_lm(tmp_path, hub_folder, monkeypatch):
    from datasets import Dataset, DatasetDict

    corpus = tmp_path / "corpus"
    DatasetDict({"train": Dataset.from_dict({"text": ["the cat sat", "a dog ran home"]}),
                 "dev": Dataset.from_dict({"text": ["the dog sat"]}),
                 "test": Dataset.from_dict({"text": ["a cat ran"]})}).save_to_disk(corpus)
    written = []
    monkeypatch.setattr(language_model, "wordnet_glosses", lambda: ["THE DOG SAT", "A BIRD FLEW", "A CAT RAN"])
    real_build = language_model.build_arpa
    monkeypatch.setattr(language_model, "build_arpa",
                        lambda sentences, *args, **kwargs: written.extend(sentences) or real_build(sentences, *args,
                                                                                                   **kwargs))
    folder = tmp_path / "model"
    shutil.copytree(hub_folder, folder)
    args = SimpleNamespace(dataset=str(corpus), split="train", held_out_splits=["dev", "test"],
                           extra_text=["wordnet"], order=2, prune=0.0, min_counts=[], alpha=0.5, beta=1.0,
                           model=str(folder), arpa=None)
    report = language_model.build_lm(args)
    assert set(written) == {"THE CAT SAT", "A DOG RAN HOME", "A BIRD FLEW"}  # dev/test sentences left out
    assert report["held_out_checked"] == 2 and (folder / "language_model" / "unigrams.txt").is_file()
    leaky = tmp_path / "leaky"
    DatasetDict({"train": Dataset.from_dict({"text": ["the cat sat"]}),
                 "dev": Dataset.from_dict({"text": ["The cat sat."]})}).save_to_disk(leaky)
    with pytest.raises(LanguageModelError, match="THE CAT SAT"):
        language_model.build_lm(SimpleNamespace(**{**vars(args), "dataset": str(leaky), "held_out_splits": ["dev"]}))
    with pytest.raises(ValueError, match="no split"):
        language_model.build_lm(SimpleNamespace(**{**vars(args), "dataset": str(leaky)}))


def test_build_lm_saves_an_arpa_built_elsewhere_even_the_one_the_folder_holds(lm_folder, tiny_arpa, tmp_path,
                                                                                capsys):
    from hubert_ee.cli import main as cli_main

    folder = tmp_path / "model"
    shutil.copytree(lm_folder, folder)
    held = folder / "language_model" / "3gram.arpa"
    assert cli_main(["build-lm", "--model", str(folder), "--arpa", str(held), "--alpha", "0.3", "--beta", "2"]) == 0
    assert held.read_bytes() == tiny_arpa.read_bytes()  # re-saved from a copy, not lost
    assert json.loads((folder / "language_model" / "attrs.json").read_text())["alpha"] == 0.3
    assert "n-grams" in capsys.readouterr().out
    assert cli_main(["build-lm", "--model", str(folder), "--arpa", str(tmp_path / "none.arpa")]) == 2
    assert "none.arpa: no such file" in capsys.readouterr().err
    assert cli_main(["build-lm", "--model", str(folder)]) == 2
    assert "either --dataset" in capsys.readouterr().err


def test_arpa_build_gives_the_orders_asked_and_pruning_shrinks_it(tmp_path, tiny_arpa):
    counts = arpa_counts(tiny_arpa)
    assert sorted(counts) == [1, 2, 3] and counts[1] >= 8  # the words plus the sentence markers
    pruned = arpa_counts(build_arpa(SENTENCES, tmp_path / "pruned.arpa", order=3, prune=0.05))
    assert sum(pruned.values()) < sum(counts.values())
    (tmp_path / "bad.arpa").write_text("not an arpa file\n")
    with pytest.raises(LanguageModelError, match="bad.arpa"):
        arpa_counts(tmp_path / "bad.arpa")


def test_corpus_sentences_are_normalised():
    assert corpus_sentences([{"text": "It's 2 cats!"}, {"text": "  "}]) == ["IT'S TWO CATS"]


def test_a_saved_lm_follows_the_hugging_face_layout_and_loads_as_ctc_with_lm(lm_folder):
    from transformers import AutoProcessor, pipeline

    assert {"alphabet.json", "processing_early_exit.py"} <= {path.name for path in lm_folder.iterdir()}
    assert {path.name for path in (lm_folder / "language_model").iterdir()} == {"3gram.arpa", "attrs.json",
                                                                               "unigrams.txt"}
    assert json.loads((lm_folder / "language_model" / "attrs.json").read_text())["alpha"] == 0.7
    processor = AutoProcessor.from_pretrained(lm_folder, trust_remote_code=True)
    assert type(processor).__name__ == "EarlyExitProcessorWithLM"
    assert processor.language_model.alpha == 0.7
    asr = pipeline("automatic-speech-recognition", model=str(lm_folder), trust_remote_code=True)
    assert asr.type == "ctc_with_lm"
    text = asr(noise(1.0), decoder_kwargs={"beam_width": 4}, exit_threshold=0.5)["text"]
    import torch

    from hubert_ee.decoding import build_decoder

    inputs = processor(noise(1.0), sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        logits = asr.model(inputs.input_values, exit_threshold=0.5).logits
    ours = build_decoder("lm", lm_folder, processor, processor.tokenizer.pad_token_id, beam_width=4)
    assert text == ours.decode(logits, None)[0]  # the pipeline and the decoder seam agree, early exit included


class RecordingDecoder:
    """A pyctcdecode decoder that records the settings each `decode_beams` call gets."""

    def __init__(self, decoder):
        self.decoder, self.calls = decoder, []

    def decode_beams(self, logits, **settings):
        self.calls.append(settings)
        return self.decoder.decode_beams(logits, **settings)

    def decode_beams_batch(self, pool, logits_list, **settings):
        self.calls.append(settings)
        return self.decoder.decode_beams_batch(pool, logits_list, **settings)

    def __getattr__(self, name):  # everything else from the decoder it records
        return getattr(self.decoder, name)


def test_the_pipeline_decodes_at_the_shipped_beam_width_unless_told_otherwise(lm_folder):
    from transformers import pipeline

    from modeling_early_exit import LM_BEAM_WIDTH

    asr = pipeline("automatic-speech-recognition", model=str(lm_folder), trust_remote_code=True)
    asr.decoder = recording = RecordingDecoder(asr.decoder)
    asr(noise(0.5))
    asr(noise(0.5), decoder_kwargs={"beam_width": 3, "token_min_logp": -4.0})
    assert recording.calls == [{"beam_width": LM_BEAM_WIDTH}, {"beam_width": 3, "token_min_logp": -4.0}]
    built = pipeline("automatic-speech-recognition", model=str(lm_folder), trust_remote_code=True,
                     decoder_kwargs={"beam_width": 5})  # set when the pipeline is built: kept for every call
    built.decoder = recording = RecordingDecoder(built.decoder)
    built(noise(0.5))
    built(noise(0.5), decoder_kwargs={"beam_width": 2})
    assert recording.calls == [{"beam_width": 5}, {"beam_width": 2}]


def test_the_processor_decodes_at_the_shipped_beam_width_unless_told_otherwise(lm_folder):
    from transformers import AutoProcessor

    from modeling_early_exit import LM_BEAM_WIDTH

    processor = AutoProcessor.from_pretrained(lm_folder, trust_remote_code=True)
    processor.decoder = recording = RecordingDecoder(processor.decoder)
    logits = np.random.default_rng(0).normal(size=(2, 20, len(processor.tokenizer))).astype(np.float32)
    processor.decode(logits[0])
    processor.decode(logits[0], beam_width=3)
    processor.batch_decode(logits)
    processor.batch_decode(logits, beam_width=2)
    assert [call["beam_width"] for call in recording.calls] == [LM_BEAM_WIDTH, 3, LM_BEAM_WIDTH, 2]


def test_push_uploads_the_lm_files(lm_folder, tmp_path):
    from hubert_ee.push import language_model_files

    assert language_model_files(lm_folder) == ["alphabet.json", "processing_early_exit.py",
                                               "language_model/3gram.arpa", "language_model/attrs.json",
                                               "language_model/unigrams.txt"]
    broken = tmp_path / "broken"
    shutil.copytree(lm_folder, broken)
    (broken / "alphabet.json").unlink()
    with pytest.raises(FileNotFoundError, match="alphabet.json"):
        language_model_files(broken)


def test_missing_corrupt_and_mismatched_lms_fail_naming_the_file(lm_folder, hub_folder, tmp_path):
    from transformers import Wav2Vec2CTCTokenizer

    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(lm_folder)
    assert load_ctc_decoder(lm_folder, tokenizer) is not None
    with pytest.raises(LanguageModelError, match="no language_model/ directory"):
        load_ctc_decoder(hub_folder, tokenizer)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(lm_folder, corrupt)
    (corrupt / "language_model" / "3gram.arpa").write_text("\\data\\\nngram 1=garbage\n")
    with pytest.raises(LanguageModelError, match="3gram.arpa"):
        load_ctc_decoder(corrupt, tokenizer)
    (corrupt / "language_model" / "attrs.json").unlink()
    with pytest.raises(LanguageModelError, match="attrs.json"):
        load_ctc_decoder(corrupt, tokenizer)
    lower = tmp_path / "lower.arpa"
    build_arpa([sentence.lower() for sentence in SENTENCES], lower, order=2)
    with pytest.raises(LanguageModelError, match=r"lower.arpa.*characters \['a', 'c'"):
        save_language_model(tmp_path, lower, processor=plain_processor(lm_folder))
    assert not (tmp_path / "language_model").exists()  # the alphabet is checked before anything is written
    wrong_vocab = dict(tokenizer.get_vocab(), **{"Ä": len(tokenizer)})
    (tmp_path / "vocab.json").write_text(json.dumps(wrong_vocab))
    other = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"))
    with pytest.raises(LanguageModelError, match="'Ä'"):
        load_ctc_decoder(lm_folder, other)

