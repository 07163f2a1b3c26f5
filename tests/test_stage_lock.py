"""One run of a stage at a time: a second `avar stage NAME` stops at once with the holder's
PID, and a killed holder leaves no stale lock."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from avar.io import LockedError, exclusive_lock

ROOT = Path(__file__).resolve().parents[1]
HOLD = """
import sys, time
from avar.io import exclusive_lock
with exclusive_lock(sys.argv[1], "test"):
    print("held", flush=True)
    time.sleep(60)
"""


def hold(path: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_held_lock_names_its_holder_and_dies_with_it(tmp_path):
    path = tmp_path / "locks/sft_mm.lock"
    holder = hold(path)
    try:
        with pytest.raises(
            LockedError, match=f"avar stage sft_mm is already running \\(PID {holder.pid}"
        ):
            with exclusive_lock(path, "avar stage sft_mm"):
                pass
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs
        holder.wait()
    with exclusive_lock(path, "avar stage sft_mm"):  # the OS released it
        assert path.read_text().strip() != str(holder.pid)


def test_a_second_avar_stage_stops_with_one_line(tmp_path):
    holder = hold(tmp_path / ".avar/locks/prepare.lock")
    try:
        start = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "avar.cli",
                "stage",
                "prepare",
                "--params",
                str(ROOT / "params.yaml"),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"avar stage prepare is already running (PID {holder.pid}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # the stage itself never started
    assert time.monotonic() - start < 60
