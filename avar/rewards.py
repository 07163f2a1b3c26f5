"""GRPO rewards with TRL's contract: lists in (prompts, completions, dataset columns as
keyword lists), one float per completion out.

    r = r_acc + lambda_visual * r_visual + lambda_format * r_format

`r_visual` is already gated (0 unless the answer is correct), so the weights are applied
as TRL's `reward_weights` = [1, lambda_visual, lambda_format].
"""

from __future__ import annotations

import re

import torch

from avar.attention.probe import mass_probe
from avar.attention.vas import sequence_vas
from avar.generate import model_inputs
from avar.grading import grade
from avar.segments import encode_batch

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
            values += torch.nan_to_num(sequence_vas(p.masses()), nan=0.0).tolist()
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


def reward_functions(model, processor, layers: str = "all") -> dict:
    """The rewards by name, as params.yaml and the logs (`reward/<name>/mean`) call them."""
    return {
        "accuracy": accuracy_reward,
        "visual": VisualReward(model, processor, layers),
        "format": format_reward,
    }
