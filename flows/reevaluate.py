"""Prefect flow `avar-reevaluate` (deployment `avar-reevaluate/champion`, on a cron
schedule in prefect.yaml): evaluate the registered champion and the base model on the
benchmark suite again, log the scores to MLflow, and fail the run on a regression so that
it shows red in the Prefect UI (and can trigger a notification automation)."""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow, get_run_logger

from avar.config import load_params
from avar.stages.reevaluate import reevaluate


class Regression(RuntimeError):
    """The champion scored worse than at registration, or worse than base."""


@flow(name="avar-reevaluate", log_prints=True)
def reevaluate_champion(workspace: str = ".", params_file: str = "params.yaml") -> dict:
    os.chdir(Path(workspace).resolve())  # params' relative paths mean the workspace
    params = load_params(params_file)
    result = reevaluate(params)
    get_run_logger().info("%s (MLflow run %s)", result.line(), result.run_id)
    if result.regressed:
        raise Regression(result.line())
    return {"mlflow_run_id": result.run_id, "version": result.version, "score": result.score}
