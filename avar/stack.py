"""The compose stack of docker/compose.local.yaml, for hosts with no registry and no bridge
network: `avar stack up` builds avar's CPU image and the stack's two images made from
Debian's packages (Postgres, the socket proxy), starts the services on the host's network
bound to loopback and waits until each is healthy; `avar stack deploy` deploys
avar/full-docker to its docker work pool; `avar stack down` stops it.

Every setting and secret comes from one env file (docker/avar.env, from avar.env.example).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from avar.errors import UserError
from avar.images import ROOT, build, engine
from avar.services import scripts_dir

COMPOSE_FILE = ROOT / "docker" / "compose.local.yaml"
PROJECT = "avar-local"
REQUIRED = (
    "AVAR_WORKSPACE",
    "AVAR_DB_PASSWORD",
    "AVAR_S3_ACCESS_KEY",
    "AVAR_S3_SECRET_KEY",
    "MLFLOW_AUTH_ADMIN_USERNAME",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "AVAR_PREFECT_AUTH",
    "AVAR_DOCKER_GID",
)
DEFAULT_PORTS = {
    "AVAR_POSTGRES_PORT": 5432,
    "AVAR_S3_PORT": 8333,
    "AVAR_MLFLOW_PORT": 5000,
    "AVAR_PREFECT_PORT": 4200,
    "AVAR_PROXY_PORT": 2375,
    "AVAR_WORKER_PORT": 8080,
}
"""compose.local.yaml's defaults for the ports docker/avar.env leaves out."""


class StackError(UserError):
    """A bad env file, no compose, or a service that did not come up: one line says which."""


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose env file (# comments); every REQUIRED key set."""
    if not path.is_file():
        raise StackError(f"{path}: no such env file (cp docker/avar.env.example {path})")
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise StackError(f"{path}:{number}: expected KEY=VALUE, got {line[:60]!r}")
        values[key.strip()] = value.strip()
    missing = [key for key in REQUIRED if not values.get(key)]
    if missing:
        raise StackError(f"{path}: set {', '.join(missing)} (see docker/avar.env.example)")
    placeholders = [key for key, value in values.items() if "change-me" in value]
    if placeholders:
        raise StackError(f"{path}: {', '.join(placeholders)} still hold the example's change-me")
    return values


@dataclass
class LocalStack:
    env_file: Path
    project: str = PROJECT

    @property
    def values(self) -> dict[str, str]:
        return read_env(self.env_file)

    def port(self, name: str) -> int:
        return int(self.values.get(name, DEFAULT_PORTS[name]))

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.port('AVAR_PREFECT_PORT')}/api"

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.port('AVAR_MLFLOW_PORT')}"

    def client_env(self) -> dict[str, str]:
        """What a Prefect or MLflow client of the stack needs (the secrets included)."""
        values = self.values
        return {
            "PREFECT_API_URL": self.prefect_api,
            "PREFECT_API_AUTH_STRING": values["AVAR_PREFECT_AUTH"],
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "MLFLOW_TRACKING_USERNAME": values["MLFLOW_AUTH_ADMIN_USERNAME"],
            "MLFLOW_TRACKING_PASSWORD": values["MLFLOW_AUTH_ADMIN_PASSWORD"],
            "AVAR_WORKSPACE": values["AVAR_WORKSPACE"],
        }

    def compose(self, *args: str) -> str:
        """`docker-compose` (or `docker compose`) of this stack; its output, or one line."""
        command = [*compose_binary(), "--env-file", str(self.env_file)]
        command += ["-f", str(COMPOSE_FILE), "-p", self.project, *args]
        # only the engine's address from here: the env file alone sets the stack's values
        keep = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG")
        env = {key: os.environ[key] for key in keep if key in os.environ}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            said = done.stderr.strip().splitlines() or ["(no output)"]
            raise StackError(f"`compose {' '.join(args)}` exited {done.returncode}: {said[-1]}")
        return done.stdout + done.stderr

    def containers(self) -> list:
        labels = f"com.docker.compose.project={self.project}"
        return engine().containers.list(all=True, filters={"label": labels})


def compose_binary() -> list[str]:
    """Debian's docker-compose (1.29) or Docker's compose plugin (v2)."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    raise StackError("no compose: apt-get install docker-compose (or Docker's compose plugin)")


def up(stack: LocalStack, echo: Callable[[str], None] = print, timeout: float = 300) -> None:
    """Build what is missing (avar's CPU image, Postgres, the proxy), start every service,
    wait until each long-running one is healthy."""
    read_env(stack.env_file)  # a bad env file fails before anything is built
    build("cpu", echo=echo)
    echo(f"building the stack's images and starting {stack.project} from {COMPOSE_FILE.name}")
    stack.compose("up", "-d", "--build")
    wait_healthy(stack, echo, timeout)


def wait_healthy(stack: LocalStack, echo: Callable[[str], None], timeout: float) -> None:
    """Until every service with a healthcheck reports healthy and the one-shot jobs have
    exited 0; a service that exits or turns unhealthy fails at once, with its last line."""
    deadline = time.monotonic() + timeout
    waiting: list[str] = []
    while time.monotonic() < deadline:
        waiting = []
        for container in stack.containers():
            service = container.labels["com.docker.compose.service"]
            state = container.attrs["State"]
            health = state.get("Health", {}).get("Status")
            if state["Status"] == "exited" and (health or state["ExitCode"] != 0):
                tail = container.logs(tail=5).decode(errors="replace").strip().splitlines()
                raise StackError(
                    f"{service} exited {state['ExitCode']}: {tail[-1] if tail else '(no output)'}"
                )
            if health == "unhealthy":
                raise StackError(f"{service} is unhealthy: docker logs {container.name}")
            if health not in (None, "healthy"):
                waiting.append(service)
        if not waiting:
            echo(f"{stack.project}: every service is up")
            return
        time.sleep(2)
    raise StackError(f"not healthy within {timeout:.0f} s: {', '.join(sorted(waiting))}")


def deploy(stack: LocalStack, names: tuple[str, ...] = ("full-docker",)) -> None:
    """Deploy prefect.yaml's `names` to the stack's Prefect server, from the workspace."""
    workspace = Path(stack.values["AVAR_WORKSPACE"])
    if not (workspace / "prefect.yaml").is_file():
        raise StackError(f"AVAR_WORKSPACE={workspace}: not a checkout of avar (no prefect.yaml)")
    command = [
        str(scripts_dir() / "prefect"),
        "--no-prompt",
        "deploy",
        *(f"--name={name}" for name in names),
    ]
    env = {**os.environ, **stack.client_env()}
    done = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip().splitlines() or ["(no output)"]
        raise StackError(f"prefect deploy exited {done.returncode}: {said[-1]}")


def down(stack: LocalStack, volumes: bool = False) -> None:
    """Stop and remove the stack's containers (and with `volumes`, its database)."""
    stack.compose("down", *(["--volumes"] if volumes else []))
