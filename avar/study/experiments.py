"""The study's experiments through DVC: queued with `dvc exp run --queue -S ... study`,
run by `dvc queue start -j N` (DVC's own workers, each in a temporary copy of the
workspace), followed with `dvc queue status`, and read back from each experiment's commit
(`refs/exps/...`), where DVC keeps its params, dvc.lock and metrics files."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from avar.errors import UserError
from avar.study.grid import Experiment

log = logging.getLogger(__name__)
POLL_S = 2.0
DONE = {"Success", "Failed"}


class ExperimentFailed(UserError):
    """A DVC experiment of the study failed; the message ends with its log's last lines."""


@dataclass
class Finished:
    """One experiment's files, read from its commit."""

    experiment: Experiment
    rev: str
    measurement: dict
    grades: dict
    stages: dict[str, dict] = field(default_factory=dict)
    """Each trained stage's metrics file (its checkpoints' scores), by stage."""
    params: str = ""
    """The experiment's params.yaml as it ran."""
    seconds: float = 0.0


def env(jobs: int) -> dict[str, str]:
    """The environment DVC's workers inherit: this interpreter's scripts first on PATH (the
    project's `dvc` and `avar`), the cores shared out between the jobs, progress bars thin."""
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    scripts = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": scripts + os.pathsep + os.environ.get("PATH", ""),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads),
        "TQDM_MININTERVAL": os.environ.get("TQDM_MININTERVAL", "30"),
    }


def dvc(args: list[str], workspace: Path, jobs: int = 1) -> str:
    done = subprocess.run(
        ["dvc", *args], cwd=workspace, env=env(jobs), capture_output=True, text=True
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise ExperimentFailed(
            f"`dvc {' '.join(args)}` in {workspace} exited {done.returncode}:\n{tail}"
        )
    return done.stdout


def require_repository(workspace: Path) -> None:
    """DVC experiments are commits on top of HEAD: the workspace must be a git repository
    with a commit and DVC set up."""
    if not (workspace / ".dvc").is_dir():
        raise UserError(f"{workspace} is not a DVC project (no .dvc/): run `dvc init` there first")
    head = subprocess.run(
        ["git", "rev-parse", "--verify", "HEAD"], cwd=workspace, capture_output=True, text=True
    )
    if head.returncode != 0:
        raise UserError(
            f"{workspace}: DVC experiments start from a git commit and HEAD has none: commit first"
        )


def queue(experiment: Experiment, workspace: Path) -> None:
    args = ["exp", "run", "--queue", "--name", experiment.name]
    for override in experiment.overrides:
        args += ["-S", override]
    dvc([*args, "study"], workspace)


def start_workers(workspace: Path, jobs: int) -> None:
    """`dvc queue start`: its workers outlive it and keep its output streams, so these go
    to a log file (reading them would wait for the last worker)."""
    logs = workspace / ".avar" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "study-queue.log", "a") as log_file:
        done = subprocess.run(
            ["dvc", "queue", "start", "--jobs", str(jobs)],
            cwd=workspace,
            env=env(jobs),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    if done.returncode != 0:
        raise ExperimentFailed(
            f"`dvc queue start` exited {done.returncode}: see {logs / 'study-queue.log'}"
        )


STATUS_TRIES = 3
"""`dvc queue status` can fail while a worker writes a task's info file (DVC 3.67 read
one half-written: "Expecting value: line 1 column 1", and a 51-minute study stopped with
every experiment done): it is asked again, 5 s apart, before the study stops."""


def statuses(workspace: Path, pause: float = 5.0) -> dict[str, str]:
    """experiment name -> Queued, Running, Success or Failed (`dvc queue status`)."""
    for attempt in range(1, STATUS_TRIES + 1):
        try:
            listing = dvc(["queue", "status"], workspace)
            break
        except ExperimentFailed as err:
            if attempt == STATUS_TRIES:
                raise
            log.warning("dvc queue status failed (try %d of %d): %s", attempt, STATUS_TRIES, err)
            time.sleep(pause)
    found = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] != "Task":
            found[parts[1]] = parts[-1]
    return found


def run_round(
    batch: list[Experiment],
    workspace: Path,
    jobs: int,
    on_done: Callable[[Experiment, float], None],
) -> None:
    """Queue the batch, start `jobs` DVC workers and wait for every experiment; raise
    ExperimentFailed (with its log) if one failed, after the others have finished."""
    for experiment in batch:
        queue(experiment, workspace)
    start_workers(workspace, min(jobs, len(batch)))
    started, pending = time.monotonic(), {e.name: e for e in batch}
    failed = []
    while pending:
        time.sleep(POLL_S)
        now = statuses(workspace)
        for name in [n for n in pending if now.get(n) in DONE]:
            experiment = pending.pop(name)
            if now[name] == "Failed":
                failed.append(experiment)
            else:
                on_done(experiment, time.monotonic() - started)
        if pending and not any(now.get(n) in ("Queued", "Running") for n in pending):
            missing = ", ".join(pending)
            raise ExperimentFailed(
                f"DVC's queue lost the experiments {missing}: see `dvc queue status`"
            )
    if failed:
        first = failed[0]
        logs = subprocess.run(
            ["dvc", "queue", "logs", first.name],
            cwd=workspace,
            env=env(1),
            capture_output=True,
            text=True,
        )
        tail = "\n".join((logs.stdout + logs.stderr).strip().splitlines()[-25:])
        names = ", ".join(e.name for e in failed)
        raise ExperimentFailed(
            f"study experiments failed: {names}; `dvc queue logs {first.name}` ends:\n{tail}"
        )


def revision(name: str, workspace: Path) -> str:
    """The commit of the experiment called `name`."""
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"],
        cwd=workspace,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in refs.splitlines():
        ref, sha = line.split()
        if ref.rsplit("/", 1)[-1] == name:
            return sha
    raise ExperimentFailed(
        f"DVC reported experiment {name} done, but no refs/exps/.../{name} exists"
    )


def show(rev: str, path: str, workspace: Path) -> str | None:
    """A file of a commit, or None when the commit does not have it."""
    done = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=workspace, capture_output=True, text=True
    )
    return done.stdout if done.returncode == 0 else None


def read(
    experiment: Experiment, workspace: Path, metrics_paths: dict[str, str], study_metrics: str
) -> Finished:
    """The experiment's measurement, grades, trained stages' metrics and params."""
    rev = revision(experiment.name, workspace)
    grades_path = str(Path(study_metrics).parent / "study" / "grades.json")
    measurement = show(rev, study_metrics, workspace)
    grades = show(rev, grades_path, workspace)
    for what, text in (("measurement", measurement), ("grades", grades)):
        if text is None:
            raise ExperimentFailed(f"experiment {experiment.name} ({rev[:7]}) has no {what} file")
    assert measurement is not None and grades is not None  # for the type checker
    stages = {}
    for stage in experiment.chain:
        text = show(rev, metrics_paths[stage], workspace)
        if text is not None:
            stages[stage] = json.loads(text)
    return Finished(
        experiment,
        rev,
        json.loads(measurement),
        json.loads(grades),
        stages,
        show(rev, "params.yaml", workspace) or "",
    )
