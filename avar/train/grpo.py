"""GRPO with the visual-anchored reward, as a compact loop on HF Trainer.

    r = r_acc + lambda_visual * r_visual * [r_acc > 0] + lambda_format * r_format

Each step samples `group_size` completions per prompt from softmax(logits / temperature)
(the checkpoint's own sampling settings set aside: `plain_generation`), scores them,
centres the rewards within each group (and, with `scale_rewards: group`, divides by the
group's std: the advantages) and takes one policy-gradient step, with an optional k3 KL
penalty against the starting model. Log-probs are those of the sampling distribution
(logits / temperature, as TRL), for the completion's positions only (`logits_to_keep`),
without an fp32 copy of the logits in the graph (`avar.train.logps`). `loss_type: grpo`
averages each completion's tokens, then the completions (GRPO, the paper); `dr_grpo` sums
every token and divides by completions x max_completion_tokens (Dr. GRPO).

A completion's tokens are RESPONSE up to its stop token, which is TEMPLATE as
`<|im_end|>` is in a teacher-forced VAS pass (r_visual's query rows are VAS's); the loss
counts the stop token too (its log-prob is part of the sampled sequence).

Why not TRL's GRPOTrainer: TRL scores completions before its training forward, so r_visual
(the completion's image/system attention ratio under the policy) would cost a second
forward pass over every prompt + completion. Here each batch gets one on-policy update, so
the forward that gives the log-probabilities for the loss also gives the attention masses
(`mass_probe` rides on it): r_visual costs no extra pass. `bench/visual_reward.py`
measures both ways side by side. Everything else (DeepSpeed, checkpoints, resume, logging)
is HF Trainer's.

With an engine (`generate.backend: vllm`: avar.engine.policy) vLLM samples the groups, from
the same prompts and images, at the same temperature, with the same stop and suppressed
tokens; before each rollout the engine gets the policy's weights if a step has changed them.
Everything else (the log-probs, r_visual's masses, the rewards) comes from the training
forward as with HF. The engine's own log-prob of each sampled token is compared with the
training forward's: `rollout/logp_diff`, the mean absolute difference, is ~0 when the engine
samples from the policy and grows when its weights fall behind. (Both backends sample with
the vision tokens suppressed; the loss's log-probs keep them in the normaliser, so the
comparison renormalises the training forward's the way the sampler did.)
"""

from __future__ import annotations

import copy
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from trl.models.utils import unwrap_model_for_generation

from avar.config.schema import RlConfig
from avar.engine.client import Sample, prompt_mismatches
from avar.engine.policy import PolicyEngine
from avar.generate import plain_generation, stop_token_ids, vision_token_ids
from avar.rewards import VisualAnchoredReward
from avar.segments import Segment, encode_batch, model_inputs
from avar.train.checkpoints import ExactResume
from avar.train.logps import subset_logmass, token_logps
from avar.train.lora import is_lora
from avar.train.sft import LoggedStats, ProbesThroughBackward


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group"):
    """r - group mean, divided by (group std + 1e-4) when `scale` is "group" (GRPO; "none":
    Dr. GRPO), groups of consecutive completions. [N] -> [N]"""
    groups = rewards.view(-1, group_size)  # [B, G]
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale == "group":
        centred = centred / (groups.std(dim=1, keepdim=True) + 1e-4)  # unbiased, as TRL
    return centred.view(-1)


def completion_parts(completion: torch.Tensor, stops: list[int], pad_id: int):
    """Sampled tokens [N, C] -> (tokens with pad after the first stop, the loss mask: up to
    and with the first stop, segments: RESPONSE, the stop TEMPLATE, then PAD)."""
    ended = torch.isin(completion, torch.tensor(stops, device=completion.device))
    before = ended.cumsum(dim=1) - ended.long()  # stops before each position
    keep = before == 0
    segments = torch.where(keep, int(Segment.RESPONSE), int(Segment.PAD))
    segments = segments.masked_fill(ended & keep, int(Segment.TEMPLATE))
    return completion.masked_fill(~keep, pad_id), keep, segments


def grpo_loss(
    logps,
    mask,
    advantages,
    ref_logps=None,
    kl_coef: float = 0.0,
    loss_type: str = "grpo",
    max_tokens: int = 0,
):
    """Policy-gradient loss of one on-policy update: `grpo` the mean over each sequence's
    tokens, then over sequences; `dr_grpo` the sum over all tokens / (N * max_tokens).

    logps, ref_logps, mask: [N, T]; advantages: [N]. The ratio exp(logp - logp.detach())
    is 1 in value and carries the gradient of logp (TRL's num_iterations = 1 case).
    """
    ratio = torch.exp(logps - logps.detach())  # [N, T]
    per_token = -ratio * advantages.unsqueeze(1)  # [N, T]
    kl = torch.zeros_like(logps)
    if ref_logps is not None and kl_coef > 0:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1  # k3 estimator, >= 0
        per_token = per_token + kl_coef * kl
    mask = mask.to(per_token.dtype)
    lengths = mask.sum(dim=1).clamp(min=1)  # [N]
    if loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (len(mask) * (max_tokens or mask.shape[1]))
    else:
        loss = ((per_token * mask).sum(dim=1) / lengths).mean()
    stats = {"kl": ((kl * mask).sum(dim=1) / lengths).mean().detach()}
    return loss, stats


@dataclass(frozen=True)
class GrpoObjective:
    """What a GRPO step samples and optimises, built from the `rl` section in one step."""

    reward: VisualAnchoredReward
    group_size: int
    temperature: float
    max_completion_tokens: int
    kl_coef: float
    loss_type: str = "grpo"
    scale_rewards: str = "group"

    @classmethod
    def from_config(cls, rl: RlConfig) -> GrpoObjective:
        return cls(
            VisualAnchoredReward.from_config(rl),
            rl.group_size,
            rl.temperature,
            rl.max_completion_tokens,
            rl.kl_coef,
            rl.loss_type,
            rl.scale_rewards,
        )


class GrpoTrainer(LoggedStats, ProbesThroughBackward, ExactResume):
    """Trainer whose batches are prompts (records) and whose loss is GRPO's."""

    loss_is_scaled_for_ga = False
    takes_engine = True  # train_stage hands it the stage's PolicyEngine, if any

    def __init__(
        self, *args, objective: GrpoObjective, engine: PolicyEngine | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.processor, self.objective, self.engine = self.processing_class, objective, engine
        self.ref_model = None
        if objective.kl_coef > 0 and not is_lora(self.model):  # LoRA: the adapters off
            self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self._stats = defaultdict(list)

    def rollout(self, model, records: list[dict]) -> tuple[dict, torch.Tensor, list[str]]:
        """Sample group_size completions per prompt: the batch (prompt + completion), the
        completion's loss mask [N, C] (its tokens up to and with the stop) and texts."""
        chats = [r["prompt"] for r in records for _ in range(self.objective.group_size)]
        prompt = encode_batch(
            self.processor, chats, padding_side="left", add_generation_prompt=True
        )
        prompt = {k: v.to(self.args.device) for k, v in prompt.items()}
        sample = self.engine_rollout if self.engine is not None else self.hf_rollout
        sampled, stops = sample(model, records, prompt)
        return self.rollout_batch(prompt, sampled, stops)

    def hf_rollout(self, model, records: list[dict], prompt: dict):
        """HF generate's groups: the sampled ids [N, C] and the stop ids."""
        tokenizer = self.processor.tokenizer
        with (
            torch.no_grad(),
            unwrap_model_for_generation(model, self.accelerator) as policy,
            plain_generation(policy, tokenizer) as sampler,
        ):
            policy.eval()
            output = policy.generate(
                **model_inputs(prompt),
                do_sample=True,
                temperature=self.objective.temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=self.objective.max_completion_tokens,
                suppress_tokens=vision_token_ids(tokenizer),
            )
            policy.train()
        return output[:, prompt["input_ids"].shape[1] :], sampler.eos_token_id

    def engine_rollout(self, model, records: list[dict], prompt: dict):
        """The engine's groups (with its weights synced to the policy's first) as a padded
        [N, C] tensor of sampled ids; the engine's log-prob of each kept for `logp_diff`."""
        tokenizer, group = self.processor.tokenizer, self.objective.group_size
        assert self.engine is not None
        policy = self.accelerator.unwrap_model(model)
        engine = self.engine.synced(policy, self.state.global_step)
        stops = stop_token_ids(policy.generation_config, tokenizer)
        samples, prompt_ids = engine.sample(
            self.processor,
            [r["prompt"] for r in records],
            group,
            self.objective.temperature,
            self.objective.max_completion_tokens,
            stops,
            vision_token_ids(tokenizer),
            logprobs=True,
        )
        rows, masks = prompt["input_ids"][::group], prompt["attention_mask"][::group]
        ours = [row[mask.bool()].tolist() for row, mask in zip(rows, masks, strict=True)]
        self._stats["rollout/prompt_mismatches"].append(prompt_mismatches(ours, prompt_ids, "rl"))
        flat: list[Sample] = [s for each in samples for s in each]
        width = max(1, max(len(s.token_ids) for s in flat))
        ids = torch.full((len(flat), width), tokenizer.pad_token_id, dtype=torch.long)
        self._engine_logps = torch.full((len(flat), width), float("nan"))
        for i, s in enumerate(flat):
            ids[i, : len(s.token_ids)] = torch.tensor(s.token_ids, dtype=torch.long)
            logps = s.logprobs or []
            self._engine_logps[i, : len(logps)] = torch.tensor(logps)
        return ids.to(self.args.device), stops

    def rollout_batch(self, prompt: dict, sampled: torch.Tensor, stops: list[int]):
        """Prompt + sampled completion [N, C] as one batch; the completion's mask; texts."""
        tokenizer = self.processor.tokenizer
        completion, keep, segments = completion_parts(sampled, stops, tokenizer.pad_token_id)
        batch = {
            "input_ids": torch.cat([prompt["input_ids"], completion], dim=1),
            "attention_mask": torch.cat([prompt["attention_mask"], keep.long()], dim=1),
            "segment_ids": torch.cat([prompt["segment_ids"], segments], dim=1),
            "mm_token_type_ids": torch.cat(
                [prompt["mm_token_type_ids"], torch.zeros_like(completion)], dim=1
            ),
        }
        for key in ("pixel_values", "image_grid_thw"):
            if key in prompt:
                batch[key] = prompt[key]
        texts = tokenizer.batch_decode(completion, skip_special_tokens=True)
        return batch, keep, texts

    def rewards(self, texts: list[str], records: list[dict], masses: torch.Tensor) -> dict:
        """Each reward component per completion, and their weighted total. masses [L,N,H,S]"""
        group = self.objective.group_size
        columns = {
            key: [r[key] for r in records for _ in range(group)]
            for key in ("answer", "answer_type", "choices")
        }
        return self.objective.reward(texts, masses, **columns)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        records = inputs
        batch, mask, texts = self.rollout(model, records)
        segments = batch.pop("segment_ids")
        keep = mask.shape[1] + 1  # the logits that predict the completion's tokens
        temperature = self.objective.temperature
        ref_logps = None
        if self.objective.kl_coef > 0:  # before the probe attaches (LoRA: the same modules)
            with torch.no_grad(), self.reference(model) as reference:
                ref_logits = reference(**batch, logits_to_keep=keep).logits
                ref_logps = token_logps(ref_logits, batch["input_ids"], temperature)
        # r_visual's masses are rewards, not a loss: the probe builds no graph
        with self.probing(model, segments, self.objective.reward.layers, detached=True) as probe:
            logits = model(**batch, logits_to_keep=keep).logits
        logps = token_logps(logits, batch["input_ids"], temperature)  # [N, C]
        if self.engine is not None:
            self._record_logp_diff(logits, logps, mask)
        masses = probe.masses()
        rewards = self.rewards(texts, records, masses)
        advantages = group_advantages(
            rewards["total"], self.objective.group_size, self.objective.scale_rewards
        ).to(logps.device)
        loss, stats = grpo_loss(
            logps,
            mask.to(logps.device),
            advantages,
            ref_logps,
            self.objective.kl_coef,
            self.objective.loss_type,
            self.objective.max_completion_tokens,
        )
        self._record(rewards, stats, mask, masses)
        return (loss, logits) if return_outputs else loss

    @contextmanager
    def reference(self, model):
        """The starting model for the KL term: its frozen copy, or with LoRA the policy with
        its adapters switched off (no second copy of the weights)."""
        if self.ref_model is not None:
            yield self.ref_model.to(self.args.device)
            return
        core = self.accelerator.unwrap_model(model)
        was_training = core.training
        core.eval()  # no adapter dropout in the reference pass
        try:
            with core.disable_adapter():
                yield core
        finally:
            core.train(was_training)

    def _record_logp_diff(self, logits, logps: torch.Tensor, mask: torch.Tensor) -> None:
        """Mean |engine log-prob - training log-prob| over the completions' tokens, the
        training forward's renormalised without the suppressed vision tokens."""
        vision = vision_token_ids(self.processor.tokenizer)
        suppressed = subset_logmass(logits, vision, self.objective.temperature)
        sampled = logps.detach().float() - torch.log1p(-suppressed.exp())
        engine = self._engine_logps.to(logps.device)
        known = mask.to(logps.device) & torch.isfinite(engine)
        diff = (sampled - engine).abs()[known]
        self._stats["rollout/logp_diff"].append(diff.mean().item() if diff.numel() else 0.0)

    def _record(self, rewards: dict, stats: dict, mask: torch.Tensor, masses: torch.Tensor):
        for name, values in rewards.items():  # each term visible: its mean and spread
            self._stats[f"reward/{name}/mean"].append(values.float().mean().item())
            self._stats[f"reward/{name}/std"].append(values.float().std().item())
        self._stats["completion_length"].append(mask.sum(dim=1).float().mean().item())
        self._stats["kl"].append(stats["kl"].item())
        names = {"image_mass": Segment.IMAGE, "system_mass": Segment.SYSTEM}
        for name, segment in names.items():
            self._stats[name].append(masses[..., int(segment)].float().mean().item())
