"""GRPO pieces checked by hand: advantages, per-token log-probs, the loss and its KL term;
then the trainer's step against a hand-written policy gradient of the same rollout."""

from __future__ import annotations

import math

import pytest
import torch

from avar.segments import Segment
from avar.train.grpo import group_advantages, grpo_loss
from avar.train.logps import token_logps


def test_group_advantages_by_hand():
    # group 1: rewards 1, 0, 0, 1 -> mean 0.5, unbiased std sqrt(1/3) = 0.5774
    # group 2: all equal -> no signal
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.7, 0.7, 0.7, 0.7])
    adv = group_advantages(rewards, group_size=4)
    expected = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert adv[:4].tolist() == pytest.approx([expected, -expected, -expected, expected], rel=1e-6)
    assert adv[4:].abs().max() < 1e-6


def test_advantages_without_scaling_keep_lambda_visuals_size():
    # A group whose answers are all right: only lambda_v * r_visual differs.
    visual = torch.tensor([0.2, 0.4, 0.6, 0.8])
    strong, weak = 1 + 0.3 * visual, 1 + 0.03 * visual
    scaled = group_advantages(strong, 4), group_advantages(weak, 4)
    assert scaled[0].abs().max() > 1 and scaled[1].abs().max() > 0.9  # both near unit size
    plain = group_advantages(strong, 4, "none"), group_advantages(weak, 4, "none")
    torch.testing.assert_close(plain[0], 0.3 * (visual - 0.5))
    torch.testing.assert_close(plain[1], plain[0] / 10)


def test_token_logps_match_log_softmax_at_the_temperature():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11, requires_grad=True)
    ids = torch.randint(0, 11, (3, 9))  # 9 tokens; logits for the last 6 positions
    for temperature in (1.0, 0.7):
        reference = torch.log_softmax(logits / temperature, dim=-1)[:, :-1]
        reference = reference.gather(-1, ids[:, 4:, None]).squeeze(-1)  # [3, 5]
        ours = token_logps(logits, ids, temperature)
        torch.testing.assert_close(ours, reference)
        weights = torch.randn(3, 5)
        (expected,) = torch.autograd.grad((reference * weights).sum(), logits)
        (grad,) = torch.autograd.grad((ours * weights).sum(), logits)
        torch.testing.assert_close(grad, expected)


def test_token_logps_keep_no_float_copy_of_the_logits_for_backward():
    logits = torch.randn(4, 50, 300, dtype=torch.bfloat16, requires_grad=True)
    ids = torch.randint(0, 300, (4, 50))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        token_logps(logits, ids, 0.9)
    others = [t for t in saved if t.untyped_storage().data_ptr() != logits.data_ptr()]
    # beyond the logits themselves (no copy): ids and one logsumexp a row, never [.., V]
    assert all(t.shape[-1] != 300 for t in others)
    assert sum(t.numel() for t in others) <= 2 * 4 * 50


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


def test_dr_grpo_sums_tokens_over_a_constant():
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv = torch.tensor([2.0, -1.0])
    loss, _ = grpo_loss(logps, mask, adv, loss_type="dr_grpo", max_tokens=4)
    assert loss.item() == pytest.approx((-2 * 2 + 1 * 3) / (2 * 4))
    loss.backward()  # every kept token weighs the same, whatever its completion's length
    expected = torch.tensor([[-2 / 8, -2 / 8, 0.0], [1 / 8, 1 / 8, 1 / 8]])
    torch.testing.assert_close(logps.grad, expected)


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
    model.generation_config.eos_token_id = 151645  # one int, as a checkpoint may give
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
            mask = batch["segment_ids"][:, 1:] == Segment.RESPONSE  # every position's logits
            return {k: v for k, v in batch.items() if k != "labels"}, mask, texts

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


def plain_trainer(tiny_dir, tmp_path, rl, trainer_class=None):
    from transformers import TrainingArguments

    from avar.models.loader import load_model, load_processor
    from avar.train.grpo import GrpoObjective, GrpoTrainer

    model = load_model(str(tiny_dir), device="cpu", dtype="fp32")
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    return (trainer_class or GrpoTrainer)(
        model=model,
        args=args,
        processing_class=load_processor(str(tiny_dir)),
        objective=GrpoObjective.from_config(rl),
    )


def rows_of(visual_jsonl, n=2):
    from avar.data import read_jsonl
    from avar.stages.rl import prompt_rows

    return prompt_rows(read_jsonl(visual_jsonl)[:n], visual_jsonl.parent, "Look.")


def test_rollouts_ignore_the_checkpoints_sampling_settings(tiny_dir, visual_jsonl, tmp_path):
    from avar.config.schema import RlConfig

    trainer = plain_trainer(tiny_dir, tmp_path, RlConfig(group_size=3, max_completion_tokens=12))
    rows = rows_of(visual_jsonl)

    def sample():
        torch.manual_seed(7)
        return trainer.rollout(trainer.model, rows)

    batch, mask, texts = sample()
    config = trainer.model.generation_config
    config.repetition_penalty, config.top_k, config.top_p = 5.0, 2, 0.5  # a checkpoint's
    polluted = sample()
    assert torch.equal(polluted[0]["input_ids"], batch["input_ids"]) and polluted[2] == texts
    assert trainer.model.generation_config.repetition_penalty == 5.0  # set back after
    # no stop within 12 tokens of this random model: the whole completion is RESPONSE
    assert (batch["segment_ids"][:, -mask.shape[1] :] == Segment.RESPONSE).equal(mask)


def test_a_completion_ends_at_its_first_stop_token_which_is_template_and_in_the_loss():
    from avar.train.grpo import completion_parts

    sampled = torch.tensor([[5, 9, 2, 7, 2], [5, 6, 7, 8, 4], [3, 2, 2, 2, 2]])
    tokens, keep, segments = completion_parts(sampled, stops=[2, 3], pad_id=0)
    assert tokens.tolist() == [[5, 9, 2, 0, 0], [5, 6, 7, 8, 4], [3, 0, 0, 0, 0]]
    assert keep.long().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    R, T, P = int(Segment.RESPONSE), int(Segment.TEMPLATE), int(Segment.PAD)
    assert segments.tolist() == [[R, R, T, P, P], [R, R, R, R, R], [T, P, P, P, P]]


def test_the_trainers_gradient_is_the_policy_gradient_at_the_temperature(
    tiny_dir, visual_jsonl, tmp_path
):
    from avar.config.schema import RlConfig
    from avar.train.grpo import GrpoTrainer

    rl = RlConfig(group_size=3, max_completion_tokens=10, temperature=0.6)
    totals = torch.tensor([1.0, 0.0, 0.5, 0.2, 0.9, 0.4])
    held = {}

    class Fixed(GrpoTrainer):
        def rollout(self, model, records):
            return held["rollout"]

        def rewards(self, texts, records, masses):
            rewards = super().rewards(texts, records, masses)
            held["masses"] = masses
            return {**rewards, "total": totals}

    trainer = plain_trainer(tiny_dir, tmp_path, rl, Fixed)
    model, rows = trainer.model, rows_of(visual_jsonl)
    torch.manual_seed(3)
    held["rollout"] = GrpoTrainer.rollout(trainer, model, rows)
    batch, mask, _ = held["rollout"]
    loss, logits = trainer.compute_loss(model, rows, return_outputs=True)
    assert logits.shape[1] == mask.shape[1] + 1  # logits only where they predict completions
    assert not held["masses"].requires_grad
    loss.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    # by hand: -A * log softmax(logits / T) of the sampled tokens, token mean, then mean
    inputs = {k: v for k, v in batch.items() if k != "segment_ids"}
    full = model(**inputs).logits  # [N, T, V]
    completion = batch["input_ids"][:, -mask.shape[1] :]
    logp = torch.log_softmax(full[:, -mask.shape[1] - 1 : -1] / 0.6, dim=-1)
    logp = logp.gather(-1, completion[..., None]).squeeze(-1)  # [N, C]
    advantages = group_advantages(totals, 3)
    expected = -((advantages[:, None] * logp * mask).sum(1) / mask.sum(1)).mean()
    expected.backward()
    assert ours.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, grad in ours.items():
        torch.testing.assert_close(grad, model.get_parameter(name).grad, rtol=1e-4, atol=1e-6)


def test_the_reward_probe_builds_no_graph(tiny_model, processor, visual_jsonl):
    from avar.attention.probe import mass_probe
    from avar.data.chats import to_messages
    from avar.segments import encode_batch, model_inputs

    records = read_visual(visual_jsonl)
    batch = encode_batch(processor, [to_messages(r, visual_jsonl.parent, None) for r in records])
    with mass_probe(tiny_model, batch["segment_ids"], detached=True) as probe:
        tiny_model(**model_inputs(batch))
    assert not probe.masses().requires_grad
    with mass_probe(tiny_model, batch["segment_ids"]) as probe:
        tiny_model(**model_inputs(batch))
    assert probe.masses().requires_grad  # the SFT loss's probe: masses carry gradients


def read_visual(visual_jsonl, n=2):
    from avar.data import read_jsonl

    return read_jsonl(visual_jsonl)[:n]


def test_stop_token_ids_from_an_int_a_list_or_none(processor):
    from transformers import GenerationConfig

    from avar.generate import stop_token_ids

    tokenizer = processor.tokenizer
    assert stop_token_ids(GenerationConfig(eos_token_id=7), tokenizer) == [7]
    assert stop_token_ids(GenerationConfig(eos_token_id=[7, 9]), tokenizer) == [7, 9]
    assert stop_token_ids(GenerationConfig(), tokenizer) == [tokenizer.eos_token_id]
