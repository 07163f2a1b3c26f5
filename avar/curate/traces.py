"""AVAR-pattern traces for the multimodal cold-start set.

    <think>
    Anchor: the visual evidence the question needs, as seen in the image.
    Reasoning: from that evidence to the answer.
    Reflection: look at the image again, re-check the evidence, correct a misreading.
    </think>
    <answer>...</answer>

For synthetic records the evidence comes from the scene description (the record's
solution: an overview of the image, the facts the question needs, the conclusion). A
`reflection_rate` share of the number and choice answers start from a misreading that the
reflection catches and corrects, so the model sees re-checking change an answer.
"""

from __future__ import annotations

import random

from avar.data.scenes import COLORS
from avar.data.schema import OPTION_LETTERS


def wrong_answer(record: dict, rng: random.Random) -> str | None:
    """A plausible misreading of the answer, or None when there is none to make."""
    answer, kind = record["answer"], record["answer_type"]
    if kind == "number" and answer.isdigit():
        value = int(answer)
        return str(value + 1 if value == 0 or rng.random() < 0.5 else value - 1)
    if kind == "choice" and len(record["choices"]) > 1:
        others = [
            OPTION_LETTERS[i] for i in range(len(record["choices"])) if OPTION_LETTERS[i] != answer
        ]
        return rng.choice(others)
    if kind == "text" and answer in COLORS:
        return rng.choice(sorted(c for c in COLORS if c != answer))
    return None


def scene_trace(record: dict, rng: random.Random, reflection_rate: float) -> str:
    """The AVAR trace of a synthetic record, from its scene-grounded solution steps.

    The anchor is the evidence the question needs (the solution's middle steps; the
    overview of the whole image when there are none), not a list of everything drawn:
    short traces leave room for the answer within a generation budget.
    """
    steps = record["solution"]
    if len(steps) < 2:
        raise ValueError(f"record {record['id']}: a scene trace needs solution steps")
    evidence = " ".join(steps[1:-1]) or steps[0]
    conclusion, answer = steps[-1], record["answer"]
    wrong = wrong_answer(record, rng) if rng.random() < reflection_rate else None
    if wrong is None:
        lines = [
            f"Anchor: {evidence}",
            f"Reasoning: {conclusion}",
            "Reflection: Checking the image again confirms the evidence.",
        ]
    else:
        lines = [
            f"Anchor: {evidence}",
            f"Reasoning: At first reading, the answer looks like {wrong}.",
            f"Reflection: Checking the image again, I misread it at first. {conclusion} "
            f"The answer is {answer}, not {wrong}.",
        ]
    return "<think>\n" + "\n".join(lines) + "\n</think>\n<answer>" + answer + "</answer>"
