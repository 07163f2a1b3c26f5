"""Prefect flow `avar-study` (deployment `avar-study/ablations`): `avar study` as a flow.

The grid of the `study` section runs as DVC experiments in the workspace, round by round;
every finished experiment is logged to MLflow as it lands; the findings end up in
reports/study.md, on the MLflow study run and as this flow run's Markdown artifact.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from avar.study.run import run_study


@flow(name="avar-study", log_prints=True)
def study(
    workspace: str = ".",
    params_file: str = "params.yaml",
    quick: bool = False,
    jobs: int = 0,
    overrides: list[str] | None = None,
) -> dict:
    """The study grid (`quick`: the small one) in `workspace`; returns the verdicts."""
    workspace = str(Path(workspace).resolve())
    os.chdir(workspace)  # params' relative paths (and a sqlite tracking URI) mean the workspace
    outcome = run_study(
        Path(workspace), Path(params_file), overrides or [], quick, jobs or None, echo=print
    )  # print, looked up here, is the one Prefect sends to the flow run's log
    for line in outcome.lines():
        print(line)
    create_markdown_artifact(outcome.text, key="avar-study", description="The paper's findings")
    return {"mlflow_run_id": outcome.run_id, **{f.key: f.verdict for f in outcome.findings}}
