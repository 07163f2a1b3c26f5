"""avar's CPU image for real: built in the Docker engine DOCKER_HOST names (`.ci/run` starts
one), its pins checked against this environment, and a stage run in it by the flow's docker
backend on a mounted workspace, its outputs compared with the same stage run here.

One image per module (`avar images build` is cached by the engine: seconds when nothing
changed; a cold build is a few minutes)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from workspace import copy_project

from avar.config import load_params
from avar.errors import UserError
from avar.images import BASE, IMAGES, build, engine, frozen
from avar.orchestrate import StageFailed, run_stage

pytestmark = pytest.mark.slow
DOCKER = [
    "orchestrate.backend=docker",
    f"orchestrate.image={IMAGES['cpu']}",
    "orchestrate.gpus=none",
]


@pytest.fixture(scope="module")
def client():
    try:
        return engine()
    except UserError as err:
        pytest.skip(f"container tests need a Docker engine: {err}")


@pytest.fixture(scope="module")
def cpu_image(client):
    return build("cpu", echo=lambda line: None)


def run_in(client, image: str, *command: str) -> str:
    out = client.containers.run(image, list(command), network_mode="none", remove=True)
    return out.decode()


def test_the_image_runs_as_avar_not_root_from_a_base_made_here(client, cpu_image):
    assert run_in(client, cpu_image, "id", "-u").strip() == "1000"
    assert client.images.get(BASE).attrs["Os"] == "linux"
    release = run_in(client, cpu_image, "cat", "/etc/os-release")
    assert "VERSION_CODENAME=bookworm" in release


def pins(text: str) -> dict[str, str]:
    """`name==version` lines as {normalised name: version}."""
    rows = (line.split("==", 1) for line in text.split() if "==" in line)
    return {name.lower().replace("_", "-"): version for name, version in rows}


def test_the_image_holds_the_versions_this_environment_was_tested_with(client, cpu_image):
    # `pip list --format=freeze`: plain versions (pip freeze shows wheel paths here)
    inside = pins(run_in(client, cpu_image, "pip", "list", "--format=freeze"))
    here = pins(frozen())
    shared = sorted(set(inside) & set(here))
    assert len(shared) > 150 and {"torch", "transformers", "deepspeed", "prefect"} <= set(shared)
    assert {name: inside[name] for name in shared} == {name: here[name] for name in shared}
    assert inside["torch"].endswith("+cpu")


def owned_workspace(path: Path) -> Path:
    """A workspace as a person's checkout is: owned by a non-root user (the image's 1000)."""
    copy_project(path)
    subprocess.run(["chown", "-R", "1000:1000", str(path)], check=True)
    return path


def test_the_flows_docker_backend_runs_a_stage_on_the_mounted_workspace(
    client, cpu_image, tmp_path
):
    if os.geteuid() != 0:
        pytest.skip("the test hands its workspace to uid 1000 (chown): run as root")
    here = copy_project(tmp_path / "here")
    there = owned_workspace(tmp_path / "there")
    lines: list[str] = []
    ran = run_stage(load_params(there / "params.yaml", DOCKER), "prepare", there, echo=lines.append)
    assert ran.ran and any(line.startswith("prepare: ") for line in lines)
    run_stage(load_params(here / "params.yaml"), "prepare", here, echo=lambda line: None)
    # the container wrote as the workspace's owner, and what it wrote equals a run here
    made = sorted(p.relative_to(there) for p in (there / "data").rglob("*") if p.is_file())
    assert made and made == sorted(
        p.relative_to(here) for p in (here / "data").rglob("*") if p.is_file()
    )
    for name in made:
        assert (there / name).stat().st_uid == 1000
        assert (there / name).read_bytes() == (here / name).read_bytes(), name
    config = json.loads((there / "models/init/config.json").read_text())
    assert config == json.loads((here / "models/init/config.json").read_text())
    assert "prepare" in (there / "dvc.lock").read_text()


def test_a_failing_stage_in_a_container_reports_its_output(client, cpu_image, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the test hands its workspace to uid 1000 (chown): run as root")
    there = owned_workspace(tmp_path / "there")
    params = load_params(there / "params.yaml", DOCKER)
    (there / "params.yaml").write_text((there / "params.yaml").read_text() + "\nbroken: [\n")
    with pytest.raises(StageFailed, match=r"avar-cpu:0\.1\.0 exited [1-9]"):
        run_stage(params, "prepare", there, echo=lambda line: None)
    assert not client.containers.list(all=True, filters={"ancestor": cpu_image})
