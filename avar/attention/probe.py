"""Measure attention mass per layer during a normal forward pass.

    with mass_probe(model, batch["segment_ids"], "response", "all") as probe:
        model(**inputs)
    probe.masses()  # [layers, B, H, S]

The efficient path computes, inside each probed layer's attention call, the softmax of
the selected query rows only (in chunks) and keeps one [B, H, T] key profile per layer.
`eager_masses` is the reference: the same numbers from eager `output_attentions` maps.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from avar.attention.hooks import allowed_keys, attention_hooks, decoder_attention
from avar.attention.mass import (
    key_profile_from_weights,
    rows_key_profile,
    segment_mass,
    select_queries,
)
from avar.config.specs import layer_list


class MassProbe:
    """Collects, for each probed layer, the key profile of the selected query rows."""

    def __init__(
        self,
        segment_ids: torch.Tensor,
        query_mask: torch.Tensor,
        layers: list[int],
        detached: bool = False,
    ):
        self.segment_ids = segment_ids  # [B, T]
        self.query_mask = query_mask.bool()  # [B, T]
        self.layers = layers
        self.detached = detached  # measure without building a graph (a reward's masses)
        self.profiles: dict[int, torch.Tensor] = {}  # layer -> [B, H, T]

    def record(self, layer: int, query, key, attention_mask, scaling: float, steering=None):
        """Called from the attention function. query: [B, H, T, D]; key: [B, Hkv, T, D]."""
        batch, _, q_len, _ = query.shape
        kv_len = key.shape[2]
        if q_len != kv_len or q_len != self.segment_ids.shape[1]:
            raise ValueError(
                f"mass probe expects one full teacher-forced pass over {self.segment_ids.shape[1]}"
                f" tokens without a cache; layer {layer} saw {q_len} queries and {kv_len} keys"
            )
        if self.detached:
            query, key = query.detach(), key.detach()
        rows_per_sequence = []
        for b in range(batch):
            rows = self.query_mask[b].nonzero().squeeze(1).to(query.device)  # [R]
            allowed = allowed_keys(attention_mask, b, rows, q_len, kv_len)  # [R, T]
            adjust = steering.adjust_for(b) if steering is not None else None
            rows_per_sequence.append(
                rows_key_profile(query[b, :, rows], key[b], allowed, scaling, rows, adjust)
            )
        self.profiles[layer] = torch.stack(rows_per_sequence)

    def key_profiles(self) -> torch.Tensor:
        """[layers, B, H, T]: attention per key summed over the selected queries."""
        missing = [layer for layer in self.layers if layer not in self.profiles]
        if missing:
            raise RuntimeError(f"no forward pass reached layers {missing}")
        return torch.stack([self.profiles[layer] for layer in self.layers])

    def masses(self) -> torch.Tensor:
        """[layers, B, H, S]: mean attention of the selected queries on each segment."""
        profiles = self.key_profiles()
        segments = self.segment_ids.to(profiles.device)
        queries = self.query_mask.to(profiles.device)
        return torch.stack([segment_mass(p, segments, queries) for p in profiles])


def query_mask_of(segment_ids: torch.Tensor, queries: str | torch.Tensor) -> torch.Tensor:
    return queries if isinstance(queries, torch.Tensor) else select_queries(segment_ids, queries)


@contextmanager
def mass_probe(
    model,
    segment_ids: torch.Tensor,
    queries: str | torch.Tensor = "response",
    layers: str = "all",
    steering=None,
    detached: bool = False,
):
    """Attach a `MassProbe` to the chosen decoder layers for the forward passes inside
    (`detached`: its masses carry no gradient and build no graph)."""
    layer_ids = layer_list(layers, len(decoder_attention(model)))
    probe = MassProbe(segment_ids, query_mask_of(segment_ids, queries), layer_ids, detached)
    with attention_hooks(model, probe=probe, steering=steering):
        yield probe


def masses_from_maps(maps, segment_ids, query_mask, layers: list[int]) -> torch.Tensor:
    """[layers, B, H, S] from per-layer attention maps ([B, H, T, T] each)."""
    profiles = [key_profile_from_weights(maps[i], query_mask) for i in layers]
    return torch.stack([segment_mass(p, segment_ids, query_mask) for p in profiles])


def eager_masses(model, inputs: dict, segment_ids, queries="response", layers="all"):
    """Reference [layers, B, H, S] from eager `output_attentions` (needs an eager model)."""
    if model.config.text_config._attn_implementation != "eager":
        raise ValueError("the eager reference needs a model loaded with eager attention")
    layer_ids = layer_list(layers, len(decoder_attention(model)))
    maps = model(**inputs, output_attentions=True).attentions
    return masses_from_maps(maps, segment_ids, query_mask_of(segment_ids, queries), layer_ids)
