"""The study in MLflow: one study run; under it a child run per DVC experiment with its
variant, seed, overrides and measurement; under each child, a run per trained stage with
every checkpoint's scores (LoggedModels), logged as the pipeline logs them."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric

from avar.config import Params, flatten, load_params
from avar.stages.registry import STAGES, study_rows
from avar.study.experiments import Finished
from avar.study.findings import Finding
from avar.study.report import flat
from avar.tracking.runs import (
    child_run,
    client,
    experiment_id,
    git_sha,
    log_params,
    log_stage,
    numbers,
)


def start(params: Params, workspace: Path, grid: str, stamp: str) -> str:
    mlflow_client = client(params)
    run = mlflow_client.create_run(
        experiment_id(mlflow_client, params.tracking.experiment),
        run_name=f"study-{stamp}",
        tags={"avar.kind": "study", "avar.grid": grid, "avar.git_sha": git_sha(workspace)},
    )
    log_params(mlflow_client, run.info.run_id, flatten(params.study, "study"))
    return run.info.run_id


def log_metrics(mlflow_client, run_id: str, values: dict[str, float]) -> None:
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in numbers(values).items()]
    for begin in range(0, len(metrics), 1000):
        mlflow_client.log_batch(run_id, metrics=metrics[begin : begin + 1000])


def log_experiment(params: Params, study_id: str, finished: Finished) -> str:
    """The experiment's child run, and its trained stages' runs under it."""
    mlflow_client = client(params)
    experiment = finished.experiment
    seed = str(experiment.seed if experiment.seed is not None else "none")
    tags = {"avar.kind": "study-variant", "avar.variant": experiment.variant, "avar.seed": seed}
    tags |= {"avar.dvc_experiment": experiment.name, "avar.dvc_rev": finished.rev}
    run = child_run(mlflow_client, study_id, experiment.name, tags)
    run_id = run.info.run_id
    given = dict(item.split("=", 1) for item in experiment.overrides)
    log_params(
        mlflow_client,
        run_id,
        {
            "variant": experiment.variant,
            "seed": str(experiment.seed),
            "stages": ",".join(("base", *experiment.chain)),
            **given,
        },
    )
    ((_, row),) = study_rows(finished.measurement)
    log_metrics(mlflow_client, run_id, {**row, "seconds": finished.seconds})
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "params.yaml").write_text(finished.params)
        ran = load_params(folder / "params.yaml")
        for stage, report in finished.stages.items():
            path = folder / STAGES[stage].metrics_file(ran)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report))
            log_stage(ran, STAGES[stage], run_id, folder)
    mlflow_client.set_terminated(run_id, "FINISHED")
    return run_id


def finish(
    params: Params, study_id: str, found: list[Finding], files: list[Path], ok: bool
) -> None:
    mlflow_client = client(params)
    for finding in found:
        mlflow_client.set_tag(study_id, f"avar.{finding.key}", finding.verdict)
    log_metrics(mlflow_client, study_id, flat(found))
    for path in files:
        mlflow_client.log_artifact(
            study_id, str(path), "report" if path.suffix == ".md" else "report/study"
        )
    mlflow_client.set_terminated(study_id, "FINISHED" if ok else "FAILED")
