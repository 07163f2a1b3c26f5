"""`avar stage eval`: every stage's model on the benchmark suite of the `eval` section,
without and (when `eval.intervene` is set) with the training-free intervention.

Writes `eval.metrics`: per model its flat metrics (what `dvc metrics show` and MLflow read) and
per benchmark its numbers; the per-sample answers of each model go beside it, under
`eval/<stage>.json`.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from avar import ranks
from avar.config import Params
from avar.eval.run import EvalRequest, evaluate
from avar.io import atomic_dir, write_json
from avar.stages.vas import stage_models
from avar.summary import accuracy_cell


@dataclass
class EvalResult:
    out: str
    models: dict[str, dict]

    def line(self) -> str:
        shown = ", ".join(
            f"{stage} {bench} {accuracy_cell(result)} (n={result['n']})"
            for stage, row in self.models.items()
            for bench, result in row["benchmarks"].items()
        )
        return f"eval: {shown or 'no stage models'} -> {self.out}"


def summary(report: dict) -> dict:
    """A report without its per-sample rows."""
    return {
        "metrics": report["metrics"],
        "benchmarks": {
            name: {k: v for k, v in result.items() if k != "samples"}
            for name, result in report["benchmarks"].items()
        },
    }


def run(params: Params) -> EvalResult:
    from avar.models.loader import resolve_device

    cfg = params.eval
    models = stage_models(params)
    if not models:
        raise FileNotFoundError("no stage model to evaluate: run the training stages first")
    device = resolve_device(params.model.device)
    ranks.start(device)  # several ranks: each answers its share, all get every row
    out = Path(cfg.metrics)
    rows = {}
    # the per-sample answers appear whole, this run's only: a killed run leaves the last
    # complete folder, never a mix of two runs (rank 0 writes; every rank answers)
    folder = atomic_dir(out.parent / "eval") if ranks.is_main() else nullcontext(None)
    with folder as answers:
        for stage, model in models.items():
            request = EvalRequest(model, cfg.benches, cfg.data_dir, cfg.limit, "", cfg.vas)
            report = evaluate(request, params)
            if answers is not None:
                write_json(answers / f"{stage}.json", report)
            rows[stage] = summary(report)
            if cfg.intervene:
                request.intervene = cfg.intervene
                steered = evaluate(request, params)
                if answers is not None:
                    write_json(answers / f"{stage}-intervened.json", steered)
                rows[stage]["intervened"] = summary(steered)
        topology = ranks.topology(device)
    if ranks.is_main():
        report = {"benches": cfg.benches, "intervention": cfg.intervene, "models": rows}
        write_json(out, {**report, "launch": topology})
    return EvalResult(str(out), rows)
