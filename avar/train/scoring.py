"""Score a model on held-out questions: greedy accuracy (overall, per category) and the VAS
of its own answers. Training stages call this for every checkpoint they save.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import torch
from transformers import TrainerCallback

from avar.attention.hooks import decoder_attention
from avar.attention.measure import VasSettings, batch_masses, prompts, report
from avar.attention.vas import head_mean_masses
from avar.config.specs import layer_list
from avar.generate import generate
from avar.grading import grade
from avar.segments import encode_batch


@dataclass
class ScoreSet:
    """Held-out questions, as records and their prompts (chats up to the user turn)."""

    name: str
    records: list[dict]
    prompts: list[list[dict]]
    max_new_tokens: int = 192
    batch_size: int = 32
    layers: str = "all"

    @classmethod
    def from_records(cls, name, records, root, system_prompt, **kwargs) -> ScoreSet:
        return cls(name, records, prompts(records, root, system_prompt), **kwargs)


def answer_masses(model, processor, chats: list[list[dict]], settings: VasSettings) -> dict:
    """Masses [L, N, H, S] of chats ending in the model's answers (teacher-forced)."""
    per_batch = []
    for start in range(0, len(chats), settings.batch_size):
        batch = encode_batch(processor, chats[start : start + settings.batch_size])
        batch = {k: v.to(model.device) for k, v in batch.items()}
        with torch.no_grad():
            per_batch.append(batch_masses(model, batch, settings).float().cpu())
    masses = torch.cat(per_batch, dim=1)  # [L, N, H, S]
    return masses


def score(model, processor, scores: ScoreSet) -> dict[str, float | None]:
    """`{name}/accuracy`, `{name}/accuracy/<category>`, `{name}/vas`, image and system mass."""
    was_training = model.training
    model.eval()
    try:
        answers = generate(
            model, processor, scores.prompts, scores.max_new_tokens, scores.batch_size,
            progress=False,
        )  # fmt: skip
        settings = VasSettings(queries="response", layers=scores.layers, batch_size=8)
        replies = [[{"role": "assistant", "content": a}] for a in answers]
        chats = [p + r for p, r in zip(scores.prompts, replies, strict=True)]
        masses = answer_masses(model, processor, chats, settings)
    finally:
        model.train(was_training)
    correct = [
        grade(a, r["answer"], r["answer_type"], r["choices"], bare=True)
        for a, r in zip(answers, scores.records, strict=True)
    ]
    by_category: dict[str, list[bool]] = defaultdict(list)
    for ok, record in zip(correct, scores.records, strict=True):
        by_category[record["category"]].append(ok)
    layers = layer_list(scores.layers, len(decoder_attention(model)))
    vas = report(masses, scores.records, settings, layers)
    mass = head_mean_masses(masses)
    result = {
        f"{scores.name}/accuracy": sum(correct) / len(correct),
        **{f"{scores.name}/accuracy/{c}": sum(v) / len(v) for c, v in sorted(by_category.items())},
        f"{scores.name}/vas": vas["vas"],
        f"{scores.name}/image_mass": _finite_mean(mass["image"]),
        f"{scores.name}/system_mass": _finite_mean(mass["system"]),
    }
    return result


def _finite_mean(values: torch.Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return None if not finite.numel() else float(finite.mean())


class ScoreCheckpoints(TrainerCallback):
    """After every checkpoint save (and the last step's): score the model, hand the row to
    `on_row`.

    Every rank scores (under ZeRO-3 the forward passes are collective) and gets the row,
    so that every rank agrees on what is scored; `on_row` writes only on the main process.
    """

    def __init__(self, processor, score_sets: list[ScoreSet], on_row, scored: set[int]):
        self.processor, self.score_sets, self.on_row = processor, score_sets, on_row
        self.scored = scored  # steps that already have a row

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """A run resumed from a checkpoint that was saved but not scored scores it now."""
        if state.global_step > 0 and state.global_step not in self.scored:
            self.on_save(args, state, control, model=model)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        """Also save (and score) the last step, so a finished stage resumes to its end."""
        if state.global_step >= state.max_steps:
            control.should_save = True
        return control

    def on_save(self, args, state, control, model=None, **kwargs):
        row = {"step": state.global_step}
        for scores in self.score_sets:
            row.update(score(model, self.processor, scores))
        row.update(last_losses(state.log_history))
        self.scored.add(state.global_step)
        self.on_row(row)
        return control


def last_losses(log_history: list[dict]) -> dict[str, float]:
    """The most recent training-loss entries of the Trainer's log, by name."""
    for entry in reversed(log_history):
        if "loss" in entry:
            return {
                f"train/{k}": v
                for k, v in entry.items()
                if k not in ("step", "epoch") and isinstance(v, float) and math.isfinite(v)
            }
    return {}
