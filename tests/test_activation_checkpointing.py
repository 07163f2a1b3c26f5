"""Activation checkpointing (`gradient_checkpointing: true`) changes memory, not results:
one real training step of the attention-guided objective (sft_mm) and of GRPO, with and
without it, gives the same losses, masses and updated weights (to 1e-5: the rerun forward
repeats the same float operations; only summation order inside autograd may differ)."""

from __future__ import annotations

import pytest
import torch

from avar.attention.losses import AttentionGuidedLoss
from avar.config.schema import RlConfig, SftMmConfig
from avar.data import read_jsonl
from avar.models.loader import load_model
from avar.train.arguments import training_arguments
from avar.train.data import ChatCollator, ChatDataset
from avar.train.grpo import GrpoObjective
from avar.train.sft import AvarTrainer

TOLERANCE = 1e-5


def one_step(trainer_class, tiny_dir, processor, tmp_path, checkpointing, dataset, **kw):
    cfg = SftMmConfig(
        out_dir="unused",
        checkpoint_dir=str(tmp_path / f"checkpoints-{checkpointing}"),
        metrics="unused",
        max_steps=1,
        batch_size=2,
        warmup=0.0,
        learning_rate=1e-3,
        log_steps=1,
        gradient_checkpointing=checkpointing,
    )
    model = load_model(str(tiny_dir), device="cpu", dtype="fp32")
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer = trainer_class(
        model=model,
        args=training_arguments(cfg, "cpu", torch.float32, sampling="sequential"),
        train_dataset=dataset,
        processing_class=processor,
        **kw,
    )
    torch.manual_seed(0)
    trainer.train()
    assert model.is_activation_checkpointing == checkpointing
    logged = trainer.state.log_history[0]
    after = model.state_dict()
    assert sum(not start[k].equal(after[k]) for k in start) / len(start) > 0.5  # a real step
    return {k: v.detach().clone() for k, v in after.items()}, logged


def assert_same_step(plain, checkpointed, keys):
    (weights, logged), (weights_gc, logged_gc) = plain, checkpointed
    for key in keys:
        assert logged_gc[key] == pytest.approx(logged[key], rel=TOLERANCE, abs=TOLERANCE), key
    worst = max((weights[k] - weights_gc[k]).abs().max().item() for k in weights)
    assert worst < TOLERANCE


@pytest.mark.slow
def test_attention_guided_step_is_the_same_with_activation_checkpointing(
    tiny_dir, processor, visual_jsonl, tmp_path
):
    records = read_jsonl(visual_jsonl)[:2]
    dataset = ChatDataset.from_records(
        records, visual_jsonl.parent, processor, "You are a helpful assistant."
    )
    runs = [
        one_step(
            AvarTrainer,
            tiny_dir,
            processor,
            tmp_path,
            checkpointing,
            dataset,
            data_collator=ChatCollator(processor),
            objective=AttentionGuidedLoss(alpha=0.15, beta=0.15),
        )
        for checkpointing in (False, True)
    ]
    keys = ["loss", "loss_lm", "loss_enhance_img", "loss_suppress_sys", "image_mass", "grad_norm"]
    assert_same_step(*runs, keys)


@pytest.mark.slow
def test_grpo_step_is_the_same_with_activation_checkpointing(
    tiny_dir, processor, visual_jsonl, tmp_path
):
    from grpo_steps import LengthRewarded  # rewards that differ: the step moves weights

    from avar.stages.rl import keep_rows, prompt_rows

    rows = prompt_rows(
        read_jsonl(visual_jsonl)[:2], visual_jsonl.parent, "You are a helpful assistant."
    )

    objective = GrpoObjective.from_config(RlConfig(group_size=2, max_completion_tokens=6))
    runs = [
        one_step(
            LengthRewarded,
            tiny_dir,
            processor,
            tmp_path,
            checkpointing,
            rows,
            data_collator=keep_rows,
            objective=objective,
        )
        for checkpointing in (False, True)
    ]
    assert_same_step(*runs, ["loss", "image_mass", "system_mass", "grad_norm"])
