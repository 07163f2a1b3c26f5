"""avar's attention function, registered through transformers' attention interface.

Inside `attention_hooks(model)` the text decoder's attention implementation `X` (sdpa,
eager or flash_attention_2) becomes `avar_X`: every layer still computes its output with
kernel `X` (and eager still returns its maps); a layer that carries a
`MassProbe` also measures the attention mass of the selected query rows, and a layer that
carries a `Steering` re-weights the scores of its steered rows (the training-free
intervention). The vision tower keeps its own implementation. Nothing here holds an
L x L attention map.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

BASES = ("sdpa", "eager", "flash_attention_2")
PREFIX = "avar_"
PROBE_ATTR, STEER_ATTR = "avar_probe", "avar_steering"


class LayerHook(Protocol):
    layers: list[int]


def base_attention(module, base: str):
    """The attention function of kernel `base` for this module's model."""
    if base == "eager":  # each HF model file defines its own eager function
        return sys.modules[type(module).__module__].eager_attention_forward
    return AttentionInterface._global_mapping[base]


def avar_attention(base: str):
    """Attention function: kernel `base`, plus steering and mass measurement on request."""

    def attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
        # query: [B, H, Tq, D]; key, value: [B, Hkv, Tk, D]; output: [B, Tq, H, D]
        scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
        output, weights = base_attention(module, base)(
            module, query, key, value, attention_mask, scaling=scaling, **kwargs
        )
        steering = getattr(module, STEER_ATTR, None)
        if steering is not None:
            output = steering.steer(query, key, value, attention_mask, scaling, output)
        probe = getattr(module, PROBE_ATTR, None)
        if probe is not None:
            probe.record(module.layer_idx, query, key, attention_mask, scaling, steering)
        return output, weights

    return attention


def allowed_keys(attention_mask, batch_index: int, rows: torch.Tensor, q_len: int, kv_len: int):
    """[R, Tk] bool: the keys each query row may attend to (rows index the Tq axis).

    `attention_mask` is what the model hands its attention function: None (causal, no
    padding), a [B, Tk] padding mask (flash attention), a bool [B or 1, 1, Tq, Tk]
    (True = attend) or an additive float mask (eager).
    """
    positions = rows + (kv_len - q_len)
    causal = torch.arange(kv_len, device=rows.device)[None, :] <= positions[:, None]
    if attention_mask is None:
        return causal
    if attention_mask.ndim == 2:
        return causal & attention_mask[batch_index, -kv_len:].bool()[None, :]
    mask = attention_mask[batch_index if attention_mask.shape[0] > 1 else 0, 0]
    mask = mask[rows] if mask.shape[0] > 1 else mask.expand(len(rows), -1)
    if mask.dtype == torch.bool:
        return mask
    return mask > torch.finfo(mask.dtype).min / 2


def ensure_registered() -> None:
    for base in BASES:
        if PREFIX + base not in AttentionInterface._global_mapping:
            AttentionInterface.register(PREFIX + base, avar_attention(base))
            mask = AttentionMaskInterface._global_mapping[base]
            AttentionMaskInterface.register(PREFIX + base, mask)


def decoder_attention(model) -> list[torch.nn.Module]:
    """The text decoder's self-attention modules, in layer order (through a peft wrapper:
    with LoRA they hold the adapted projections)."""
    if hasattr(model, "get_base_model"):  # peft's PeftModel
        model = model.get_base_model()
    inner = getattr(model, "model", model)
    language_model = getattr(inner, "language_model", None)
    if language_model is None or not hasattr(language_model, "layers"):
        raise ValueError(
            f"{type(model).__name__}: expected a Qwen-VL style model with "
            "model.language_model.layers"
        )
    return [layer.self_attn for layer in language_model.layers]


@contextmanager
def attention_hooks(model, probe: LayerHook | None = None, steering: LayerHook | None = None):
    """Run the text decoder through `avar_attention` with the given hooks attached."""
    ensure_registered()
    modules = decoder_attention(model)
    config: Any = modules[0].config
    previous = config._attn_implementation_internal
    base = previous.removeprefix(PREFIX)
    if base not in BASES:
        raise ValueError(f"attention implementation {previous!r}: avar supports {BASES}")
    saved = []
    for name, hook in ((PROBE_ATTR, probe), (STEER_ATTR, steering)):
        for index in hook.layers if hook is not None else ():
            saved.append((modules[index], name, getattr(modules[index], name, None)))
            setattr(modules[index], name, hook)
    config._attn_implementation_internal = PREFIX + base
    try:
        yield
    finally:
        config._attn_implementation_internal = previous
        for module, name, value in reversed(saved):
            setattr(module, name, value)
