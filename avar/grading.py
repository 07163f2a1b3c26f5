"""Answer extraction and grading, shared by the rewards and the evaluation harness.

Extraction: the last `<answer>...</answer>`, else the last `\\boxed{...}`, else the text
after the last "answer is" / "Answer:", else a response that is one bare line ("3", "B").
Grading by answer type: choice letters (from "(B)", "B. 45 degrees", the option's text,
or the one option letter left once "not X" is set aside; "a triangle" is the article,
not option A), numbers with a relative tolerance ("1,500" has a thousands separator,
"1,5" is no number), and free-form answers by normalised text, its first clause ("Yes,
it is." answers "Yes") or mathematical equivalence (math-verify). RL's reward and the
evaluation harness grade by this one rule.
"""

from __future__ import annotations

import logging
import math
import re
import string
import threading

from math_verify import parse, verify

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
ANSWER_LEAD = re.compile(r"(?:final answer|answer)\s*(?:is\s*:?|:)\s*", re.IGNORECASE)
CHOICE_LETTER = re.compile(r"^\(?([A-Za-z])\)?(?:([.):])|\s|$)")
OPTION_LETTER = re.compile(r"(\b(?i:not|nor)\s+)?\(?\b([A-Z])\b\)?")
NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
THOUSANDS = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d*)?$")
CLAUSE_END = re.compile(r"[,;.!?]")
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
    leads = list(ANSWER_LEAD.finditer(text))
    if leads:
        phrase = text[leads[-1].end() :].split("\n")[0].strip().rstrip(".").strip()
        if phrase:
            return phrase
    return None


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(word for word in text.split() if word not in ("a", "an", "the"))


def _option_of_text(text: str, choices: list[str]) -> str | None:
    for index, choice in enumerate(choices):
        if normalize_text(text) == normalize_text(choice):
            return chr(ord("A") + index)
    return None


def _is_option(letter: str, choices: list[str]) -> bool:
    return not choices or ord(letter) - ord("A") < len(choices)


def extract_choice(answer: str, choices: list[str]) -> str | None:
    """The option letter an answer picks, by the first rule that applies:
    a marked leading letter ("B", "(c) square", "B. 45 degrees"); an option's exact text;
    an unmarked leading word ("A triangle", "a triangle"): the option it names, else an
    upper-case letter (lower case is the article); the one option letter left once those
    after "not" or "nor" are set aside ("not C, it is D")."""
    answer = answer.strip()
    match = CHOICE_LETTER.match(answer)
    letter, rest, marked = "", "", False
    if match:
        letter, rest = match.group(1).upper(), answer[match.end() :].strip()
        marked = bool(match.group(2)) or ")" in match.group(0) or not rest
        if marked and _is_option(letter, choices):
            return letter
    picked = _option_of_text(answer, choices)
    if picked:
        return picked
    if match and not marked:
        picked = _option_of_text(rest, choices)
        if picked or (match.group(1).isupper() and _is_option(letter, choices)):
            return picked or letter
    letters = [(bool(m.group(1)), m.group(2)) for m in OPTION_LETTER.finditer(answer)]
    negated = {letter for is_negated, letter in letters if is_negated}
    named = {
        letter
        for is_negated, letter in letters
        if not is_negated and letter not in negated and _is_option(letter, choices)
    }
    return named.pop() if negated and len(named) == 1 else None


def parse_number(text: str) -> float | None:
    """A plain number ("1,234", "-3.5", "45%", "$12"), else None ("1,5": a comma is a
    thousands separator only before three digits)."""
    cleaned = text.strip().removeprefix("$").removesuffix("%").strip()
    if "," in cleaned:
        if not THOUSANDS.match(cleaned):
            return None
        cleaned = cleaned.replace(",", "")
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
        gold = normalize_text(reference)
        first_clause = CLAUSE_END.split(answer.strip(), maxsplit=1)[0]
        same = gold in (normalize_text(answer), normalize_text(first_clause))
        return same or math_equal(answer, reference)
    raise ValueError(f"answer_type must be choice, number or text, got {answer_type!r}")


def grade(response: str, reference: str, answer_type: str, choices=()) -> bool:
    """Whether a full response's final answer is correct (a bare one-line response, "3",
    is its own final answer, as a model trained on short answers gives)."""
    answer = extract_answer(response)
    if answer is None and response.strip() and "\n" not in response.strip():
        answer = response.strip()
    return answer is not None and answers_match(answer, reference, answer_type, choices)
