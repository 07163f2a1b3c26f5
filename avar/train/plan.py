"""`avar plan`: whether a training stage's settings fit on the GPUs, before it runs.

Reads the model's config.json only (a local folder, or a hub id's config when the hub is
reachable), builds the model on the meta device (no weights) to count its parameters, and
estimates the memory of one GPU, in four parts:

- weights, gradients and optimizer state, as DeepSpeed lays them out (bf16 mixed
  precision, Adam): ZeRO-3 keeps 2 B/param of weights, 4 B of fp32 gradients and 12 B of
  fp32 master weights and moments per parameter, each divided over the ranks, plus the
  largest layer gathered whole (4 B/param); ZeRO-2 keeps the bf16 weights whole and
  divides the rest; offloading the optimizer moves the divided part to CPU memory. These
  equal DeepSpeed's own estimators (`estimate_zero{2,3}_model_states_mem_needs`). Without
  DeepSpeed (plain data parallel) every rank holds fp32 weights, fp32 gradients and Adam's
  two moments: 16 B/param. With LoRA the model's own weights are frozen, in the weights
  dtype (2 B/param in bf16), and only the adapters (fp32) have gradients and Adam state:
  16 B per adapter parameter (divided over the ranks under ZeRO-2).
- activations of one micro-batch of `seq_len` tokens: per decoder layer the inputs of its
  norms, projections and SwiGLU (about 2·(8·hidden + 4·intermediate + 2·kv) bytes a token
  in bf16, attention scores not stored: SDPA/flash recompute them), the vision tower's
  layers over the image patches (4 per image token). With activation checkpointing only
  each layer's input is kept, plus one layer's full activations.
- logits: SFT's loss takes every token's (8 B a token per vocabulary entry: bf16 logits
  and the fp32 softmax); GRPO asks the model for the completion's positions only
  (`logits_to_keep`: max_completion_tokens + 1 a sequence) and keeps them in bf16 with
  their bf16 gradient (4 B), its log-softmax in fp32 a chunk at a time (avar.train.logps).

It is an estimate of what the model needs, not of what the allocator does: leave room
(`headroom`, 10% by default) for fragmentation, CUDA context and NCCL buffers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from avar.errors import UserError
from avar.train.arguments import zero_settings

GB = 1e9
SAMPLED_ITEMS = 64
"""A training stage sizes its check by the longest of its first 64 training sequences."""


class DoesNotFit(UserError):
    """A training stage's settings need more GPU memory than the GPU has."""


@dataclass
class Setup:
    """The settings an estimate is for."""

    zero: int = 0
    """DeepSpeed ZeRO stage (0: no DeepSpeed, plain data parallel)."""
    offload_optimizer: bool = False
    gradient_checkpointing: bool = False
    seq_len: int = 4096
    image_tokens: int = 1024
    micro_batch: int = 1
    gpus_per_node: int = 1
    nodes: int = 1
    gpu_gb: float = 80.0
    headroom: float = 0.10
    """Share of the GPU's memory left for the allocator, CUDA context and NCCL."""
    lora_params: int = 0
    """Adapter parameters (LoRA); 0: every weight trains."""
    frozen_bytes: int = 2
    """Bytes per frozen weight under LoRA (2: bf16, 4: fp32)."""
    logit_tokens: int = 0
    """Positions per sequence whose logits are computed (0: every one of seq_len)."""
    logit_bytes: int = 8
    """Bytes per logit held for backward (8: SFT's bf16 + fp32 softmax; 4: GRPO's)."""
    engine_share: float = 0.0
    """Share of the GPU's memory the stage's vLLM engine takes beside training
    (`generate.vllm.gpu_memory_utilization` under `generate.backend: vllm`; 0: none)."""

    @property
    def ranks(self) -> int:
        return self.gpus_per_node * self.nodes


@dataclass
class Estimate:
    """Per-GPU memory in bytes, by part."""

    params: int
    largest_layer: int
    setup: Setup
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def budget(self) -> float:
        s = self.setup
        return s.gpu_gb * GB * (1 - s.headroom - s.engine_share)

    @property
    def engine_weights(self) -> float:
        """The engine's copy of the weights (bf16), which its share must hold."""
        return 2 * self.params if self.setup.engine_share else 0.0

    @property
    def engine_fits(self) -> bool:
        share = self.setup.engine_share
        return not share or self.engine_weights < share * self.setup.gpu_gb * GB

    @property
    def fits(self) -> bool:
        return self.total <= self.budget and self.engine_fits

    def lines(self) -> list[str]:
        s = self.setup
        how = f"ZeRO-{s.zero}" if s.zero else "no DeepSpeed (data parallel)"
        if s.offload_optimizer:
            how += ", optimizer offloaded to CPU"
        if s.gradient_checkpointing:
            how += ", activation checkpointing"
        if s.lora_params:
            how += f", LoRA ({s.lora_params / 1e6:.1f} M adapter parameters train)"
        rows = [
            f"{self.params / 1e9:.2f} B parameters; {how}; {s.ranks} GPU(s) "
            f"({s.gpus_per_node} per node x {s.nodes}); micro-batch {s.micro_batch} x "
            f"{s.seq_len} tokens ({s.image_tokens} image)",
            *(f"  {name:<12} {value / GB:8.1f} GB" for name, value in self.parts.items()),
            f"  {'total':<12} {self.total / GB:8.1f} GB per GPU, of "
            f"{self.budget / GB:.1f} GB usable ({s.gpu_gb:g} GB less {s.headroom:.0%}"
            + (f" and the vLLM engine's {s.engine_share:.0%})" if s.engine_share else ")"),
        ]
        engine_gb = s.engine_share * s.gpu_gb
        if s.engine_share:
            rows.append(
                f"  vLLM engine  {engine_gb:8.1f} GB: its weights {self.engine_weights / GB:.1f} GB"
                f", the rest its KV cache"
            )
        if not self.engine_fits:
            rows.append(
                f"does not fit: the vLLM engine's {engine_gb:.1f} GB cannot hold its weights "
                f"({self.engine_weights / GB:.1f} GB); raise generate.vllm.gpu_memory_utilization"
            )
        if self.total > self.budget:
            largest = max(self.parts, key=lambda k: self.parts[k])
            rows.append(
                f"does not fit: {self.total / GB:.1f} GB needed, {self.budget / GB:.1f} GB "
                f"usable; the largest part is {largest} ({self.parts[largest] / GB:.1f} GB)"
            )
        if self.fits:
            rows.append("fits")
        return rows


def model_states(params: int, largest_layer: int, setup: Setup) -> dict[str, float]:
    """Weights, gradients and optimizer state per GPU (bytes), as DeepSpeed counts them."""
    n = setup.ranks
    if setup.lora_params:
        adapters = setup.lora_params
        shared = n if setup.zero == 2 else 1  # ZeRO-2 divides the adapters' states
        return {
            "weights": setup.frozen_bytes * params + 4 * adapters,
            "gradients": 4 * adapters / shared,
            "optimizer": 8 * adapters / shared,
        }
    if setup.zero == 3:
        weights = 2 * params / n + 4 * largest_layer
    elif setup.zero == 2:
        weights = 2 * params
    else:
        return {"weights": 4 * params, "gradients": 4 * params, "optimizer": 8 * params}
    gradients = 0.0 if setup.offload_optimizer else 4 * params / n
    if setup.zero == 2 and not setup.offload_optimizer:
        gradients += 2 * params / n  # ZeRO-2 also keeps the bf16 gradient partition
    optimizer = 0.0 if setup.offload_optimizer else 12 * params / n
    return {"weights": weights, "gradients": gradients, "optimizer": optimizer}


def logits(config, setup: Setup) -> float:
    """Logit memory of one micro-batch (bytes); see the module docstring."""
    positions = min(setup.logit_tokens or setup.seq_len, setup.seq_len)
    return positions * setup.micro_batch * config.text_config.vocab_size * setup.logit_bytes


def activations(config, setup: Setup, bytes_per_value: int = 2) -> float:
    """Activation memory of one micro-batch (bytes), logits aside; see the module docstring."""
    text, vision = config.text_config, config.vision_config
    tokens = setup.seq_len * setup.micro_batch
    kv = text.hidden_size // text.num_attention_heads * text.num_key_value_heads
    per_token_layer = 8 * text.hidden_size + 4 * text.intermediate_size + 2 * kv
    patches = 4 * setup.image_tokens * setup.micro_batch
    per_patch_layer = 8 * vision.hidden_size + 4 * vision.intermediate_size
    layers = text.num_hidden_layers
    if setup.gradient_checkpointing:
        kept = tokens * text.hidden_size * layers + patches * vision.hidden_size * vision.depth
        one_layer = tokens * per_token_layer
        values = kept + one_layer
    else:
        values = tokens * per_token_layer * layers + patches * per_patch_layer * vision.depth
    return values * bytes_per_value


def count(config, lora=None) -> tuple[int, int, int]:
    """(parameters, largest single module's own parameters, LoRA adapter parameters for the
    `lora` section, 0 without) of the model `config` builds, on the meta device: no memory,
    no weights. An adapter of rank r on a linear layer has r x (inputs + outputs)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from avar.train.lora import target_pattern

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    adapters = 0
    if lora is not None and lora.r:
        pattern = re.compile(target_pattern(lora))
        adapters = sum(
            lora.r * (module.in_features + module.out_features)
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and pattern.fullmatch(name)
        )
    return params, largest, adapters


def load_config(name_or_path: str):
    """The model's config: a folder's config.json, or a hub id's (downloads that file only)."""
    from transformers import AutoConfig

    from avar.models.loader import looks_local

    try:
        return AutoConfig.from_pretrained(name_or_path)
    except OSError as err:
        where = "folder" if looks_local(name_or_path) else "hub id (is the hub reachable?)"
        raise FileNotFoundError(f"{name_or_path}: no config.json for this {where}: {err}") from None


def estimate(config, setup: Setup, lora=None) -> Estimate:
    """The per-GPU estimate; `lora` (a LoraConfig with r > 0) sizes the adapters."""
    params, largest, adapters = count(config, lora)
    if adapters:
        setup = replace(setup, lora_params=adapters)
    parts = model_states(params, largest, setup)
    parts["activations"] = activations(config, setup)
    parts["logits"] = logits(config, setup)
    return Estimate(params, largest, setup, parts)


def stage_setup(
    section,
    ranks: tuple[int, int],
    seq_len: int,
    image_tokens: int,
    gpu_gb: float,
    frozen_bytes: int = 2,
    engine_share: float = 0.0,
):
    """The Setup of a training stage's section (`deepspeed`, `gradient_checkpointing`,
    `batch_size`; GRPO's forward holds `batch_size x group_size` sequences and logits for
    their completions only) on (GPUs per node, nodes); `frozen_bytes`: the weights dtype's
    size, for LoRA's frozen weights; `engine_share`: the vLLM engine's share of the GPU."""
    zero, offload = zero_settings(section.deepspeed)
    completion = getattr(section, "max_completion_tokens", 0)
    return Setup(
        frozen_bytes=frozen_bytes,
        zero=zero,
        offload_optimizer=offload,
        gradient_checkpointing=section.gradient_checkpointing,
        seq_len=seq_len,
        image_tokens=image_tokens,
        micro_batch=section.batch_size * getattr(section, "group_size", 1),
        gpus_per_node=ranks[0],
        nodes=ranks[1],
        gpu_gb=gpu_gb,
        logit_tokens=completion + 1 if completion else 0,
        logit_bytes=4 if completion else 8,
        engine_share=engine_share,
    )


def longest(dataset, image_segment: int) -> tuple[int, int] | None:
    """(tokens, image tokens) of the longest of the first SAMPLED_ITEMS encoded items, or
    None when the items are not encoded sequences (GRPO's prompts)."""
    sizes = []
    for index in range(min(len(dataset), SAMPLED_ITEMS)):
        item = dataset[index]
        if not hasattr(item, "segment_ids"):
            return None
        sizes.append((len(item.input_ids), sum(s == image_segment for s in item.segment_ids)))
    return max(sizes) if sizes else None


def require_fit(name: str, config, setup: Setup, lora=None) -> Estimate:
    """The estimate, or DoesNotFit with `avar plan`'s lines when it does not fit."""
    result = estimate(config, setup, lora)
    if not result.fits:
        raise DoesNotFit(
            f"{name} would not fit in GPU memory (run `avar plan {name}` to try settings):\n"
            + "\n".join(result.lines())
        )
    return result
