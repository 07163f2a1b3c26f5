"""GRPO pieces checked by hand: advantages, per-token log-probs, the loss and its KL term."""

from __future__ import annotations

import math

import pytest
import torch

from avar.train.grpo import group_advantages, grpo_loss, token_logps


def test_group_advantages_by_hand():
    # group 1: rewards 1, 0, 0, 1 -> mean 0.5, unbiased std sqrt(1/3) = 0.5774
    # group 2: all equal -> no signal
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.7, 0.7, 0.7, 0.7])
    adv = group_advantages(rewards, group_size=4)
    expected = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert adv[:4].tolist() == pytest.approx([expected, -expected, -expected, expected], rel=1e-6)
    assert adv[4:].abs().max() < 1e-6


def test_token_logps_match_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    ids = torch.randint(0, 11, (3, 6))
    reference = torch.log_softmax(logits, dim=-1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(token_logps(logits, ids), reference)


def test_loss_is_minus_mean_advantage_and_its_gradient_is_the_policy_gradient():
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv = torch.tensor([2.0, -1.0])
    loss, stats = grpo_loss(logps, mask, adv)
    # ratio == 1: per-sequence mean of -A over its tokens -> (-2 + 1) / 2
    assert loss.item() == pytest.approx(-0.5)
    loss.backward()
    # d loss / d logp = -A / (n_tokens * n_sequences) on kept tokens, 0 on masked ones
    expected = torch.tensor([[-2 / 4, -2 / 4, 0.0], [1 / 6, 1 / 6, 1 / 6]])
    torch.testing.assert_close(logps.grad, expected)
    assert stats["kl"].item() == 0.0


def test_kl_term_is_k3_and_zero_at_the_reference():
    logps = torch.tensor([[-1.0, -2.0]])
    mask = torch.ones(1, 2)
    adv = torch.zeros(1)
    same, stats = grpo_loss(logps, mask, adv, ref_logps=logps.clone(), kl_coef=0.5)
    assert same.item() == pytest.approx(0.0) and stats["kl"].item() == pytest.approx(0.0)
    ref = torch.tensor([[-1.5, -1.0]])
    loss, stats = grpo_loss(logps, mask, adv, ref_logps=ref, kl_coef=0.5)
    # k3 = exp(d) - d - 1 with d = ref - logp: d = -0.5 and 1.0
    k3 = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1]
    assert stats["kl"].item() == pytest.approx(sum(k3) / 2)
    assert loss.item() == pytest.approx(0.5 * sum(k3) / 2)


def test_a_grpo_step_moves_the_policy_when_rewards_differ(tiny_dir, visual_jsonl, tmp_path):
    """One real step of GrpoTrainer; rewards that differ within a group give advantages."""
    from transformers import TrainingArguments

    from avar.config.schema import RlConfig
    from avar.data import read_jsonl
    from avar.models.loader import load_model, load_processor
    from avar.stages.rl import keep_rows, prompt_rows
    from avar.train.grpo import GrpoTrainer

    class LengthRewarded(GrpoTrainer):
        def rewards(self, texts, records, masses):
            rewards = super().rewards(texts, records, masses)
            rewards["total"] = torch.tensor([float(len(t)) for t in texts])  # differ by length
            return rewards

    model = load_model(str(tiny_dir), device="cpu", dtype="fp32")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = prompt_rows(
        read_jsonl(visual_jsonl)[:2], visual_jsonl.parent, "You are a helpful assistant."
    )
    rl = RlConfig(group_size=3, max_completion_tokens=8, learning_rate=1e-3)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        remove_unused_columns=False,
        save_strategy="no",
        logging_steps=1,
    )
    trainer = LengthRewarded(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=keep_rows,
        processing_class=load_processor(str(tiny_dir)),
        rl=rl,
    )
    trainer.train()
    after = model.state_dict()
    moved = sum(not before[k].equal(after[k]) for k in before) / len(before)
    assert moved > 0.5
    logged = trainer.state.log_history[0]
    assert logged["reward/total/std"] > 0 and 0 < logged["completion_length"] <= 8
