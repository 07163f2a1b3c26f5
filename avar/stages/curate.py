"""`avar stage curate`: the curated training and eval sets (avar.curate) and their report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avar.config import Params
from avar.curate import curate
from avar.models.loader import load_processor
from avar.models.tiny import PRESETS


@dataclass
class CurateResult:
    out_dir: str
    report: dict

    def line(self) -> str:
        sets = ", ".join(f"{k} {v}" for k, v in self.report["sets"].items())
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(self.report["dropped"].items()))
        return (
            f"curate: {sets} rows in {self.report['seconds']:.0f} s; dropped: "
            f"{dropped or 'none'} -> {self.out_dir}"
        )


def tokenizer_dir(params: Params) -> str:
    """The tokenizer response lengths are counted with: base's, else the starting model's."""
    if (Path(params.base.out_dir) / "tokenizer.json").is_file():
        return params.base.out_dir
    name = params.model.name_or_path
    return params.model.init_dir if name in PRESETS else name


def run(params: Params) -> CurateResult:
    tokenizer = load_processor(tokenizer_dir(params)).tokenizer
    return CurateResult(params.curate.out_dir, curate(params, tokenizer))
