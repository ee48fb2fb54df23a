"""HubertEEForCTC on tiny random configs: exactness against HubertForCTC, per-utterance batched exits, losses, bad
input and silence (never NaN)."""

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from transformers import HubertConfig, HubertForCTC

from hubert_ee.inference import featurize
from hubert_ee.text import build_processor
from configuration_early_exit import ExitSetting
from modeling_early_exit import ctc_loss, greedy_transcripts
from modeling_hubert_ee import HubertEEForCTC, frames_from_samples
from tests.conftest import BACKBONES, backbone_class, noise, padded_batch, sharpen_branches, tiny_config, tiny_hubert_kwargs

LENGTHS = [4000, 2600, 3300, 1800]


def make_model(seed=0, backbone="hubert", **overrides):
    torch.manual_seed(seed)
    return sharpen_branches(backbone_class(backbone, 1)(tiny_config(backbone, **overrides)).eval(), seed=seed)


@pytest.mark.parametrize("with_mask", [False, True])
def test_early_exit_false_equals_hubert_for_ctc(stable_layer_norm, with_mask):
    model = make_model(do_stable_layer_norm=stable_layer_norm)
    reference = HubertForCTC(HubertConfig(**tiny_hubert_kwargs(do_stable_layer_norm=stable_layer_norm))).eval()
    result = reference.load_state_dict(model.state_dict(), strict=False)
    assert not result.missing_keys and all(key.startswith("exit_branches.") for key in result.unexpected_keys)
    input_values, attention_mask = padded_batch(LENGTHS)
    mask = attention_mask if with_mask else None
    with torch.no_grad():
        expected = reference(input_values, attention_mask=mask).logits
        got = model(input_values, attention_mask=mask, early_exit=False)
    assert got.logits.shape == expected.shape
    assert (got.logits - expected).abs().max().item() <= 1e-5
    assert got.exit_layer.tolist() == [4] * len(LENGTHS)
    # the config switch and the per-call override are the same thing
    model.config.early_exit = False
    with torch.no_grad():
        assert torch.equal(model(input_values, attention_mask=mask).logits, got.logits)


def thresholds_for(criterion):
    return {"confidence": [0.0, 0.3, 0.5, 0.7, 0.9, 1.01], "entropy": [10.0, 1.5, 0.8, 0.4, 0.1, 0.0],
            "patience": [None]}[criterion]


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("criterion", ["confidence", "entropy", "patience"])
def test_batch_equals_one_by_one(stable_layer_norm, criterion, backbone):
    model = make_model(backbone=backbone, do_stable_layer_norm=stable_layer_norm, exit_criterion=criterion)
    input_values, attention_mask = padded_batch(LENGTHS)
    seen_layers = set()
    for threshold in thresholds_for(criterion):
        for patience in ([1, 2, 3] if criterion == "patience" else [None]):
            kwargs = {"exit_threshold": threshold, "exit_patience": patience}
            batch = model.generate(input_values, attention_mask=attention_mask, **kwargs)
            for row, length in enumerate(LENGTHS):
                alone = model.generate(input_values[row : row + 1, :length], **kwargs)
                frames = alone.sequences.shape[1]
                assert batch.exit_layer[row] == alone.exit_layer[0]
                assert torch.equal(batch.sequences[row, :frames], alone.sequences[0])
                assert (batch.sequences[row, frames:] == model.config.pad_token_id).all()
                torch.testing.assert_close(batch.logits[row, :frames], alone.logits[0], atol=1e-4, rtol=1e-4)
            seen_layers.update(batch.exit_layer.tolist())
            assert set(batch.exit_layer.tolist()) <= {1, 2, 3, 4}
    assert len(seen_layers) >= 2, f"the sweep never produced different exits: {seen_layers}"


@pytest.mark.parametrize("criterion", ["confidence", "entropy", "patience"])
def test_overlapped_exit_decisions_give_identical_results(criterion):
    """The CUDA path (next layer queued before the host reads the decision), run on CPU: same exits, same ids."""
    model = make_model(exit_criterion=criterion)
    overlapping = make_model(exit_criterion=criterion)
    overlapping.overlap_exit_decisions = True
    assert not model.overlap_exit_decisions  # a per-instance switch, off by default
    input_values, attention_mask = padded_batch(LENGTHS)
    for threshold in thresholds_for(criterion):
        for mask in (attention_mask, None):
            plain = model.generate(input_values, mask, exit_threshold=threshold)
            overlapped = overlapping.generate(input_values, mask, exit_threshold=threshold)
            assert torch.equal(plain.exit_layer, overlapped.exit_layer)
            assert torch.equal(plain.sequences, overlapped.sequences)


@pytest.mark.parametrize("criterion", ["confidence", "entropy"])
def test_stricter_threshold_never_exits_earlier(criterion):
    model = make_model(seed=1)
    input_values, attention_mask = padded_batch(LENGTHS, seed=1)
    previous = None
    for threshold in thresholds_for(criterion):  # ordered from lenient to strict
        layers = model.generate(input_values, attention_mask, exit_criterion=criterion,
                                exit_threshold=threshold).exit_layer
        if previous is not None:
            assert (layers >= previous).all()
        previous = layers
    assert previous.tolist() == [4] * len(LENGTHS)  # the strictest thresholds never exit


@pytest.mark.parametrize("criterion", ["confidence", "entropy"])
def test_unpadded_batch_without_mask_equals_one_by_one(criterion):
    """No attention mask (all rows the same length): compaction must still shrink every per-row tensor."""
    torch.manual_seed(2)
    model = sharpen_branches(HubertEEForCTC(tiny_config(exit_criterion=criterion)).eval(), scale=1.0, seed=2)
    input_values = torch.randn(6, 3000, generator=torch.Generator().manual_seed(2))
    seen = set()
    grid = {"confidence": [{"exit_threshold": i / 20} for i in range(1, 20)],
            "entropy": [{"exit_threshold": i / 5} for i in range(1, 18)]}[criterion]
    for settings in grid:
        batch = model.generate(input_values, **settings)
        for row in range(6):
            alone = model.generate(input_values[row : row + 1], **settings)
            assert batch.exit_layer[row] == alone.exit_layer[0]
            assert torch.equal(batch.sequences[row], alone.sequences[0])
        seen.add(tuple(batch.exit_layer.tolist()))
    assert any(len(set(layers)) > 1 for layers in seen), "no batch mixed exits: compaction was not exercised"


def test_extreme_thresholds_and_patience_one():
    model = make_model()
    input_values, attention_mask = padded_batch(LENGTHS)
    assert model.generate(input_values, attention_mask, exit_threshold=0.0).exit_layer.tolist() == [1] * 4
    assert model.generate(input_values, attention_mask, exit_criterion="patience",
                          exit_patience=1).exit_layer.tolist() == [1] * 4
    patience_3 = model.generate(input_values, attention_mask, exit_criterion="patience", exit_patience=3).exit_layer
    assert set(patience_3.tolist()) <= {3, 4}  # 3 agreeing exits need at least the branch after layer 3


def test_exit_decider_is_consulted_at_each_exit_with_its_layer():
    """`exit_decider` (the hook tooling uses to send rows to chosen layers) replaces the criterion, is told which
    exit it is at, sees only the rows still running, and is per instance: another model keeps its criterion."""
    model, other = make_model(), make_model()
    input_values, attention_mask = padded_batch(LENGTHS)
    calls = []

    def decider(layer, logits, valid, settings, state):
        calls.append((layer, logits.shape[0], None if valid is None else valid.shape[0]))
        leave = [(layer == 2 and row % 2 == 0) for row in range(logits.shape[0])]
        return torch.tensor(leave)

    model.exit_decider = decider
    with torch.inference_mode():
        out = model(input_values, attention_mask=attention_mask, exit_threshold=0.0)  # the criterion would exit at 1
        plain = other(input_values, attention_mask=attention_mask, exit_threshold=0.0)
    assert calls == [(1, 4, 4), (2, 4, 4), (3, 2, 2)]
    assert out.exit_layer.tolist() == [2, 4, 2, 4]
    assert plain.exit_layer.tolist() == [1] * 4
    model.exit_decider = None
    assert model.generate(input_values, attention_mask, exit_threshold=0.0).exit_layer.tolist() == [1] * 4


def test_public_pieces_compose_to_the_full_model(stable_layer_norm):
    """`embed`, the encoder layers and `final_head` are the plain forward, and `exit_setting` resolves a call's
    setting as `forward` does (naming a threshold turns exits on; unknown names are refused)."""
    model = make_model(do_stable_layer_norm=stable_layer_norm, early_exit=False)
    input_values = torch.randn(2, 4000)
    with torch.no_grad():
        hidden_states, frame_mask = model.embed(input_values)
        for layer in model.hubert.encoder.layers:
            hidden_states = layer(hidden_states, attention_mask=None)
        logits = model.final_head(hidden_states)
        expected = model(input_values).logits
    assert frame_mask is None
    torch.testing.assert_close(logits, expected)
    setting = model.exit_setting(exit_threshold=0.6)
    assert setting == ExitSetting(early_exit=True, criterion=model.config.exit_criterion, threshold=0.6,
                                  patience=model.config.exit_patience)
    assert model.exit_setting().early_exit is False and model.config.exit_threshold != 0.6
    with pytest.raises(TypeError, match="exit_thresold"):
        model.exit_setting(exit_thresold=0.6)


def test_batch_leaving_at_its_first_exit_returns_that_branch_logits():
    """The whole batch leaving at once takes a short path (no scatter into a fresh logits tensor): it must still
    give exactly the first branch's logits, padding frames included, and report that layer for every row."""
    model = make_model()
    input_values, attention_mask = padded_batch(LENGTHS)
    with torch.inference_mode():
        _, exit_logits = model._all_exits_pass(input_values, attention_mask, None)
        output = model(input_values, attention_mask=attention_mask, exit_threshold=0.0)
    assert output.exit_layer.tolist() == [model.config.exit_layers[0]] * len(LENGTHS)
    torch.testing.assert_close(output.logits, exit_logits[0])


def test_forward_eval_matches_generate_and_returns_loss():
    model = make_model()
    input_values, attention_mask = padded_batch(LENGTHS)
    labels = torch.tensor([[5, 6, 7], [8, 9, -100], [10, 11, 12], [13, -100, -100]])
    with torch.no_grad():
        output = model(input_values, attention_mask=attention_mask, labels=labels, exit_threshold=0.5)
    generated = model.generate(input_values, attention_mask, exit_threshold=0.5)
    assert torch.equal(output.exit_layer, generated.exit_layer)
    assert torch.allclose(output.logits, generated.logits)
    assert output.loss is not None and torch.isfinite(output.loss)
    assert output.logits.shape[:2] == (4, model._get_feat_extract_output_lengths(4000))


def test_overrides_apply_to_one_call_only():
    model = make_model()
    input_values, attention_mask = padded_batch(LENGTHS)
    before = model.config.to_dict()
    model.generate(input_values, attention_mask, exit_threshold=0.1, exit_criterion="entropy", exit_patience=3,
                   early_exit=False)
    assert model.config.to_dict() == before
    with pytest.raises(ValueError, match="exit_criterion"):
        model.generate(input_values, exit_criterion="bogus")
    with pytest.raises(TypeError, match="exit_layers|Unknown"):
        model.generate(input_values, exit_layers=[1])


def test_generate_sequences_decode_with_tokenizer():
    from hubert_ee.text import build_processor

    processor = build_processor()
    model = make_model()
    input_values, attention_mask = padded_batch(LENGTHS)
    generated = model.generate(input_values, attention_mask)
    texts = processor.batch_decode(generated.sequences)
    assert len(texts) == 4 and all(isinstance(text, str) for text in texts)


@pytest.mark.parametrize(
    "strategy,backbone_learns",
    [("two-stage", False), ("distill", False), ("joint", True), ("joint-distill", True)],
)
def test_training_losses_and_what_learns(stable_layer_norm, strategy, backbone_learns):
    model = make_model(do_stable_layer_norm=stable_layer_norm, exit_training_strategy=strategy, layerdrop=0.3)
    model.freeze_feature_encoder()
    model.train()
    input_values, attention_mask = padded_batch(LENGTHS)
    labels = torch.tensor([[5, 6, 7], [8, 9, -100], [10, 11, 12], [13, -100, -100]])
    output = model(input_values, attention_mask=attention_mask, labels=labels)
    assert len(output.exit_logits) == 3 and output.exit_losses.shape == (3,)
    assert output.logits.shape == output.exit_logits[0].shape
    output.loss.backward()
    branch_grads = [p.grad for p in model.exit_branches.parameters()]
    assert all(g is not None for g in branch_grads) and any(g.abs().sum() > 0 for g in branch_grads)
    backbone = [p for name, p in model.hubert.named_parameters() if "feature_extractor" not in name]
    # (with layerdrop some layers are skipped and get no gradient: "any" for joint, "none" for frozen)
    assert any(p.grad is not None for p in backbone) == backbone_learns
    assert (model.hubert.feature_projection.projection.weight.grad is not None) == backbone_learns
    assert all(p.grad is None for p in model.hubert.feature_extractor.parameters())
    assert (model.lm_head.weight.grad is not None) == backbone_learns
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == ({"hubert", "lm_head", "exit_branches"} if backbone_learns else {"exit_branches"})


@pytest.mark.parametrize("strategy,backbone_learns",
                         [("two-stage", False), ("distill", False), ("joint", True), ("joint-distill", True)])
def test_from_pretrained_freezes_what_the_strategy_freezes(tmp_path, strategy, backbone_learns):
    """A loaded model trains as a freshly built one does: an optimizer over `model.parameters()` never updates the
    frozen backbone of two-stage/distill."""
    make_model(exit_training_strategy=strategy).save_pretrained(tmp_path)
    loaded = HubertEEForCTC.from_pretrained(tmp_path)
    trainable = {name for name, p in loaded.named_parameters() if p.requires_grad}
    branches = {name for name, _ in loaded.named_parameters() if name.startswith("exit_branches.")}
    assert trainable == ({name for name, _ in loaded.named_parameters()} if backbone_learns else branches)


@pytest.mark.parametrize("backbone,name", [("hubert", "HuBERT-EE"), ("wav2vec2", "wav2vec2-EE")])
def test_entering_training_mode_says_once_what_trains(caplog, backbone, name):
    """A plain `Trainer` on a distill model trains the branches alone (about 1 % of the shipped model): `train()`
    says so in one line, with how to train everything, once however often the Trainer calls it."""
    from transformers.utils import logging as hf_logging

    hf_logging.warning_once.cache_clear()  # the line is logged once per process; other tests may have logged it
    distill = make_model(backbone=backbone, exit_training_strategy="distill")
    joint = make_model(backbone=backbone, exit_training_strategy="joint")
    branches = sum(p.numel() for p in distill.exit_branches.parameters())
    total = sum(p.numel() for p in distill.parameters())
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(3):  # as a Trainer does, at every step
                distill.train()
                distill.eval()
            joint.train()
    finally:
        hf_logging.disable_propagation()
    lines = [record.getMessage() for record in caplog.records if f"{name}: training" in record.getMessage()]
    assert lines == [
        f"{name}: training {branches:,} of {total:,} parameters: exit branches only (exit_training_strategy="
        "'distill' freezes the backbone and the final head); load the model with exit_training_strategy='joint' (or "
        "set it and call apply_exit_training_strategy()) to train everything",
        f"{name}: training {total:,} of {total:,} parameters: backbone, final head, exit branches "
        "(exit_training_strategy='joint'); 'two-stage' or 'distill' train the exit branches alone",
    ]


def test_naming_an_exit_setting_turns_early_exit_on(tmp_path):
    """Asking for a threshold, criterion or patience asks for exits, also where the config has them off (as
    `hubert-ee transcribe --exit-threshold` does); `early_exit=False` beside them keeps the full depth."""
    model = make_model(early_exit=False)
    input_values, attention_mask = padded_batch(LENGTHS)
    first, full = [model.config.exit_layers[0]] * len(LENGTHS), [4] * len(LENGTHS)
    assert model.generate(input_values, attention_mask).exit_layer.tolist() == full
    assert model.generate(input_values, attention_mask, exit_threshold=0.0).exit_layer.tolist() == first
    assert model.generate(input_values, attention_mask, exit_criterion="patience",
                          exit_patience=1).exit_layer.tolist() == first
    assert model.generate(input_values, attention_mask, exit_threshold=0.0,
                          early_exit=False).exit_layer.tolist() == full
    with torch.no_grad():
        assert model(input_values, attention_mask=attention_mask, exit_threshold=0.0).exit_layer.tolist() == first
    assert model.config.early_exit is False  # per call only
    model.save_pretrained(tmp_path)
    assert HubertEEForCTC.from_pretrained(tmp_path, exit_threshold=0.6).config.early_exit is True
    assert HubertEEForCTC.from_pretrained(tmp_path, exit_threshold=0.6, early_exit=False).config.early_exit is False
    assert HubertEEForCTC.from_pretrained(tmp_path).config.early_exit is False


@pytest.mark.parametrize("strategy", ["two-stage", "joint", "distill", "joint-distill"])
@pytest.mark.parametrize("early_exit", [False, True])
def test_inference_with_labels_reports_the_training_loss(strategy, early_exit):
    """In eval mode a loss is the strategy's, as in training (what a Trainer's eval_loss shows moves as the exits
    learn, even when only the branches do), beside each branch's; the answer is still the early-exit one."""
    model = make_model(exit_training_strategy=strategy, early_exit=early_exit, exit_threshold=0.5)
    input_values, attention_mask = padded_batch(LENGTHS)
    labels = torch.tensor([[5, 6, 7], [8, 9, -100], [10, 11, 12], [13, -100, -100]])
    with torch.no_grad():
        evaluated = model(input_values, attention_mask=attention_mask, labels=labels)
        analysed = model(input_values, attention_mask=attention_mask, labels=labels, output_exit_logits=True)
    torch.testing.assert_close(evaluated.loss, analysed.loss)
    torch.testing.assert_close(evaluated.exit_losses, analysed.exit_losses)
    generated = model.generate(input_values, attention_mask)
    assert torch.equal(evaluated.exit_layer, generated.exit_layer)
    torch.testing.assert_close(evaluated.logits, generated.logits)
    if not early_exit:
        assert evaluated.exit_layer.tolist() == [4] * len(LENGTHS)


def test_inference_loss_without_branches_is_the_final_ctc_loss():
    model = make_model(exit_layers=[], exit_training_strategy="two-stage")
    input_values, attention_mask = padded_batch(LENGTHS)
    labels = torch.tensor([[5, 6, 7], [8, 9, -100], [10, 11, 12], [13, -100, -100]])
    with torch.no_grad():
        output = model(input_values, attention_mask=attention_mask, labels=labels)
    lengths = torch.tensor(model.frame_lengths(attention_mask.sum(-1).tolist()))
    torch.testing.assert_close(output.loss, ctc_loss(model.config, output.logits, labels, lengths))


def test_distill_loss_is_mix_of_ctc_and_kl():
    model = make_model(exit_training_strategy="distill", distill_weight=0.0)
    model.train()
    input_values, attention_mask = padded_batch(LENGTHS)
    labels = torch.tensor([[5, 6, 7], [8, 9, -100], [10, 11, 12], [13, -100, -100]])
    torch.manual_seed(0)
    pure_ctc = model(input_values, attention_mask=attention_mask, labels=labels).loss
    model.config.exit_training_strategy = "two-stage"
    torch.manual_seed(0)
    two_stage = model(input_values, attention_mask=attention_mask, labels=labels).loss
    torch.testing.assert_close(pure_ctc, two_stage)
    model.config.exit_training_strategy = "distill"
    model.config.distill_weight = 1.0
    kl_only = model(input_values, attention_mask=attention_mask, labels=labels).loss
    assert kl_only > 0 and not torch.isclose(kl_only, pure_ctc)


def test_joint_distill_loss_is_the_final_loss_plus_the_distilled_branch_losses():
    """joint-distill = final CTC + exit_loss_weight x mean branch loss, each branch's the distill mix; with
    distill_weight 0 it is joint's loss, and the teacher (the final head) gets no gradient from the KL term."""
    model = make_model(exit_training_strategy="joint-distill", distill_weight=0.0, exit_loss_weight=0.5)
    model.train()
    input_values, attention_mask = padded_batch(LENGTHS)
    labels = torch.tensor([[5, 6, 7], [8, 9, -100], [10, 11, 12], [13, -100, -100]])
    torch.manual_seed(0)
    without_kl = model(input_values, attention_mask=attention_mask, labels=labels).loss
    model.config.exit_training_strategy = "joint"
    torch.manual_seed(0)
    joint = model(input_values, attention_mask=attention_mask, labels=labels)
    torch.testing.assert_close(without_kl, joint.loss)
    lengths = torch.tensor(model.frame_lengths(attention_mask.sum(-1).tolist()))
    torch.testing.assert_close(joint.loss, ctc_loss(model.config, joint.logits, labels, lengths)
                               + 0.5 * joint.exit_losses.mean())
    model.config.exit_training_strategy = "joint-distill"
    model.config.distill_weight = 1.0  # the branches learn from the teacher only: the head's gradient is the final CTC's
    model.config.exit_loss_weight = 1.0
    torch.manual_seed(0)
    output = model(input_values, attention_mask=attention_mask, labels=labels)
    model.zero_grad()
    output.loss.backward()
    with_branches = model.lm_head.weight.grad.clone()
    model.zero_grad()
    torch.manual_seed(0)
    logits = model(input_values, attention_mask=attention_mask, labels=labels).logits
    ctc_loss(model.config, logits, labels, lengths).backward()
    torch.testing.assert_close(with_branches, model.lm_head.weight.grad)
    assert output.exit_losses.min() > 0


def test_linear_branch_is_cheap_and_works():
    model = make_model(exit_branch="linear")
    branch = model.exit_branches["1"]
    assert branch.layer is None
    assert sum(p.numel() for p in branch.parameters()) < sum(p.numel() for p in model.hubert.encoder.layers[0].parameters())
    input_values, attention_mask = padded_batch(LENGTHS)
    assert set(model.generate(input_values, attention_mask, exit_threshold=0.5).exit_layer.tolist()) <= {1, 2, 3, 4}


def test_init_branches_from_backbone_copies_next_layer_and_head(stable_layer_norm):
    model = make_model(do_stable_layer_norm=stable_layer_norm)
    model.init_exit_branches_from_backbone()
    for layer, branch in model.exit_branches.items():
        assert torch.equal(branch.layer.feed_forward.output_dense.weight,
                           model.hubert.encoder.layers[int(layer)].feed_forward.output_dense.weight)
        assert torch.equal(branch.head.weight, model.lm_head.weight)
    if stable_layer_norm:  # branch after layer 3 = layer 4 + final norm + lm_head = the full model
        input_values, _ = padded_batch([4000])
        with torch.no_grad():
            output = model(input_values, output_exit_logits=True)
        torch.testing.assert_close(output.exit_logits[-1], output.logits)


@pytest.mark.parametrize(
    "bad_input,error,fragment",
    [
        (lambda: [0.0] * 4000, TypeError, "torch.Tensor"),
        (lambda: torch.randn(4000), ValueError, "input_values[None]"),
        (lambda: torch.randn(1, 2, 4000), ValueError, "downmix"),
        (lambda: torch.randint(-100, 100, (1, 4000)), TypeError, "floating point"),
        (lambda: torch.randint(-100, 100, (1, 4000), dtype=torch.int16), TypeError, "got torch.int16"),
        (lambda: torch.ones(1, 4000, dtype=torch.bool), TypeError, "got torch.bool"),
        (lambda: torch.randn(1, 4000, dtype=torch.complex64), TypeError, "got torch.complex64"),
        (lambda: torch.randn(()), ValueError, "got shape ()"),
        (lambda: torch.randn(1, 0), ValueError, "have [0] samples"),
        (lambda: torch.randn(1, 50), ValueError, "too short"),
        (lambda: torch.full((1, 4000), float("nan")), ValueError, "NaN"),
    ],
)
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("call", ["forward", "generate"])
def test_bad_input_gets_clear_error(bad_input, error, fragment, backbone, call):
    model = make_model(backbone=backbone)
    with pytest.raises(error, match=None) as raised:
        getattr(model, call)(bad_input())
    assert fragment in str(raised.value)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("call", ["forward", "generate"])
@pytest.mark.parametrize("input_dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_any_float_input_runs_in_the_model_dtype(backbone, call, input_dtype):
    """float64 (numpy's and soundfile's default) or half-precision input to a float32 model is converted to
    float32: the result is that of the float32 input rounded the same way."""
    model = make_model(backbone=backbone)
    input_values, attention_mask = padded_batch(LENGTHS)
    rounded = input_values.to(input_dtype)
    expected = getattr(model, call)(rounded.float(), attention_mask=attention_mask)
    output = getattr(model, call)(rounded, attention_mask=attention_mask)
    assert output.logits.dtype == torch.float32
    torch.testing.assert_close(output.logits, expected.logits)
    assert output.exit_layer.tolist() == expected.exit_layer.tolist()


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("model_dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_a_model_in_another_dtype_takes_float32_input(backbone, model_dtype):
    """A float16/bfloat16 (or float64) model given float32 input, as the feature extractor returns it: the input
    is converted to the model's dtype, in `forward` and `generate`, and the transcripts are the float32 model's
    (within the rounding of half precision: compared on the final head, at full depth)."""
    reference = make_model(backbone=backbone)
    model = make_model(backbone=backbone).to(model_dtype)
    input_values, attention_mask = padded_batch(LENGTHS)
    for call in (model.forward, model.generate):
        output = call(input_values, attention_mask=attention_mask, early_exit=False)
        assert output.logits.dtype == model_dtype and torch.isfinite(output.logits.float()).all()
    full = model.generate(input_values, attention_mask=attention_mask, early_exit=False)
    expected = reference.generate(input_values, attention_mask=attention_mask, early_exit=False)
    torch.testing.assert_close(full.logits.float(), expected.logits, atol=0.1, rtol=0.05)
    exact = model.generate(input_values.to(model_dtype), attention_mask=attention_mask, early_exit=False)
    torch.testing.assert_close(full.logits, exact.logits)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("call", ["forward", "generate"])
def test_an_empty_batch_is_named(backbone, call):
    model = make_model(backbone=backbone)
    for empty in (torch.zeros(0, 16000), torch.zeros(0, 16000, dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"`input_values` is an empty batch \(shape \(0, 16000\)\): give at "
                                             r"least one utterance"):
            getattr(model, call)(empty)


def test_short_utterance_in_batch_is_named():
    model = make_model()
    input_values, attention_mask = padded_batch([4000, 60])
    with pytest.raises(ValueError, match=r"utterance\(s\) \[1\]"):
        model(input_values, attention_mask=attention_mask)


def test_front_end_geometry_matches_what_the_convolutions_emit():
    model = make_model()
    field, hop = model.receptive_field(), model.samples_per_frame()
    lengths = [field, field + hop - 1, field + hop, 4000]
    assert model.frame_lengths(lengths) == [1, 1, 2, model.frame_lengths([4000])[0]]
    assert model.frame_lengths(torch.tensor(lengths)).tolist() == model.frame_lengths(lengths)
    with torch.no_grad():
        for samples in lengths:
            frames = model.hubert.feature_extractor(torch.randn(1, samples)).shape[-1]
            assert frames == model.frame_lengths([samples])[0]
    with pytest.raises(ValueError):
        model(torch.randn(1, field - 1))


def test_frames_from_samples_matches_transformers_for_any_hubert_config():
    plain = HubertForCTC(HubertConfig(**tiny_hubert_kwargs()))
    lengths = torch.tensor([400, 401, 719, 720, 16000])
    expected = plain._get_feat_extract_output_lengths(lengths).tolist()
    assert frames_from_samples(plain.config, lengths).tolist() == expected
    assert frames_from_samples(plain.config, lengths).dtype == torch.long
    assert frames_from_samples(plain.config, lengths.tolist()) == expected
    assert frames_from_samples(plain.config, 16000) == expected[-1]


def test_convert_plain_hubert_checkpoint_logs_one_line(tmp_path, caplog):
    torch.manual_seed(0)
    plain = HubertForCTC(HubertConfig(**tiny_hubert_kwargs(do_stable_layer_norm=True)))
    plain.save_pretrained(tmp_path / "plain")
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    with caplog.at_level(logging.WARNING):
        model = HubertEEForCTC.from_pretrained(tmp_path / "plain", exit_layers=[2], exit_branch="linear")
    hf_logging.disable_propagation()
    messages = [record.getMessage() for record in caplog.records]
    ours = [message for message in messages if "HuBERT-EE" in message]
    assert len(ours) == 1 and "[2]" in ours[0] and "'linear'" in ours[0]
    assert not any("exit_branches" in message for message in messages)  # no wall of missing keys
    assert model.config.model_type == "hubert_ee" and list(model.exit_branches) == ["2"]
    assert torch.equal(model.lm_head.weight, plain.lm_head.weight)
    input_values, _ = padded_batch([4000])
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(input_values, early_exit=False).logits,
                                   plain.eval()(input_values).logits)


def test_conversion_marks_its_new_branches_on_the_instance_never_on_the_class(tmp_path):
    """A conversion tells transformers' loader that the branch weights are new through the instance it builds
    (`_keys_to_ignore_on_load_missing`, set in `__init__`), so a load of an early-exit checkpoint, in this thread or
    another, still reports missing branch weights."""
    HubertForCTC(HubertConfig(**tiny_hubert_kwargs())).save_pretrained(tmp_path / "plain")
    make_model(exit_layers=[1, 2]).save_pretrained(tmp_path / "ee")
    before = HubertEEForCTC._keys_to_ignore_on_load_missing
    converted = HubertEEForCTC.from_pretrained(tmp_path / "plain", exit_layers=[2])
    assert r"^exit_branches\." in converted._keys_to_ignore_on_load_missing
    assert HubertEEForCTC._keys_to_ignore_on_load_missing == before
    assert r"^exit_branches\." not in make_model()._keys_to_ignore_on_load_missing
    with ThreadPoolExecutor(max_workers=2) as pool:
        conversion = pool.submit(HubertEEForCTC.from_pretrained, tmp_path / "plain", exit_layers=[2])
        with pytest.raises(ValueError, match=r"exit_branches\.3\."):
            HubertEEForCTC.from_pretrained(tmp_path / "ee", exit_layers=[1, 2, 3])
        assert list(conversion.result().exit_branches) == ["2"]


def test_hubert_ee_checkpoint_missing_branch_weights_fails(tmp_path):
    model = make_model(exit_layers=[1, 2])
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"exit_branches\.3\."):
        HubertEEForCTC.from_pretrained(tmp_path, exit_layers=[1, 2, 3])


def test_weights_changed_through_data_are_used_at_once():
    """EMA and weight-averaging code writes weights through `.data`, which bumps no version counter: inference must
    then give exactly what a model freshly built with those weights gives (the positional convolution's
    weight-normed kernel included)."""
    model, other = make_model(seed=0), make_model(seed=1)
    input_values, _ = padded_batch([3000])
    model.generate(input_values, early_exit=False)  # a first call, as a training loop's evaluation would make
    with torch.no_grad():
        for name, parameter in model.named_parameters():  # an EMA step: 0.5 old + 0.5 other
            parameter.data.mul_(0.5).add_(other.get_parameter(name).data, alpha=0.5)
    fresh = make_model(seed=2)
    fresh.load_state_dict(model.state_dict())
    for kwargs in ({"early_exit": False}, {"exit_threshold": 0.97}):
        torch.testing.assert_close(model.generate(input_values, **kwargs).logits,
                                   fresh.generate(input_values, **kwargs).logits, rtol=0, atol=0)
    conv = model.hubert.encoder.pos_conv_embed.conv
    with torch.no_grad():
        conv.parametrizations.weight.original1.data = conv.parametrizations.weight.original1.data * 1.5  # a new tensor
    changed = make_model(seed=2)
    changed.load_state_dict(model.state_dict())
    torch.testing.assert_close(model.generate(input_values).logits, changed.generate(input_values).logits,
                               rtol=0, atol=0)


def _training_mode_model():
    """In training mode this model's dropout, layerdrop and time masking all change the output."""
    return make_model(hidden_dropout=0.3, attention_dropout=0.3, final_dropout=0.3, layerdrop=0.3,
                      mask_time_prob=0.5, mask_time_length=2, exit_threshold=0.97).train()


def test_generate_never_changes_the_module_mode():
    """`generate` runs the inference path whatever the mode, without flipping the shared module's mode: another
    thread (or a training step) using the model meanwhile must still see the mode it set."""
    model = _training_mode_model()
    seen = []
    layer = model.hubert.encoder.layers[0]
    layer.register_forward_pre_hook(lambda module, args: seen.append((model.training, layer.training)))
    input_values, attention_mask = padded_batch(LENGTHS)
    generated = model.generate(input_values, attention_mask)
    assert seen == [(True, True)]
    assert all(module.training for module in model.modules())
    expected = model.eval().generate(input_values, attention_mask)  # eval mode: the inference path itself
    assert torch.equal(generated.sequences, expected.sequences) and torch.equal(generated.logits, expected.logits)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_concurrent_generate_equals_sequential_calls(mode):
    model = _training_mode_model().train(mode == "train")
    calls = [(LENGTHS[: 1 + index % 4], {"exit_threshold": (0.9, 0.97, 0.99)[index % 3]}) for index in range(32)]

    def call(lengths, settings):
        output = model.generate(*padded_batch(lengths, seed=len(lengths)), **settings)
        return output.sequences, output.exit_layer, output.logits

    sequential = [call(*arguments) for arguments in calls]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda arguments: call(*arguments), calls))
    different = [index for index, (a, b) in enumerate(zip(sequential, concurrent))
                 if not all(torch.equal(x, y) for x, y in zip(a, b))]
    assert different == [], f"{len(different)} of 32 concurrent results differ from the sequential ones"
    assert all(module.training == (mode == "train") for module in model.modules())


# ---------------------------------------------------------------------------------------------- exit criteria


def reference_decision(logits, valid, criterion, threshold, blank):
    """The criteria exactly as `HubertEEConfig.exit_criterion` documents them (means, then a comparison), one row
    at a time: the yardstick for the model's fused, division-free batched version. Returns (leaves, score)."""
    leaves, scores = [], []
    for row in range(logits.shape[0]):
        frames = valid[row] if valid is not None else torch.ones(logits.shape[1], dtype=torch.bool)
        probs = logits[row, frames].double().softmax(-1)
        if criterion == "confidence":
            top_prob, top_id = probs.max(-1)
            counted = top_id != blank
            score = (top_prob[counted] if counted.any() else top_prob).mean().item()
            leaves.append(score >= threshold)
        else:
            score = (-(probs * probs.log()).sum(-1)).mean().item()
            leaves.append(score <= threshold)
        scores.append(score)
    return leaves, scores


@pytest.mark.parametrize("criterion", ["confidence", "entropy"])
@pytest.mark.parametrize("padded", [False, True])
def test_exit_criteria_follow_their_documented_definition(criterion, padded):
    model = make_model()
    blank = model.config.pad_token_id
    generator = torch.Generator().manual_seed(3)
    rows, frames, vocab = 12, 40, model.config.vocab_size
    logits = torch.randn(rows, frames, vocab, generator=generator) * torch.linspace(0.5, 12, rows).view(-1, 1, 1)
    logits[:3, :, blank] += 30.0  # rows whose frames are all blank: confidence falls back to all their frames
    logits[3, :5, blank] += 30.0  # a row with a few blank frames among characters
    valid = None
    if padded:
        lengths = torch.randint(1, frames + 1, (rows,), generator=generator)
        lengths[0] = frames
        valid = torch.arange(frames).unsqueeze(0) < lengths.unsqueeze(1)
        logits = logits.masked_fill(~valid.unsqueeze(-1), 50.0)  # padding frames hold garbage: it must not count
    checked = 0
    for threshold in torch.linspace(0.0, 3.5 if criterion == "entropy" else 1.0, 36).tolist():
        settings = ExitSetting(criterion=criterion, threshold=threshold)
        got = model.exit_decision(logits, valid, settings, {}).tolist()
        expected, scores = reference_decision(logits, valid, criterion, threshold, blank)
        for row in range(rows):
            if abs(scores[row] - threshold) > 1e-5:  # a tie may round either way
                assert got[row] == expected[row], (criterion, threshold, row, scores[row])
                checked += 1
        if not padded:  # no padding: an all-true mask and no mask are the same decision
            all_valid = torch.ones(rows, frames, dtype=torch.bool)
            assert model.exit_decision(logits, all_valid, settings, {}).tolist() == got
    assert checked > 0.9 * rows * 36
    # fp16 logits (a half-precision model) are judged in float32, as float32 logits would be
    settings = ExitSetting(criterion=criterion, threshold=0.7)
    half = logits.half()
    assert (model.exit_decision(half, valid, settings, {}).tolist()
            == model.exit_decision(half.float(), valid, settings, {}).tolist())


@pytest.mark.parametrize("criterion, no_padding, padding",
                         [("confidence", 9, 10), ("entropy", 7, 8), ("patience", (12, 15), (14, 17))])
def test_exit_criteria_stay_few_kernels(criterion, no_padding, padding):
    """At batch 1 on a GPU an exit's cost is mostly the host launching its kernels (BENCHMARKS.md), so each
    criterion is held to its current count of non-view tensor ops (patience: at the first exit / later ones);
    adding one is a measured decision."""
    from hubert_ee.benchmark.instrumentation import KernelCounter

    model = make_model()
    logits = torch.randn(2, 30, model.config.vocab_size)
    settings = ExitSetting(criterion=criterion, threshold=0.5, patience=2)
    for valid, limits in ((None, no_padding), (torch.ones(2, 30, dtype=torch.bool), padding)):
        state = {}
        for limit in limits if isinstance(limits, tuple) else (limits,):
            with torch.inference_mode(), KernelCounter() as counter:
                model.exit_decision(logits, valid, settings, state)
            assert counter.kernels <= limit


def test_greedy_transcripts_collapse_repeats_drop_blanks_and_ignore_padding():
    model = make_model()
    blank = model.config.pad_token_id
    generator = torch.Generator().manual_seed(4)
    token_ids = torch.randint(0, 6, (20, 25), generator=generator)
    token_ids[token_ids == 5] = blank
    token_ids[0] = blank  # nothing but blanks: an empty transcript
    lengths = torch.randint(1, 26, (20,), generator=generator)
    valid = torch.arange(25).unsqueeze(0) < lengths.unsqueeze(1)
    for mask in (valid, None):
        got = greedy_transcripts(token_ids, mask, blank)
        assert got.shape == token_ids.shape
        for row in range(20):
            frames = token_ids[row, : lengths[row]] if mask is not None else token_ids[row]
            expected = [int(t) for i, t in enumerate(frames) if t != blank and (i == 0 or t != frames[i - 1])]
            assert got[row].tolist() == expected + [-1] * (25 - len(expected))


def _transfers(call):
    from hubert_ee.benchmark.instrumentation import host_transfers

    return host_transfers(call)


def test_one_host_read_per_exit_consulted_and_no_other_wait():
    """On a GPU every read of a tensor value waits for the device (BENCHMARKS.md: at batch 1 such a wait costs
    about what a criterion does), so a forward reads once per exit it consults, and the input check and the
    attention-mask lengths ride on reads that happen anyway."""
    from hubert_ee.forced_exits import forced_exit_targets, prepare_forced_targets

    model = make_model()
    exits = len(model.config.exit_layers)
    one = torch.randn(1, 4000)
    never = {"exit_threshold": 2.0, "exit_criterion": "confidence"}
    assert _transfers(lambda: model(one, **never)) == {"reads": exits, "host_to_device": 0}
    assert _transfers(lambda: model.generate(one, **never)) == {"reads": exits, "host_to_device": 0}
    # early_exit=False consults no exit: the input check is read once, at the end
    assert _transfers(lambda: model(one, early_exit=False)) == {"reads": 1, "host_to_device": 0}
    # an all-ones mask (a feature extractor's, for one utterance) costs the one read of its lengths
    ones = torch.ones(1, 4000, dtype=torch.long)
    assert _transfers(lambda: model(one, attention_mask=ones, **never)) == {"reads": 1 + exits, "host_to_device": 0}
    # padded batch, rows leaving at exits 1 and 2, one row to the end: the lengths, one read per exit, one
    # host->device copy of the row indices per partial exit
    input_values, attention_mask = padded_batch(LENGTHS[:3])
    targets = prepare_forced_targets(model, [1, 4, 2], "cpu")

    def forced():
        with forced_exit_targets(model, targets):
            return model(input_values, attention_mask=attention_mask)

    assert _transfers(forced) == {"reads": 1 + exits, "host_to_device": 2}
    assert forced().exit_layer.tolist() == [1, 4, 2]


def test_an_all_ones_mask_is_dropped_without_changing_anything():
    model = make_model()
    input_values = torch.randn(2, 4000)
    ones = torch.ones(2, 4000, dtype=torch.long)
    for kwargs in ({}, {"early_exit": False}, {"output_exit_logits": True}):
        with torch.no_grad():
            plain, masked = model(input_values, **kwargs), model(input_values, attention_mask=ones, **kwargs)
        assert torch.equal(plain.logits, masked.logits) and torch.equal(plain.exit_layer, masked.exit_layer)
    # padding of less than one frame's hop leaves every row with all its frames: no frame is padding either
    short = ones.clone()
    short[1, -3:] = 0
    with torch.no_grad():
        assert torch.equal(model(input_values, attention_mask=short).logits, model(input_values).logits)


@pytest.mark.parametrize("path", ["early_exit", "no_exit", "all_exits", "generate", "masked", "training"])
def test_non_finite_input_is_named_on_every_path(path):
    """The finiteness check is read late (with the first decision) on the inference paths; it must still stop
    every path, before any output, and name the utterance."""
    model = make_model()
    input_values = torch.randn(3, 4000)
    input_values[1, 123] = float("nan")
    input_values[2, 7] = float("inf")
    call = {
        "early_exit": lambda: model(input_values),
        "no_exit": lambda: model(input_values, early_exit=False),
        "all_exits": lambda: model(input_values, output_exit_logits=True),
        "generate": lambda: model.generate(input_values),
        "masked": lambda: model(input_values, attention_mask=padded_batch([4000, 3000, 2000])[1]),
        "training": lambda: model.train()(input_values),
    }[path]
    with pytest.raises(ValueError, match=r"NaN or infinite samples \(utterance\(s\) \[1, 2\]\)"), torch.no_grad():
        call()


def test_torch_compile_breaks_the_graph_only_at_exit_reads_and_changes_nothing():
    """`torch.compile(model)` is how Hugging Face users cut per-op host overhead (on a GPU, mode="reduce-overhead"
    turns each compiled piece into one CUDA graph launch). The exit loop must trace with graph breaks only where
    the host reads an exit's decision, and give what eager mode gives, exits and compaction included."""
    import torch._dynamo

    model = make_model()
    torch._dynamo.reset()
    try:
        for call in range(2):  # the first call fills the model's caches; the second is the steady state
            with torch.inference_mode():
                explained = torch._dynamo.explain(model)(torch.randn(1, 4000), exit_threshold=2.0)
            # every break is the read of an exit's decision; the first is seen twice, from `forward` and from the
            # exit loop that `forward` calls (dynamo resumes a frame that broke inside a call by compiling the
            # callee)
            assert all("tolist" in reason.reason and reason.user_stack[-1].name == "_early_exit_pass"
                       for reason in explained.break_reasons), (call, explained.break_reasons)
            assert explained.graph_break_count == len(model.config.exit_layers) + 1
        compiled = torch.compile(model, backend="aot_eager")
        input_values, attention_mask = padded_batch(LENGTHS)
        seen = set()
        for criterion, threshold in (("confidence", 0.97), ("confidence", 0.98), ("entropy", 0.05)):
            settings = {"exit_criterion": criterion, "exit_threshold": threshold}
            with torch.inference_mode():
                got = compiled(input_values, attention_mask=attention_mask, **settings)
                expected = model(input_values, attention_mask=attention_mask, **settings)
            assert torch.equal(got.exit_layer, expected.exit_layer)
            torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-5)
            seen.update(got.exit_layer.tolist())
        assert len(seen) >= 2, f"no partial exit compared: {seen}"
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("dtype", [torch.bool, torch.int32, torch.float32])
def test_attention_mask_of_any_dtype_gives_the_same_result(dtype):
    """Feature extractors return int masks, but bool and float masks are common too (HubertForCTC takes them)."""
    model = make_model()
    input_values, attention_mask = padded_batch(LENGTHS)
    with torch.no_grad():
        expected = model.generate(input_values, attention_mask, exit_threshold=0.97)
        got = model.generate(input_values, attention_mask.to(dtype), exit_threshold=0.97)
    assert torch.equal(got.sequences, expected.sequences) and torch.equal(got.exit_layer, expected.exit_layer)


@pytest.mark.parametrize("feat_extract_norm", ["layer", "group"])
def test_silence_never_gives_nan(stable_layer_norm, feat_extract_norm):
    processor = build_processor()
    audios = [np.zeros(4000, np.float32), noise(2600 / 16000, seed=4), np.zeros(1000, np.float32),
              np.full(1500, 0.25, np.float32)]  # a DC offset is zero-variance too
    input_values, attention_mask = featurize(processor, audios, torch.device("cpu"))
    assert torch.isfinite(input_values).all()
    assert input_values[0].abs().max() == 0 and input_values[3, :1500].abs().max() == 0
    labels = torch.tensor([[5, 6], [7, -100], [8, 9], [10, -100]])
    for criterion in ("confidence", "entropy", "patience"):
        model = make_model(exit_threshold=0.5, do_stable_layer_norm=stable_layer_norm,
                           feat_extract_norm=feat_extract_norm, exit_criterion=criterion)
        generated = model.generate(input_values, attention_mask)
        assert torch.isfinite(generated.logits).all()
        with torch.no_grad():
            full = model(input_values, attention_mask=attention_mask, labels=labels, output_exit_logits=True)
            early = model(input_values, attention_mask=attention_mask, labels=labels)
        assert all(torch.isfinite(logits).all() for logits in (*full.exit_logits, full.logits, early.logits))
        assert torch.isfinite(full.loss) and torch.isfinite(early.loss) and torch.isfinite(full.exit_losses).all()
        model.train()
        loss = model(input_values, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.eval()
        if feat_extract_norm == "group":  # GroupNorm normalises over padding too: batches differ from one-by-one
            continue
        for row, length in enumerate([4000, 2600, 1000, 1500]):  # silent rows exit as they would alone
            alone = model.generate(input_values[row : row + 1, :length])
            assert generated.exit_layer[row] == alone.exit_layer[0]
            assert torch.equal(generated.sequences[row, : alone.sequences.shape[1]], alone.sequences[0])
