"""`avar stage study`: one study variant's model measured, what `avar study` compares.

The model of stage `study.model` answers the `study.bench` questions (greedy, the `eval`
section's preset and lengths) with the VAS of its answers, then again under each
intervention setting of `study.intervene`. Writes `study.metrics`, flat numbers that `dvc
exp show` lists per experiment, and beside it `study/grades.json`: each question's id and
grade per setting, the pairs F3's intervals are taken over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avar.config import Params
from avar.eval.measure import SUMMARY_KEYS
from avar.eval.run import EvalRequest, evaluate
from avar.io import atomic_dir, write_json
from avar.stages.common import stage_model
from avar.summary import accuracy_cell, vas_cell

HEADLINE = ("n", "accuracy", "accuracy_low", "accuracy_high", *SUMMARY_KEYS)
"""The numbers of one measurement, in the metrics file and on the MLflow variant run."""


@dataclass
class StudyResult:
    out: str
    model: str
    row: dict

    def line(self) -> str:
        steered = ", ".join(
            f"{spec}: {accuracy_cell(r)}" for spec, r in self.row["intervened"].items()
        )
        return (
            f"study: {self.model} {accuracy_cell(self.row)} (n={self.row['n']}), "
            f"VAS {vas_cell(self.row)}"
            + (f"; intervened {steered}" if steered else "")
            + f" -> {self.out}"
        )


def measured(report: dict, bench: str) -> tuple[dict, dict]:
    """(headline numbers, {"ids", "correct"}) of one evaluation on one benchmark."""
    result = report["benchmarks"][bench]
    samples = result["samples"]
    grades = {"ids": [s["id"] for s in samples], "correct": [int(s["correct"]) for s in samples]}
    return {k: result.get(k) for k in HEADLINE}, grades


def run(params: Params) -> StudyResult:
    cfg = params.study
    model = stage_model(params, cfg.model)
    request = EvalRequest(model, [cfg.bench], params.eval.data_dir, cfg.limit, "", vas=True)
    row, grades = measured(evaluate(request, params), cfg.bench)
    row["intervened"], grades["intervened"] = {}, {}
    for spec in cfg.intervene:
        steered = EvalRequest(model, [cfg.bench], params.eval.data_dir, cfg.limit, spec)
        numbers, steered_grades = measured(evaluate(steered, params), cfg.bench)
        if steered_grades["ids"] != grades["ids"]:
            raise RuntimeError(f"intervention {spec}: answered other questions than the model")
        row["intervened"][spec] = {k: numbers[k] for k in HEADLINE[:4]}
        grades["intervened"][spec] = steered_grades["correct"]
    out = Path(cfg.metrics)
    with atomic_dir(out.parent / "study") as folder:
        write_json(folder / "grades.json", {"model": cfg.model, "bench": cfg.bench, **grades})
    write_json(out, {"model": cfg.model, "bench": cfg.bench, **row})
    return StudyResult(str(out), cfg.model, row)
