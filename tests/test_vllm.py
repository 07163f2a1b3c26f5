"""`generate.backend: vllm` on the tiny model, against vLLM's CPU build (`make vllm-env`):
greedy answers and eval rows equal HF generate's, the engine's weights follow the model
(full and LoRA), GRPO samples through it (rewards and r_visual from the training forward,
the weights those of an HF-sampled run given the same completions), a whole `avar stage
rl` through it, and the missing environment said in one line.

One engine for the module (about 10 s to start here); the module takes about 3 min.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from grpo_steps import LengthRewarded, grpo_step

from avar.config.schema import GenerateConfig, ModelConfig, RlConfig, VllmConfig
from avar.data import read_jsonl
from avar.engine.client import EngineError, EngineSpec, VllmEngine, engine_spec
from avar.engine.policy import PolicyEngine, merged_weights
from avar.generate import generate
from avar.models.loader import load_model, load_processor
from avar.stages.rl import prompt_rows
from avar.train.grpo import GrpoObjective, GrpoTrainer

SPEC = engine_spec(GenerateConfig(backend="vllm"), ModelConfig(device="cpu"))
assert SPEC is not None
needs_vllm = pytest.mark.skipif(
    SPEC.python() is None, reason=f"no vLLM environment at {SPEC.pythons()}: make vllm-env"
)


@pytest.fixture(scope="module")
def engine(processor):
    with PolicyEngine(SPEC, processor) as policy_engine:
        yield policy_engine


@pytest.fixture(scope="module")
def chats(visual_jsonl):
    from avar.data.chats import prompts

    return prompts(
        read_jsonl(visual_jsonl)[:12], visual_jsonl.parent, "You are a helpful assistant."
    )


def fresh_model(tiny_dir):
    return load_model(str(tiny_dir), device="cpu", dtype="fp32").eval()


def test_a_missing_vllm_environment_is_one_line(tiny_dir, tmp_path):
    spec = EngineSpec(VllmConfig(python=str(tmp_path / "no-env/bin/python")), "float32", 0, "cpu")
    with pytest.raises(EngineError) as raised:
        VllmEngine(spec, tiny_dir)
    said = str(raised.value)
    assert "\n" not in said and str(tmp_path / "no-env/bin/python") in said
    assert "make vllm-env" in said


def test_a_python_without_vllm_is_one_line(tiny_dir):
    # avar's own Python runs the worker, whose `import vllm` fails: said, not a fall-back
    spec = EngineSpec(VllmConfig(python=sys.executable), "float32", 0, "cpu")
    with pytest.raises(EngineError) as raised:
        VllmEngine(spec, tiny_dir)
    said = str(raised.value)
    assert "\n" not in said and sys.executable in said
    assert "No module named 'vllm'" in said


def test_lora_weights_are_merged_as_peft_merges_them(tiny_dir):
    from avar.config.schema import LoraConfig
    from avar.train.lora import add_lora

    model = add_lora(fresh_model(tiny_dir), LoraConfig(r=4, target_modules=["q_proj"]), seed=0)
    with torch.no_grad():  # adapters that change the weights (B starts at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    ours = merged_weights(model)
    expected = model.merge_and_unload().state_dict()
    assert not any("lora" in k or "base_layer" in k for k in ours)
    assert set(ours) <= set(expected)
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-6, atol=1e-6)
    untouched = fresh_model(tiny_dir).state_dict()
    moved = [k for k in ours if "q_proj.weight" in k]
    assert moved and all(not ours[k].equal(untouched[k]) for k in moved)


@pytest.mark.slow
@needs_vllm
@pytest.mark.parametrize("max_pixels", [0, 56 * 56])  # the checkpoint's bounds, and fewer
def test_greedy_answers_through_vllm_equal_hf_generate(
    tiny_dir, processor, engine, chats, caplog, max_pixels
):
    model = fresh_model(tiny_dir)
    processor = load_processor(str(tiny_dir), 0, max_pixels)
    hf = generate(model, processor, chats, max_new_tokens=24, batch_size=6, progress=False)
    ours = generate(model, processor, chats, 24, progress=False, engine=engine.synced(model, 0))
    assert ours == hf
    assert "prompts' token ids unlike avar" not in caplog.text  # the same prompts, too


@pytest.mark.slow
@needs_vllm
def test_a_prompt_with_three_images_gets_hfs_answer(tiny_dir, processor, engine, multi_image_chat):
    model = fresh_model(tiny_dir)
    chat = multi_image_chat[:-1]  # up to the last user turn: three images in all
    hf = generate(model, processor, [chat], max_new_tokens=16, progress=False)
    ours = generate(model, processor, [chat], 16, progress=False, engine=engine.synced(model, 0))
    assert ours == hf


@pytest.mark.slow
@needs_vllm
def test_the_engines_weights_follow_the_model(tiny_dir, processor, engine, chats):
    model = fresh_model(tiny_dir)
    before = generate(model, processor, chats, 16, progress=False, engine=engine.synced(model, 0))
    with torch.no_grad():
        torch.manual_seed(0)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf = generate(model, processor, chats, 16, batch_size=6, progress=False)
    assert engine.synced(model, 0).version and before == generate(
        model, processor, chats, 16, progress=False, engine=engine.synced(model, 0)
    )  # the same version: no reload (the engine still answers as before)
    after = generate(model, processor, chats, 16, progress=False, engine=engine.synced(model, 1))
    assert after == hf
    assert sum(a != b for a, b in zip(before, after, strict=True)) >= len(chats) // 2


class Recorded(LengthRewarded):
    """Keeps every rollout's sampled ids."""

    def engine_rollout(self, model, records, prompt):
        sampled, stops = super().engine_rollout(model, records, prompt)
        self.sampled = [*getattr(self, "sampled", []), sampled.clone()]
        return sampled, stops


class Replayed(LengthRewarded):
    """HF's path, its samples replaced by given ones (one tensor a step)."""

    replay: list[torch.Tensor] = []

    def hf_rollout(self, model, records, prompt):
        _, stops = super().hf_rollout(model, records, prompt)
        return self.replay[self.state.global_step], stops


def grpo_run(trainer_class, tiny_dir, processor, rows, out, engine=None) -> GrpoTrainer:
    """Two GRPO steps of a fresh tiny model (lr 3e-3: far enough for stale weights to show)."""
    objective = GrpoObjective.from_config(
        RlConfig(group_size=4, max_completion_tokens=12, temperature=0.7)
    )
    model = load_model(str(tiny_dir), device="cpu", dtype="fp32")
    more = {"engine": engine} if engine else {}
    return grpo_step(model, processor, rows, out, objective, trainer_class, 2, 3e-3, **more)


@pytest.mark.slow
@needs_vllm
def test_grpo_samples_through_vllm_and_learns_as_hf_would_from_the_same_samples(
    tiny_dir, processor, engine, visual_jsonl, tmp_path
):
    rows = prompt_rows(
        read_jsonl(visual_jsonl)[:4], visual_jsonl.parent, "You are a helpful assistant."
    )
    ours = grpo_run(Recorded, tiny_dir, processor, rows, tmp_path / "vllm", engine)
    logs = [e for e in ours.state.log_history if "rollout/logp_diff" in e]
    assert len(logs) == 2 and engine.version == (id(ours.model), 1)  # synced after step 1
    for entry in logs:
        # vLLM sampled from the policy as it was at that step: its log-probs are the
        # training forward's (at step 2 too: the weights followed step 1's update)
        assert entry["rollout/logp_diff"] < 1e-5, entry
        assert entry["rollout/prompt_mismatches"] == 0
        assert entry["image_mass"] > 0 and "reward/visual/mean" in entry  # the probe's forward
    assert not torch.equal(ours.sampled[0], ours.sampled[1])
    Replayed.replay = ours.sampled
    theirs = grpo_run(Replayed, tiny_dir, processor, rows, tmp_path / "hf")
    expected, actual = theirs.model.state_dict(), ours.model.state_dict()
    start = load_model(str(tiny_dir), device="cpu", dtype="fp32").state_dict()
    assert any(not start[k].equal(actual[k]) for k in actual)
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


@pytest.mark.slow
@needs_vllm
def test_eval_rows_are_the_same_with_either_backend(tiny_dir, tmp_path):
    from stage_runs import ROOT

    from avar.config import load_params
    from avar.data import synthesize
    from avar.eval.run import EvalRequest, evaluate

    synthesize("visual", 24, 3, tmp_path / "benchmarks/synthetic")
    request = EvalRequest(str(tiny_dir), ["synthetic"], str(tmp_path / "benchmarks"), 24, vas=True)
    reports = {}
    for backend in ("hf", "vllm"):
        sets = [f"generate.backend={backend}", "eval.max_new_tokens=24"]
        reports[backend] = evaluate(request, load_params(ROOT / "params.yaml", sets))
    rows = {k: r["benchmarks"]["synthetic"]["samples"] for k, r in reports.items()}
    assert len(rows["hf"]) == 24 and rows["vllm"] == rows["hf"]
    assert json.dumps(reports["vllm"]["metrics"]) == json.dumps(reports["hf"]["metrics"])


@pytest.mark.slow
@needs_vllm
def test_avar_stage_rl_through_vllm(tmp_path):
    from stage_runs import avar_stage, finish, new_project, rows

    project = new_project(tmp_path)
    extra = ["rl.init_from=base", "rl.log_steps=1", "generate.backend=vllm"]
    output = finish(avar_stage(project, "rl", extra), timeout=600)
    assert "vLLM" in output and "engine for" in output
    checkpoints = rows(project, "rl")
    assert [row["step"] for row in checkpoints] == [1, 2]
    history = json.loads((project / "metrics/rl.json").read_text())["history"]
    diffs = [e["rollout/logp_diff"] for e in history if "rollout/logp_diff" in e]
    assert len(diffs) == 2 and max(diffs) < 1e-5
    assert (project / "models/rl/model.safetensors").is_file()
