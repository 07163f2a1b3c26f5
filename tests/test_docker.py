"""docker/'s files linted (hadolint) and parsed: pinned images, a non-root user,
healthchecks on every long-running service, the GPU request. test_containers builds and
runs the CPU image for real."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"
DOCKERFILES = sorted(DOCKER.rglob("*Dockerfile"))  # docker/local/: compose.local.yaml's
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pins_its_base_and_drops_root(path):
    steps = instructions(path)
    defaults = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    bases = [args.split()[0] for op, args in steps if op == "FROM"]
    bases = [defaults.get(b.strip("${}"), b) if b.startswith("$") else b for b in bases]
    assert bases and all(":" in b and not b.endswith(":latest") for b in bases)
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_training_image_builds_deepspeed_ops_on_cuda_torch():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"ARG BASE=nvidia/cuda:\d+\.\d+\.\d+-cudnn-devel", text)
    assert "FROM ${BASE} AS build" in text
    assert "DS_BUILD_FUSED_ADAM=1" in text and "torch==${TORCH_VERSION}" in text
    assert "ARG TORCH_VERSION=2.13.0" in text


def test_compose_images_are_pinned_and_services_healthchecked():
    services = COMPOSE["services"]
    assert {
        "postgres",
        "s3",
        "s3-buckets",
        "mlflow",
        "prefect-server",
        "docker-proxy",
        "prefect-worker",
        "trainer",
    } <= set(services)
    for name, service in services.items():
        image = service.get("image", "")
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), name
        check = service.get("healthcheck", {})
        one_shot = name in ("s3-buckets", "trainer")
        assert check.get("disable") if one_shot else check.get("test"), name


def test_compose_wires_gpu_postgres_and_s3():
    services = COMPOSE["services"]
    (device,) = services["trainer"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["count"] == "all"
    assert services["trainer"]["shm_size"]
    mlflow = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql" in mlflow and "s3://" in mlflow
    assert "--allowed-hosts=mlflow" in mlflow
    assert services["mlflow"]["depends_on"]["s3-buckets"]["condition"] == (
        "service_completed_successfully"
    )
    assert (
        "postgresql+asyncpg"
        in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    )
    assert "--type" in services["prefect-worker"]["command"]
    assert services["prefect-worker"]["depends_on"]["docker-proxy"]["condition"] == (
        "service_healthy"
    )


def published(port: str) -> str:
    """The host address a `ports:` entry binds, with compose's `${VAR:-default}` applied."""
    resolved = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", port)
    parts = resolved.split(":")
    return parts[0] if len(parts) == 3 else "0.0.0.0"  # "HOST:CONTAINER" binds every address


def test_compose_publishes_on_loopback_only_by_default():
    ports = {name: s.get("ports", []) for name, s in COMPOSE["services"].items()}
    assert sum(map(len, ports.values())) == 3  # MLflow, the Prefect server, S3
    for name, entries in ports.items():
        for entry in entries:
            assert published(entry) == "127.0.0.1", (name, entry)
            assert entry.startswith("${AVAR_BIND:-127.0.0.1}:"), (name, entry)  # opt-in


def test_no_compose_service_runs_as_root():
    for name, service in COMPOSE["services"].items():
        user = str(service.get("user", "root"))
        assert user.split(":")[0] not in ("root", "0"), name
        assert not service.get("privileged"), name
    # the docker socket reaches only the proxy: read-only, no capabilities, allow-listed
    mounts = {
        name: [v for v in service.get("volumes", []) if "docker.sock" in v]
        for name, service in COMPOSE["services"].items()
    }
    assert {name for name, found in mounts.items() if found} == {"docker-proxy"}
    assert mounts["docker-proxy"] == ["/var/run/docker.sock:/var/run/docker.sock:ro"]
    proxy = COMPOSE["services"]["docker-proxy"]
    assert proxy["read_only"] and proxy["cap_drop"] == ["ALL"]
    assert "-allowfrom=prefect-worker" in proxy["command"]
    worker = COMPOSE["services"]["prefect-worker"]["environment"]
    assert worker["DOCKER_HOST"] == "tcp://docker-proxy:2375"


@pytest.mark.parametrize("compose", ["compose.yaml", "compose.local.yaml"])
def test_compose_secrets_come_from_the_env_file(compose):
    """No password or key is written in the compose file or a committed config: each is a
    required `${VAR:?...}` from docker/avar.env, which git ignores."""
    secret = re.compile(r"(PASSWORD|SECRET|ACCESS_KEY|AUTH_STRING|TOKEN)")
    text = (DOCKER / compose).read_text()
    for name, service in yaml.safe_load(text)["services"].items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if secret.search(key):
                assert str(value).startswith("${"), (name, key, value)
    assert "${AVAR_DB_PASSWORD:?" in text and "${AVAR_S3_SECRET_KEY:?" in text
    assert not (DOCKER / "seaweedfs-s3.json").exists()
    example = (DOCKER / "avar.env.example").read_text()
    needed = set(re.findall(r"\$\{(\w+):\?", text))
    assert needed <= set(re.findall(r"^(\w+)=", example, re.MULTILINE))
    ignored = subprocess.run(
        ["git", "check-ignore", "docker/avar.env"], cwd=DOCKER.parent, capture_output=True
    )
    assert ignored.returncode == 0, "docker/avar.env must be ignored by git"


def test_mlflow_and_prefect_ask_for_a_password():
    services = COMPOSE["services"]
    assert "--app-name=basic-auth" in services["mlflow"]["command"]
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in services["mlflow"]["environment"]
    server = services["prefect-server"]["environment"]
    assert server["PREFECT_SERVER_API_AUTH_STRING"].startswith("${AVAR_PREFECT_AUTH")
    assert services["prefect-worker"]["environment"]["PREFECT_API_AUTH_STRING"]
    ini = (DOCKER / "mlflow-auth.ini").read_text()
    assert "default_permission = READ" in ini and "password" not in ini.split("[mlflow]")[1]


def test_ray_profile_starts_a_head_with_the_ray_pool_worker_and_gpu_workers():
    """`--profile ray`: head and workers run the training image on the host network, mount
    the same workspace and take every GPU; the head's Prefect worker serves the pool of
    prefect.yaml's full-ray deployment."""
    head, worker = COMPOSE["services"]["ray-head"], COMPOSE["services"]["ray-worker"]
    image = COMPOSE["services"]["trainer"]["image"]
    for service in (head, worker):
        assert service["profiles"] == ["ray"] and service["image"] == image
        assert service["network_mode"] == "host"
        assert service["volumes"] == ["${AVAR_WORKSPACE:-..}:/workspace"]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["count"] == "all"
    start = " ".join(head["command"])
    assert "ray start --head --port=6379" in start and "--pool avar-ray" in start
    assert "--address=${AVAR_RAY_HEAD:-127.0.0.1:6379}" in worker["command"]
    deployments = yaml.safe_load((DOCKER.parent / "prefect.yaml").read_text())["deployments"]
    (ray,) = [d for d in deployments if d["name"] == "full-ray"]
    assert ray["work_pool"]["name"] == "avar-ray"
    assert ray["entrypoint"] == "flows/full.py:avar"
