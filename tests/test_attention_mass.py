"""Attention mass: hand-checked pieces, then the efficient path against eager maps."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

from avar.attention.mass import (
    key_profile_from_weights,
    rows_key_profile,
    segment_mass,
    select_queries,
)
from avar.attention.probe import eager_masses, mass_probe, masses_from_maps
from avar.data import read_jsonl
from avar.data.chats import to_messages
from avar.segments import Segment, encode_batch, model_inputs

S = Segment


def test_select_queries():
    segments = torch.tensor(
        [
            [S.SYSTEM, S.USER_TEXT, S.IMAGE, S.RESPONSE, S.RESPONSE, S.TEMPLATE],
            [S.PAD, S.PAD, S.USER_TEXT, S.RESPONSE, S.TEMPLATE, S.PAD],
        ]
    )
    assert select_queries(segments, "response").int().tolist() == [
        [0, 0, 0, 1, 1, 0],
        [0, 0, 0, 1, 0, 0],
    ]
    assert select_queries(segments, "prompt").int().tolist() == [
        [0, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],
    ]
    assert select_queries(segments, "last").int().tolist() == [
        [0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 1, 0],
    ]
    with pytest.raises(ValueError, match="queries must be one of"):
        select_queries(segments, "image")


def test_rows_key_profile_by_hand():
    # One head, 3 keys, d=1, scaling 1. Keys k = [0, ln 2, ln 3]; query rows q = 1.
    key = torch.tensor([[[0.0], [math.log(2)], [math.log(3)]]])  # [Hkv=1, T=3, D=1]
    query = torch.ones(1, 2, 1)  # [H=1, R=2, D=1]
    # Row at position 1 sees keys 0..1: scores [0, ln2] -> probs [1/3, 2/3].
    # Row at position 2 sees keys 0..2: scores [0, ln2, ln3] -> probs [1/6, 2/6, 3/6].
    allowed = torch.tensor([[True, True, False], [True, True, True]])
    profile = rows_key_profile(query, key, allowed, scaling=1.0)
    expected = torch.tensor([[1 / 3 + 1 / 6, 2 / 3 + 2 / 6, 3 / 6]])
    torch.testing.assert_close(profile, expected)


def test_rows_key_profile_gqa_and_chunking_match_full_softmax():
    torch.manual_seed(0)
    query, key = torch.randn(6, 5, 8), torch.randn(2, 9, 8)  # 6 heads share 2 kv heads
    allowed = torch.rand(5, 9) > 0.3
    allowed[:, 0] = True
    expanded = key.repeat_interleave(3, dim=0)  # [6, 9, 8]: head h uses kv head h // 3
    scores = (query @ expanded.transpose(1, 2) * 0.5).masked_fill(~allowed, -math.inf)
    expected = torch.softmax(scores, dim=-1).sum(dim=1)  # [6, 9]
    for chunk in (1, 6 * 9 * 2, 10**6):  # one row, two rows, all rows per chunk
        profile = rows_key_profile(query, key, allowed, 0.5, chunk_elements=chunk)
        torch.testing.assert_close(profile, expected)


@pytest.mark.parametrize("grad", [False, True])
def test_masses_under_bf16_autocast_are_the_fp32_ones(grad):
    # Training runs under bf16 autocast; the masses (SFT loss, r_visual) must be eval's.
    torch.manual_seed(0)
    query = torch.randn(4, 7, 16, requires_grad=grad)
    key, allowed = torch.randn(2, 300, 16) * 3, torch.ones(7, 300, dtype=torch.bool)
    plain = rows_key_profile(query, key, allowed, 0.25)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = rows_key_profile(query, key, allowed, 0.25)
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, plain, rtol=1e-6, atol=1e-6)


def test_segment_mass_by_hand():
    profile = torch.tensor([[[0.2, 0.6, 1.2]]])  # [B=1, H=1, T=3], summed over 2 queries
    segments = torch.tensor([[S.SYSTEM, S.IMAGE, S.IMAGE]])
    queries = torch.tensor([[False, True, True]])
    mass = segment_mass(profile, segments, queries)[0, 0]
    assert mass[S.SYSTEM].item() == pytest.approx(0.1)  # 0.2 / 2
    assert mass[S.IMAGE].item() == pytest.approx(0.9)  # (0.6 + 1.2) / 2
    assert mass.sum().item() == pytest.approx(1.0)


def test_key_profile_from_weights_sums_selected_rows():
    weights = torch.tensor([[[[1.0, 0.0], [0.25, 0.75]]]])  # [B=1, H=1, 2, 2]
    profile = key_profile_from_weights(weights, torch.tensor([[False, True]]))
    assert profile.tolist() == [[[0.25, 0.75]]]


@pytest.fixture(scope="module")
def sharp_models(tiny_dir):
    """Random tiny Qwen2.5-VL models of three seeds, initialised with wide weights so
    attention is far from uniform; each returned with an sdpa and an eager copy."""
    models = []
    for seed in (0, 1, 2):
        config = AutoConfig.from_pretrained(tiny_dir)
        config.text_config.initializer_range = 0.2
        torch.manual_seed(seed)
        sdpa = Qwen2_5_VLForConditionalGeneration(config).eval()
        sdpa.set_attn_implementation("sdpa")
        eager = Qwen2_5_VLForConditionalGeneration(copy.deepcopy(config)).eval()
        eager.load_state_dict(sdpa.state_dict())
        eager.set_attn_implementation("eager")
        assert sdpa.config.text_config._attn_implementation == "sdpa"
        models.append((sdpa, eager))
    return models


def mixed_batch(processor, visual_jsonl, text_jsonl, multi_image_chat, padding_side):
    """Two one-image records, a text-only record and a three-image conversation."""
    visual = read_jsonl(visual_jsonl)[:2]
    chats = [to_messages(r, visual_jsonl.parent, "Look closely.") for r in visual]
    chats.append(to_messages(read_jsonl(text_jsonl)[0], text_jsonl.parent, None))
    chats.append(multi_image_chat)
    return encode_batch(processor, chats, padding_side=padding_side)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("queries", ["response", "prompt", "last"])
def test_efficient_masses_equal_eager_maps_of_the_same_pass(
    sharp_models, processor, visual_jsonl, text_jsonl, multi_image_chat, padding_side, queries
):
    # The probe rides on the eager kernel here, so both read the very same q and k.
    batch = mixed_batch(processor, visual_jsonl, text_jsonl, multi_image_chat, padding_side)
    segments = batch["segment_ids"]
    query_mask = select_queries(segments, queries)
    for _, eager in sharp_models:
        with torch.no_grad(), mass_probe(eager, segments, queries) as probe:
            maps = eager(**model_inputs(batch), output_attentions=True).attentions
        reference = masses_from_maps(maps, segments, query_mask, [0, 1, 2, 3])
        efficient = probe.masses()
        assert efficient.shape == (4, 4, 4, len(Segment))  # layers, sequences, heads, segments
        torch.testing.assert_close(efficient, reference, rtol=1e-5, atol=1e-7)
        real = efficient[..., 1:].sum(dim=-1)  # every selected query's attention sums to 1
        torch.testing.assert_close(real, torch.ones_like(real))


# Separate models: the sdpa and eager kernels round differently upstream of each layer,
# and wide random weights amplify that: masses agree to a few 1e-5 relative, not 1e-7.
TOLERANCE = {"rtol": 1e-4, "atol": 1e-6}


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("queries", ["response", "prompt", "last"])
def test_sdpa_model_masses_match_eager_model_reference(
    sharp_models, processor, visual_jsonl, text_jsonl, multi_image_chat, padding_side, queries
):
    batch = mixed_batch(processor, visual_jsonl, text_jsonl, multi_image_chat, padding_side)
    segments = batch["segment_ids"]
    for sdpa, eager in sharp_models:
        with torch.no_grad(), mass_probe(sdpa, segments, queries) as probe:
            sdpa(**model_inputs(batch))
        with torch.no_grad():
            reference = eager_masses(eager, model_inputs(batch), segments, queries)
        torch.testing.assert_close(probe.masses(), reference, **TOLERANCE)


def test_masses_are_far_from_uniform(
    sharp_models, processor, visual_jsonl, text_jsonl, multi_image_chat
):
    # Guards the comparison above against trivially equal (uniform) attention.
    batch = mixed_batch(processor, visual_jsonl, text_jsonl, multi_image_chat, "right")
    with torch.no_grad(), mass_probe(sharp_models[0][0], batch["segment_ids"]) as probe:
        sharp_models[0][0](**model_inputs(batch))
    image = probe.masses()[..., S.IMAGE][:, 0]  # [layers, heads] of the first record
    assert image.max() - image.min() > 0.05


def test_probe_layers_subset_and_model_output_unchanged(
    sharp_models, processor, visual_jsonl, text_jsonl, multi_image_chat
):
    sdpa, _ = sharp_models[1]
    batch = mixed_batch(processor, visual_jsonl, text_jsonl, multi_image_chat, "right")
    with torch.no_grad():
        plain = sdpa(**model_inputs(batch)).logits
        with mass_probe(sdpa, batch["segment_ids"], "response", "1-2") as probe:
            probed = sdpa(**model_inputs(batch)).logits
    assert probe.masses().shape[0] == 2
    assert sorted(probe.profiles) == [1, 2]
    torch.testing.assert_close(probed, plain, rtol=0, atol=0)
    assert sdpa.config.text_config._attn_implementation == "sdpa"  # restored on exit


def test_gradients_match_eager_reference(
    sharp_models, processor, visual_jsonl, text_jsonl, multi_image_chat
):
    batch = mixed_batch(processor, visual_jsonl, text_jsonl, multi_image_chat, "right")
    segments = batch["segment_ids"]
    sdpa, eager = sharp_models[2]
    with mass_probe(sdpa, segments) as probe:
        sdpa(**model_inputs(batch))
    image_mass = probe.masses()[..., S.IMAGE].sum()
    image_mass.backward()
    eager_masses(eager, model_inputs(batch), segments)[..., S.IMAGE].sum().backward()
    for name in ("q_proj", "k_proj"):
        got = getattr(sdpa.model.language_model.layers[1].self_attn, name).weight.grad
        want = getattr(eager.model.language_model.layers[1].self_attn, name).weight.grad
        assert got.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    sdpa.zero_grad(), eager.zero_grad()


def test_probe_rejects_a_cached_pass(tiny_model, processor, visual_jsonl):
    record = read_jsonl(visual_jsonl)[0]
    batch = encode_batch(processor, [to_messages(record, visual_jsonl.parent, None)])
    with pytest.raises(ValueError, match="teacher-forced"):
        with torch.no_grad(), mass_probe(tiny_model, batch["segment_ids"][:, :5]):
            tiny_model(**model_inputs(batch))


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


@pytest.mark.parametrize("grad", [False, True])
def test_rows_key_profile_never_holds_more_than_a_chunk(grad):
    # 4 heads, 300 rows over 600 keys: all scores would be 720,000 elements.
    query = torch.randn(4, 300, 8, requires_grad=grad)
    key = torch.randn(2, 600, 8, requires_grad=grad)
    allowed = torch.ones(300, 600, dtype=torch.bool)
    with torch.set_grad_enabled(grad), LargestTensor() as seen:
        profile = rows_key_profile(query, key, allowed, 0.3, chunk_elements=4 * 600 * 16)
        if grad:
            profile.sum().backward()
    assert seen.largest <= 4 * 600 * 16  # one chunk of 16 rows, in forward and backward


def cpu_flash_attention(calls: list):
    """A CPU stand-in for flash_attention_2 with its calling convention: the [B, Tk]
    padding mask (or None), causal with the queries at the end of the keys, and the
    output as [B, Tq, H, D]. It lets the probe's flash bookkeeping run where flash-attn
    cannot (no GPU); the kernel itself is flash-attn's, tested upstream."""

    def attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
        calls.append(None if attention_mask is None else tuple(attention_mask.shape))
        assert attention_mask is None or attention_mask.ndim == 2  # flash gets padding only
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
        q_len, kv_len = query.shape[2], key.shape[2]
        allowed = torch.arange(kv_len)[None, :] <= torch.arange(q_len)[:, None] + kv_len - q_len
        allowed = allowed[None, None]
        if attention_mask is not None:
            allowed = allowed & attention_mask[:, None, None, -kv_len:].bool()
        scores = (query @ key.transpose(-1, -2)) * scaling
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        return (torch.softmax(scores, dim=-1) @ value).transpose(1, 2).contiguous(), None

    return attention


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_probe_on_the_flash_attention_path_matches_the_eager_reference(
    sharp_models, processor, visual_jsonl, text_jsonl, multi_image_chat, padding_side, monkeypatch
):
    """Under flash_attention_2 the model hands attention a [B, Tk] padding mask instead of
    a 4-D one: the probe's key bookkeeping (causal offset, left padding) must give the
    eager reference's masses, and the model's output must not change."""
    from transformers import AttentionInterface

    calls: list = []
    monkeypatch.setitem(
        AttentionInterface._global_mapping, "flash_attention_2", cpu_flash_attention(calls)
    )
    batch = mixed_batch(processor, visual_jsonl, text_jsonl, multi_image_chat, padding_side)
    segments, keep = batch["segment_ids"], batch["attention_mask"].bool()
    sdpa, eager = sharp_models[0]
    with torch.no_grad():
        expected_logits = sdpa(**model_inputs(batch)).logits
        reference = eager_masses(eager, model_inputs(batch), segments, "response")
    text = sdpa.config.text_config
    monkeypatch.setattr(text, "_attn_implementation_internal", "flash_attention_2")
    with torch.no_grad(), mass_probe(sdpa, segments, "response") as probe:
        logits = sdpa(**model_inputs(batch)).logits
    monkeypatch.undo()
    assert calls and all(shape == tuple(keep.shape) for shape in calls)  # the padding mask
    torch.testing.assert_close(logits[keep], expected_logits[keep], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(probe.masses(), reference, **TOLERANCE)
