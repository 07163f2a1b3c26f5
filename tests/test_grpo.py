"""GRPO pieces checked by hand: advantages, per-token log-probs, the loss and its KL term."""

from __future__ import annotations

import math

import pytest
import torch

from avar.segments import Segment
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
    from grpo_steps import grpo_step

    from avar.config.schema import RlConfig
    from avar.data import read_jsonl
    from avar.models.loader import load_model, load_processor
    from avar.stages.rl import prompt_rows
    from avar.train.grpo import GrpoObjective

    model = load_model(str(tiny_dir), device="cpu", dtype="fp32")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = prompt_rows(
        read_jsonl(visual_jsonl)[:2], visual_jsonl.parent, "You are a helpful assistant."
    )
    rl = RlConfig(group_size=3, max_completion_tokens=8, learning_rate=1e-3)
    objective = GrpoObjective.from_config(rl)
    trainer = grpo_step(model, load_processor(str(tiny_dir)), rows, tmp_path, objective)
    after = model.state_dict()
    moved = sum(not before[k].equal(after[k]) for k in before) / len(before)
    assert moved > 0.5
    logged = trainer.state.log_history[0]
    assert logged["reward/total/std"] > 0 and 0 < logged["completion_length"] <= 8


@pytest.mark.parametrize("transform", ["ratio", "share"])
def test_reward_total_through_the_trainer_by_hand(tiny_dir, visual_jsonl, tmp_path, transform):
    """GrpoTrainer.compute_loss on a fixed rollout of 2 prompts x 2 completions, with the
    rl section's weights (lambda_visual 0.3, lambda_format 0.1):

        completion                                  r_acc  r_format  r_visual
        prompt 0: right, formatted                   1      1         V_0
        prompt 0: wrong, formatted                   0      1         0 (gated: V_1 > 0)
        prompt 1 (empty system turn): right, formatted 1    1         0 (undefined)
        prompt 1 (empty system turn): right, bare      1    0         0 (undefined)

    V_i is the paper's VAS (mean over layers of image mass I / system mass S) for `ratio`
    and the mean of I / (I + S) for `share`, with I and S from eager attention maps of the
    same sequences (not the probe the trainer reads); the logged means are the means of
    these totals."""
    from transformers import TrainingArguments

    from avar.attention.probe import eager_masses
    from avar.config.schema import RlConfig
    from avar.data import read_jsonl
    from avar.models.loader import load_model, load_processor
    from avar.segments import encode_batch, model_inputs
    from avar.stages.rl import prompt_rows
    from avar.train.grpo import GrpoObjective, GrpoTrainer

    records = read_jsonl(visual_jsonl)[:2]
    answers = [r["answer"] for r in records]
    texts = [
        f"<think>\nlooked\n</think>\n<answer>{answers[0]}</answer>",
        "<think>\nlooked\n</think>\n<answer>no idea</answer>",
        f"<think>\nlooked\n</think>\n<answer>{answers[1]}</answer>",
        f"The answer is {answers[1]}.",
    ]
    rows = prompt_rows(records, visual_jsonl.parent, "Look.")
    rows[1]["prompt"][0]["content"] = ""  # no system tokens: the VAS is undefined
    chats = [
        row["prompt"] + [{"role": "assistant", "content": t}]
        for row, t in zip([rows[0], rows[0], rows[1], rows[1]], texts, strict=True)
    ]
    processor = load_processor(str(tiny_dir))
    batch = encode_batch(processor, chats)
    seen = {}

    class FixedRollout(GrpoTrainer):
        def rollout(self, model, records):
            return {k: v for k, v in batch.items() if k != "labels"}, texts

        def rewards(self, texts, records, masses):
            seen.update(super().rewards(texts, records, masses))
            return seen

    model = load_model(str(tiny_dir), device="cpu", dtype="fp32", attn_implementation="eager")
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    rl = RlConfig(group_size=2, lambda_visual=0.3, lambda_format=0.1, visual_reward=transform)
    trainer = FixedRollout(
        model=model, args=args, processing_class=processor, objective=GrpoObjective.from_config(rl)
    )
    trainer.compute_loss(model, rows)

    with torch.no_grad():
        reference = eager_masses(model, model_inputs(batch), batch["segment_ids"])
    image = reference[..., int(Segment.IMAGE)].mean(dim=-1)  # [L, N], heads averaged
    system = reference[..., int(Segment.SYSTEM)].mean(dim=-1)
    assert (system[:, :2] > 0).all() and (system[:, 2:] == 0).all()
    per_layer = image / system if transform == "ratio" else image / (image + system)
    vas = per_layer.mean(dim=0)
    expected = [1 + 0.3 * vas[0].item() + 0.1, 0 + 0.1, 1 + 0.1, 1.0]
    assert seen["accuracy"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert seen["format"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert seen["total"].tolist() == pytest.approx(expected, rel=1e-4)
    logged = {k: v[-1] for k, v in trainer._stats.items()}
    assert logged["reward/total/mean"] == pytest.approx(sum(expected) / 4, rel=1e-4)
    assert logged["reward/visual/mean"] == pytest.approx(vas[0].item() / 4, rel=1e-4)
    # every term's spread too; unbiased std of (V_0, 0, 0, 0) = V_0 / 2
    assert logged["reward/visual/std"] == pytest.approx(vas[0].item() / 2, rel=1e-4)
    assert logged["reward/accuracy/std"] == pytest.approx(0.5)  # (1, 0, 1, 1)
