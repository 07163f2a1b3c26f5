"""Every training stage, a few steps on the tiny model: weights change, checkpoints and
metrics exist and parse, a finished stage re-runs as a no-op, ZeRO-2 runs, ZeRO-3 runs on
two ranks. Killing and resuming: test_resume.py."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from stage_runs import ROOT, avar_stage, changed, new_project, small_overrides, weights

from avar.config import load_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return new_project(
        tmp_path_factory.mktemp("project")
    )  # base: until the chain test pretrains one


def check_outputs(tmp: Path, stage: str, steps: int, save_steps: int) -> dict:
    metrics = json.loads((tmp / f"metrics/{stage}.json").read_text())
    assert metrics["stage"] == stage and metrics["steps"] == steps
    rows = metrics["checkpoints"]
    expected = sorted({*range(save_steps, steps + 1, save_steps), steps})
    assert [row["step"] for row in rows] == expected
    for row in rows:
        assert 0.0 <= row["heldout/accuracy"] <= 1.0
        masses = row["heldout/image_mass"], row["heldout/system_mass"]
        assert None not in masses and 0.0 <= sum(masses) <= 1.0 + 1e-6
    saved = {int(p.name.split("-")[1]) for p in (tmp / f"checkpoints/{stage}").glob("checkpoint-*")}
    assert saved == set(expected)
    state = json.loads(
        (tmp / f"checkpoints/{stage}/checkpoint-{steps}/trainer_state.json").read_text()
    )
    assert state["global_step"] == steps
    model_dir = tmp / f"models/{stage}"
    assert (model_dir / "config.json").is_file() and (model_dir / "tokenizer.json").is_file()
    return metrics


def test_stage_chain_trains_every_stage(project):
    from avar.stages import base, coldstart_text, rl, sft_mm

    params = load_params(ROOT / "params.yaml", small_overrides(project))
    result = base.run(params)
    init = weights(project / "models/init")
    assert changed(init, weights(project / "models/base")) > 0.9
    metrics = check_outputs(project, "base", 3, 2)
    assert "perception/accuracy" in metrics["final"]
    assert metrics["reference"]["perception/chance"] > 0
    assert result.line().startswith("base: 3 steps")

    previous = "base"
    for stage, module in (("coldstart_text", coldstart_text), ("sft_mm", sft_mm)):
        module.run(params)
        assert (
            changed(weights(project / f"models/{previous}"), weights(project / f"models/{stage}"))
            > 0.5
        ), stage
        previous = stage
    # A 3-step policy earns no reward, so GRPO has no advantage to follow here; that it
    # moves the weights when rewards differ is tested in test_grpo.py.
    rl.run(params)
    check_outputs(project, "coldstart_text", 3, 2)
    sft = check_outputs(project, "sft_mm", 3, 2)
    logged = {k for entry in sft["history"] for k in entry}
    assert {"loss_lm", "loss_enhance_img", "loss_suppress_sys", "image_mass"} <= logged
    rl_metrics = check_outputs(project, "rl", 2, 1)
    logged = {k for entry in rl_metrics["history"] for k in entry}
    assert {"reward/accuracy/mean", "reward/visual/mean", "reward/format/mean", "kl"} <= logged


def test_rerun_of_a_finished_stage_only_republishes(project):
    """Safe to re-run: the finished checkpoints are reused, the model is the same."""
    from avar.stages import coldstart_text

    before = weights(project / "models/coldstart_text")
    params = load_params(ROOT / "params.yaml", small_overrides(project))
    result = coldstart_text.run(params)
    assert result.steps == 3
    after = weights(project / "models/coldstart_text")
    assert changed(before, after) == 0.0


def test_new_data_under_the_same_path_starts_over(project, caplog):
    """Checkpoints are reused only for the same params, data content and starting weights."""
    from avar.stages import coldstart_text

    data = project / "data/text_changing/data.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    lines = (project / "data/raw/text/data.jsonl").read_text().splitlines(keepends=True)
    data.write_text("".join(lines))
    sets = [
        f"coldstart_text.data={data}",
        f"coldstart_text.checkpoint_dir={project}/checkpoints/changing",
        f"coldstart_text.out_dir={project}/models/changing",
        f"coldstart_text.metrics={project}/metrics/changing.json",
    ]
    params = load_params(ROOT / "params.yaml", small_overrides(project) + sets)
    caplog.set_level(logging.INFO, logger="avar")
    coldstart_text.run(params)
    caplog.clear()
    coldstart_text.run(params)  # same content: resumed, finished
    assert "resuming from" in caplog.text and "starting over" not in caplog.text
    data.write_text("".join(lines[:-1]))  # one record fewer, same path
    caplog.clear()
    coldstart_text.run(params)
    assert "starting over" in caplog.text and "other params, data or weights" in caplog.text


def test_sft_under_deepspeed_zero2_on_cpu(project):
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29533",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
    }
    ds = [
        "sft_mm.deepspeed=zero2",
        f"sft_mm.out_dir={project}/models/sft_mm_zero2",
        f"sft_mm.checkpoint_dir={project}/checkpoints/sft_mm_zero2",
        f"sft_mm.metrics={project}/metrics/sft_mm_zero2.json",
    ]
    output, _ = avar_stage(project, "sft_mm", ds, env).communicate(timeout=300)
    assert "sft_mm: 3 steps" in output, output[-3000:]
    assert "DeepSpeed" in output or "deepspeed" in output
    zero = weights(project / "models/sft_mm_zero2")
    assert changed(weights(project / "models/coldstart_text"), zero) > 0.5
    checkpoint = project / "checkpoints/sft_mm_zero2/checkpoint-2"
    assert list(checkpoint.glob("global_step*")), "no DeepSpeed optimizer state saved"


def test_sft_under_deepspeed_zero3_on_two_ranks(project):
    """Weights partitioned across 2 processes: load, train, score (collective generate),
    save and publish must all run on every rank, with one metrics file written."""
    ds = [
        "sft_mm.deepspeed=zero3",
        f"sft_mm.out_dir={project}/models/sft_mm_zero3",
        f"sft_mm.checkpoint_dir={project}/checkpoints/sft_mm_zero3",
        f"sft_mm.metrics={project}/metrics/sft_mm_zero3.json",
    ]
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534"]
    process = avar_stage(project, "sft_mm", ds, launcher=launcher)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    metrics = json.loads((project / "metrics/sft_mm_zero3.json").read_text())
    assert metrics["steps"] == 3 and [row["step"] for row in metrics["checkpoints"]] == [2, 3]
    assert all(0.0 <= row["heldout/accuracy"] <= 1.0 for row in metrics["checkpoints"])
    zero = weights(project / "models/sft_mm_zero3")
    start = weights(project / "models/coldstart_text")
    assert zero.keys() == start.keys() and all(zero[k].shape == start[k].shape for k in zero)
    assert changed(start, zero) > 0.5
    checkpoint = weights(project / "checkpoints/sft_mm_zero3/checkpoint-2")
    assert checkpoint.keys() == start.keys()
