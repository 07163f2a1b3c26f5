"""The whole tiny pipeline through the real servers, on loopback: a Prefect server and a
process worker, an MLflow server whose artifacts go to S3 (a moto server), DVC with an S3
remote on the same moto server. The deployment avar/full runs every stage; MLflow then
holds the parent and stage runs, every checkpoint's scores and AVAR-Thinker@champion; a
second `dvc repro` has nothing to do; the re-evaluation deployment logs a new run; the
MLflow UI, opened in headless Chromium, shows the runs and the registered model."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
import mlflow
import pytest
from ports import free_port
from stage_runs import changed, weights
from workspace import copy_project

from avar.services import Stack, down, up
from avar.stages import STAGES

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
STAGE_RUNS = {
    "prepare",
    "base",
    "curate",
    "coldstart_text",
    "sft_mm",
    "rl",
    "vas",
    "eval",
    "study",
    "register",
}
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on loopback with the two buckets; its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "MLFLOW_S3_ENDPOINT_URL"]}
    os.environ.update({**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": endpoint})
    client = boto3.client("s3", endpoint_url=endpoint)
    for bucket in ("avar-mlflow", "avar-dvc"):
        client.create_bucket(Bucket=bucket)
    yield endpoint
    server.stop()
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture(scope="module")
def stack(s3, tmp_path_factory):
    # sft_mm and rl train on 2 ranks (torchrun, gloo), started by `avar stage` under DVC
    two_ranks = {"nproc_per_node": 2}
    workspace = copy_project(
        tmp_path_factory.mktemp("workspace"),
        {"launch": {"stages": {"sft_mm": two_ranks, "rl": two_ranks}}},
    )
    stack = Stack(workspace, free_port(), free_port())
    up(stack, artifacts="s3://avar-mlflow/artifacts")
    yield stack
    down(stack)


def run_deployment(stack: Stack, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", name, "--watch"],
        cwd=stack.root,
        env={**os.environ, **stack.env()},
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def pipeline(stack):
    # `avar run` (what `make run` calls) starts the deployment and follows it here
    done = subprocess.run(
        [str(BIN / "avar"), "run", "avar/full", "--every", "5"],
        cwd=stack.root,
        env={**os.environ, **stack.env()},
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = (stack.state / "logs" / "prefect-worker.log").read_text()
    assert done.returncode == 0, done.stdout + done.stderr + log[-5000:]
    followed = done.stdout
    assert "HTTP Request" not in done.stderr  # the terminal shows the stages, not the polling
    assert followed.rstrip().endswith("avar/full: Completed"), followed[-3000:]
    for number, stage in enumerate(STAGES, start=1):  # each stage: start, summary line, end
        assert f"▶ {stage} ({number}/{len(STAGES)})" in followed, followed[-3000:]
        assert f"✓ {stage} completed in " in followed
    # each stage's one-line summary, from one process or (sft_mm) the launcher of two ranks
    for stage in ("coldstart_text", "sft_mm"):
        assert re.search(rf"\n  {stage} +{stage}: \d+ steps in ", followed), followed
    assert re.search(r"\n  base +.*\d+%\|", followed)  # a progress bar, thinned
    mlflow.set_tracking_uri(stack.mlflow_uri)
    return mlflow.MlflowClient()


def test_mlflow_holds_the_pipeline_stages_checkpoints_and_champion(pipeline, stack, s3):
    experiment = pipeline.get_experiment_by_name("avar")
    (parent,) = pipeline.search_runs([experiment.experiment_id], "tags.`avar.kind` = 'pipeline'")
    assert parent.info.status == "FINISHED"
    assert parent.data.params["rl.group_size"] == "2"  # the workspace's params.yaml
    assert parent.data.tags["avar.git_sha"] != "unknown"
    assert parent.data.tags["avar.dvc.data/curated"].endswith(".dir")
    children = pipeline.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_stage = {run.data.tags["avar.stage"]: run for run in children}
    assert set(by_stage) == STAGE_RUNS
    rl = by_stage["rl"].info.run_id
    for name in ("sft_mm", "rl"):  # two ranks trained these, the others ran as one process
        assert by_stage[name].data.params["launch.world_size"] == "2"
        assert by_stage[name].data.params["launch.engine"] == "torchrun"
    assert by_stage["coldstart_text"].data.params["launch.world_size"] == "1"
    assert [m.step for m in pipeline.get_metric_history(rl, "heldout/accuracy")] == [1, 2]
    plots = pipeline.list_artifacts(by_stage["vas"].info.run_id, "plots")
    assert [a.path for a in plots] == ["plots/vas.png"]
    models = {m.name for m in pipeline.search_logged_models([experiment.experiment_id])}
    assert {
        "base-checkpoint-2",
        "base-checkpoint-3",
        "rl-checkpoint-1",
        "rl-checkpoint-2",
        "AVAR-Thinker",
    } <= models
    champion = pipeline.get_model_version_by_alias("AVAR-Thinker", "champion")
    assert champion.version == "1" and champion.tags["avar.stage"] == "rl"
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3)
        .list_objects_v2(Bucket="avar-mlflow")
        .get("Contents", [])
    ]
    assert any(k.endswith("model.safetensors") for k in keys), keys  # the model went to S3


def test_two_rank_stages_train_and_write_their_metrics_once(pipeline, stack):
    root = stack.root
    for stage in ("sft_mm", "rl"):
        report = json.loads((root / f"metrics/{stage}.json").read_text())
        steps = [row["step"] for row in report["checkpoints"]]
        assert steps == sorted(set(steps)) and report["steps"] == steps[-1]
        assert report["launch"]["world_size"] == 2
    # rl's 2-step tiny policy earns no reward (no advantage to follow, as on one rank);
    # test_launch.py moves a 2-rank GRPO policy with rewards that differ
    sft_mm = changed(weights(root / "models/coldstart_text"), weights(root / "models/sft_mm"))
    assert sft_mm > 0.5
    log = (stack.state / "logs" / "prefect-worker.log").read_text()
    assert "[rank1]:" in log and "sft_mm: 2 ranks finished" in log


def test_second_dvc_repro_runs_only_register_which_changes_nothing(pipeline, stack):
    """Every stage is cached except register, which DVC always runs (the registry may be
    another or an emptied store); this store holds the model already, so no new version."""
    env = {**os.environ, **stack.env(), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(BIN / "dvc"), "repro"],
        cwd=stack.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert re.findall(r"Running stage '(\w+)'", done.stdout) == ["register"], done.stdout
    assert "already registered, nothing changed" in done.stdout + done.stderr
    versions = pipeline.search_model_versions("name='AVAR-Thinker'")
    assert [str(v.version) for v in versions] == ["1"]


def test_reevaluation_deployment_logs_a_new_run(pipeline, stack):
    done = run_deployment(stack, "avar-reevaluate/champion")
    assert done.returncode == 0, done.stdout
    experiment = pipeline.get_experiment_by_name("avar")
    (run,) = pipeline.search_runs([experiment.experiment_id], "tags.`avar.kind` = 'reevaluation'")
    assert run.data.tags["avar.champion_version"] == "1"
    assert run.data.tags["avar.regression"] in ("true", "false")
    assert {"champion/eval/synthetic/accuracy", "base/eval/synthetic/accuracy"} <= set(
        run.data.metrics
    )


def test_dvc_push_and_pull_through_s3(pipeline, stack, s3):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def dvc(*args: str) -> str:
        done = subprocess.run(
            [str(BIN / "dvc"), *args],
            cwd=stack.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    dvc("remote", "add", "--local", "-f", "-d", "moto", "s3://avar-dvc/cache")
    dvc("remote", "modify", "--local", "moto", "endpointurl", s3)
    dvc("push")
    weights = stack.root / "models/rl/model.safetensors"
    before = weights.read_bytes()
    shutil.rmtree(stack.root / ".dvc/cache")
    shutil.rmtree(stack.root / "models/rl")
    dvc("pull", "rl")
    assert weights.read_bytes() == before


def test_mlflow_ui_shows_runs_and_registered_model(pipeline, stack, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's)")
    experiment = pipeline.get_experiment_by_name("avar")

    def page(fragment: str) -> str:
        done = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=20000",
                "--dump-dom",
                f"{stack.mlflow_uri}/#{fragment}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.stdout

    runs_page = page(f"/experiments/{experiment.experiment_id}/runs")
    assert "pipeline-" in runs_page
    models_page = page("/models/AVAR-Thinker")
    assert "AVAR-Thinker" in models_page and "champion" in models_page


def postgres_bin() -> Path | None:
    """Debian's PostgreSQL server binaries, when installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on loopback (as user postgres when run by root); its URI."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (Debian package postgresql)")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="avar-pg-"))  # pytest's tmp is private to root
    if as_user:
        shutil.chown(data, "postgres")
    port = free_port()
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "avar", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *as_user,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(data / "log"),
            "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            str(bin_dir.parent / "bin" / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "avar",
            "mlflow",
        ],
        check=True,
    )
    yield f"postgresql+psycopg://avar@127.0.0.1:{port}/mlflow"
    subprocess.run(
        [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
        capture_output=True,
    )
    shutil.rmtree(data, ignore_errors=True)


def test_mlflow_on_postgres_with_s3_artifacts(postgres, s3, tmp_path, monkeypatch):
    from avar.config import load_params
    from avar.services import start_mlflow, wait_healthy
    from avar.tracking import registry

    stack = Stack(tmp_path, mlflow_port=free_port())
    start_mlflow(stack, "s3://avar-mlflow/postgres", postgres)
    try:
        wait_healthy(f"{stack.mlflow_uri}/health", "mlflow-server", stack)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow_uri)
        params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
        model = tmp_path / "model"
        model.mkdir()
        (model / "config.json").write_text("{}")
        first = registry.register(params, model, 0.5, tmp_path)
        second = registry.register(params, model, 0.4, tmp_path)
        assert (first.promoted, second.promoted) == (True, False)
        assert registry.download_alias(params)[0] == first.version
    finally:
        down(stack)
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3)
        .list_objects_v2(Bucket="avar-mlflow", Prefix="postgres/")
        .get("Contents", [])
    ]
    assert sum(k.endswith("config.json") for k in keys) == 2
