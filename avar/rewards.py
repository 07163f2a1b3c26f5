"""GRPO rewards. The RL stage trains with `VisualAnchoredReward`, built from the `rl`
section in one step:

    r = r_acc + lambda_visual * r_visual * [r_acc > 0] + lambda_format * r_format

where r_visual is read from the completion's image mass I and system mass S per layer (the
attention of its tokens, from the policy's own forward pass), transformed as `visual_reward`
says and averaged over `layers` (`visual_score`): the paper's raw ratio I/S can reach 1e9
when S collapses and drown the accuracy and format terms, so the default is the bounded
image share I/(I+S); 0 where S = 0 (no system prompt). The components keep TRL's contract
(lists in: completions and dataset columns as keyword lists; one float per completion out);
`VisualReward` is r_visual the TRL way, from a separate no-grad pass (what
`bench/visual_reward.py` compares against).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from avar.attention.probe import mass_probe
from avar.attention.vas import head_mean_masses
from avar.config.schema import RlConfig
from avar.grading import grade
from avar.segments import encode_batch, model_inputs

VISUAL_TRANSFORMS = ("share", "log_ratio", "ratio")
FORMAT = re.compile(r"^\s*<think>.+?</think>\s*<answer>.+?</answer>\s*$", re.DOTALL)


def completion_text(completion) -> str:
    """A completion as text: TRL passes strings, or message lists for chat data."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] if isinstance(m["content"], str) else "" for m in completion)


def accuracy_reward(completions, answer, answer_type, choices=None, **kwargs) -> list[float]:
    """1.0 when the completion's final answer matches the record's answer, else 0.0."""
    choices = choices or [[] for _ in completions]
    rows = zip(completions, answer, answer_type, choices, strict=True)
    return [float(grade(completion_text(c), a, t, ch)) for c, a, t, ch in rows]


def format_reward(completions, **kwargs) -> list[float]:
    """1.0 for exactly `<think>...</think><answer>...</answer>`, else 0.0."""
    return [float(bool(FORMAT.match(completion_text(c)))) for c in completions]


def _with_images(prompt: list[dict], images) -> list[dict]:
    """Fill TRL's bare `{"type": "image"}` parts from the `images` column, in order."""
    images = list(images or [])
    filled = []
    for message in prompt:
        content = message["content"]
        if not isinstance(content, str):
            content = [
                {**part, "image": images.pop(0)}
                if part.get("type") == "image" and "image" not in part
                else part
                for part in content
            ]
        filled.append({**message, "content": content})
    return filled


def visual_score(masses: torch.Tensor, transform: str = "share") -> torch.Tensor:
    """r_visual before its gate, per sequence: masses [L, N, H, S] -> [N] float32 on CPU.

    Per layer, from the head-averaged image mass I and system mass S:
      share      I / (I + S), in [0, 1]
      log_ratio  clip(log10(I / S), -2, 2) / 4 + 1/2, in [0, 1] (I/S of 0.01 -> 0, 1 -> 1/2,
                 100 and beyond -> 1)
      ratio      I / S, the paper's VAS, unbounded
    then the mean over layers. Undefined, and 0, where S = 0 (no system prompt), as the VAS."""
    if transform not in VISUAL_TRANSFORMS:
        raise ValueError(f"visual_reward must be one of {VISUAL_TRANSFORMS}, got {transform!r}")
    layer_masses = head_mean_masses(masses.float().cpu())
    image, system = layer_masses["image"], layer_masses["system"]  # [L, N] each
    if transform == "share":
        per_layer = image / (image + system)
    elif transform == "log_ratio":
        tiny = torch.finfo(torch.float32).tiny
        log_ratio = torch.log10(image.clamp(min=tiny)) - torch.log10(system.clamp(min=tiny))
        per_layer = log_ratio.clamp(-2.0, 2.0) / 4 + 0.5
    else:
        per_layer = image / system
    per_layer = torch.where(system > 0, per_layer, torch.nan)  # [L, N]
    return torch.nan_to_num(per_layer.mean(dim=0), nan=0.0)


def gated_visual(masses: torch.Tensor, correct: torch.Tensor, transform: str) -> torch.Tensor:
    """r_visual per completion: its visual score where `correct`, else 0 (the paper's gate).
    masses [L, N, H, S], correct [N] bool -> [N] float32 on CPU."""
    return visual_score(masses, transform) * correct.cpu()


@dataclass(frozen=True)
class VisualAnchoredReward:
    """The RL reward: weights, the layers r_visual reads and its transform, as the `rl`
    section sets them (its defaults live there)."""

    lambda_visual: float
    lambda_format: float
    layers: str
    visual_transform: str

    @classmethod
    def from_config(cls, rl: RlConfig) -> VisualAnchoredReward:
        return cls(rl.lambda_visual, rl.lambda_format, rl.layers, rl.visual_reward)

    def __call__(
        self, completions, masses: torch.Tensor, answer, answer_type, choices=None
    ) -> dict[str, torch.Tensor]:
        """Every component per completion ([N] each) and their weighted `total`.
        masses [L, N, H, S]: the completions' attention masses in `layers`."""
        accuracy = torch.tensor(accuracy_reward(completions, answer, answer_type, choices))
        form = torch.tensor(format_reward(completions))
        visual = gated_visual(masses, accuracy > 0, self.visual_transform)
        total = accuracy + self.lambda_visual * visual + self.lambda_format * form
        return {"accuracy": accuracy, "format": form, "visual": visual, "total": total}


class VisualReward:
    """r_visual under the policy model, for correct answers only.

    The completion's tokens are the queries; their image and system masses per layer are
    measured in one no-grad teacher-forced pass and transformed (`visual_score`).
    """

    __name__ = "visual"  # TRL names reward columns after the callable

    def __init__(self, model, processor, layers="all", batch_size=8, transform="share"):
        self.model, self.processor = model, processor
        self.layers, self.batch_size, self.transform = layers, batch_size, transform

    def scores(self, conversations: list[list[dict]]) -> list[float]:
        """Visual scores of whole chats (prompt + completion), in batches."""
        values = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start : start + self.batch_size]
            batch = encode_batch(self.processor, chunk)
            batch = {k: v.to(self.model.device) for k, v in batch.items()}
            segments = batch["segment_ids"]
            with torch.no_grad(), mass_probe(self.model, segments, "response", self.layers) as p:
                self.model(**model_inputs(batch))
            values += visual_score(p.masses(), self.transform).tolist()
        return values

    def __call__(self, prompts, completions, answer, answer_type, choices=None, **kwargs):
        correct = accuracy_reward(completions, answer, answer_type, choices)
        images = kwargs.get("images") or [None] * len(prompts)
        wanted = [i for i, ok in enumerate(correct) if ok]
        chats = [
            _with_images(prompts[i], images[i])
            + [{"role": "assistant", "content": completion_text(completions[i])}]
            for i in wanted
        ]
        rewards = [0.0] * len(completions)
        for index, value in zip(wanted, self.scores(chats) if chats else [], strict=True):
            rewards[index] = value
        return rewards
