"""Re-evaluation of the registered champion (and the base model) on the benchmark suite,
logged to MLflow as a run of its own; a regression is flagged when the champion scores more
than `reevaluate.tolerance` below its score at registration, or below the base model.

Run on a schedule by the Prefect deployment `avar/reevaluate`, or by hand with
`avar reevaluate`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from avar.config import Params
from avar.eval.run import EvalRequest, evaluate
from avar.io import write_json
from avar.stages.eval import summary

log = logging.getLogger(__name__)


@dataclass
class Reevaluation:
    version: str
    metric: str
    registered_score: float | None
    score: float | None
    base_score: float | None
    regressions: list[str] = field(default_factory=list)
    run_id: str = ""
    reports: dict = field(default_factory=dict)

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    def line(self) -> str:
        verdict = "; ".join(self.regressions) if self.regressed else "no regression"
        verdict = f"REGRESSION: {verdict}" if self.regressed else verdict
        return (
            f"reevaluate: champion v{self.version} {self.metric} {_fmt(self.score)} "
            f"(registered {_fmt(self.registered_score)}, base {_fmt(self.base_score)}): "
            f"{verdict}"
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def regressions(score, registered, base, tolerance: float) -> list[str]:
    """Why the champion's `score` is a regression (empty when it is not)."""
    found = []
    if score is None:
        return ["the champion has no score on this suite"]
    if registered is not None and score < registered - tolerance:
        found.append(f"{score:.3f} is more than {tolerance} below its registered {registered:.3f}")
    if base is not None and score < base:
        found.append(f"{score:.3f} is below the base model's {base:.3f}")
    return found


def reevaluate(params: Params, workspace: str | Path = ".") -> Reevaluation:
    from avar.tracking.registry import METRIC_TAG, SCORE_TAG, download_alias
    from avar.tracking.runs import log_evaluation

    cfg, metric = params.eval, params.register.metric
    version, tags, folder = download_alias(params)
    try:
        models = {"champion": str(folder)}
        base_dir = Path(workspace) / params.base.out_dir
        if (base_dir / "config.json").is_file():
            models["base"] = str(base_dir)
        else:
            log.warning(
                "no base model at %s: the champion is compared with its registration only", base_dir
            )
        reports = {
            name: summary(
                evaluate(
                    EvalRequest(path, cfg.benches, cfg.data_dir, cfg.limit, "", cfg.vas), params
                )
            )
            for name, path in models.items()
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if tags.get(METRIC_TAG, metric) != metric:
        log.warning("champion v%s was registered on %s, not %s", version, tags[METRIC_TAG], metric)
    registered = float(tags[SCORE_TAG]) if SCORE_TAG in tags else None
    score = reports["champion"]["metrics"].get(metric)
    base = reports["base"]["metrics"].get(metric) if "base" in reports else None
    result = Reevaluation(
        version,
        metric,
        registered,
        score,
        base,
        regressions(score, registered, base, params.reevaluate.tolerance),
        reports=reports,
    )
    result.run_id = log_evaluation(params, result, workspace)
    write_json(Path(workspace) / params.reevaluate.metrics, asdict(result))
    if result.regressed:
        log.warning("%s", result.line())
    return result
