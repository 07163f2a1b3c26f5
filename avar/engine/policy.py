"""An engine whose weights follow a model in memory: GRPO's policy after every optimizer
step, a training stage's model at every checkpoint it scores.

The weights go through a folder of safetensors (the engine's `reload_weights` reads it), in
the model's own parameter names: vLLM maps them as it maps a checkpoint's. With LoRA the
adapters are merged out of place (W + the adapter's delta, the base weights untouched, so
no rounding creeps into them step after step as merge/unmerge would); under ZeRO-3 the
caller gathers the weights first (TRL's `unwrap_model_for_generation`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from avar.engine.client import EngineSpec, VllmEngine

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"


def merged_weights(model) -> dict[str, torch.Tensor]:
    """The model's full weights under the base model's names, on CPU, each storage once
    (tied embeddings: the first name): a LoRA model's adapters merged into their layers."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    merged = {}
    for name, module in base.named_modules():
        if hasattr(module, "base_layer") and hasattr(module, "get_delta_weight"):
            weight = module.base_layer.weight
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
            merged[f"{name}.weight"] = (weight + delta).to(weight.dtype)
    weights, seen = {}, set()
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        name = name.replace(".base_layer.", ".")
        tensor = merged.get(name, tensor)
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        weights[name] = tensor.detach().to("cpu").contiguous()
    return weights


def gathered_weights(model) -> dict[str, torch.Tensor]:
    """`merged_weights`, under ZeRO-3 with the partitioned weights gathered first (every
    rank has an engine of its own: each gathers, as TRL's generation does)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return merged_weights(model)
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        return merged_weights(model)


class PolicyEngine:
    """A vLLM engine started from, and synced to, an in-memory model (close when done).

    `synced(model, version)` returns the engine holding `model`'s weights as of `version`
    (GRPO's global step): the first call writes a model folder (config, processor files,
    weights) and starts the engine there; later calls with a new version (or another
    model) rewrite the weights and reload them.
    """

    def __init__(self, spec: EngineSpec, processor):
        self.spec, self.processor = spec, processor
        self.folder = Path(tempfile.mkdtemp(prefix="avar-engine-"))
        self.engine: VllmEngine | None = None
        self.version: tuple[int, int] | None = None  # (id of the model, its version)
        self.reloads: list[float] = []  # seconds per weight update

    def synced(self, model, version: int) -> VllmEngine:
        if self.engine is not None and (id(model), version) == self.version:
            return self.engine
        weights = gathered_weights(model)
        partial = self.folder / f".{WEIGHTS}.partial"
        save_file(weights, str(partial), metadata={"format": "pt"})
        partial.replace(self.folder / WEIGHTS)
        if self.engine is None:
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            base.config.save_pretrained(self.folder)
            self.processor.save_pretrained(self.folder)
            self.engine = VllmEngine(self.spec, self.folder)
        else:
            self.reloads.append(self.engine.load_weights(self.folder))
            log.debug("engine weights at version %d (%.2f s)", version, self.reloads[-1])
        self.version = (id(model), version)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        shutil.rmtree(self.folder, ignore_errors=True)  # the folder is this engine's own

    def __enter__(self) -> PolicyEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
