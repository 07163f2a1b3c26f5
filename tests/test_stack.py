"""The compose stack of docker/compose.local.yaml, started for real in the Docker engine
DOCKER_HOST names (`.ci/run` starts one) with docker-compose, and the README's security
claims checked against the running services: loopback binds, non-root processes, MLflow's
basic auth, the worker's docker access through the proxy's allow-list only. A flow run of
avar/full-docker goes through the stack's docker work pool.

One stack per module, on free ports and a project name of its own; it comes down at the
end (the last test checks that nothing of it is left)."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from http_status import status
from ports import free_port
from workspace import copy_project

from avar.errors import UserError
from avar.images import IMAGES, engine
from avar.services import scripts_dir
from avar.stack import DEFAULT_PORTS, LocalStack, StackError, compose_binary, down, read_env, up

pytestmark = pytest.mark.slow
LOOPBACK = {"127.0.0.1", "::1"}


def unix_socket() -> Path:
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return Path(where.removeprefix("unix://"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the stack test hands its workspace to uid 1000 (chown): run as root")
    try:
        engine()
        compose_binary()
    except UserError as err:
        pytest.skip(f"the compose stack needs a Docker engine and compose: {err}")
    root = tmp_path_factory.mktemp("stack")
    workspace = copy_project(root / "workspace")
    subprocess.run(["chown", "-R", "1000:1000", str(workspace)], check=True)
    values = {
        "AVAR_WORKSPACE": str(workspace),
        "AVAR_DOCKER_GID": str(unix_socket().stat().st_gid),
        "AVAR_DOCKER_SOCKET": str(unix_socket()),
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "AVAR_PREFECT_AUTH": f"admin:{secrets.token_urlsafe(12)}",
        **{port: str(free_port()) for port in DEFAULT_PORTS},
    }
    for key in ("AVAR_DB_PASSWORD", "AVAR_S3_ACCESS_KEY", "AVAR_S3_SECRET_KEY"):
        values[key] = secrets.token_urlsafe(16)
    values["MLFLOW_AUTH_ADMIN_PASSWORD"] = secrets.token_urlsafe(16)
    values["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_urlsafe(16)
    env_file = root / "avar.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    stack = LocalStack(env_file, project=f"avar-test-{os.getpid()}")
    try:
        up(stack, echo=lambda line: None)
        yield stack
    finally:
        down(stack, volumes=True)


def running(stack: LocalStack) -> dict[str, list[psutil.Process]]:
    """Each running service's processes (the container's whole process tree)."""
    found = {}
    for container in stack.containers():
        if container.status == "running":
            top = psutil.Process(container.attrs["State"]["Pid"])
            found[container.labels["com.docker.compose.service"]] = [
                top,
                *top.children(recursive=True),
            ]
    return found


def test_every_service_is_up_and_listens_on_loopback_only(stack):
    services = running(stack)
    expected = {"postgres", "s3", "mlflow", "prefect-server", "docker-proxy", "prefect-worker"}
    assert set(services) == expected
    listening = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    for service, processes in services.items():
        pids = {p.pid for p in processes}
        addresses = {c.laddr.ip for c in listening if c.pid in pids}
        assert addresses, f"{service} listens nowhere"  # else the check below proves nothing
        assert addresses <= LOOPBACK, f"{service} listens on {addresses - LOOPBACK}"


def test_no_service_process_runs_as_root(stack):
    for service, processes in running(stack).items():
        uids = {p.uids().real for p in processes} | {p.uids().effective for p in processes}
        assert 0 not in uids, f"{service} runs a process as root"


def test_mlflow_answers_health_openly_and_everything_else_with_credentials_only(stack):
    values = stack.values
    user, password = values["MLFLOW_AUTH_ADMIN_USERNAME"], values["MLFLOW_AUTH_ADMIN_PASSWORD"]
    search = f"{stack.mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status(f"{stack.mlflow_uri}/health") == 200
    assert status(search) == 401
    assert status(search, user, "wrong") == 401
    assert status(search, user, password) == 200
    prefect_user, prefect_password = stack.values["AVAR_PREFECT_AUTH"].split(":", 1)
    assert status(f"{stack.prefect_api}/admin/version") == 401
    assert status(f"{stack.prefect_api}/admin/version", prefect_user, prefect_password) == 200


def proxy_log(stack: LocalStack) -> list[tuple[int, str, str]]:
    """(status, method, path) of each request HAProxy logged."""
    (proxy,) = [c for c in stack.containers() if "docker-proxy" in c.name]
    rows = re.findall(r' (\d{3}) \d+ .*"(\w+) (\S+) HTTP', proxy.logs().decode())
    unversioned = (re.sub(r"^/v1\.\d+", "", path.split("?")[0]) for _, _, path in rows)
    return [(int(s), m, p) for (s, m, _), p in zip(rows, unversioned, strict=True)]


def test_the_deployment_runs_through_the_docker_work_pool_and_the_proxy(stack, monkeypatch):
    before = len(proxy_log(stack))
    done = subprocess.run(
        [str(scripts_dir() / "avar"), "stack", "run", "--env-file", str(stack.env_file)]
        + ["-p", 'stages=["prepare"]'],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "avar/full-docker: Completed" in done.stdout
    assert "prepare: 52 records" in done.stdout  # the container's output, followed here
    workspace = Path(stack.values["AVAR_WORKSPACE"])
    made = [p for p in (workspace / "data").rglob("*") if p.is_file()]
    assert made and all(p.stat().st_uid == 1000 for p in made)
    assert "prepare" in (workspace / "dvc.lock").read_text()
    # the flow run's container removes itself once its process has exited
    assert flow_run_containers(within_s=60) == []
    # the worker made its docker calls through the proxy, and every one was allowed (HAProxy
    # logs a request when it ends: the `logs` and `wait` calls end with the container)
    expected = {
        ("GET", "/version"),
        ("POST", "/containers/create"),
        ("POST", "/containers/ID/start"),
        ("GET", "/containers/ID/logs"),
        ("POST", "/containers/ID/wait"),
    }
    deadline = time.monotonic() + 30
    while True:
        calls = proxy_log(stack)[before:]
        made = {(m, re.sub(r"/containers/[^/]+/", "/containers/ID/", p)) for _, m, p in calls}
        if made >= expected or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert made >= expected
    assert [call for call in calls if call[0] >= 400] == []
    # the flow logged its run to the stack's MLflow (Postgres behind it), behind its auth
    from mlflow import MlflowClient

    for key, value in stack.client_env().items():
        monkeypatch.setenv(key, value)
    tracking = MlflowClient(tracking_uri=stack.mlflow_uri)
    (experiment,) = tracking.search_experiments(filter_string="name = 'avar'")
    assert tracking.search_runs([experiment.experiment_id])


def flow_run_containers(within_s: float) -> list[str]:
    """The avar-image containers of no compose project (flow runs'), polled until none."""
    deadline = time.monotonic() + within_s
    while True:
        found = engine().containers.list(all=True, filters={"ancestor": IMAGES["cpu"]})
        names = [c.name for c in found if "com.docker.compose.project" not in c.labels]
        if not names or time.monotonic() > deadline:
            return names
        time.sleep(1)


def test_the_worker_has_no_socket_and_the_proxy_refuses_calls_off_its_list(stack):
    (worker,) = [c for c in stack.containers() if "prefect-worker" in c.name]
    assert not [m for m in worker.attrs["Mounts"] if "docker.sock" in m.get("Source", "")]
    proxy = f"tcp://127.0.0.1:{stack.port('AVAR_PROXY_PORT')}"
    assert f"DOCKER_HOST={proxy}" in worker.attrs["Config"]["Env"]
    code, out = worker.exec_run(["python", "-c", PROBE], environment={"PROXY": proxy})
    assert code == 0, out.decode()
    assert out.decode().split() == ["ping=OK", "volumes=403", "exec=403", "secrets=403"]


PROBE = """
import os, docker
from docker.errors import APIError
assert not os.path.exists("/var/run/docker.sock")
client = docker.DockerClient(base_url=os.environ["PROXY"])
print("ping=OK" if client.ping() else "ping=no")
def status(call):
    try:
        call()
    except APIError as err:
        return err.status_code
    return 200
me = os.environ["HOSTNAME"]
print("volumes=%s" % status(lambda: client.volumes.create("avar-probe")))
print("exec=%s" % status(lambda: client.api.exec_create(me, ["true"])))
print("secrets=%s" % status(lambda: client.api.secrets()))
"""


def test_a_bad_env_file_gets_one_line(tmp_path):
    env_file = tmp_path / "avar.env"
    env_file.write_text("AVAR_WORKSPACE=/srv/avar\nnot a line\n")
    with pytest.raises(StackError, match=r"avar\.env:2: expected KEY=VALUE"):
        read_env(env_file)
    env_file.write_text("AVAR_WORKSPACE=/srv/avar\n")
    with pytest.raises(StackError, match=r"set AVAR_DB_PASSWORD, .*AVAR_DOCKER_GID"):
        read_env(env_file)
    example = Path(__file__).resolve().parents[1] / "docker" / "avar.env.example"
    with pytest.raises(StackError, match=r"AVAR_DB_PASSWORD, .* still hold the example's"):
        read_env(example)


def test_down_leaves_nothing_running(stack):
    down(stack, volumes=True)
    assert stack.containers() == []
    assert not engine().volumes.list(filters={"name": f"{stack.project}_postgres"})
    ports = {stack.port(name) for name in DEFAULT_PORTS}
    listening = {c.laddr.port for c in psutil.net_connections("inet") if c.status == "LISTEN"}
    assert not ports & listening
