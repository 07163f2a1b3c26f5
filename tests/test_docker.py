"""docker/: no engine runs here, so the files are linted (hadolint) and parsed: pinned
images, a non-root user, healthchecks on every long-running service, the GPU request."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"
DOCKERFILES = sorted(DOCKER.glob("*Dockerfile"))
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
    bases = [args for op, args in steps if op == "FROM"]
    assert bases and all(":" in b and not b.endswith(":latest") for b in bases)
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_training_image_builds_deepspeed_ops_on_cuda_torch():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"FROM nvidia/cuda:\d+\.\d+\.\d+-cudnn-devel", text)
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
    assert "/var/run/docker.sock:/var/run/docker.sock" in services["prefect-worker"]["volumes"]
