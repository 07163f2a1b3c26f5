"""A stage's TrainConfig -> transformers `TrainingArguments` (DeepSpeed, precision, device)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from transformers import TrainingArguments

from avar.config.schema import TrainConfig

DEEPSPEED_PRESETS = ("zero2", "zero3")


def deepspeed_config(value: str) -> str | None:
    """`zero2`/`zero3` -> avar's json; a path -> itself (it must exist); empty -> None."""
    if not value:
        return None
    if value in DEEPSPEED_PRESETS:
        return str(resources.files("avar.train").joinpath(f"deepspeed/{value}.json"))
    if not Path(value).is_file():
        raise FileNotFoundError(
            f"DeepSpeed config {value!r} not found: use zero2, zero3 or a path to a json file"
        )
    return value


def zero_settings(value: str) -> tuple[int, bool]:
    """(ZeRO stage, optimizer offloaded to CPU) of a stage's `deepspeed` setting (0: none)."""
    path = deepspeed_config(value)
    if path is None:
        return 0, False
    zero = json.loads(Path(path).read_text()).get("zero_optimization", {})
    offload = zero.get("offload_optimizer", {}).get("device", "none") not in ("none", None)
    return int(zero.get("stage", 0)), offload


def training_arguments(
    cfg: TrainConfig, device: str, dtype: torch.dtype, sampling: str = "random"
) -> TrainingArguments:
    """Arguments for HF Trainer: checkpoints every `save_steps` in `checkpoint_dir`, the
    newest `save_total_limit` kept (all when 0).

    `sampling="sequential"` feeds the data in order (a curriculum).

    Weights stay fp32 (the master copy); on CUDA, bf16 autocast (or DeepSpeed's bf16) runs
    the math when the model dtype resolved to bf16.
    """
    return TrainingArguments(
        output_dir=cfg.checkpoint_dir,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup,
        weight_decay=0.0,
        max_grad_norm=1.0,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit or None,
        gradient_checkpointing=cfg.gradient_checkpointing,
        # non-reentrant: works with the probe rerun, DDP's unused-parameter search (the
        # vision tower of a text-only stage) and inputs that need no grad
        gradient_checkpointing_kwargs={"use_reentrant": False},
        ddp_find_unused_parameters=True,
        logging_steps=cfg.log_steps,
        logging_first_step=True,
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=device == "cuda" and dtype == torch.bfloat16,
        use_cpu=device == "cpu",
        deepspeed=deepspeed_config(cfg.deepspeed),
        remove_unused_columns=False,
        dataloader_num_workers=0,
        train_sampling_strategy=sampling,
        disable_tqdm=False,
    )
