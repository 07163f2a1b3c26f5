"""Score a model on held-out questions: greedy accuracy (overall, per category) and the VAS
of its own answers. Training stages call this for every checkpoint they save.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from transformers import TrainerCallback
from transformers.integrations import is_deepspeed_zero3_enabled

from avar.data.chats import prompts
from avar.eval.harness import answer
from avar.eval.measure import SUMMARY_KEYS


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


def score(model, processor, scores: ScoreSet, engine=None) -> dict[str, float | None]:
    """`{name}/accuracy` with its n and 95% interval (overall and per category, as
    `avar.stats.accuracy_metrics` names them), `{name}/vas` with its summaries (log10, the
    ratio of mean masses, the low-system-mass flag) and the image and system masses.

    Under several ranks each rank answers its share of the questions and every rank gets
    the whole row; under ZeRO-3 (whose forward passes are collective) every rank answers
    every question. With `engine` (vLLM, holding `model`'s weights) it writes the answers."""
    answers = answer(
        model,
        processor,
        scores.prompts,
        scores.records,
        scores.max_new_tokens,
        scores.batch_size,
        scores.layers,
        shard=not is_deepspeed_zero3_enabled(),
        engine=engine,
    )
    vas = answers.vas or {}
    return {
        **answers.metrics(scores.name),
        **{f"{scores.name}/{k}": vas.get(k) for k in SUMMARY_KEYS},
    }


class ScoreCheckpoints(TrainerCallback):
    """After every checkpoint save (and the last step's): score the model, hand the row to
    `on_row`.

    Every rank takes part in scoring and gets the row, so that every rank agrees on what
    is scored; `on_row` writes only on the main process.
    """

    def __init__(
        self, processor, score_sets: list[ScoreSet], on_row, scored: set[int], engine=None
    ):
        self.processor, self.score_sets, self.on_row = processor, score_sets, on_row
        self.scored = scored  # steps that already have a row
        self.engine = engine  # a PolicyEngine (generate.backend: vllm): synced, then asked

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
        engine = self.engine.synced(model, state.global_step) if self.engine else None
        for scores in self.score_sets:
            row.update(score(model, self.processor, scores, engine))
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
