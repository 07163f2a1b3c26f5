"""GRPO rewards. The RL stage trains with `VisualAnchoredReward`, built from the `rl`
section in one step:

    r = r_acc + lambda_visual * r_visual * [r_acc > 0] + lambda_format * r_format

where r_visual is the completion's VAS (image mass / system mass of its tokens, averaged
over `layers`) read from the policy's own forward pass, and 0 where the VAS is undefined
(no system tokens). The components keep TRL's contract (lists in: completions and dataset
columns as keyword lists; one float per completion out); `VisualReward` is r_visual the TRL
way, from a separate no-grad pass (what `bench/visual_reward.py` compares against).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from avar.attention.probe import mass_probe
from avar.attention.vas import sequence_vas
from avar.config.schema import RlConfig
from avar.grading import grade
from avar.segments import encode_batch, model_inputs

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


def gated_vas(masses: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """r_visual per completion: its VAS where `correct`, else 0; 0 where the VAS is
    undefined. masses [L, N, H, S], correct [N] bool -> [N] float32 on CPU."""
    vas = torch.nan_to_num(sequence_vas(masses.float().cpu()), nan=0.0)  # [N]
    return vas * correct.cpu()


@dataclass(frozen=True)
class VisualAnchoredReward:
    """The RL reward: weights and the layers r_visual reads, as the `rl` section sets them
    (its defaults live there)."""

    lambda_visual: float
    lambda_format: float
    layers: str

    @classmethod
    def from_config(cls, rl: RlConfig) -> VisualAnchoredReward:
        return cls(rl.lambda_visual, rl.lambda_format, rl.layers)

    def __call__(
        self, completions, masses: torch.Tensor, answer, answer_type, choices=None
    ) -> dict[str, torch.Tensor]:
        """Every component per completion ([N] each) and their weighted `total`.
        masses [L, N, H, S]: the completions' attention masses in `layers`."""
        accuracy = torch.tensor(accuracy_reward(completions, answer, answer_type, choices))
        form = torch.tensor(format_reward(completions))
        visual = gated_vas(masses, accuracy > 0)
        total = accuracy + self.lambda_visual * visual + self.lambda_format * form
        return {"accuracy": accuracy, "format": form, "visual": visual, "total": total}


class VisualReward:
    """r_visual: the completion's VAS under the policy model, for correct answers only.

    The completion's tokens are the queries; the VAS is their image mass over system
    mass, averaged over `layers`, measured in one no-grad teacher-forced pass.
    """

    __name__ = "visual"  # TRL names reward columns after the callable

    def __init__(self, model, processor, layers: str = "all", batch_size: int = 8):
        self.model, self.processor = model, processor
        self.layers, self.batch_size = layers, batch_size

    def vas(self, conversations: list[list[dict]]) -> list[float]:
        values = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start : start + self.batch_size]
            batch = encode_batch(self.processor, chunk)
            batch = {k: v.to(self.model.device) for k, v in batch.items()}
            segments = batch["segment_ids"]
            with torch.no_grad(), mass_probe(self.model, segments, "response", self.layers) as p:
                self.model(**model_inputs(batch))
            values += gated_vas(p.masses(), torch.ones(len(chunk), dtype=torch.bool)).tolist()
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
        for index, value in zip(wanted, self.vas(chats) if chats else [], strict=True):
            rewards[index] = value
        return rewards
