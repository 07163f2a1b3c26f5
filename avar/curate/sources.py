"""Raw sources -> candidate records: avar records (the synthetic generators' JSONL) or rows
of a real dataset in JSONL or parquet with at least `question` and `answer`.

Every candidate carries its images as bytes (from files beside the JSONL, or parquet image
structs) so that deduplication and the leakage check can hash them, and the curated sets
can write them out under new names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from avar.config.schema import SourceConfig
from avar.data.files import BenchmarkDataError, inside, read_rows
from avar.data.schema import choice_question, infer_answer_type, schema_problems
from avar.grading import normalize_text


@dataclass
class Candidate:
    """One row of a source on its way to a curated set."""

    source: str
    where: str  # file:row, for the report
    record: dict
    images: list[bytes] = field(default_factory=list)

    def image_hashes(self) -> list[str]:
        return [hashlib.sha256(data).hexdigest() for data in self.images]

    def key(self) -> tuple[str, tuple[str, ...]]:
        """Duplicate key: the normalised question and the hashes of its images."""
        return normalize_text(self.record["question"]), tuple(self.image_hashes())


def _image_bytes(value, root: Path) -> bytes:
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str) and inside(root, value).is_file():
        return inside(root, value).read_bytes()
    raise ValueError(f"image {str(value)[:80]!r} not found under {root}")


def to_record(row: dict, source: str, number: int, n_images: int) -> dict:
    """A row with at least question and answer -> an avar record (defaults filled in)."""
    choices = [str(c) for c in row.get("choices") or []]
    answer = str(row.get("answer", "")).strip()
    question = str(row.get("question", ""))
    if choices and "\nA. " not in question:  # the options belong in the prompt
        question = choice_question(question, choices)
    answer_type = row.get("answer_type") or infer_answer_type(answer, choices)
    record = {
        "id": str(row.get("id") or f"{source}-{number:06d}"),
        "kind": row.get("kind") or ("visual" if n_images else "text"),
        "source": row.get("source") or source,
        "question": question,
        "answer": answer,
        "answer_type": answer_type,
        "choices": choices,
        "images": [f"images/{i}.png" for i in range(n_images)],  # renamed when written
        "category": str(row.get("category") or "all"),
        "difficulty": row.get("difficulty") or "medium",
        "solution": list(row.get("solution") or []),
    }
    for optional in ("scene", "system", "response"):
        if row.get(optional) is not None:
            record[optional] = row[optional]
    return record


def read_source(cfg: SourceConfig, drop) -> list[Candidate]:
    """The candidates of one source. Rows that cannot become a valid record go to
    `drop(reason, where, detail)` instead of failing the whole source."""
    path = Path(cfg.path)
    if not path.is_file():
        raise FileNotFoundError(f"curate source {cfg.name!r}: {path} not found")
    candidates = []
    try:
        rows = list(read_rows(path))
    except BenchmarkDataError as err:
        raise ValueError(f"curate source {cfg.name!r}: {err}") from None
    for number, row in rows:
        where = f"{path}:{number}"
        missing = [c for c in cfg.columns.values() if c not in row]
        if missing:
            drop("invalid", where, f"missing column {missing[0]!r} (has {sorted(row)})")
            continue
        row = {**row, **{name: row[column] for name, column in cfg.columns.items()}}
        values = row.get("images")
        if values is None and row.get("image") is not None:
            values = [row["image"]]
        try:
            images = [_image_bytes(v, path.parent) for v in values or []]
        except ValueError as err:
            drop("invalid", where, str(err))
            continue
        record = to_record(row, cfg.name, number, len(images))
        problems = schema_problems(record)
        if problems:
            drop("invalid", where, "; ".join(problems))
            continue
        candidates.append(Candidate(cfg.name, where, record, images))
    return candidates
