"""MLflow tracking on a real local store (SQLite + file artifacts): stage runs nest under the
pipeline run with every checkpoint's numbers at its step, a LoggedModel per checkpoint, and
the registry moves `champion` only to a version that beats it."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from ports import free_port

from avar.config import load_params
from avar.stages import STAGES
from avar.stages.reevaluate import regressions
from avar.tracking import registry, runs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def params(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return load_params(ROOT / "params.yaml", [f"tracking.uri=sqlite:///{tmp_path}/mlruns.db"])


def model_dir(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"name": name}))
    return folder


def test_champion_moves_only_on_a_win(params, tmp_path):
    first = registry.register(params, model_dir(tmp_path, "a"), 0.30, tmp_path)
    worse = registry.register(params, model_dir(tmp_path, "b"), 0.25, tmp_path)
    tie = registry.register(params, model_dir(tmp_path, "c"), 0.30, tmp_path)
    better = registry.register(params, model_dir(tmp_path, "d"), 0.40, tmp_path)
    assert [r.version for r in (first, worse, tie, better)] == ["1", "2", "3", "4"]
    assert [r.promoted for r in (first, worse, tie, better)] == [True, False, False, True]
    assert worse.champion_version == "1" and worse.champion_score == 0.30
    version, tags, folder = registry.download_alias(params)
    assert version == "4" and float(tags[registry.SCORE_TAG]) == 0.40
    assert json.loads((folder / "config.json").read_text()) == {"name": "d"}


def test_stage_run_nests_under_the_pipeline_with_checkpoint_models(params, tmp_path):
    rows = [
        {"step": 2, "heldout/accuracy": 0.25, "heldout/vas": 3.0, "train/loss": 1.5},
        {"step": 4, "heldout/accuracy": 0.5, "heldout/vas": None, "train/loss": 1.0},
    ]
    history = [{"step": 1, "loss": 2.0}, {"step": 3, "loss": 1.2}]
    metrics = tmp_path / params.sft_mm.metrics
    metrics.parent.mkdir(parents=True)
    launch = {"engine": "torchrun", "world_size": 2, "nodes": 1, "devices": ["cuda:0", "cuda:1"]}
    report = {"stage": "sft_mm", "checkpoints": rows, "history": history, "launch": launch}
    metrics.write_text(json.dumps(report))
    parent = runs.start_pipeline(params, tmp_path)
    child = runs.log_stage(params, STAGES["sft_mm"], parent, tmp_path, cached=True)
    client = mlflow.MlflowClient()
    run = client.get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["avar.cached"] == "true"
    assert run.data.params["sft_mm.alpha"] == str(params.sft_mm.alpha)
    accuracy = client.get_metric_history(child, "heldout/accuracy")
    assert [(m.step, m.value) for m in accuracy] == [(2, 0.25), (4, 0.5)]
    assert [m.step for m in client.get_metric_history(child, "heldout/vas")] == [2]  # None: none
    loss = sorted((m.step, m.value) for m in client.get_metric_history(child, "train/loss"))
    assert loss == [(1, 2.0), (2, 1.5), (3, 1.2), (4, 1.0)]  # history and checkpoint rows
    models = client.search_logged_models([run.info.experiment_id])
    by_name = {m.name: m for m in models}
    assert set(by_name) == {"sft_mm-checkpoint-2", "sft_mm-checkpoint-4"}
    final = by_name["sft_mm-checkpoint-4"]
    assert final.tags["avar.final"] == "true" and final.tags["avar.path"] == "models/sft_mm"
    pruned = by_name["sft_mm-checkpoint-2"].tags  # no checkpoint folder in tmp_path
    assert pruned["avar.path"].endswith("checkpoint-2") and pruned["avar.on_disk"] == "false"
    assert run.data.params["launch.world_size"] == "2"
    assert run.data.params["launch.devices"] == "cuda:0,cuda:1"
    assert {m.key: m.value for m in final.metrics} == {"heldout/accuracy": 0.5, "train/loss": 1.0}
    assert client.get_run(parent).data.params["rl.lambda_visual"] == str(params.rl.lambda_visual)


def test_dvc_hashes_come_from_dvc_lock(tmp_path):
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  curate:\n    cmd: avar stage curate\n    outs:\n"
        "    - path: data/curated\n      md5: abc.dir\n    - path: metrics/x.json\n      md5: d\n"
    )
    tags = runs.dvc_hashes(tmp_path)
    assert tags["avar.dvc.data/curated"] == "abc.dir"
    assert "avar.dvc.metrics/x.json" not in tags and len(tags["avar.dvc.lock_sha256"]) == 64


def test_regressions_by_hand():
    assert regressions(0.50, 0.50, 0.20, 0.02) == []
    assert regressions(0.49, 0.50, 0.20, 0.02) == []  # within tolerance
    assert len(regressions(0.47, 0.50, 0.20, 0.02)) == 1  # 0.03 below registration
    assert len(regressions(0.47, 0.50, 0.48, 0.02)) == 2  # and below base
    assert regressions(None, 0.5, None, 0.02) == ["the champion has no score on this suite"]


def test_registering_the_same_model_twice_changes_nothing(params, tmp_path):
    """`dvc repro` always runs register (a new or emptied store must not be skipped); the
    same files with the same score on the same metric are reported, not registered again."""
    first = registry.register(params, model_dir(tmp_path, "a"), 0.30, tmp_path)
    again = registry.register(params, tmp_path / "a", 0.30, tmp_path)
    assert (first.version, first.already) == ("1", False)
    assert (again.version, again.already, again.promoted) == ("1", True, True)
    assert "already registered, nothing changed" in again.line()
    (tmp_path / "a/config.json").write_text('{"name": "a2"}')  # other weights: a new version
    changed = registry.register(params, tmp_path / "a", 0.35, tmp_path)
    assert (changed.version, changed.already, changed.promoted) == ("2", False, True)
    versions = runs.client(params).search_model_versions("name='AVAR-Thinker'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]


def test_a_failed_upload_leaves_no_pending_model(params, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    def broken(self, model_id, local_dir):
        raise OSError("connection reset")

    monkeypatch.setattr(MlflowClient, "log_model_artifacts", broken)
    with pytest.raises(OSError, match="connection reset"):
        registry.register(params, model_dir(tmp_path, "a"), 0.30, tmp_path)
    mlflow_client = runs.client(params)
    experiment = runs.experiment_id(mlflow_client, params.tracking.experiment)
    models = mlflow_client.search_logged_models(experiment_ids=[experiment])
    assert [str(m.status) for m in models] == ["FAILED"]


def test_an_unreachable_server_fails_fast_with_one_line(params, monkeypatch):
    import time

    port = free_port()  # nothing listens on it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(runs.TrackingUnreachable, match=f"MLflow at http://127.0.0.1:{port} does"):
        runs.client(params)
    assert time.monotonic() - start < runs.REACH_TIMEOUT_S + 5


def test_an_upload_a_kill_left_pending_is_failed_by_the_next_register(params, tmp_path):
    """A SIGKILL mid-upload leaves a PENDING LoggedModel (no code runs to finish it); the
    next register of the same model marks it FAILED and registers one READY version."""
    folder = model_dir(tmp_path, "a")
    mlflow_client = runs.client(params)
    experiment = runs.experiment_id(mlflow_client, params.tracking.experiment)
    left = mlflow_client.create_logged_model(
        experiment_id=experiment,
        name="AVAR-Thinker",
        tags={registry.DIGEST_TAG: registry.model_digest(folder)},
    )
    other = mlflow_client.create_logged_model(  # another model's upload: not ours to touch
        experiment_id=experiment, name="AVAR-Thinker", tags={registry.DIGEST_TAG: "0" * 64}
    )
    done = registry.register(params, folder, 0.3, tmp_path)
    assert done.version == "1" and not done.already
    status = {m.model_id: str(m.status) for m in mlflow_client.search_logged_models([experiment])}
    assert status[left.model_id] == "FAILED" and status[other.model_id] == "PENDING"
    assert status[done.model_id] == "READY"
