"""Faults: a stage SIGKILLed mid-write (curate, eval) leaves nothing a later step could take
for complete, and the rerun finishes with what an uninterrupted run writes. Training stages
are killed and resumed in test_resume.py; two runs of one stage in test_stage_lock.py; a
full disk and a server that is down in test_bad_input.py."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avar.models.tiny import init_tiny

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "data.visual.n=40",
    "data.text.n=20",
    "data.heldout.n=12",
    "eval.limit=8",
    "eval.max_new_tokens=24",
]


def avar_stage(tmp: Path, stage: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "avar.cli", "stage", stage, "--params", str(ROOT / "params.yaml")]
    for override in SMALL:
        args += ["-S", override]
    return subprocess.Popen(
        args, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    return output


def kill_when(process, appeared, timeout: float = 120) -> None:
    """SIGKILL once `appeared()` is true (the stage is writing)."""
    deadline = time.monotonic() + timeout
    while not appeared() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the stage ended before it could be killed"
    process.kill()
    process.communicate()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    finish(avar_stage(tmp, "prepare"))
    init_tiny(tmp / "models/base", "tiny", seed=0)  # a stage model for eval
    return tmp


def same_tree(a: Path, b: Path) -> bool:
    """The same files with the same bytes (the report's timing aside)."""
    compared = filecmp.dircmp(a, b, ignore=["report.json"])
    if compared.left_only or compared.right_only or compared.diff_files:
        return False
    return all(same_tree(a / d, b / d) for d in compared.common_dirs)


def test_curate_killed_mid_write_leaves_no_set_and_reruns_whole(workspace):
    finish(avar_stage(workspace, "curate"))
    reference = workspace / "reference"
    os.replace(workspace / "data/curated", reference)
    process = avar_stage(workspace, "curate")
    kill_when(process, lambda: any((workspace / "data").glob(".curated.*.tmp/*")))
    assert not (workspace / "data/curated").exists()  # nothing a later stage could read
    finish(avar_stage(workspace, "curate"))
    assert not list((workspace / "data").glob(".curated.*.tmp"))  # the debris is gone
    assert same_tree(reference, workspace / "data/curated")
    folders = (reference, workspace / "data/curated")
    first, second = (json.loads((d / "report.json").read_text()) for d in folders)
    first.pop("seconds"), second.pop("seconds")
    assert first == second


def test_eval_killed_mid_write_keeps_the_last_complete_answers(workspace):
    finish(avar_stage(workspace, "eval"))
    answers = workspace / "metrics/eval"
    before = {p.name: p.read_bytes() for p in answers.iterdir()}
    (workspace / "metrics/eval.json").unlink()
    process = avar_stage(workspace, "eval")
    kill_when(process, lambda: any((workspace / "metrics").glob(".eval.*.tmp")))
    assert {p.name: p.read_bytes() for p in answers.iterdir()} == before
    assert not (workspace / "metrics/eval.json").exists()
    finish(avar_stage(workspace, "eval"))
    assert not list((workspace / "metrics").glob(".eval.*.tmp"))
    report = json.loads((workspace / "metrics/eval.json").read_text())
    assert report["models"]["base"]["benchmarks"]["synthetic"]["n"] == 8
    again = {p.name: p.read_bytes() for p in answers.iterdir()}
    assert again.keys() == before.keys()
    for name, data in again.items():  # the same answers again (timings aside)
        samples = json.loads(data)["benchmarks"]["synthetic"]["samples"]
        assert samples == json.loads(before[name])["benchmarks"]["synthetic"]["samples"]
