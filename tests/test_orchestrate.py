"""How the flow runs a stage: the DVC command, the environment a stage sees, the GPU
container's settings, and a failing stage's error."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from avar.config import load_params
from avar.orchestrate import (
    StageFailed,
    container_spec,
    repro_command,
    run_local,
    stage_env,
)

ROOT = Path(__file__).resolve().parents[1]


def test_repro_command():
    assert repro_command("rl") == ["dvc", "repro", "--single-item", "rl"]
    assert repro_command("rl", force=True) == ["dvc", "repro", "--single-item", "--force", "rl"]


def test_stage_env_passes_only_what_is_set(monkeypatch):
    """MLflow's address and credentials and the teacher's key reach the stage's container;
    nothing else of the flow's environment does."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-123456")
    monkeypatch.setenv("TEACHER_KEY", "sk-123456")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("UNRELATED", "x")
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    params = load_params(ROOT / "params.yaml", ["curate.teacher.api_key_env=TEACHER_KEY"])
    env = stage_env(params, "run123")
    assert env == {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": "pw-123456",
        "TEACHER_KEY": "sk-123456",
        "AVAR_PARENT_RUN_ID": "run123",
        "TQDM_MININTERVAL": "10",
    }


def test_gpu_container_spec(tmp_path):
    params = load_params(
        ROOT / "params.yaml",
        ["orchestrate.backend=docker", "orchestrate.gpus=2", "orchestrate.shm_size=32g"],
    )
    os.chown(tmp_path, 1234, 5678)
    spec = container_spec(params, ["dvc", "repro", "rl"], tmp_path, {"A": "1"})
    (request,) = spec["device_requests"]
    assert request["Count"] == 2 and request["Capabilities"] == [["gpu"]]
    assert spec["shm_size"] == "32g" and spec["image"] == params.orchestrate.image
    assert spec["volumes"] == {str(tmp_path.resolve()): {"bind": "/workspace", "mode": "rw"}}
    assert spec["working_dir"] == "/workspace"
    assert spec["environment"] == {"HOME": "/tmp", "A": "1"}
    assert spec["user"] == "1234:5678"  # the workspace's owner
    every = container_spec(load_params(ROOT / "params.yaml"), ["x"], tmp_path, {})
    assert every["device_requests"][0]["Count"] == -1  # gpus: all
    cpu = load_params(ROOT / "params.yaml", ["orchestrate.gpus=none"])
    assert "device_requests" not in container_spec(cpu, ["x"], tmp_path, {})


def test_a_root_owned_workspace_is_refused_before_a_container_starts(tmp_path):
    os.chown(tmp_path, 0, 0)
    params = load_params(ROOT / "params.yaml", ["orchestrate.backend=docker"])
    with pytest.raises(StageFailed, match=r"workspace .* is owned by root .* chown it"):
        container_spec(params, ["x"], tmp_path, {})


def test_failed_stage_reports_its_output(tmp_path):
    script = "print('loading'); print('bad thing happened'); raise SystemExit(4)"
    with pytest.raises(StageFailed, match=r"exited 4:\n(.|\n)*bad thing happened"):
        run_local([sys.executable, "-c", script], tmp_path, {})
    assert run_local([sys.executable, "-c", "print('fine')"], tmp_path, {}) == "fine\n"
