"""avar's container images (docker/Dockerfile), built by `avar images build`.

The CPU variant builds anywhere a Docker engine runs, with no registry: its base is a
Debian bookworm root made by mmdebstrap from Debian's packages and imported, and every wheel
it installs is staged first in .avar/wheels by this interpreter's pip (so the host's pip
configuration, indexes and local wheels are used, and the image holds exactly the versions
`pip freeze` shows in the environment avar was tested in). The CUDA variant (GPU hosts)
builds FROM NVIDIA's CUDA image and takes torch from PyTorch's CUDA index.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

from avar.config.schema import OrchestrateConfig
from avar.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
VERSION = "0.1.0"
IMAGES = {"cpu": f"avar-cpu:{VERSION}", "cuda": OrchestrateConfig().image}
"""Each variant's tag; the CUDA one is `orchestrate.image`'s default."""
BASE = "avar-base:bookworm"
BASE_PACKAGES = ["python3.11", "python3.11-venv", "git", "ca-certificates"]
"""What the CPU variant's base holds beyond Debian's minbase: avar's Python and DVC's git."""
WHEELS = ROOT / ".avar" / "wheels"
FOR_BOOKWORM = ["async-timeout>=4.0.3"]
"""Wheels the image's Python (bookworm's 3.11.2) needs beyond the host's: redis asks for
async-timeout below Python 3.11.3 only, so a newer host's pip leaves it out."""


class ImageError(UserError):
    """No engine, no mmdebstrap, or a build step failed: one line says which."""


def engine():
    """A docker client of the engine DOCKER_HOST names (else the default socket)."""
    from docker.errors import DockerException

    import docker

    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as err:
        raise ImageError(
            f"no Docker engine answers at {where} (DOCKER_HOST): start dockerd or point "
            f"DOCKER_HOST at one ({type(err).__name__})"
        ) from None
    return client


def has_image(client, tag: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


def make_base(client, echo: Callable[[str], None] = print, suite: str = "bookworm") -> str:
    """Debian `suite`'s minbase with BASE_PACKAGES, from Debian's archive, as image BASE."""
    if has_image(client, BASE):
        return BASE
    if shutil.which("mmdebstrap") is None:
        raise ImageError(
            f"the CPU image's base {BASE} is not in the engine and mmdebstrap, which makes "
            "it from Debian's packages, is not installed (apt-get install mmdebstrap)"
        )
    echo(f"making {BASE} with mmdebstrap ({suite} minbase + {' '.join(BASE_PACKAGES)})")
    with tempfile.TemporaryDirectory(prefix="avar-base-") as tmp:
        tar = Path(tmp) / "base.tar"
        command = [
            "mmdebstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            suite,
            str(tar),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise ImageError(f"mmdebstrap exited {done.returncode}: {last_line(done.stderr)}")
        repository, tag = BASE.split(":")
        client.api.import_image(src=str(tar), repository=repository, tag=tag)
    return BASE


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def requirements() -> list[str]:
    """avar's dependencies and its `stack` extra (the compose stack's services run from
    the same image) as pyproject.toml declares them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    stack = project["optional-dependencies"]["stack"]
    return [*project["dependencies"], *stack, *FOR_BOOKWORM, "setuptools>=68", "wheel"]


def frozen() -> str:
    """This environment's versions (`pip freeze`, avar itself left out)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def stage_wheels(dest: Path = WHEELS, echo: Callable[[str], None] = print) -> Path:
    """Every wheel the CPU variant installs, in `dest`, pinned to this environment's
    versions: built again only when avar's requirements or the environment change. The
    folder appears whole or not at all."""
    constraints = frozen()
    wanted = requirements()
    key = hashlib.sha256(json.dumps([wanted, constraints]).encode()).hexdigest()
    if (dest / "KEY").is_file() and (dest / "KEY").read_text() == key:
        echo(f"wheels up to date in {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="wheels-", dir=dest.parent))
    try:
        (work / "constraints.txt").write_text(constraints)
        echo(f"staging {len(wanted)} requirements and their dependencies in {dest}")
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation"]
        command += ["--wheel-dir", str(work), "-c", str(work / "constraints.txt"), *wanted]
        env = {**os.environ, "DS_BUILD_OPS": "0"}  # DeepSpeed's ops are JIT-built on CPU
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise ImageError(f"pip wheel exited {done.returncode}: {last_line(done.stderr)}")
        (work / "KEY").write_text(key)
        if dest.exists() and any(dest.iterdir()) and not (dest / "KEY").is_file():
            raise ImageError(f"{dest} exists and was not staged by avar: move it away")
        if dest.exists():
            shutil.rmtree(dest)  # a wheelhouse of an older key, made here
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def build(variant: str = "cpu", tag: str | None = None, echo: Callable[[str], None] = print) -> str:
    """Build docker/Dockerfile's `variant`; return its tag. The build's steps reach the
    network as the host does (`--network host`: the CUDA variant's apt and pip)."""
    if variant not in IMAGES:
        raise ImageError(f"unknown image variant {variant!r}: expected one of {sorted(IMAGES)}")
    client = engine()
    tag = tag or IMAGES[variant]
    args = {"VARIANT": variant}
    if variant == "cpu":
        args["BASE"] = make_base(client, echo)
        stage_wheels(echo=echo)
    else:
        WHEELS.mkdir(parents=True, exist_ok=True)  # the Dockerfile copies it; empty is fine
    echo(f"building {tag} from docker/Dockerfile ({variant})")
    stream = client.api.build(
        path=str(ROOT),
        dockerfile="docker/Dockerfile",
        tag=tag,
        buildargs=args,
        network_mode="host",
        forcerm=True,  # the intermediate containers go even when a step fails
        decode=True,
    )
    said: list[str] = []
    for chunk in stream:
        if "error" in chunk:
            tail = "\n".join(said[-15:])
            raise ImageError(f"docker build of {tag} failed: {last_line(chunk['error'])}\n{tail}")
        line = chunk.get("stream", "").rstrip()
        if line:
            said.append(line)
        if line.startswith(("Step ", "Successfully")):
            echo(line)
    return tag
