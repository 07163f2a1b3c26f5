"""GRPO with the visual-anchored reward, as a compact loop on HF Trainer.

    r = r_acc + lambda_visual * r_visual * [r_acc > 0] + lambda_format * r_format

Each step samples `group_size` completions per prompt, scores them, normalises the rewards
within each group (the advantages) and takes one policy-gradient step, with an optional
k3 KL penalty against the starting model.

Why not TRL's GRPOTrainer: TRL scores completions before its training forward, so r_visual
(the completion's image/system attention ratio under the policy) would cost a second
forward pass over every prompt + completion. Here each batch gets one on-policy update, so
the forward that gives the log-probabilities for the loss also gives the attention masses
(`mass_probe` rides on it): r_visual costs no extra pass. `bench/visual_reward.py`
measures both ways side by side. Everything else (DeepSpeed, checkpoints, resume, logging)
is HF Trainer's.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from trl.models.utils import unwrap_model_for_generation

from avar.config.schema import RlConfig
from avar.generate import vision_token_ids
from avar.rewards import VisualAnchoredReward
from avar.segments import Segment, encode_batch, model_inputs
from avar.train.checkpoints import ExactResume
from avar.train.lora import is_lora
from avar.train.sft import LoggedStats, ProbesThroughBackward


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(r - group mean) / (group std + 1e-4), groups of consecutive completions. [N] -> [N]"""
    groups = rewards.view(-1, group_size)  # [B, G]
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, keepdim=True)  # unbiased, as TRL
    return ((groups - mean) / (std + 1e-4)).view(-1)


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Log-probability of each next token. logits [N, T, V], ids [N, T] -> [N, T-1]"""
    rows = []
    # one row at a time: [T, V] float copies instead of [N, T, V]
    for row_logits, row_ids in zip(logits[:, :-1], input_ids[:, 1:], strict=True):
        picked = row_logits.gather(-1, row_ids.unsqueeze(-1)).squeeze(-1).float()  # [T-1]
        rows.append(picked - torch.logsumexp(row_logits.float(), dim=-1))
    return torch.stack(rows)


def grpo_loss(logps, mask, advantages, ref_logps=None, kl_coef: float = 0.0):
    """Policy-gradient loss of one on-policy update, mean over tokens then sequences.

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

    @classmethod
    def from_config(cls, rl: RlConfig) -> GrpoObjective:
        return cls(
            VisualAnchoredReward.from_config(rl),
            rl.group_size,
            rl.temperature,
            rl.max_completion_tokens,
            rl.kl_coef,
        )


class GrpoTrainer(LoggedStats, ProbesThroughBackward, ExactResume):
    """Trainer whose batches are prompts (records) and whose loss is GRPO's."""

    loss_is_scaled_for_ga = False

    def __init__(self, *args, objective: GrpoObjective, **kwargs):
        super().__init__(*args, **kwargs)
        self.processor, self.objective = self.processing_class, objective
        self.ref_model = None
        if objective.kl_coef > 0 and not is_lora(self.model):  # LoRA: the adapters off
            self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self._stats = defaultdict(list)

    def rollout(self, model, records: list[dict]) -> tuple[dict, list[str]]:
        """Sample group_size completions per prompt: the batch (prompt + completion) and texts."""
        chats = [r["prompt"] for r in records for _ in range(self.objective.group_size)]
        prompt = encode_batch(
            self.processor, chats, padding_side="left", add_generation_prompt=True
        )
        prompt = {k: v.to(self.args.device) for k, v in prompt.items()}
        tokenizer = self.processor.tokenizer
        with torch.no_grad(), unwrap_model_for_generation(model, self.accelerator) as policy:
            policy.eval()
            output = policy.generate(
                **model_inputs(prompt),
                do_sample=True,
                temperature=self.objective.temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=self.objective.max_completion_tokens,
                pad_token_id=tokenizer.pad_token_id,
                suppress_tokens=vision_token_ids(tokenizer),
            )
            policy.train()
        completion = output[:, prompt["input_ids"].shape[1] :]  # [N, C]
        stops = torch.tensor(list(policy.generation_config.eos_token_id or []))
        ended = torch.isin(completion, stops.to(completion.device))
        after_stop = (ended.cumsum(dim=1) - ended.long()) > 0  # tokens after the first stop
        keep = ~after_stop  # [N, C]
        completion = completion.masked_fill(~keep, tokenizer.pad_token_id)
        batch = {
            "input_ids": torch.cat([prompt["input_ids"], completion], dim=1),
            "attention_mask": torch.cat([prompt["attention_mask"], keep.long()], dim=1),
            "segment_ids": torch.cat(
                [prompt["segment_ids"], torch.where(keep, int(Segment.RESPONSE), int(Segment.PAD))],
                dim=1,
            ),
            "mm_token_type_ids": torch.cat(
                [prompt["mm_token_type_ids"], torch.zeros_like(completion)], dim=1
            ),
        }
        for key in ("pixel_values", "image_grid_thw"):
            if key in prompt:
                batch[key] = prompt[key]
        texts = tokenizer.batch_decode(completion, skip_special_tokens=True)
        return batch, texts

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
        batch, texts = self.rollout(model, records)
        segments = batch.pop("segment_ids")
        ref_logps = None
        if self.objective.kl_coef > 0:  # before the probe attaches (LoRA: the same modules)
            with torch.no_grad(), self.reference(model) as reference:
                ref_logps = token_logps(reference(**batch).logits, batch["input_ids"])
        with self.probing(model, segments, self.objective.reward.layers) as probe:
            logits = model(**batch).logits
        logps = token_logps(logits, batch["input_ids"])  # [N, T-1]
        masses = probe.masses().detach()
        rewards = self.rewards(texts, records, masses)
        advantages = group_advantages(rewards["total"], self.objective.group_size).to(logps.device)
        mask = (segments[:, 1:] == Segment.RESPONSE).to(logps.device)
        loss, stats = grpo_loss(logps, mask, advantages, ref_logps, self.objective.kl_coef)
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

    def _record(self, rewards: dict, stats: dict, mask: torch.Tensor, masses: torch.Tensor):
        for name, values in rewards.items():  # each term visible: its mean and spread
            self._stats[f"reward/{name}/mean"].append(values.float().mean().item())
            self._stats[f"reward/{name}/std"].append(values.float().std().item())
        self._stats["completion_length"].append(mask.sum(dim=1).float().mean().item())
        self._stats["kl"].append(stats["kl"].item())
        names = {"image_mass": Segment.IMAGE, "system_mass": Segment.SYSTEM}
        for name, segment in names.items():
            self._stats[name].append(masses[..., int(segment)].float().mean().item())
