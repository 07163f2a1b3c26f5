"""Resume restores the weights: a stage SIGKILLed after a checkpoint and run again ends with
the parameters and checkpoint scores of an uninterrupted run with the same seed, bitwise
(CPU, same thread count: the resumed run replays the same float operations on the same
data order and RNG state); a checkpoint whose names do not fit the model stops the resume.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from stage_runs import (
    RESUMABLE_SFT_MM,
    assert_same_weights,
    avar_stage,
    check_kill_and_resume,
    finish,
    kill_after,
    last_step,
    new_project,
    outputs,
    rows,
    weights,
)

from avar.models.loader import load_model
from avar.models.weights import WeightMismatch, load_saved_weights

TWO_RANKS = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return new_project(tmp_path_factory.mktemp("resume"))


SFT_MM = RESUMABLE_SFT_MM


def test_killed_sft_mm_resumes_to_the_uninterrupted_weights(project):
    check_kill_and_resume(project, "sft_mm", SFT_MM, kill_at=6)
    steps = [row["step"] for row in rows(project, "sft_mm_killed")]
    assert steps == [3, 6, 9, 12]
    # the run learned: the resumed weights are not the starting ones
    start = weights(project / "models/base")
    end = weights(project / "models/sft_mm_killed")
    assert any(not start[k].equal(end[k]) for k in start)


def test_resume_from_a_checkpoint_that_does_not_fit_fails_with_the_names(project):
    """`avar stage sft_mm` finds its checkpoint-3 with one weight missing: exit 1 and one
    line naming the weight, not a run from the starting weights."""
    name = "sft_mm_broken"
    process = avar_stage(project, "sft_mm", SFT_MM + outputs(project, "sft_mm", name))
    kill_after(process, project / f"checkpoints/{name}/checkpoint-3")
    for later in project.glob(f"checkpoints/{name}/checkpoint-*"):
        if later.name != "checkpoint-3":
            shutil.rmtree(later)
    path = project / f"checkpoints/{name}/checkpoint-3/model.safetensors"
    saved = load_file(str(path))
    del saved["model.layers.0.mlp.up_proj.weight"]
    save_file(saved, str(path))
    process = avar_stage(project, "sft_mm", SFT_MM + outputs(project, "sft_mm", name))
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output[-2000:]
    assert "error:" in output and "1 model weights not in the saved files" in output
    assert "model.language_model.layers.0.mlp.up_proj.weight" in output
    assert "Traceback" not in output
    assert not (project / f"models/{name}").exists()


def test_killed_rl_resumes_to_the_uninterrupted_weights(project):
    """GRPO samples completions: the resumed run must restore the RNG state as well as the
    weights to sample the same groups."""
    run = [
        "rl.init_from=base",
        "rl.max_steps=6",
        "rl.save_steps=2",
        "rl.batch_size=2",
        "rl.group_size=2",
        "rl.max_completion_tokens=12",
        "rl.learning_rate=1.0e-3",
        "rl.log_steps=1",
        "checkpoint_eval.limit=2",
    ]
    check_kill_and_resume(project, "rl", run, kill_at=2)
    assert [row["step"] for row in rows(project, "rl_killed")] == [2, 4, 6]


def test_killed_zero3_two_rank_run_resumes_to_the_uninterrupted_weights(project):
    """ZeRO-3 resumes from DeepSpeed's own partitioned states on both ranks."""
    run = [
        "sft_mm.init_from=base",
        "sft_mm.deepspeed=zero3",
        "sft_mm.max_steps=6",
        "sft_mm.save_steps=2",
        "sft_mm.batch_size=2",
        "checkpoint_eval.limit=2",
    ]
    launchers = [(*TWO_RANKS, str(port)) for port in (29541, 29542, 29543, 29544)]
    check_kill_and_resume(project, "sft_mm", run, kill_at=2, launchers=launchers)
    # a re-run of the finished stage publishes its last checkpoint again, as it was
    published = weights(project / "models/sft_mm_killed")
    again = run + outputs(project, "sft_mm", "sft_mm_killed")
    output = finish(avar_stage(project, "sft_mm", again, launcher=launchers[3]))
    assert "already finished" in output
    assert_same_weights(published, weights(project / "models/sft_mm_killed"))


def test_checkpoint_with_foreign_names_stops_the_resume(project, tmp_path):
    """A checkpoint whose keys the model does not know (here: a DDP-wrapped state dict
    saved as it was, `module.*`) fails with the names instead of loading nothing."""
    model = load_model(str(project / "models/base"), device="cpu", dtype="fp32")
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    saved = load_file(str(project / "models/base/model.safetensors"))
    save_file({f"module.{k}": v for k, v in saved.items()}, str(folder / "model.safetensors"))
    expected = "80 saved weights the model has no place for: module.model.embed_tokens.weight"
    with pytest.raises(WeightMismatch, match=expected):
        load_saved_weights(model, folder)


def test_checkpoint_missing_a_weight_stops_the_resume(project, tmp_path):
    model = load_model(str(project / "models/base"), device="cpu", dtype="fp32")
    shutil.copytree(project / "models/base", tmp_path / "partial")
    saved = load_file(str(tmp_path / "partial/model.safetensors"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    del saved["visual.merger.mlp.0.weight"]
    save_file({k: v + 1 for k, v in saved.items()}, str(tmp_path / "partial/model.safetensors"))
    expected = r"1 model weights not in the saved files: model\.visual\.merger\.mlp\.0\.weight"
    with pytest.raises(WeightMismatch, match=expected):
        load_saved_weights(model, tmp_path / "partial")
    # nothing was copied before the check failed
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(WeightMismatch, match="visual.merger.mlp.0.weight"):
        load_model(str(tmp_path / "partial"), device="cpu", dtype="fp32")


def test_saved_weights_load_back_exactly(project, tmp_path):
    """Save a changed model (transformers writes the checkpoint's names), load it into a
    fresh one through the renaming: every tensor equal, the tied LM head still tied."""
    model = load_model(str(project / "models/base"), device="cpu", dtype="fp32")
    with torch.no_grad():
        for index, param in enumerate(model.parameters()):
            param.add_(0.01 * (index + 1))
    model.save_pretrained(tmp_path / "changed")
    fresh = load_model(str(project / "models/base"), device="cpu", dtype="fp32")
    assert load_saved_weights(fresh, tmp_path / "changed") == 80
    assert_same_weights(model.state_dict(), fresh.state_dict())
    head, embed = fresh.lm_head.weight, fresh.model.language_model.embed_tokens.weight
    assert head.data_ptr() == embed.data_ptr()


def test_pruned_checkpoints_keep_every_score_and_the_stage_resumes(project):
    """save_total_limit 2: two checkpoint folders left on disk, every checkpoint's row in
    the metrics file, and a killed run resumes from the newest kept."""
    tmp = project
    run = [
        "sft_mm.init_from=base",
        "sft_mm.max_steps=8",
        "sft_mm.save_steps=2",
        "sft_mm.batch_size=2",
        "sft_mm.save_total_limit=2",
        "checkpoint_eval.limit=2",
        *outputs(tmp, "sft_mm", "pruned"),
    ]
    folder = tmp / "checkpoints/pruned"
    process = avar_stage(tmp, "sft_mm", run)
    kill_after(process, folder / "checkpoint-6")
    kept = sorted(p.name for p in folder.glob("checkpoint-*"))
    # the kill can land between writing checkpoint-6 and pruning the oldest
    assert "checkpoint-4" in kept and len(kept) <= 3, kept
    resumed_from = last_step(folder)
    output = finish(avar_stage(tmp, "sft_mm", run))
    assert "resuming from" in output and f"checkpoint-{resumed_from}" in output, output[-2000:]
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]
    assert [row["step"] for row in rows(tmp, "pruned")] == [2, 4, 6, 8]
