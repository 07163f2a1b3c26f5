"""MLflow runs of a pipeline: a parent run per pipeline run, a child run per stage, and a
LoggedModel per training checkpoint carrying that checkpoint's scores.

Everything is read back from what the stages wrote (their metrics files and dvc.lock), so a
stage DVC skipped is logged the same way as one that ran. Nothing here connects to a
server until called.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
import time
from pathlib import Path

from avar.config import Params, flatten
from avar.errors import UserError
from avar.scrub import scrub

log = logging.getLogger(__name__)
PARENT_ENV = "AVAR_PARENT_RUN_ID"
"""Environment variable naming the pipeline run a stage belongs to."""


REACH_TIMEOUT_S = 10


class TrackingUnreachable(UserError):
    """The MLflow server does not answer."""


def client(params: Params):
    """An MlflowClient on the tracking URI (MLFLOW_TRACKING_URI wins over params), after
    checking that a server URI answers within REACH_TIMEOUT_S (MLflow itself would retry
    for minutes before failing with a long traceback)."""
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
    if uri.startswith(("http://", "https://")):
        require_reachable(uri)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient()


def require_reachable(uri: str) -> None:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=REACH_TIMEOUT_S).close()
    except (urllib.error.URLError, OSError) as err:
        if isinstance(err, urllib.error.HTTPError) and err.code < 500:
            return  # it answers (a proxy or auth in front of /health): reachable
        reason = getattr(err, "reason", err)
        raise TrackingUnreachable(
            f"MLflow at {uri} does not answer ({reason}); the stage's numbers are kept on "
            "disk: start the server (`avar services up`) and run the stage again"
        ) from None


def experiment_id(mlflow_client, name: str) -> str:
    found = mlflow_client.get_experiment_by_name(name)
    return found.experiment_id if found else mlflow_client.create_experiment(name)


def git_sha(workspace: str | Path) -> str:
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=workspace, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def dvc_hashes(workspace: str | Path) -> dict[str, str]:
    """`avar.dvc.<out>` -> md5 of every data and model output recorded in dvc.lock."""
    import yaml

    lock = Path(workspace) / "dvc.lock"
    if not lock.is_file():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    tags = {
        f"avar.dvc.{out['path']}": out["md5"]
        for stage in stages.values()
        for out in stage.get("outs", [])
        if out["path"].startswith(("data/", "models/")) and "md5" in out
    }
    tags["avar.dvc.lock_sha256"] = hashlib.sha256(lock.read_bytes()).hexdigest()
    return tags


def start_pipeline(params: Params, workspace: str | Path, name: str | None = None) -> str:
    """The parent run: params.yaml flattened into params, the git SHA as a tag."""
    mlflow_client = client(params)
    run = mlflow_client.create_run(
        experiment_id(mlflow_client, params.tracking.experiment),
        run_name=name or time.strftime("pipeline-%Y%m%d-%H%M%S"),
        tags={"avar.kind": "pipeline", "avar.git_sha": git_sha(workspace)},
    )
    log_params(mlflow_client, run.info.run_id, flatten(params))
    return run.info.run_id


def finish_pipeline(params: Params, run_id: str, workspace: str | Path, ok: bool = True) -> None:
    """Tag the DVC hashes the run ended with, attach the plots, close the run."""
    mlflow_client = client(params)
    for key, value in dvc_hashes(workspace).items():
        mlflow_client.set_tag(run_id, key, value)
    plots = Path(workspace) / Path(params.vas.metrics).parent / "plots"
    for png in sorted(plots.glob("*.png")):
        mlflow_client.log_artifact(run_id, str(png), "plots")
    mlflow_client.set_terminated(run_id, "FINISHED" if ok else "FAILED")


def log_params(mlflow_client, run_id: str, flat: dict) -> None:
    from mlflow.entities import Param

    items = [Param(k, scrub(str(v))[:6000]) for k, v in flat.items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
        mlflow_client.log_batch(run_id, params=items[start : start + 100])


def numbers(row: dict, skip: tuple[str, ...] = ("step",)) -> dict[str, float]:
    """The finite numeric values of a flat row (MLflow metrics are floats)."""
    return {
        k: float(v)
        for k, v in row.items()
        if k not in skip
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


def child_run(mlflow_client, parent_id: str, name: str, tags: dict[str, str]):
    """A run nested under `parent_id`: its experiment, its git SHA, `tags` besides."""
    parent = mlflow_client.get_run(parent_id)
    return mlflow_client.create_run(
        parent.info.experiment_id,
        run_name=name,
        tags={
            "mlflow.parentRunId": parent_id,
            "avar.git_sha": parent.data.tags.get("avar.git_sha", "unknown"),
            **tags,
        },
    )


def log_stage(
    params: Params, stage, parent_id: str, workspace: str | Path, cached: bool = False
) -> str:
    """A child run of `parent_id` with the stage's params, metrics and metrics file.

    `stage` is the stage's declaration (avar.stages.Stage): its name, section, metrics
    file, how its rows are logged, whether it trains and whether it draws plots.
    """
    from mlflow.entities import Metric

    mlflow_client = client(params)
    workspace = Path(workspace)
    run = child_run(
        mlflow_client,
        parent_id,
        stage.name,
        {"avar.kind": "stage", "avar.stage": stage.name, "avar.cached": str(cached).lower()},
    )
    run_id = run.info.run_id
    section = getattr(params, stage.section)
    log_params(mlflow_client, run_id, flatten(section, stage.section))
    metrics_file = stage.metrics_file(params)
    path = workspace / metrics_file
    if metrics_file and path.is_file():
        report = json.loads(path.read_text())
        if "launch" in report:  # what ran it: engine, world size, nodes, devices
            log_params(mlflow_client, run_id, flatten(report["launch"], "launch"))
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, v, now, step or 0)
            for step, row in stage.rows(report)
            for k, v in numbers(row).items()
        ]
        for start in range(0, len(metrics), 1000):
            mlflow_client.log_batch(run_id, metrics=metrics[start : start + 1000])
        mlflow_client.log_artifact(run_id, str(path), "metrics")
        if stage.trains:
            log_checkpoints(mlflow_client, run, stage.name, section, report, workspace)
        if stage.plots:
            for png in sorted((path.parent / "plots").glob("*.png")):
                mlflow_client.log_artifact(run_id, str(png), "plots")
    mlflow_client.set_terminated(run_id, "FINISHED")
    return run_id


def log_checkpoints(mlflow_client, run, stage: str, section, report: dict, workspace: Path) -> None:
    """One LoggedModel per checkpoint row, its scores logged against it with the step;
    `avar.on_disk` says whether its folder is still there (`save_total_limit` prunes)."""
    from mlflow.entities import Metric

    rows = report.get("checkpoints", [])
    for row in rows:
        step = row["step"]
        final = row is rows[-1]
        path = section.out_dir if final else f"{section.checkpoint_dir}/checkpoint-{step}"
        model = mlflow_client.create_logged_model(
            experiment_id=run.info.experiment_id,
            name=f"{stage}-checkpoint-{step}",
            source_run_id=run.info.run_id,
            tags={
                "avar.stage": stage,
                "avar.step": str(step),
                "avar.final": str(final).lower(),
                "avar.path": path,
                "avar.on_disk": str(final or Path(workspace, path).is_dir()).lower(),
            },
            model_type="avar-checkpoint",
        )
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, v, now, step, model_id=model.model_id, run_id=run.info.run_id)
            for k, v in numbers(row).items()
        ]
        mlflow_client.log_batch(run.info.run_id, metrics=metrics)
        mlflow_client.finalize_logged_model(model.model_id, "READY")


def log_evaluation(params: Params, result, workspace: str | Path) -> str:
    """A run of its own for a re-evaluation: the scores of every model, the verdict as tags."""
    mlflow_client = client(params)
    run = mlflow_client.create_run(
        experiment_id(mlflow_client, params.tracking.experiment),
        run_name=time.strftime("reevaluate-%Y%m%d-%H%M%S"),
        tags={
            "avar.kind": "reevaluation",
            "avar.champion_version": result.version,
            "avar.regression": str(result.regressed).lower(),
            "avar.regressions": "; ".join(result.regressions)[:5000],
            "avar.git_sha": git_sha(workspace),
        },
    )
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{name}/{k}", v, now, 0)
        for name, report in result.reports.items()
        for k, v in numbers(report["metrics"]).items()
    ]
    mlflow_client.log_batch(run.info.run_id, metrics=metrics)
    mlflow_client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
