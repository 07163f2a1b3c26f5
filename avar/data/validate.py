"""`avar data validate`: schema, images, answers and ids of JSONL datasets.

Every stage calls `require_valid` on its inputs before any training starts.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from avar.data.files import inside, open_image
from avar.data.schema import schema_problems


@dataclass
class Problem:
    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class Report:
    """What validation found: problems, and counts for the summary of clean files."""

    problems: list[Problem] = field(default_factory=list)
    records: int = 0
    images: int = 0
    by_category: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem_lines(self, limit: int = 20) -> list[str]:
        lines = [str(p) for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more problems")
        return lines


class InvalidDataError(ValueError):
    """Raised by `require_valid`; its message lists the problems with file:line."""


def validate_files(paths: Sequence[str | Path]) -> Report:
    """Validate JSONL files; ids must be unique across all of them."""
    report = Report()
    first_seen: dict[str, tuple[Path, int]] = {}
    for path in map(Path, paths):
        if not path.is_file():
            report.problems.append(Problem(path, 0, "file not found"))
            continue
        before = (report.records, len(report.problems))
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    report.problems.append(Problem(path, number, f"not UTF-8 text ({err.reason})"))
                    continue
                if line.strip():
                    _check_line(path, number, line, report, first_seen)
        if (report.records, len(report.problems)) == before:  # nothing in it at all
            report.problems.append(Problem(path, 0, "no records (an empty file)"))
    return report


def _check_line(path, number, line, report, first_seen) -> None:
    def fail(reason: str) -> None:
        report.problems.append(Problem(path, number, reason))

    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        fail(f"malformed JSON ({err.msg} at column {err.colno})")
        return
    problems = schema_problems(record)
    for reason in problems:
        fail(reason)
    if problems:
        return
    report.records += 1
    report.by_category[f"{record['kind']}/{record['category']}"] += 1
    if record["id"] in first_seen:
        seen_path, seen_line = first_seen[record["id"]]
        fail(f"duplicate id '{record['id']}' (first at {seen_path}:{seen_line})")
    else:
        first_seen[record["id"]] = (path, number)
    for image in record["images"]:
        problem = _image_problem(path.parent, image)
        if problem:
            fail(f"image '{image}': {problem}")
        else:
            report.images += 1


def _image_problem(root: Path, image: str) -> str | None:
    try:
        path = inside(root, image)
    except ValueError as err:
        return str(err)
    if not path.is_file():
        return f"not found at {path}"
    try:
        open_image(path)
    except Exception as err:  # PIL raises many types for corrupt files
        return f"does not decode ({type(err).__name__}: {err})"
    return None


def require_valid(paths: list[str | Path]) -> Report:
    """Validate, raising `InvalidDataError` listing the problems when there are any."""
    report = validate_files(paths)
    if not report.ok:
        lines = "\n".join(report.problem_lines())
        raise InvalidDataError(f"{len(report.problems)} problems in the input data:\n{lines}")
    return report
