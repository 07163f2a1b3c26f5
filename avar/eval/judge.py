"""An LLM judge that extracts the final answer of a long response, the way lmms-eval and
VLMEvalKit score MathVista and MathVerse: the judge only reads the answer out, avar's rules
(avar.grading) decide whether it is right.

The judge is an OpenAI-compatible endpoint or a local HF model behind the same client as
the curation teacher (avar.curate.teacher): retries with backoff on timeouts, 429 and 5xx,
none on other errors, a JSONL cache keyed by the request, the API key read from the
environment variable `api_key_env` at each request and written nowhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from avar.config.schema import JudgeConfig
from avar.grading import answers_match

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "You read a model's response to a question and extract its final answer. Reply with the "
    "answer alone: the option letter for a multiple-choice question, the number without "
    "units for a numeric question, Yes or No for a yes/no question, else the shortest "
    "phrase that answers. Do not solve the question yourself: if the response gives no "
    "final answer, reply NONE."
)

EXAMPLES = (
    (
        "How many red cubes are left after removing two?\nA. 1\nB. 3\nC. 5",
        "There were five red cubes. Removing two leaves three, so the answer is option B.",
        "B",
    ),
    (
        "What is the length of side AC in centimetres?",
        "By the Pythagorean theorem AC = sqrt(6^2 + 8^2) = 10 cm.",
        "10",
    ),
    (
        "Is the left bar taller than the right bar?",
        "Looking at the chart, the left bar reaches 40 and the right one 55, so no, it is not.",
        "No",
    ),
    ("Which shape is largest?", "I cannot tell from the picture.", "NONE"),
)
NONE = "NONE"


def extraction_chat(question: str, response: str) -> list[dict]:
    """The judge's request: instructions, worked examples, then this question and response."""
    shots = "\n\n".join(
        f"Question: {q}\nModel response: {r}\nExtracted answer: {a}" for q, r, a in EXAMPLES
    )
    text = f"{shots}\n\nQuestion: {question}\nModel response: {response}\nExtracted answer:"
    return [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": [{"type": "text", "text": text}]},
    ]


def clean(reply: str) -> str | None:
    """The extracted answer of a judge's reply; None when it says there is none."""
    text = reply.strip().removeprefix("Extracted answer:").strip()
    text = text.splitlines()[0].strip() if text else ""
    return None if not text or text.upper().rstrip(".") == NONE else text


@dataclass
class Judged:
    extracted: list[str | None]
    correct: list[bool]
    failed: int
    """Requests that failed for good (graded as wrong, named in the log)."""


class Judge:
    def __init__(self, cfg: JudgeConfig):
        from avar.endpoints import build_teacher

        self.cfg = cfg
        self.client = build_teacher(cfg, label="judge")

    def describe(self) -> dict:
        """What the results JSON records of it (never the key)."""
        return {"kind": self.cfg.kind, "model": self.cfg.model, "url": self.cfg.url}

    def grade(self, records: list[dict], prompts: list[str], responses: list[str]) -> Judged:
        """The judge's extraction of each response, graded by avar's rules against the
        record's answer."""
        chats = [extraction_chat(p, r) for p, r in zip(prompts, responses, strict=True)]
        replies = self.client.complete(chats)
        extracted = [None if reply is None else clean(reply) for reply in replies]
        correct = [
            answer is not None
            and answers_match(answer, r["answer"], r["answer_type"], r["choices"])
            for answer, r in zip(extracted, records, strict=True)
        ]
        failed = sum(reply is None for reply in replies)
        if failed:
            log.warning("judge: %d of %d requests failed; graded as wrong", failed, len(chats))
        return Judged(extracted, correct, failed)


def build_judge(cfg: JudgeConfig) -> Judge | None:
    return None if cfg.kind == "none" else Judge(cfg)
