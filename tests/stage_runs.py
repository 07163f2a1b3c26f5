"""Running training stages in tests: small params for a project in a temp folder, the
stage as a subprocess (`avar stage NAME`, optionally under a launcher), weight comparisons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def new_project(tmp: Path) -> Path:
    """A project folder with small synthetic sets and a fresh tiny model at models/base."""
    from avar.data import synthesize
    from avar.models.tiny import init_tiny

    synthesize("visual", 16, 0, tmp / "data/raw/visual")
    synthesize("text", 16, 1, tmp / "data/raw/text")
    synthesize("visual", 6, 2, tmp / "data/raw/heldout", prefix="heldout")
    init_tiny(tmp / "models/base", "tiny", seed=0)
    return tmp


def small_overrides(tmp: Path) -> list[str]:
    """Params for a project in `tmp`: every stage a few steps, scoring on 4 questions."""
    sets = [
        f"model.init_dir={tmp}/models/init",
        "checkpoint_eval.limit=4",
        "checkpoint_eval.max_new_tokens=12",
        f"checkpoint_eval.data={tmp}/data/raw/heldout/data.jsonl",
        "base.max_steps=3",
        "base.batch_size=4",
        "base.save_steps=2",
        "base.heldout=10",
        "coldstart_text.max_steps=3",
        "coldstart_text.batch_size=4",
        "coldstart_text.save_steps=2",
        "sft_mm.max_steps=3",
        "sft_mm.batch_size=4",
        "sft_mm.save_steps=2",
        "rl.max_steps=2",
        "rl.batch_size=2",
        "rl.group_size=2",
        "rl.save_steps=1",
        "rl.max_completion_tokens=12",
        "rl.learning_rate=1.0e-3",
    ]
    for stage in ("base", "coldstart_text", "sft_mm", "rl"):
        sets += [
            f"{stage}.out_dir={tmp}/models/{stage}",
            f"{stage}.checkpoint_dir={tmp}/checkpoints/{stage}",
            f"{stage}.metrics={tmp}/metrics/{stage}.json",
        ]
    sets += [
        f"coldstart_text.data={tmp}/data/raw/text/data.jsonl",
        f"sft_mm.data={tmp}/data/raw/visual/data.jsonl",
        f"rl.data={tmp}/data/raw/visual/data.jsonl",
    ]
    return sets


def weights(model_dir: Path) -> dict:
    """A model folder's weights, or a LoRA checkpoint's adapter."""
    path = model_dir / "model.safetensors"
    return load_file(str(path if path.is_file() else model_dir / "adapter_model.safetensors"))


def changed(before: dict, after: dict) -> float:
    """Fraction of weight tensors that differ."""
    return sum(not before[k].equal(after[k]) for k in before) / len(before)


def avar_stage(tmp: Path, stage: str, extra: list[str], env=None, launcher=()) -> subprocess.Popen:
    args = [
        sys.executable,
        *launcher,
        "-m",
        "avar.cli",
        "stage",
        stage,
        "--params",
        str(ROOT / "params.yaml"),
    ]
    for override in small_overrides(tmp) + extra:
        args += ["-S", override]
    return subprocess.Popen(
        args,
        cwd=tmp,
        env=env or os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a test can kill launcher and ranks
    )


def outputs(tmp: Path, stage: str, name: str) -> list[str]:
    """The stage's model, checkpoints and metrics under their own names."""
    return [
        f"{stage}.out_dir={tmp}/models/{name}",
        f"{stage}.checkpoint_dir={tmp}/checkpoints/{name}",
        f"{stage}.metrics={tmp}/metrics/{name}.json",
    ]


def finish(process, timeout: int = 400) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def rows(tmp: Path, name: str) -> list[dict]:
    return json.loads((tmp / f"metrics/{name}.json").read_text())["checkpoints"]


def assert_same_weights(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    different = [k for k in expected if not torch.equal(expected[k], actual[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def last_step(checkpoints: Path) -> int:
    """The newest complete checkpoint's step."""
    saved = checkpoints.glob("checkpoint-*/trainer_state.json")
    return max(int(p.parent.name.split("-")[1]) for p in saved)


RESUMABLE_SFT_MM = [
    "sft_mm.init_from=base",
    "sft_mm.max_steps=12",
    "sft_mm.save_steps=3",
    "sft_mm.batch_size=2",
    "sft_mm.log_steps=1",
    "checkpoint_eval.limit=2",
]
"""A 12-step sft_mm with a checkpoint every 3 steps: room to kill it after one and resume."""


def wait_for_checkpoint(process, checkpoint: Path, timeout: float = 240) -> None:
    """Until `checkpoint` is complete (its trainer_state.json written), while the stage
    runs; the caller keeps draining its output (a full pipe would block the stage)."""
    deadline = time.monotonic() + timeout
    state = checkpoint / "trainer_state.json"
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.exists() and process.poll() is None, "the stage ended or hung before the kill"


def kill_after(process, checkpoint: Path, timeout: float = 240) -> None:
    """SIGKILL the stage and every process under it (torchrun puts each rank in a session
    of its own) once `checkpoint` is complete, as a lost node would."""
    # keep reading its output: a full pipe would block the stage before it gets there
    drain = threading.Thread(target=process.stdout.read, daemon=True)
    drain.start()
    wait_for_checkpoint(process, checkpoint, timeout)
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    for member in tree:
        member.kill()
    psutil.wait_procs(tree, timeout=30)
    process.wait()
    drain.join(timeout=10)


def check_kill_and_resume(tmp, stage, run, kill_at, launchers=((), (), ())) -> None:
    """Run uninterrupted; run again, killed once checkpoint `kill_at` is saved, and resume;
    both end with the same weights, checkpoints and checkpoint rows."""
    ref, killed = f"{stage}_ref", f"{stage}_killed"
    finish(avar_stage(tmp, stage, run + outputs(tmp, stage, ref), launcher=launchers[0]))
    process = avar_stage(tmp, stage, run + outputs(tmp, stage, killed), launcher=launchers[1])
    kill_after(process, tmp / f"checkpoints/{killed}/checkpoint-{kill_at}")
    resumed_from = last_step(tmp / f"checkpoints/{killed}")
    output = finish(
        avar_stage(tmp, stage, run + outputs(tmp, stage, killed), launcher=launchers[2])
    )
    assert "resuming from" in output and f"checkpoint-{resumed_from}" in output, output[-2000:]

    assert_same_weights(weights(tmp / f"models/{ref}"), weights(tmp / f"models/{killed}"))
    final = last_step(tmp / f"checkpoints/{ref}")
    assert resumed_from < final, "killed too late to test a resume"
    assert_same_weights(
        weights(tmp / f"checkpoints/{ref}/checkpoint-{final}"),
        weights(tmp / f"checkpoints/{killed}/checkpoint-{final}"),
    )
    # every checkpoint scored once, with the uninterrupted run's numbers (greedy answers,
    # VAS, masses and the logged losses)
    assert rows(tmp, killed) == rows(tmp, ref)
