"""The local stack `make run` starts: a Prefect server, an MLflow server and a Prefect
process worker on 127.0.0.1, in the background, with their logs in one folder
(`.avar/logs`) and their pids in `.avar/run`; `avar services down` (`make down`) stops them.

The Prefect server keeps its database under `.avar/prefect`; MLflow keeps runs in
`.avar/mlflow.db` and artifacts in `.avar/mlartifacts` (or an S3 bucket, given
`--artifacts`). `.avar/env` holds the variables a shell needs to talk to both.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from avar.errors import UserError

log = logging.getLogger(__name__)
POOL = "avar-local"
DEPLOYMENTS = ("full", "champion", "ablations")


AUTH_USER, AUTH_PASSWORD = "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"


@dataclass
class Stack:
    root: Path
    prefect_port: int = 4200
    mlflow_port: int = 5000
    auth: bool = False
    """MLflow with basic auth: its admin from MLFLOW_AUTH_ADMIN_USERNAME/_PASSWORD."""

    @property
    def state(self) -> Path:
        return self.root / ".avar"

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def env(self) -> dict[str, str]:
        """What clients need: the two servers' addresses and the workspace (and, with auth,
        MLflow's user; its password stays in the environment it came from)."""
        env = {
            "PREFECT_API_URL": self.prefect_api,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "AVAR_WORKSPACE": str(self.root.resolve()),
        }
        if self.auth:
            env["MLFLOW_TRACKING_USERNAME"] = os.environ[AUTH_USER]
        return env


def scripts_dir() -> Path:
    """The folder of this interpreter's console scripts (prefect, mlflow, dvc, avar)."""
    return Path(sys.executable).parent


def start(stack: Stack, name: str, command: list[str], env: dict[str, str]) -> int:
    """Start `command` in its own session, output to .avar/logs/<name>.log; record its pid."""
    logs, pids = stack.state / "logs", stack.state / "run"
    logs.mkdir(parents=True, exist_ok=True)
    pids.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=stack.root,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: down kills all
        )
    (pids / f"{name}.pid").write_text(str(process.pid))
    return process.pid


def wait_healthy(url: str, name: str, stack: Stack, timeout: float = 120) -> None:
    """Poll `url` until it answers 200; fail naming the log to read, at once when the
    server's process has exited."""
    deadline = time.monotonic() + timeout
    pid_file = stack.state / "run" / f"{name}.pid"
    while time.monotonic() < deadline:
        if pid_file.is_file() and not _alive(int(pid_file.read_text())):
            break
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise UserError(
        f"{name} did not answer {url} (it exited, or not within {timeout:.0f} s); see "
        f"{stack.state / 'logs' / f'{name}.log'}"
    )


def prefect(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    """A Prefect CLI command against this stack's server."""
    env = {**os.environ, **stack.env()}
    done = subprocess.run(
        [str(scripts_dir() / "prefect"), *args],
        cwd=stack.root,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"`prefect {' '.join(args)}` failed:\n{done.stdout}\n{done.stderr}")
    return done


def start_mlflow(stack: Stack, artifacts: str | None = None, backend: str | None = None) -> None:
    """The MLflow server: runs in `backend` (default SQLite under .avar), artifacts proxied to
    `artifacts` (default .avar/mlartifacts; an s3:// URI for S3 or an S3-compatible store).
    GenAI judge jobs are off: six fewer processes on a small machine. With `stack.auth`,
    MLflow's basic auth is on (users in .avar/mlflow-auth.db, default permission READ)."""
    state = stack.state
    options, env = [], {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if stack.auth:
        options, env = ["--app-name", "basic-auth"], {**env, **auth_env(state)}
    start(
        stack,
        "mlflow-server",
        [
            str(scripts_dir() / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(stack.mlflow_port),
            "--backend-store-uri",
            backend or f"sqlite:///{(state / 'mlflow.db').resolve()}",
            "--artifacts-destination",
            artifacts or str((state / "mlartifacts").resolve()),
            "--workers",
            "1",
            *options,
        ],
        env,
    )


def auth_env(state: Path) -> dict[str, str]:
    """The basic-auth server's settings: its config file under .avar, the admin from the
    environment (never written to disk by avar), a session secret."""
    missing = [name for name in (AUTH_USER, AUTH_PASSWORD) if not os.environ.get(name)]
    if missing:
        raise UserError(f"--auth: set {' and '.join(missing)} (MLflow's admin) first")
    config = state / "mlflow-auth.ini"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{(state / 'mlflow-auth.db').resolve()}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    secret = os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or secrets.token_urlsafe(32)
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": secret}


def up(stack: Stack, artifacts: str | None = None, backend: str | None = None) -> None:
    """Start both servers and a worker, then deploy avar/full, avar-reevaluate/champion and
    avar-study/ablations."""
    bin_dir, state = scripts_dir(), stack.state
    down(stack, quiet=True)
    start(
        stack,
        "prefect-server",
        [
            str(bin_dir / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(stack.prefect_port),
        ],
        {
            "PREFECT_HOME": str((state / "prefect").resolve()),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        },
    )
    start_mlflow(stack, artifacts, backend)
    wait_healthy(f"{stack.prefect_api}/health", "prefect-server", stack)
    wait_healthy(f"{stack.mlflow_uri}/health", "mlflow-server", stack)
    pools = prefect(stack, "work-pool", "ls").stdout
    if POOL not in pools:
        prefect(stack, "work-pool", "create", POOL, "--type", "process")
    start(
        stack,
        "prefect-worker",
        [str(bin_dir / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"],
        {
            **stack.env(),
            **worker_credentials(stack),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        },
    )
    prefect(stack, "--no-prompt", "deploy", *(f"--name={d}" for d in DEPLOYMENTS))
    (state / "env").write_text("".join(f"export {k}={v}\n" for k, v in stack.env().items()))


def worker_credentials(stack: Stack) -> dict[str, str]:
    """The flow runs' MLflow password (the admin's), in the worker's environment only."""
    return {"MLFLOW_TRACKING_PASSWORD": os.environ[AUTH_PASSWORD]} if stack.auth else {}


def down(stack: Stack, quiet: bool = False) -> list[str]:
    """Stop every process `up` started (its whole process group); return their names."""
    stopped = []
    for pid_file in sorted((stack.state / "run").glob("*.pid")):
        pid = int(pid_file.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
            stopped.append(pid_file.stem)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        pid_file.unlink()
    if stopped and not quiet:
        log.info("stopped %s", ", ".join(stopped))
    return stopped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True
