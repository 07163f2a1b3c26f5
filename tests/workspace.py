"""A throwaway copy of the project (its tracked and new files, not outputs or reports) for
tests that run the pipeline through DVC and Prefect, with params cut to a pipeline of
seconds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "data": {"visual": {"n": 24}, "text": {"n": 16}, "heldout": {"n": 12}},
    "base": {"max_steps": 3, "batch_size": 4, "save_steps": 2, "heldout": 8},
    "coldstart_text": {"max_steps": 2, "batch_size": 4, "save_steps": 2},
    "sft_mm": {"max_steps": 2, "batch_size": 4, "save_steps": 2},
    "rl": {
        "max_steps": 2,
        "batch_size": 2,
        "group_size": 2,
        "save_steps": 1,
        "max_completion_tokens": 12,
        "learning_rate": 1.0e-3,
    },
    "checkpoint_eval": {"limit": 4, "max_new_tokens": 12},
    "eval": {"limit": 4, "max_new_tokens": 16},
    "orchestrate": {"retries": 0},
}


def merge(into: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def copy_project(dest: Path, changes: dict | None = None) -> Path:
    """The project's files (as git sees them, uncommitted ones too) in a new git repo at
    `dest`, params.yaml merged with SMALL and `changes`."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() and not name.startswith(("tests/", "metrics/", "reports/")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    merge(params, SMALL)
    merge(params, changes or {})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=avar", "-c", "user.email=avar@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "workspace"], cwd=dest, check=True)
    return dest
