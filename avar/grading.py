"""Answer extraction and grading, shared by the rewards and the evaluation harness.

Extraction: the last `<answer>...</answer>`, else the last `\\boxed{...}`, else the last
"answer is X" / "Answer: X" phrase. Grading by answer type: choice letters (also from
"(B)", "B. 45 degrees" or the option's text), numbers with a relative tolerance, and
free-form answers by normalised text or mathematical equivalence (math-verify).
"""

from __future__ import annotations

import logging
import math
import re
import string
import threading

from math_verify import parse, verify

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
ANSWER_PHRASE = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*([^\n]+)", re.IGNORECASE)
CHOICE_LETTER = re.compile(r"^\(?([A-Za-z])\)?(?:[.):\s]|$)")
NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
REL_TOLERANCE = 1e-4


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin - 1, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[begin:index]
    return None


def extract_answer(text: str) -> str | None:
    """The model's final answer in `text`, or None when it gives none."""
    for candidate in reversed(ANSWER_TAG.findall(text)):
        if candidate.strip():
            return candidate.strip()
    boxed = _last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    phrases = ANSWER_PHRASE.findall(text)
    if phrases:
        return phrases[-1].strip().rstrip(".").strip()
    return None


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(word for word in text.split() if word not in ("a", "an", "the"))


def extract_choice(answer: str, choices: list[str]) -> str | None:
    """The option letter an answer picks: a leading letter, or an option's exact text."""
    match = CHOICE_LETTER.match(answer.strip())
    if match:
        letter = match.group(1).upper()
        if not choices or ord(letter) - ord("A") < len(choices):
            return letter
    for index, choice in enumerate(choices):
        if normalize_text(answer) == normalize_text(choice):
            return chr(ord("A") + index)
    return None


def parse_number(text: str) -> float | None:
    """A plain number ("1,234", "-3.5", "45%", "$12"), else None."""
    cleaned = text.strip().replace(",", "").removeprefix("$").removesuffix("%").strip()
    return float(cleaned) if NUMBER.match(cleaned) else None


def math_equal(prediction: str, reference: str) -> bool:
    """Mathematical equivalence through math-verify (e.g. \\frac{2}{4} == 0.5)."""
    # math-verify's timeouts use SIGALRM, which only the main thread may set.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    if timeout is None:  # it warns on every call without one
        logging.getLogger("math_verify").setLevel(logging.ERROR)
    gold = parse(f"${reference}$", parsing_timeout=timeout)
    guess = parse(f"${prediction}$", parsing_timeout=timeout)
    return bool(gold and guess and verify(gold, guess, timeout_seconds=timeout))


def numbers_equal(prediction: str, reference: str) -> bool:
    guess, gold = parse_number(prediction), parse_number(reference)
    if guess is not None and gold is not None:
        return math.isclose(guess, gold, rel_tol=REL_TOLERANCE, abs_tol=1e-9)
    return math_equal(prediction, reference)


def answers_match(answer: str, reference: str, answer_type: str, choices=()) -> bool:
    """Whether an extracted answer matches the reference, by the record's answer type."""
    if answer_type == "choice":
        picked = extract_choice(answer, list(choices))
        return picked is not None and picked == extract_choice(reference, list(choices))
    if answer_type == "number":
        return numbers_equal(answer, reference)
    if answer_type == "text":
        same = normalize_text(answer) == normalize_text(reference)
        return same or math_equal(answer, reference)
    raise ValueError(f"answer_type must be choice, number or text, got {answer_type!r}")


def grade(response: str, reference: str, answer_type: str, choices=(), bare: bool = False) -> bool:
    """Whether a full response's final answer is correct.

    `bare=True` also accepts a response that is nothing but a one-line answer ("3"), as
    a model trained on short answers gives; by default a final answer must be marked.
    """
    answer = extract_answer(response)
    if answer is None and bare and response.strip() and "\n" not in response.strip():
        answer = response.strip()
    return answer is not None and answers_match(answer, reference, answer_type, choices)
