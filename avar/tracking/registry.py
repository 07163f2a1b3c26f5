"""The MLflow model registry: register the final model as a new version of AVAR-Thinker and
move the alias (`champion`) to it only when it beats the version holding it."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from avar.config import Params
from avar.tracking.runs import PARENT_ENV, client, dvc_hashes, experiment_id, git_sha

log = logging.getLogger(__name__)
SCORE_TAG = "avar.score"
METRIC_TAG = "avar.metric"
DIGEST_TAG = "avar.model_sha256"
MODEL_ID_TAG = "avar.model_id"


@dataclass
class Registration:
    model_name: str
    version: str
    metric: str
    score: float
    champion_version: str | None
    champion_score: float | None
    promoted: bool
    model_id: str
    already: bool = False
    """This store held the model already: nothing was registered or moved."""

    def line(self) -> str:
        against = (
            "no champion yet"
            if self.champion_version is None
            else f"champion v{self.champion_version} {self.champion_score:.3f}"
        )
        verdict = "alias moved" if self.promoted else "alias stays"
        if self.already:
            verdict = "already registered, nothing changed"
        return (
            f"register: {self.model_name} v{self.version} {self.metric} {self.score:.3f} vs "
            f"{against}: {verdict}"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def champion(mlflow_client, name: str, alias: str):
    """The model version holding `alias`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def model_digest(model_dir: str | Path) -> str:
    """sha256 over the folder's files (names and bytes): which model a version holds. The
    upload reads every byte anyway."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model_dir)).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def registered(mlflow_client, name: str, digest: str, metric: str, score: float):
    """The version of `name` that already holds this model with this score on `metric`,
    or None."""
    from mlflow.exceptions import MlflowException

    try:
        versions = mlflow_client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    for version in versions:
        tags = version.tags
        same = (tags.get(DIGEST_TAG), tags.get(METRIC_TAG), tags.get(SCORE_TAG))
        if same == (digest, metric, repr(score)):
            return version
    return None


def fail_abandoned(mlflow_client, experiment: str, name: str, digest: str) -> list[str]:
    """Mark FAILED the uploads of this same model that a killed run left PENDING (one
    register runs at a time per workspace: the stage lock); returns their ids."""
    named = mlflow_client.search_logged_models(
        experiment_ids=[experiment], filter_string=f"name = '{name}'"
    )
    abandoned = [
        m.model_id for m in named if str(m.status) == "PENDING" and m.tags.get(DIGEST_TAG) == digest
    ]
    for model_id in abandoned:
        log.warning("marking %s FAILED: an upload a killed run left unfinished", model_id)
        mlflow_client.finalize_logged_model(model_id, "FAILED")
    return abandoned


def upload(mlflow_client, params: Params, model_dir: str | Path, tags: dict) -> str:
    """A READY LoggedModel holding `model_dir`; marked FAILED (not left PENDING) when the
    upload fails, and on the next run when a kill stopped it."""
    experiment = experiment_id(mlflow_client, params.tracking.experiment)
    fail_abandoned(mlflow_client, experiment, params.register.model_name, tags[DIGEST_TAG])
    model = mlflow_client.create_logged_model(
        experiment_id=experiment,
        name=params.register.model_name,
        source_run_id=os.environ.get(PARENT_ENV) or None,
        tags=tags,
        model_type="avar-model",
    )
    try:
        mlflow_client.log_model_artifacts(model.model_id, str(model_dir))
    except BaseException:
        mlflow_client.finalize_logged_model(model.model_id, "FAILED")
        raise
    mlflow_client.finalize_logged_model(model.model_id, "READY")
    return model.model_id


def register(
    params: Params, model_dir: str | Path, score: float, workspace: str | Path = "."
) -> Registration:
    """Upload `model_dir` as a LoggedModel, register it, move the alias if it wins.

    Idempotent: a model this store already holds (same files, same score on the same
    metric) is not registered again; its version is reported as it is."""
    cfg = params.register
    mlflow_client = client(params)
    digest = model_digest(model_dir)
    holder = champion(mlflow_client, cfg.model_name, cfg.alias)
    holder_score = float(holder.tags[SCORE_TAG]) if holder and SCORE_TAG in holder.tags else None
    existing = registered(mlflow_client, cfg.model_name, digest, cfg.metric, score)
    if existing is not None:
        log.info("%s v%s already holds this model", cfg.model_name, existing.version)
        version, model_id = str(existing.version), existing.tags.get(MODEL_ID_TAG, "")
        promoted = holder is not None and str(holder.version) == version
    else:
        tags = {
            "avar.stage": cfg.stage,
            "avar.git_sha": git_sha(workspace),
            DIGEST_TAG: digest,
            **dvc_hashes(workspace),
        }
        model_id = upload(mlflow_client, params, model_dir, tags)
        import mlflow

        registered_version = mlflow.register_model(
            f"models:/{model_id}",
            cfg.model_name,
            tags={SCORE_TAG: repr(score), METRIC_TAG: cfg.metric, MODEL_ID_TAG: model_id, **tags},
        )
        version = str(registered_version.version)
        promoted = holder is None or holder_score is None or score > holder_score
        if promoted:
            mlflow_client.set_registered_model_alias(cfg.model_name, cfg.alias, version)
    return Registration(
        cfg.model_name,
        version,
        cfg.metric,
        score,
        str(holder.version) if holder else None,
        holder_score,
        promoted,
        model_id,
        already=existing is not None,
    )


def download_alias(params: Params, alias: str | None = None) -> tuple[str, dict, Path]:
    """(version, tags, local folder) of the version holding `alias` (default: register.alias).

    The folder is a fresh temp directory; the caller removes it."""
    import mlflow

    cfg = params.register
    alias = alias or cfg.alias
    holder = champion(client(params), cfg.model_name, alias)
    if holder is None:
        raise FileNotFoundError(
            f"{cfg.model_name} has no version with alias {alias!r}: run the pipeline "
            "(its register stage) first"
        )
    folder = Path(tempfile.mkdtemp(prefix="avar-champion-"))
    mlflow.artifacts.download_artifacts(f"models:/{cfg.model_name}@{alias}", dst_path=str(folder))
    return str(holder.version), dict(holder.tags), folder
