"""LoRA for a training stage (peft): adapters on the frozen model, saved in checkpoints on
their own, loaded back strictly on resume, and merged into a standard HF folder on publish.

The attention-guided loss and the visual reward need nothing special: the adapters sit
inside the decoder's linear layers, so the attention the probe measures is the adapted
model's, and gradients reach the adapters through it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from avar.config.schema import LoraConfig
from avar.models.weights import WeightMismatch

log = logging.getLogger(__name__)
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_DIR = "adapter"
VISION_LINEARS = ("qkv", "proj", "gate_proj", "up_proj", "down_proj")


def target_pattern(cfg: LoraConfig) -> str:
    """The regex (peft matches it against whole module names) of the adapted layers: the
    language model's decoder layers' `target_modules`, and the vision blocks' linears when
    `vision` is set; never the vision merger or the LM head."""
    names = "|".join(map(re.escape, cfg.target_modules))
    pattern = rf".*language_model\.layers\.\d+\.(self_attn|mlp)\.({names})"
    if cfg.vision:
        pattern += rf"|.*visual\.blocks\.\d+\.(attn|mlp)\.({'|'.join(VISION_LINEARS)})"
    return pattern


def add_lora(model, cfg: LoraConfig, seed: int):
    """`model` with fresh adapters (B = 0: it computes what the model did); only they train.
    A's random start comes from `seed`: a re-run and a resumed run start from the same."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import set_seed

    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=target_pattern(cfg),
    )
    set_seed(seed)
    wrapped = get_peft_model(model, peft_cfg)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    log.info(
        "LoRA r=%d: %d of %d parameters train (%.2f%%)",
        cfg.r,
        trainable,
        total,
        100 * trainable / total,
    )
    return wrapped


def is_lora(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def load_adapter(model, checkpoint: str | Path) -> int:
    """Copy a checkpoint's adapter weights into `model`'s adapters; every saved tensor must
    fill an adapter of the same shape and every adapter must be saved, or WeightMismatch
    names the keys before anything is copied. Returns the number of tensors."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(checkpoint) / ADAPTER_WEIGHTS
    if not path.is_file():
        raise WeightMismatch(f"{checkpoint}: no {ADAPTER_WEIGHTS}; it is not a LoRA checkpoint")
    saved = load_file(str(path))
    expected = get_peft_model_state_dict(model)
    missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    shapes = [k for k in set(saved) & set(expected) if saved[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise WeightMismatch(
            f"{checkpoint}: the adapter does not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, other shapes {sorted(shapes)[:5]}"
        )
    set_peft_model_state_dict(model, saved)
    return len(saved)


def save_merged(model, folder: str | Path):
    """Write the adapter to `folder/adapter/`, then merge it into the model (in place) and
    save the merged model to `folder` as a standard HF checkpoint. Returns the merged model."""
    folder = Path(folder)
    model.save_pretrained(str(folder / ADAPTER_DIR))
    with torch.no_grad():
        merged = model.merge_and_unload()
    merged.save_pretrained(str(folder))
    return merged
