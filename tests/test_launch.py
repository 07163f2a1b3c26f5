"""`avar stage NAME` on several ranks: what `launch` resolves to, rows that equal one rank's,
a rank killed mid-stage, and two Ray nodes training one stage."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch
from stage_runs import (
    RESUMABLE_SFT_MM,
    ROOT,
    assert_same_weights,
    avar_stage,
    changed,
    finish,
    last_step,
    new_project,
    outputs,
    rows,
    small_overrides,
    wait_for_checkpoint,
    weights,
)

from avar import launch
from avar.config import ConfigError, load_params

PARAMS = ROOT / "params.yaml"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return new_project(tmp_path_factory.mktemp("launch"))


def test_auto_is_one_process_on_a_cpu_host_and_stages_take_their_own_ranks():
    params = load_params(PARAMS, ["launch.stages.sft_mm.nproc_per_node=4"])
    assert launch.plan(params, "rl") == launch.Ranks("torchrun", 1, 1)  # auto, no GPU here
    assert launch.plan(params, "sft_mm").world_size == 4
    shared = load_params(
        PARAMS,
        [
            "launch.nproc_per_node=2",
            "launch.stages.rl.nnodes=3",
            "launch.rdzv_endpoint=head:29400",
        ],
    )
    assert launch.plan(shared, "rl") == launch.Ranks("torchrun", 2, 3)
    assert launch.plan(shared, "eval").world_size == 2
    assert launch.plan(shared, "prepare").world_size == 1  # never spreads


def test_the_ranked_stages_are_the_registrys():
    from avar.config.specs import RANKED_STAGES
    from avar.stages.registry import PIPELINE

    assert tuple(s.name for s in PIPELINE if s.ranks) == RANKED_STAGES


class _GroupSeen:
    """A stage that records whether it ran inside a process group, or fails."""

    def __init__(self, fails: bool = False):
        self.fails, self.inside = fails, None

    def run(self, params):
        self.inside = torch.distributed.is_initialized()
        if self.fails:
            raise RuntimeError("the stage failed")
        return SimpleNamespace(line=lambda: "eval: done")


def test_a_rank_leaves_its_process_group_after_its_stage_and_keeps_it_after_a_failure(
    monkeypatch, tmp_path
):
    # a gloo group left to the interpreter's exit aborts ranks that had finished (CI saw
    # "terminate called without an active exception" fail a two-rank GRPO step)
    monkeypatch.setenv(launch.SUMMARY_ENV, str(tmp_path / "summary.txt"))
    for fails in (False, True):
        store = torch.distributed.FileStore(str(tmp_path / f"store{fails}"), 1)
        torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
        stage = _GroupSeen(fails)
        monkeypatch.setattr(launch, "declared", lambda name, stage=stage: stage)
        failure = pytest.raises(RuntimeError, match="the stage failed")
        try:
            with failure if fails else contextlib.nullcontext():
                launch.run_here("eval", PARAMS, [])
            assert stage.inside
            # left after success; kept after a failure, where other ranks may still wait
            assert torch.distributed.is_initialized() == fails
        finally:
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    assert (tmp_path / "summary.txt").read_text() == "eval: done\n"


@pytest.mark.parametrize(
    "override, message",
    [
        ("launch.stages.curate.nproc_per_node=2", "launch.stages.curate: expected a stage that"),
        ("launch.nproc_per_node=0", "launch.nproc_per_node: expected `auto` or a process count"),
        ("launch.nnodes=2", "launch.rdzv_endpoint: expected host:port of the rendezvous"),
        ("launch.engine=mpi", "launch.engine: expected one of ['torchrun', 'ray']"),
    ],
)
def test_bad_launch_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_params(PARAMS, [override])


def test_torchrun_arguments_for_one_host_and_for_several():
    cfg = load_params(PARAMS, ["launch.rdzv_endpoint=head:29400"]).launch
    argv = ["stage", "sft_mm", "--params", "params.yaml"]
    one = launch.torchrun_args(launch.Ranks("torchrun", 2, 1), argv, cfg, Path("logs"))
    assert one[:3] == ["--nnodes=1", "--nproc-per-node=2", "--standalone"]
    assert one[-6:] == ["-m", "avar.cli", *argv]
    two = launch.torchrun_args(launch.Ranks("torchrun", 8, 2), argv, cfg, Path("logs"))
    assert "--rdzv-endpoint=head:29400" in two and "--rdzv-backend=c10d" in two


@pytest.mark.slow
def test_eval_and_vas_on_two_ranks_give_one_ranks_rows_in_order(project):
    """Seven questions in batches of two: rank 0 answers batches 1 and 3, rank 1 batches 2
    and 4; the gathered files equal one process's, but for the timings and the launch."""
    tmp = project
    base = [
        f"eval.data_dir={tmp}/benchmarks",
        "eval.benches=[synthetic]",
        "eval.limit=7",
        "eval.batch_size=2",
        "eval.vas=true",
        "eval.max_new_tokens=10",
        "checkpoint_eval.batch_size=2",
        "checkpoint_eval.limit=7",
    ]
    for n in (1, 2):
        extra = [
            *base,
            f"launch.nproc_per_node={n}",
            f"eval.metrics={tmp}/ranks{n}/eval.json",
            f"vas.metrics={tmp}/ranks{n}/vas.json",
        ]
        output = finish(avar_stage(tmp, "eval", extra))
        finish(avar_stage(tmp, "vas", extra))
        assert ("[rank1]:" in output) == (n == 2)

    def read(path: Path) -> dict:
        data = json.loads(path.read_text())
        data.pop("launch", None)
        for report in data.get("benchmarks", {}).values():
            report.pop("seconds")
        for row in data.get("models", {}).values():
            for report in row["benchmarks"].values():
                report.pop("seconds")
        return data

    files = ["eval.json", "vas.json", "eval/base.json"]
    for name in files:
        assert read(tmp / "ranks2" / name) == read(tmp / "ranks1" / name), name
    samples = json.loads((tmp / "ranks2/eval/base.json").read_text())["benchmarks"]
    assert len(samples["synthetic"]["samples"]) == 6  # every held-out question, once
    launched = json.loads((tmp / "ranks2/eval.json").read_text())["launch"]
    assert launched == {"engine": "torchrun", "world_size": 2, "nodes": 1, "devices": ["cpu"] * 2}


@pytest.mark.slow
def test_checkpoint_scoring_on_two_ranks_gives_one_ranks_row(project, tmp_path):
    script = str(ROOT / "tests/score_ranks.py")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, script, project, one], check=True, env=env, timeout=300)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    subprocess.run(
        [*torchrun, "--nproc-per-node=2", script, project, two], check=True, env=env, timeout=300
    )
    assert json.loads(two.read_text()) == json.loads(one.read_text())
    assert len(json.loads(one.read_text())["answers"]) == 6


SFT_MM = [*RESUMABLE_SFT_MM, "launch.stages.sft_mm.nproc_per_node=2"]


def kill_rank(process, rank: int, checkpoint: Path, timeout: float = 240) -> str:
    """SIGKILL one rank of the stage once `checkpoint` is complete; the stage's output."""
    lines: list[str] = []
    drain = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    drain.start()
    wait_for_checkpoint(process, checkpoint, timeout)
    (victim,) = [
        child
        for child in psutil.Process(process.pid).children(recursive=True)
        if child.environ().get("RANK") == str(rank) and "avar.cli" in " ".join(child.cmdline())
    ]
    victim.kill()
    process.wait(timeout=120)
    drain.join(timeout=10)
    return "".join(lines)


@pytest.mark.slow
def test_a_rank_killed_mid_stage_fails_the_stage_and_a_rerun_resumes_to_the_same_end(project):
    tmp = project
    finish(avar_stage(tmp, "sft_mm", SFT_MM + outputs(tmp, "sft_mm", "whole")))
    process = avar_stage(tmp, "sft_mm", SFT_MM + outputs(tmp, "sft_mm", "killed"))
    output = kill_rank(process, 1, tmp / "checkpoints/killed/checkpoint-3")
    assert process.returncode == 1, output[-3000:]
    assert "rank 1" in output and "failed with SIGKILL" in output, output[-3000:]
    assert not (tmp / "models/killed").exists()  # nothing published by a failed stage
    resumed_from = last_step(tmp / "checkpoints/killed")
    output = finish(avar_stage(tmp, "sft_mm", SFT_MM + outputs(tmp, "sft_mm", "killed")))
    assert "resuming from" in output and f"checkpoint-{resumed_from}" in output, output[-2000:]
    # the summary line once, from the launcher (rank 0 leaves it in a file for it)
    assert len(re.findall(r"^sft_mm: 12 steps in ", output, re.MULTILINE)) == 1, output[-2000:]
    assert "[rank0]:sft_mm: 12 steps" not in output
    report = json.loads((tmp / "metrics/killed.json").read_text())
    assert report["steps"] == 12 and report["launch"]["world_size"] == 2
    assert [r["step"] for r in report["checkpoints"]] == [3, 6, 9, 12]  # each scored once
    assert rows(tmp, "killed") == rows(tmp, "whole")
    assert_same_weights(weights(tmp / "models/whole"), weights(tmp / "models/killed"))


RAY_CLUSTER = """
set -e
ip link set lo up
export RAY_DEDUP_LOGS=0
trap 'ray stop --force >/dev/null 2>&1' EXIT
ray start --head --node-ip-address=127.0.0.1 --port={port} --num-cpus=1 \
  --include-dashboard=false --disable-usage-stats --temp-dir={temp} >{temp}/head.log 2>&1
ray start --address=127.0.0.1:{port} --node-ip-address=127.0.0.1 --num-cpus=1 \
  --disable-usage-stats >{temp}/worker.log 2>&1
"$@"
# the same stage with a data file that is not there: a rank's error fails the stage
"$@" -S sft_mm.data={temp}/missing.jsonl -S sft_mm.out_dir={temp}/none >{temp}/failed.log 2>&1 \
  || echo $? >{temp}/failed.rc
"""


def network_namespace() -> bool:
    """Ray binds the machine's interfaces: its tests run in a network namespace of their own,
    where only loopback exists."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = ["unshare", "--net", "ip", "link", "set", "lo", "up"]
    return subprocess.run(probe, capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not network_namespace(), reason="needs unshare --net (root) and ip")
def test_two_ray_nodes_train_one_stage_with_a_rank_on_each(project, tmp_path):
    tmp = project
    temp = tempfile.mkdtemp(prefix="ray")  # Ray's socket paths must stay short
    script = tmp_path / "cluster.sh"
    script.write_text(RAY_CLUSTER.format(port=6390, temp=temp))
    stage = [
        sys.executable,
        "-m",
        "avar.cli",
        "stage",
        "sft_mm",
        "--params",
        str(PARAMS),
    ]
    extra = [
        "sft_mm.init_from=base",
        "launch.engine=ray",
        "launch.nnodes=2",
        "launch.nproc_per_node=1",
        "launch.ray_address=127.0.0.1:6390",
        *outputs(tmp, "sft_mm", "ray"),
    ]
    for override in small_overrides(tmp) + extra:
        stage += ["-S", override]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    try:
        done = subprocess.run(
            ["unshare", "--net", "bash", str(script), *stage],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        failed = Path(temp, "failed.log").read_text()
        failed_rc = Path(temp, "failed.rc").read_text().strip()
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert failed_rc == "1", failed[-3000:]
    assert "avar stage sft_mm failed on the Ray cluster" in failed and "missing.jsonl" in failed
    report = json.loads((tmp / "metrics/ray.json").read_text())
    assert report["launch"] == {
        "engine": "ray",
        "world_size": 2,
        "nodes": 2,
        "devices": ["cpu", "cpu"],
    }
    assert report["steps"] == 3
    assert changed(weights(tmp / "models/base"), weights(tmp / "models/ray")) > 0.9
    assert "[rank1]:" in done.stdout + done.stderr
    assert re.search(r"^sft_mm: 3 steps in ", done.stdout, re.MULTILINE), done.stdout[-2000:]


@pytest.mark.slow
def test_two_rank_grpo_samples_disjoint_groups_and_moves_one_policy(project, tmp_path):
    """Each rank samples whole groups of its own prompts and normalises each group's rewards
    by itself; after the step both ranks hold the same, moved weights."""
    from avar.train.grpo import group_advantages

    script = str(ROOT / "tests/grpo_ranks.py")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    data = project / "data/raw/visual/data.jsonl"
    subprocess.run(
        [*torchrun, "--nproc-per-node=2", script, project / "models/base", tmp_path, data],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    (first,), (second,) = ranks[0]["seen"], ranks[1]["seen"]
    assert len(first["ids"]) == len(second["ids"]) == 2  # two prompts, 3 completions each
    assert not set(first["ids"]) & set(second["ids"])
    for seen in (first, second):
        expected = group_advantages(torch.tensor(seen["rewards"]), 3)
        assert torch.allclose(torch.tensor(seen["advantages"]), expected)
    assert ranks[0]["moved"] > 0.5
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
