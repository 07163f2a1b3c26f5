"""`avar stage prepare`: the embedded model and the synthetic raw sources (avar.prepare)."""

from __future__ import annotations

from dataclasses import dataclass

from avar.config import Params
from avar.prepare import run as prepare


@dataclass
class PrepareLine:
    model_dir: str
    datasets: dict[str, str]
    records: int

    def line(self) -> str:
        return (
            f"prepare: {self.records} records in {len(self.datasets)} sets, model {self.model_dir}"
        )


def run(params: Params) -> PrepareLine:
    result = prepare(params)
    return PrepareLine(result.model_dir, result.datasets, result.report.records)
