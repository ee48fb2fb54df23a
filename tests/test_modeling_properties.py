"""HubertEEForCTC, property-based (hypothesis): invariants of the model over random small configs and padded
batches (allowed exits, batch equals one by one, exits off equals HubertForCTC, thresholds, save/load)."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import HubertConfig, HubertForCTC

from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import padded_batch, sharpen_branches, tiny_config, tiny_hubert_kwargs


@st.composite
def configs(draw):
    layers = draw(st.integers(2, 5))
    exit_layers = sorted(draw(st.sets(st.integers(1, layers - 1), min_size=1)))
    return dict(
        num_hidden_layers=layers,
        exit_layers=exit_layers,
        exit_branch=draw(st.sampled_from(["transformer", "linear"])),
        do_stable_layer_norm=draw(st.booleans()),
        exit_criterion=draw(st.sampled_from(["confidence", "entropy", "patience"])),
        exit_threshold=draw(st.sampled_from([0.0, 0.3, 0.6, 0.9, 1.5])),
        exit_patience=draw(st.integers(1, 3)),
    )


lengths_strategy = st.lists(st.integers(600, 3000), min_size=1, max_size=4)
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(overrides=configs(), lengths=lengths_strategy, seed=st.integers(0, 3), overlap=st.booleans())
def test_exits_are_allowed_and_batch_equals_one_by_one(overrides, lengths, seed, overlap):
    torch.manual_seed(seed)
    model = sharpen_branches(HubertEEForCTC(tiny_config(**overrides)).eval(), seed=seed)
    model.overlap_exit_decisions = overlap  # the CUDA path (decision read one layer later) must agree too
    input_values, attention_mask = padded_batch(lengths, seed=seed)
    batch = model.generate(input_values, attention_mask)
    allowed = set(overrides["exit_layers"]) | {overrides["num_hidden_layers"]}
    assert set(batch.exit_layer.tolist()) <= allowed
    for row, length in enumerate(lengths):
        alone = model.generate(input_values[row : row + 1, :length])
        assert batch.exit_layer[row] == alone.exit_layer[0]
        assert torch.equal(batch.sequences[row, : alone.sequences.shape[1]], alone.sequences[0])


@SETTINGS
@given(overrides=configs(), lengths=lengths_strategy, with_mask=st.booleans())
def test_early_exit_off_equals_hubert_for_ctc(overrides, lengths, with_mask):
    torch.manual_seed(0)
    model = HubertEEForCTC(tiny_config(**overrides)).eval()
    reference = HubertForCTC(HubertConfig(**tiny_hubert_kwargs(
        num_hidden_layers=overrides["num_hidden_layers"], do_stable_layer_norm=overrides["do_stable_layer_norm"])))
    reference.load_state_dict(model.state_dict(), strict=False)
    input_values, attention_mask = padded_batch(lengths)
    mask = attention_mask if with_mask else None
    with torch.no_grad():
        expected = reference.eval()(input_values, attention_mask=mask).logits
    got = model.generate(input_values, mask, early_exit=False)
    assert (got.logits - expected).abs().max() <= 1e-5


@SETTINGS
@given(seed=st.integers(0, 20), criterion=st.sampled_from(["confidence", "entropy"]),
       thresholds=st.lists(st.floats(0.0, 3.0), min_size=2, max_size=2))
def test_stricter_threshold_never_exits_earlier(seed, criterion, thresholds):
    torch.manual_seed(seed)
    model = sharpen_branches(HubertEEForCTC(tiny_config()).eval(), seed=seed)
    input_values, attention_mask = padded_batch([3000, 2000, 2500], seed=seed)
    low, high = sorted(thresholds)
    lenient, strict = (low, high) if criterion == "confidence" else (high, low)
    first = model.generate(input_values, attention_mask, exit_criterion=criterion, exit_threshold=lenient)
    second = model.generate(input_values, attention_mask, exit_criterion=criterion, exit_threshold=strict)
    assert (second.exit_layer >= first.exit_layer).all()


@settings(max_examples=5, deadline=None)
@given(overrides=configs())
def test_save_load_roundtrip_gives_identical_outputs(overrides, tmp_path_factory):
    folder = tmp_path_factory.mktemp("roundtrip")
    torch.manual_seed(0)
    model = sharpen_branches(HubertEEForCTC(tiny_config(**overrides)).eval())
    model.save_pretrained(folder)
    again = HubertEEForCTC.from_pretrained(folder).eval()
    input_values, attention_mask = padded_batch([2500, 1500])
    first, second = model.generate(input_values, attention_mask), again.generate(input_values, attention_mask)
    assert torch.equal(first.exit_layer, second.exit_layer) and torch.equal(first.logits, second.logits)
