"""The record schema shared by every avar dataset (documented in the README).

One JSON object per line of `data.jsonl`; image paths are relative to that file's folder.
"""

from __future__ import annotations

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


def question_fields(question: str, answer: object, solution: list[str], choices=()) -> dict:
    """The question part of a record; a record with choices is graded by option letter."""
    if choices:
        answer_type = "choice"
    elif isinstance(answer, int):
        answer_type = "number"
    else:
        answer_type = "text"
    return {
        "question": question,
        "answer": str(answer),
        "answer_type": answer_type,
        "choices": list(choices),
        "solution": solution,
    }
