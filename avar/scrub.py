"""Secrets never leave in what avar writes: every log line, MLflow param and tag, report and
error message goes through `scrub`, which replaces the value of each secret environment
variable with `***`.

Secret variables: the known ones (S3, MLflow, Prefect, Hugging Face, OpenAI-style keys, the
database password) and any whose name ends in _KEY, _TOKEN, _SECRET or _PASSWORD, such as
the variable `curate.teacher.api_key_env` names.
"""

from __future__ import annotations

import logging
import os

KNOWN = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "PREFECT_API_KEY",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_SERVER_API_AUTH_STRING",
    "HF_TOKEN",
    "OPENAI_API_KEY",
    "AVAR_DB_PASSWORD",
)
SUFFIXES = ("_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
SHORTEST = 6  # shorter values ("1", "true") would blank out ordinary text
MASK = "***"


def secret_values() -> list[str]:
    """The values of the secret variables set now, longest first."""
    names = [n for n in os.environ if n in KNOWN or n.upper().endswith(SUFFIXES)]
    values = {os.environ[n] for n in names if len(os.environ[n]) >= SHORTEST}
    return sorted(values, key=len, reverse=True)


def scrub(text: str) -> str:
    """`text` with every secret value replaced by ***."""
    for value in secret_values():
        text = text.replace(value, MASK)
    return text


class ScrubFilter(logging.Filter):
    """A logging filter that scrubs each record's message (arguments formatted in)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
