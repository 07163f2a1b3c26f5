"""Answer questions, grade them and measure the VAS of the answers: the one loop behind
checkpoint scoring (avar.train.scoring) and `avar eval`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from avar.attention.hooks import decoder_attention
from avar.config.specs import InterventionSpec, layer_list
from avar.engine.client import VllmEngine
from avar.eval.measure import VasSettings, chat_masses, report
from avar.generate import generate
from avar.grading import extract_answer, grade
from avar.ranks import sharded
from avar.stats import accuracy_metrics, accuracy_summary


@dataclass
class Answers:
    """The model's answers to `records`, whether each is right, and (optionally) their VAS."""

    records: list[dict]
    responses: list[str]
    correct: list[bool]
    vas: dict | None  # avar.eval.measure.report of the answers, or None

    def by_category(self) -> dict[str, dict]:
        """category -> its accuracy summary (accuracy, n, correct, 95% interval)."""
        groups: dict[str, list[bool]] = defaultdict(list)
        for ok, record in zip(self.correct, self.records, strict=True):
            groups[record["category"]].append(ok)
        return {c: accuracy_summary(v) for c, v in sorted(groups.items())}

    def metrics(self, prefix: str) -> dict[str, float]:
        """`{prefix}/accuracy`, its n and 95% interval, overall and per category."""
        return accuracy_metrics(prefix, self.correct, [r["category"] for r in self.records])

    def rows(self) -> list[dict]:
        """One row per question: its answer, the model's response and final answer, grade."""
        vas = self.vas["samples"] if self.vas else [{}] * len(self.records)
        return [
            {
                "id": r["id"],
                "category": r["category"],
                "answer": r["answer"],
                "response": text,
                "extracted": extract_answer(text),
                "correct": ok,
                **{k: v for k, v in sample.items() if k != "id"},
            }
            for r, text, ok, sample in zip(
                self.records, self.responses, self.correct, vas, strict=True
            )
        ]


def answer(
    model,
    processor,
    prompts: list[list[dict]],
    records: list[dict],
    max_new_tokens: int,
    batch_size: int,
    layers: str = "all",
    intervention: InterventionSpec | None = None,
    with_vas: bool = True,
    progress: bool = False,
    shard: bool = True,
    engine: VllmEngine | None = None,
) -> Answers:
    """Greedy answers to `prompts` (chats up to the user turn), graded against `records`.

    Graded as RL grades (a bare one-line answer counts: avar.grading). With `with_vas`, the
    answers are teacher-forced once more to measure their attention (with the same
    intervention, if any). Under several ranks each rank answers every world-size-th batch
    and every rank gets all answers, in order (`shard=False`: every rank answers all).
    With `engine` (vLLM), it writes the answers; avar's model measures their VAS.
    """
    settings = VasSettings(queries="response", layers=layers, intervene=intervention, batch_size=8)

    def answer_batch(chunk: range) -> tuple[list[str], torch.Tensor | None]:
        batch = [prompts[i] for i in chunk]
        texts = generate(
            model, processor, batch, max_new_tokens, batch_size, intervention, False, engine
        )
        if not with_vas:
            return texts, None
        replies = [[{"role": "assistant", "content": text}] for text in texts]
        chats = [p + r for p, r in zip(batch, replies, strict=True)]
        return texts, chat_masses(model, processor, chats, settings)

    was_training = model.training
    model.eval()
    try:
        parts = sharded(len(prompts), batch_size, answer_batch, shard, "answer" * progress)
    finally:
        model.train(was_training)
    responses = [text for texts, _ in parts for text in texts]
    vas = None
    if with_vas:
        masses = torch.cat([m for _, m in parts if m is not None], dim=1)
        vas = report(masses, records, settings, layer_list(layers, len(decoder_attention(model))))
    correct = [
        grade(text, r["answer"], r["answer_type"], r["choices"])
        for text, r in zip(responses, records, strict=True)
    ]
    return Answers(records, responses, correct, vas)
