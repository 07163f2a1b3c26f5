"""The training-free intervention: by hand on one attention call, then on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from avar.attention.hooks import decoder_attention
from avar.attention.probe import mass_probe
from avar.attention.steering import Steering, steer
from avar.config.specs import InterventionSpec, parse_intervention
from avar.data import read_jsonl
from avar.data.chats import to_messages
from avar.generate import generate
from avar.segments import Segment, encode_batch, model_inputs

S = Segment


def test_steer_one_decode_row_by_hand():
    # Prompt of 3 keys (system, image, user text); one generated key; decode row at 3.
    steering = Steering(
        InterventionSpec(0.5, "0-0", beta=0.25),
        torch.tensor([[S.SYSTEM, S.IMAGE, S.USER_TEXT]]),
        n_layers=1,
    )
    query = torch.ones(1, 1, 1, 1)  # [B, H, Tq=1, D=1]
    key = torch.tensor([1.0, -1.0, 0.5, 2.0]).reshape(1, 1, 4, 1)
    value = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 4, 1)
    # scores [1, -1, .5, 2]; system key: 1 - .25*1 = .75; image key: -1 + .5*1 = -.5
    adjusted = [0.75, -0.5, 0.5, 2.0]
    weights = [math.exp(a) for a in adjusted]
    expected = sum(w * v for w, v in zip(weights, [1, 2, 3, 4], strict=True)) / sum(weights)
    plain = torch.zeros(1, 1, 1, 1)  # [B, Tq, H, D]: replaced, since the row is steered
    out = steering.steer(query, key, value, None, 1.0, plain)
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_prompt_rows_before_the_last_are_not_steered():
    # A teacher-forced prompt of 4 rows: the last one yields the first answer token (PAI).
    segments = torch.tensor([[S.SYSTEM, S.IMAGE, S.USER_TEXT, S.TEMPLATE]])
    steering = Steering(InterventionSpec(5.0, "0-0"), segments, n_layers=1)
    query, key, value = torch.randn(1, 2, 4, 3), torch.randn(1, 2, 4, 3), torch.randn(1, 2, 4, 3)
    plain = torch.randn(1, 4, 2, 3)
    out = steering.steer(query, key, value, None, 0.5, plain)
    assert torch.equal(out[:, :3], plain[:, :3])
    assert not torch.allclose(out[:, 3], plain[:, 3])


def test_steered_rows_are_those_that_yield_answer_tokens():
    prompt = torch.tensor([[S.SYSTEM, S.IMAGE, S.USER_TEXT, S.TEMPLATE]])
    decoding = Steering(InterventionSpec(1.0, "0-0"), prompt, n_layers=1)
    assert decoding.steered_rows(0, torch.arange(6)).tolist() == [0, 0, 0, 1, 1, 1]
    answered = torch.tensor([[S.SYSTEM, S.IMAGE, S.TEMPLATE, S.RESPONSE, S.RESPONSE, S.PAD]])
    forced = Steering(InterventionSpec(1.0, "0-0"), answered, n_layers=1)
    assert forced.steered_rows(0, torch.arange(5)).tolist() == [0, 0, 1, 1, 1]


def prompts(visual_jsonl, n=3):
    records = read_jsonl(visual_jsonl)[:n]
    return [to_messages(r, visual_jsonl.parent, None, with_response=False) for r in records]


def test_zero_alpha_changes_nothing(tiny_model, processor, visual_jsonl):
    plain = generate(tiny_model, processor, prompts(visual_jsonl), 8, progress=False)
    zero = parse_intervention("alpha=0,layers=0-3")
    assert generate(tiny_model, processor, prompts(visual_jsonl), 8, 8, zero, False) == plain


def reference_attention(spec: InterventionSpec, segments: torch.Tensor, first_row: int):
    """Eager attention with PAI's intervention written out: in the spec's layers, rows from
    `first_row` on get `alpha * |score|` added to image-key scores and `beta * |score|`
    taken from system-key scores, before the mask and the softmax."""
    image = (segments == S.IMAGE).float()[:, None, None, :]  # [B, 1, 1, T]
    system = (segments == S.SYSTEM).float()[:, None, None, :]
    low, high = (int(n) for n in spec.layers.split("-"))

    def attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
        scores = query @ key.transpose(-1, -2) * scaling  # [B, H, T, T]
        if low <= module.layer_idx <= high:
            rows = (torch.arange(scores.shape[2]) >= first_row).float()[None, None, :, None]
            shift = spec.alpha * scores.abs() * image - spec.beta * scores.abs() * system
            scores = scores + shift * rows
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        elif attention_mask is not None:
            scores = scores + attention_mask
        probs = torch.softmax(scores, dim=-1)
        return (probs @ value).transpose(1, 2).contiguous(), probs

    return attention


def test_cached_decoding_equals_an_eager_reference_of_pai(tiny_model, processor, visual_jsonl):
    spec = InterventionSpec(2.0, "1-3", beta=0.5)
    batch = encode_batch(processor, prompts(visual_jsonl), "left", add_generation_prompt=True)
    with torch.no_grad(), steer(tiny_model, spec, batch["segment_ids"]):
        out = tiny_model.generate(
            **model_inputs(batch),
            max_new_tokens=5,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
        )
    decoded = torch.stack(out.scores, dim=1)  # [B, 5, V]: logits for each new token
    n_prompt = batch["input_ids"].shape[1]
    n_new = out.sequences.shape[1] - n_prompt
    # The same tokens in one teacher-forced eager pass with the intervention written out.
    full = dict(batch, input_ids=out.sequences)
    ones = torch.ones(3, n_new, dtype=torch.long)
    full["attention_mask"] = torch.cat([batch["attention_mask"], ones], dim=1)
    full["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], ones * 0], dim=1)
    segments = torch.cat([batch["segment_ids"], ones * int(S.RESPONSE)], dim=1)
    AttentionInterface.register("pai_reference", reference_attention(spec, segments, n_prompt - 1))
    AttentionMaskInterface.register(
        "pai_reference", AttentionMaskInterface._global_mapping["eager"]
    )
    config = decoder_attention(tiny_model)[0].config
    previous = config._attn_implementation_internal
    config._attn_implementation_internal = "pai_reference"
    try:
        with torch.no_grad():
            reference = tiny_model(**model_inputs(full)).logits[:, n_prompt - 1 : -1]
    finally:
        config._attn_implementation_internal = previous
    torch.testing.assert_close(decoded, reference, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        plain = tiny_model(**model_inputs(full)).logits[:, n_prompt - 1 : -1]
    assert (plain[:, 0] - decoded[:, 0]).abs().max() > 1e-3  # the first answer token steered
    # The intervention's teacher-forced pass (VAS under it) steers the same rows.
    with torch.no_grad(), steer(tiny_model, spec, segments):
        forced = tiny_model(**model_inputs(full)).logits[:, n_prompt - 1 : -1]
    torch.testing.assert_close(forced, reference, rtol=1e-4, atol=1e-4)


def test_steering_raises_image_mass(tiny_model, processor, visual_jsonl):
    records = read_jsonl(visual_jsonl)[:4]
    batch = encode_batch(processor, [to_messages(r, visual_jsonl.parent, None) for r in records])
    segments = batch["segment_ids"]

    def image_mass(spec):
        with torch.no_grad(), steer(tiny_model, spec, segments) as steering:
            with mass_probe(tiny_model, segments, steering=steering) as probe:
                tiny_model(**model_inputs(batch))
        return probe.masses()[..., S.IMAGE].mean(dim=(1, 2))  # [layers]

    plain, steered = image_mass(None), image_mass(InterventionSpec(1.0, "0-1"))
    assert (steered[:2] > plain[:2] + 0.003).all()  # the steered layers (small random scores)
    assert torch.allclose(image_mass(InterventionSpec(0.0, "0-1")), plain)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("alpha=0.2", "missing layers"),
        ("alpha=x,layers=1-2", "must be numbers"),
        ("alpha=0.2,layers=all", "not 'all'"),
        ("alpha=0.2,layers=3-1", "layer range"),
        ("gamma=1,alpha=0.2,layers=1-2", "got 'gamma=1'"),
        ("alpha=-1,layers=1-2", ">= 0"),
    ],
)
def test_bad_intervention_specs(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_intervention(text)


def test_intervention_spec_round_trips():
    spec = parse_intervention("alpha=0.2, layers=2-8, beta=0.1")
    assert spec == InterventionSpec(0.2, "2-8", 0.1)
    assert parse_intervention(str(spec)) == spec
    assert parse_intervention("") is None
