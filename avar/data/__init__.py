"""Datasets: the record schema, synthetic generators and validation."""

from avar.data.synth import read_jsonl, synthesize
from avar.data.validate import InvalidDataError, Report, require_valid, validate_files

__all__ = [
    "InvalidDataError",
    "Report",
    "read_jsonl",
    "require_valid",
    "synthesize",
    "validate_files",
]
