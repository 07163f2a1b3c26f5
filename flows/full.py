"""Prefect flow `avar` (deployment `avar/full`): the whole pipeline, one task per stage.

Each task runs `dvc repro <stage>` (DVC skips what is up to date), one at a time since DVC
locks the repository, where `orchestrate.backend` says: a local subprocess or a GPU
container. An MLflow parent run spans the flow; each stage gets a child run with its
checkpoints' scores. Hyperparameters live in params.yaml only.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from avar.config import load_params
from avar.orchestrate import run_stage
from avar.stages import STAGES
from avar.summary import pipeline_markdown
from avar.tracking import runs


@task(name="stage", task_run_name="{stage}", log_prints=True)
def stage_task(
    stage: str, workspace: str, params_file: str, parent_run_id: str, force: bool
) -> bool:
    """One stage: reproduce it, then log it as a child run. Returns whether it ran."""
    params = load_params(Path(workspace) / params_file)
    result = run_stage(params, stage, workspace, parent_run_id, force, echo=print)
    runs.log_stage(params, STAGES[stage], parent_run_id, workspace, cached=not result.ran)
    get_run_logger().info("%s: %s", stage, "ran" if result.ran else "up to date (DVC cache)")
    return result.ran


@flow(name="avar", log_prints=True)
def avar(
    workspace: str = ".",
    params_file: str = "params.yaml",
    stages: list[str] | None = None,
    force: bool = False,
) -> dict:
    """Run the pipeline's stages in order (all by default) in `workspace`."""
    workspace = str(Path(workspace).resolve())
    os.chdir(workspace)  # params' relative paths (and a sqlite tracking URI) mean the workspace
    params = load_params(params_file)
    chosen = stages or list(STAGES)
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; expected names from {list(STAGES)}")
    retry = params.orchestrate
    stage = stage_task.with_options(retries=retry.retries, retry_delay_seconds=retry.retry_delay_s)
    parent = runs.start_pipeline(params, workspace)
    ran, ok = {}, False
    try:
        for name in STAGES:  # pipeline order, whatever order `stages` lists them in
            if name in chosen:
                ran[name] = stage(name, workspace, params_file, parent, force)
        ok = True
    finally:
        runs.finish_pipeline(params, parent, workspace, ok)
    if Path(params.vas.metrics).is_file():  # a run of early stages only has no results yet
        create_markdown_artifact(
            pipeline_markdown(params),
            key="avar-results",
            description="VAS and accuracy per checkpoint",
        )
    return {"mlflow_run_id": parent, "ran": ran}
