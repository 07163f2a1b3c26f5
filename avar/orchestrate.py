"""Where the Prefect flow runs a stage: `dvc repro <stage>` as a local subprocess, or in a
container of avar's image started with the docker SDK (`orchestrate.backend`). Either way
DVC decides whether the stage has anything to do, and its output says whether it ran.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from avar.config import Params
from avar.scrub import scrub
from avar.tracking.runs import PARENT_ENV

log = logging.getLogger(__name__)


@dataclass
class StageRun:
    stage: str
    ran: bool
    """False when DVC found the stage up to date (or restored it from its run cache)."""
    output: str


class StageFailed(RuntimeError):
    """`dvc repro <stage>` exited non-zero; the message ends with its last output lines."""


def repro_command(stage: str, force: bool = False) -> list[str]:
    """DVC reproduces the one stage (its upstream stages ran before it, in flow order)."""
    return ["dvc", "repro", "--single-item", *(["--force"] if force else []), stage]


def stage_env(params: Params, parent_run_id: str | None) -> dict[str, str]:
    """What a stage needs to see: the pass-through variables (`orchestrate.env`, the
    teacher's and the judge's key variables), the pipeline run, and this interpreter's
    scripts folder first on PATH (so `dvc` and `avar` are the project's)."""
    keys = [params.curate.teacher.api_key_env, params.eval.judge.api_key_env]
    names = [*params.orchestrate.env, *keys]
    env = {k: os.environ[k] for k in names if k in os.environ}
    # Progress bars redraw ~10 times a second; in a flow's log one line per 10 s is plenty.
    env["TQDM_MININTERVAL"] = os.environ.get("TQDM_MININTERVAL", "10")
    if parent_run_id:
        env[PARENT_ENV] = parent_run_id
    return env


def run_stage(
    params: Params,
    stage: str,
    workspace: str | Path,
    parent_run_id: str | None = None,
    force: bool = False,
    echo=log.info,
) -> StageRun:
    """`dvc repro` one stage where params say; `echo` gets each line of its output."""
    command = repro_command(stage, force)
    env = stage_env(params, parent_run_id)
    if params.orchestrate.backend == "docker":
        output = run_in_container(params, command, Path(workspace), env, echo)
    else:
        output = run_local(command, Path(workspace), env, echo)
    return StageRun(stage, f"Running stage '{stage}'" in output, output)


def shown(line: str) -> str:
    """A progress bar's last state, not every redraw (tqdm separates them with \\r), with
    secrets scrubbed: these lines go to the Prefect log."""
    return scrub(line.rstrip().rsplit("\r", 1)[-1])


def run_local(command: list[str], workspace: Path, env: dict[str, str], echo=log.info) -> str:
    """Run `command` in `workspace`, echoing its output line by line; return the output."""
    scripts = str(Path(sys.executable).parent)
    full_env = {**os.environ, **env, "PATH": scripts + os.pathsep + os.environ.get("PATH", "")}
    process = subprocess.Popen(
        command,
        cwd=workspace,
        env=full_env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines = []
    assert process.stdout is not None  # stdout=PIPE
    for line in process.stdout:
        lines.append(line)
        if line.strip():
            echo(shown(line))
    if process.wait() != 0:
        tail = scrub("".join(lines[-30:]))
        raise StageFailed(
            f"`{' '.join(command)}` in {workspace} exited {process.returncode}:\n{tail}"
        )
    return "".join(lines)


def container_user(workspace: Path) -> str:
    """The container runs as the workspace's owner, so what a stage writes belongs to the
    person whose checkout it is; never as root."""
    owner = workspace.stat()
    if owner.st_uid == 0:
        raise StageFailed(
            f"the workspace {workspace} is owned by root and stage containers do not run as "
            "root: chown it to the user who runs the pipeline (the image's avar is 1000:1000)"
        )
    return f"{owner.st_uid}:{owner.st_gid}"


def container_spec(
    params: Params, command: list[str], workspace: Path, env: dict[str, str]
) -> dict:
    """Keyword arguments of docker's `containers.run` for one stage."""
    from docker.types import DeviceRequest

    cfg = params.orchestrate
    spec = {
        "image": cfg.image,
        "command": command,
        "user": container_user(workspace),
        "working_dir": cfg.workdir,
        "volumes": {str(workspace.resolve()): {"bind": cfg.workdir, "mode": "rw"}},
        # HOME: the owner may have no home in the image; caches go under the workspace
        "environment": {"HOME": "/tmp", **env},
        "shm_size": cfg.shm_size,
        "ipc_mode": "host",  # NCCL between ranks of one host
        "network_mode": "host",  # MLflow and S3 on the host's loopback stay reachable
        "detach": True,
    }
    if cfg.gpus != "none":
        count = -1 if cfg.gpus == "all" else int(cfg.gpus)
        spec["device_requests"] = [DeviceRequest(count=count, capabilities=[["gpu"]])]
    return spec


def run_in_container(
    params: Params, command: list[str], workspace: Path, env: dict[str, str], echo=log.info
) -> str:
    """Run `command` in a container of `orchestrate.image`, streaming its log."""
    from avar.images import engine

    client = engine()
    container = client.containers.run(**container_spec(params, command, workspace, env))
    lines = []
    try:
        for chunk in container.logs(stream=True, follow=True):
            line = chunk.decode(errors="replace")
            lines.append(line)
            if line.strip():
                echo(shown(line))
        status = container.wait()["StatusCode"]
    finally:
        container.remove(force=True)
    if status != 0:
        raise StageFailed(
            f"`{' '.join(command)}` in {params.orchestrate.image} exited {status}:\n"
            + scrub("".join(lines[-30:]))
        )
    return "".join(lines)
