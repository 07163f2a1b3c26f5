"""Attention mass: how much of a query set's attention lands on each key segment.

Pure tensor functions. The efficient path (`rows_key_profile`) recomputes the softmax only
for the query rows of interest, a chunk of rows at a time, so no L x L map is ever held.
The reference path (`key_profile_from_weights`) reads eager `output_attentions` maps.
Both produce a key profile: per head, the attention each key receives, summed over the
selected queries; `segment_mass` turns profiles into per-segment means.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from avar.segments import Segment

N_SEGMENTS = len(Segment)
QUERY_SETS = ("response", "prompt", "last")
# Scores held at once are capped to this many fp32 elements: 4 MiB on CPU, where every
# allocation counts against a small budget; 128 MiB on GPU, where one kernel per handful
# of rows would cost more time than the memory is worth.
CHUNK_ELEMENTS = {"cpu": 2**20, "cuda": 2**25}

ScoreAdjust = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def full_precision(device: torch.device):
    """No autocast inside: under bf16 autocast (training) the mass matmuls would run in
    bf16 and training's masses (the SFT loss, r_visual) would differ from eval's."""
    return torch.autocast(device.type, enabled=False)


def select_queries(segment_ids: torch.Tensor, queries: str) -> torch.Tensor:
    """Query mask [B, T] bool: response tokens, user-prompt text tokens, or the last token."""
    if queries == "response":
        return segment_ids == Segment.RESPONSE
    if queries == "prompt":
        return segment_ids == Segment.USER_TEXT
    if queries == "last":
        real = segment_ids != Segment.PAD  # [B, T]
        positions = torch.arange(segment_ids.shape[1], device=segment_ids.device)
        last = torch.where(real, positions, -1).amax(dim=1)  # [B]
        return positions[None, :] == last[:, None]
    raise ValueError(f"queries must be one of {QUERY_SETS}, got {queries!r}")


def row_probabilities(
    query: torch.Tensor,  # [Hkv, G, R, D]
    key: torch.Tensor,  # [Hkv, T, D]
    allowed: torch.Tensor,  # [R, T] bool
    scaling: float,
    adjust: ScoreAdjust | None = None,
    rows: torch.Tensor | None = None,  # [R] long: absolute positions, passed to `adjust`
) -> torch.Tensor:
    """Softmax attention of the rows over all keys: [Hkv, G, R, T], in full precision."""
    with full_precision(query.device):
        scores = torch.matmul(query, key.transpose(-1, -2)[:, None]) * scaling  # [Hkv,G,R,T]
        if adjust is not None:
            scores = adjust(scores, rows)
        return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)


def _rows_profile(query, key, allowed, scaling, adjust, rows) -> torch.Tensor:
    return row_probabilities(query, key, allowed, scaling, adjust, rows).sum(dim=-2)


@torch.no_grad()
def _rows_profile_inplace(query, key, allowed, scaling, adjust, rows) -> torch.Tensor:
    """`row_probabilities` summed over rows, without grad, in one reused buffer: [Hkv, G, T]."""
    with full_precision(query.device):
        scores = torch.matmul(query, key.transpose(-1, -2)[:, None]).mul_(scaling)
        if adjust is not None:
            scores = adjust(scores, rows)
        scores.masked_fill_(~allowed, float("-inf"))
        scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()
        inverse_sums = scores.sum(dim=-1).reciprocal_()  # [Hkv, G, R]
        return torch.einsum("hgrt,hgr->hgt", scores, inverse_sums)


def rows_key_profile(
    query: torch.Tensor,  # [H, R, D]: the selected query rows of one sequence
    key: torch.Tensor,  # [Hkv, T, D]
    allowed: torch.Tensor,  # [R, T] bool: which keys each row may attend to
    scaling: float,
    rows: torch.Tensor | None = None,  # [R] absolute positions, passed to `adjust`
    adjust: ScoreAdjust | None = None,
    chunk_elements: int | None = None,
) -> torch.Tensor:
    """Attention each key receives from the rows, summed over rows: [H, T] (fp32 or wider).

    GQA-aware (H = Hkv * G). Differentiable: with grad enabled each chunk is checkpointed,
    so backward recomputes the chunk's probabilities instead of storing them.
    """
    heads, n_rows, dim = query.shape
    kv_heads, length, _ = key.shape
    groups = heads // kv_heads
    dtype = torch.promote_types(query.dtype, torch.float32)  # fp32, or fp64 when given
    query = query.to(dtype).reshape(kv_heads, groups, n_rows, dim)
    key = key.to(dtype)
    if rows is None:
        rows = torch.arange(n_rows, device=query.device)
    budget = chunk_elements or CHUNK_ELEMENTS.get(query.device.type, CHUNK_ELEMENTS["cpu"])
    step = max(1, budget // (heads * length))
    differentiable = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad)
    total = query.new_zeros(kv_heads, groups, length)
    for start in range(0, n_rows, step):
        part = slice(start, start + step)
        args = (query[:, :, part], key, allowed[part], scaling, adjust, rows[part])
        if differentiable:
            total = total + checkpoint(_rows_profile, *args, use_reentrant=False)
        else:
            total += _rows_profile_inplace(*args)
    return total.reshape(heads, length)


def key_profile_from_weights(weights: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
    """Reference: attention per key summed over selected queries, from full maps.

    weights: [B, H, Tq, Tk] softmax maps (eager `output_attentions`); query_mask: [B, Tq].
    Returns [B, H, Tk] in fp32 (or wider).
    """
    dtype = torch.promote_types(weights.dtype, torch.float32)
    mask = query_mask.to(weights.device, dtype)[:, None, :, None]  # [B, 1, Tq, 1]
    return (weights.to(dtype) * mask).sum(dim=2)


def segment_mass(
    profile: torch.Tensor,  # [B, H, T]
    segment_ids: torch.Tensor,  # [B, T]
    query_mask: torch.Tensor,  # [B, T]
) -> torch.Tensor:
    """Mean over selected queries of the attention on each key segment: [B, H, S].

    S indexes `Segment` (PAD, TEMPLATE, SYSTEM, USER_TEXT, IMAGE, RESPONSE). Rows with no
    selected query are zero.
    """
    onehot = torch.nn.functional.one_hot(segment_ids.long(), N_SEGMENTS).to(profile)  # [B,T,S]
    summed = torch.einsum("bht,bts->bhs", profile, onehot)
    n_queries = query_mask.sum(dim=1).clamp(min=1).to(profile)  # [B]
    return summed / n_queries[:, None, None]
