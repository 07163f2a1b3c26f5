"""The record schema shared by every avar dataset (documented in the README).

One JSON object per line of `data.jsonl`; image paths are relative to that file's folder.
"""

from __future__ import annotations

from avar.grading import parse_number

KINDS = ("visual", "text")
ANSWER_TYPES = ("number", "choice", "text")
DIFFICULTIES = ("easy", "medium", "hard")

# field -> (allowed JSON types, required)
FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": ((str,), True),
    "kind": ((str,), True),
    "source": ((str,), True),
    "question": ((str,), True),
    "answer": ((str,), True),
    "answer_type": ((str,), True),
    "choices": ((list,), True),
    "images": ((list,), True),
    "category": ((str,), True),
    "difficulty": ((str,), True),
    "solution": ((list,), True),
    "scene": ((dict, type(None)), False),
    "system": ((str,), False),
    "response": ((str,), False),
}

ENUMS = {"kind": KINDS, "answer_type": ANSWER_TYPES, "difficulty": DIFFICULTIES}


def schema_problems(record: object) -> list[str]:
    """Every way `record` breaks the schema (not counting its images), as short reasons."""
    if not isinstance(record, dict):
        return [f"expected a JSON object, got {type(record).__name__}"]
    problems = []
    for name, (types, required) in FIELDS.items():
        if name not in record:
            if required:
                problems.append(f"missing field '{name}'")
            continue
        if not isinstance(record[name], types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            problems.append(f"field '{name}' must be {names}, got {record[name]!r:.40}")
    problems += [f"unknown field '{k}'" for k in record if k not in FIELDS]
    if problems:
        return problems
    for name, allowed in ENUMS.items():
        if record[name] not in allowed:
            problems.append(f"field '{name}' must be one of {list(allowed)}, got {record[name]!r}")
    for name in ("question", "response", "system"):
        if len(record.get(name) or "") > MAX_TEXT_CHARS:
            problems.append(f"field '{name}' is longer than {MAX_TEXT_CHARS:,} characters")
    if sum(map(len, record["solution"])) > MAX_TEXT_CHARS:
        problems.append(f"field 'solution' is longer than {MAX_TEXT_CHARS:,} characters")
    if not record["id"].strip():
        problems.append("empty id")
    if not record["question"].strip():
        problems.append("empty question")
    if not record["answer"].strip():
        problems.append("empty answer")
    if record["answer_type"] == "choice" and not record["choices"]:
        problems.append("answer_type 'choice' needs a non-empty 'choices' list")
    if record["kind"] == "visual" and not record["images"]:
        problems.append("kind 'visual' needs at least one image")
    for key in ("choices", "images", "solution"):
        if not all(isinstance(v, str) for v in record[key]):
            problems.append(f"field '{key}' must be a list of strings")
    return problems


MAX_TEXT_CHARS = 100_000
"""Longest question, response, system prompt or solution a record may carry (characters)."""
OPTION_LETTERS = "ABCDEFGHIJKLMNOP"
"""The letters of multiple-choice options, in order."""


def choice_question(stem: str, options: list[str]) -> str:
    """A multiple-choice prompt: the stem, one `A. option` line each, the instruction."""
    lines = [stem.strip()] + [f"{OPTION_LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join(lines) + "\nAnswer with the option's letter."


def infer_answer_type(answer: object, choices=()) -> str:
    """`choice` with options, `number` for a plain number ("3", "-3", "1,234", "45%"),
    else `text`: how a record's answer is graded."""
    if choices:
        return "choice"
    return "number" if parse_number(str(answer)) is not None else "text"


def question_fields(question: str, answer: object, solution: list[str], choices=()) -> dict:
    """The question part of a record; a record with choices is graded by option letter."""
    return {
        "question": question,
        "answer": str(answer),
        "answer_type": infer_answer_type(answer, choices),
        "choices": list(choices),
        "solution": solution,
    }
