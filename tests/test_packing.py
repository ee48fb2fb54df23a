"""hubert_ee.packing, packed CTC rows: clips concatenated into equal-length rows, labels joined, deterministic per
seed and pass."""

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict

from hubert_ee.augment import Augmenter
from hubert_ee.data import DataCollatorCTCWithPadding
from hubert_ee.packing import ClipStore, PackedCTCCollator, PackedCTCDataset, is_packable_corpus, pack_first_fit
from hubert_ee.synth import corpus_features
from hubert_ee.text import build_processor

RATE = 16000
TEXTS = ["HELLO WORLD", "EARLY EXIT", "SPEECH", "FAST MODEL", "A TEST", "HUBERT", "GOOD DAY", "YES NO"]


@pytest.fixture(scope="module")
def processor():
    return build_processor()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A corpus in the layout `hubert-ee synth` writes (raw float32 samples in a struct), clips 0.5-1.2 s."""
    rng = np.random.default_rng(0)
    rows = {"id": [], "audio": [], "text": [], "engine": [], "voice": [], "voice_settings": [], "augmentation": [],
            "duration": []}  # fmt: skip
    for index, text in enumerate(TEXTS):
        samples = int(RATE * (0.5 + 0.1 * index))
        rows["id"].append(f"train-{index}")
        rows["audio"].append({"array": (0.1 * rng.standard_normal(samples)).astype(np.float32), "sampling_rate": RATE})
        rows["text"].append(text.lower())
        rows["engine"].append("espeak-ng")
        rows["voice"].append("en-us")
        rows["voice_settings"].append("")
        rows["augmentation"].append("none")
        rows["duration"].append(samples / RATE)
    folder = tmp_path_factory.mktemp("packing") / "corpus"
    DatasetDict({"train": Dataset.from_dict(rows, features=corpus_features())}).save_to_disk(str(folder))
    return folder


def test_first_fit_fills_rows_without_overflow_and_leaves_out_what_cannot_fit():
    lengths = [5, 3, 3, 2, 2, 1, 12]
    rows = pack_first_fit(lengths, capacity=10, gap=1)
    assert sorted(i for row in rows for i in row) == [0, 1, 2, 3, 4, 5]  # 12 > capacity: no row
    for row in rows:
        assert sum(lengths[i] for i in row) + (len(row) - 1) <= 10
    assert rows == [[0, 1], [2, 3, 4], [5]]  # first fit, longest first


def test_corpus_clips_are_read_as_they_are_stored(corpus, processor):
    assert is_packable_corpus(corpus)
    store = ClipStore.from_corpus(corpus, "train", processor.tokenizer)
    assert len(store) == len(TEXTS)
    assert [len(clip) for clip in store.audio] == [int(RATE * (0.5 + 0.1 * i)) for i in range(len(TEXTS))]
    assert processor.tokenizer.decode(store.labels[0]) == "HELO WORLD"  # CTC decoding merges repeats
    assert ClipStore.from_corpus(corpus, "train", processor.tokenizer, max_samples=3).audio[2].shape == (RATE * 7 // 10,)


def test_an_audiofolder_is_not_taken_for_a_packable_corpus(tmp_path):
    (tmp_path / "metadata.csv").write_text("file_name,transcription\n")
    assert not is_packable_corpus(tmp_path)


def test_rows_hold_each_clip_once_per_pass_with_joined_labels(corpus, processor):
    store = ClipStore.from_corpus(corpus, "train", processor.tokenizer)
    delimiter = processor.tokenizer.convert_tokens_to_ids("|")
    dataset = PackedCTCDataset(store, delimiter, row_seconds=2.0, gap_seconds=0.1, pool_size=4)
    rows = list(dataset.rows_of_pass(0))
    assert {len(row["input_values"]) for row in rows} == {2 * RATE}
    spoken = sorted(row["speech_samples"] for row in rows)
    assert sum(spoken) == sum(len(clip) for clip in store.audio)
    words = sorted(word for row in rows for word in processor.tokenizer.decode(row["labels"], group_tokens=False)
                   .split())  # fmt: skip
    assert words == sorted(word for text in TEXTS for word in text.split())
    for row in rows:  # silence between clips and at the end: every sample that is not speech is zero
        assert np.count_nonzero(row["input_values"]) == row["speech_samples"]


def test_the_stream_is_reproducible_and_passes_differ(corpus, processor):
    store = ClipStore.from_corpus(corpus, "train", processor.tokenizer)
    make = lambda: PackedCTCDataset(store, 4, row_seconds=2.0, augmenter=Augmenter(), seed=7, pool_size=4)  # noqa
    first, second = iter(make()), iter(make())
    for _ in range(6):
        a, b = next(first), next(second)
        assert np.array_equal(a["input_values"], b["input_values"]) and a["labels"] == b["labels"]
    pass0 = [row["input_values"] for row in make().rows_of_pass(0)]
    pass1 = [row["input_values"] for row in make().rows_of_pass(1)]
    assert not all(len(a) == len(b) and np.array_equal(a, b) for a, b in zip(pass0, pass1))


def test_workers_share_out_the_pools(corpus, processor):
    store = ClipStore.from_corpus(corpus, "train", processor.tokenizer)
    dataset = PackedCTCDataset(store, 4, row_seconds=2.0, pool_size=2)
    everything = sum(row["speech_samples"] for row in dataset.rows_of_pass(0))
    shares = [sum(row["speech_samples"] for row in dataset.rows_of_pass(0, worker, 2)) for worker in (0, 1)]
    assert sum(shares) == everything and all(shares)


def test_a_row_length_no_clip_fits_is_refused(corpus, processor):
    store = ClipStore.from_corpus(corpus, "train", processor.tokenizer)
    with pytest.raises(ValueError, match="raise the row length"):
        PackedCTCDataset(store, 4, row_seconds=0.1)


def test_collator_stacks_packed_rows_and_hands_single_clips_on(corpus, processor):
    store = ClipStore.from_corpus(corpus, "train", processor.tokenizer)
    rows = list(PackedCTCDataset(store, 4, row_seconds=2.0, pool_size=8).rows_of_pass(0))[:2]
    collator = PackedCTCCollator(unpacked=DataCollatorCTCWithPadding(processor=processor))
    batch = collator(rows)
    assert set(batch) == {"input_values", "labels", "speech_seconds"}  # no attention mask: nothing is padded
    assert batch["input_values"].shape == (2, 2 * RATE)
    assert batch["labels"][0, : len(rows[0]["labels"])].tolist() == rows[0]["labels"]
    assert (batch["labels"] == -100).sum() == abs(len(rows[0]["labels"]) - len(rows[1]["labels"]))
    assert batch["speech_seconds"].item() == pytest.approx(sum(r["speech_samples"] for r in rows) / RATE)
    single = [{"input_values": np.zeros(800, np.float32), "labels": [5, 6]},
              {"input_values": np.zeros(400, np.float32), "labels": [7]}]
    padded = collator(single)
    assert padded["attention_mask"].sum().item() == 1200
    with pytest.raises(ValueError, match="no `unpacked` collator"):
        PackedCTCCollator()(single)
    with pytest.raises(ValueError, match="one length"):
        collator([rows[0], {**rows[1], "input_values": np.zeros(10, np.float32)}])
    assert torch.is_tensor(batch["input_values"])
