"""LoRA per stage (peft): adapters only on the language model's linears (the vision tower on
request), checkpoints that hold the adapter alone and resume to the uninterrupted run, a
published model that is the merge (W + alpha/r * B @ A, checked by hand), loads with
`from_pretrained` and answers like the unmerged model, and GRPO whose KL reference is the
model with its adapters off."""

from __future__ import annotations

import json

import pytest
import torch
from stage_runs import (
    assert_same_weights,
    avar_stage,
    check_kill_and_resume,
    finish,
    new_project,
    outputs,
    weights,
)

from avar.config.schema import LANGUAGE_LINEARS, LoraConfig
from avar.models.loader import load_model, load_processor
from avar.train.lora import add_lora

LORA = ["sft_mm.lora.r=4", "sft_mm.lora.alpha=8", "sft_mm.learning_rate=1.0e-2"]
RUN = [
    "sft_mm.init_from=base",
    "sft_mm.max_steps=6",
    "sft_mm.save_steps=3",
    "sft_mm.batch_size=2",
    "sft_mm.log_steps=1",
    "checkpoint_eval.limit=2",
    *LORA,
]


def is_language_linear(key: str) -> bool:
    """A saved key of a decoder layer's adapted linear (`model.layers.N.mlp.up_proj.*`)."""
    return key.startswith("model.layers.") and key.split(".")[-2] in LANGUAGE_LINEARS


def adapted(model) -> set[str]:
    return {name for name, module in model.named_modules() if hasattr(module, "lora_A")}


def test_adapters_go_on_the_language_model_linears_and_the_vision_tower_on_request(tiny_dir):
    model = load_model(str(tiny_dir), "cpu", "fp32")
    layers, blocks = model.config.text_config.num_hidden_layers, model.config.vision_config.depth
    part = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn"}
    part |= {"o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
    language = {
        f"base_model.model.model.language_model.layers.{i}.{part[name]}.{name}"
        for i in range(layers)
        for name in LANGUAGE_LINEARS
    }
    wrapped = add_lora(model, LoraConfig(r=2), seed=0)
    assert adapted(wrapped) == language
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    with_vision = add_lora(
        load_model(str(tiny_dir), "cpu", "fp32"), LoraConfig(r=2, vision=True), seed=0
    )
    vision = adapted(with_vision) - language
    assert len(vision) == 5 * blocks and all(".visual.blocks." in n for n in vision)
    assert not any("merger" in n or "lm_head" in n for n in adapted(with_vision))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return new_project(tmp_path_factory.mktemp("lora"))


@pytest.mark.slow
def test_lora_sft_mm_publishes_the_merge_of_its_adapter(project):
    tmp = project
    finish(avar_stage(tmp, "sft_mm", RUN + outputs(tmp, "sft_mm", "lora")))
    for step in (3, 6):  # checkpoints hold the adapter, not a copy of the model
        checkpoint = tmp / f"checkpoints/lora/checkpoint-{step}"
        assert (checkpoint / "adapter_model.safetensors").is_file()
        assert not (checkpoint / "model.safetensors").exists()
    out = tmp / "models/lora"
    base, merged = weights(tmp / "models/base"), weights(out)
    adapter = weights(out / "adapter")
    assert merged.keys() == base.keys()
    targets = {k for k in base if is_language_linear(k) and k.endswith(".weight")}
    assert {k for k in base if not base[k].equal(merged[k])} == targets  # nothing else moved
    scale = 8 / 4
    for key in targets:  # W + alpha/r * B @ A, from the adapter file
        module = "base_model.model.model.language_model." + key.removeprefix("model.")[:-7]
        lora_a, lora_b = adapter[f"{module}.lora_A.weight"], adapter[f"{module}.lora_B.weight"]
        assert lora_b.abs().max() > 0  # B starts at zero: the gradients reached it
        expected = base[key] + scale * lora_b @ lora_a
        assert torch.allclose(merged[key], expected, atol=1e-6), key
    history = json.loads((tmp / "metrics/lora.json").read_text())["history"]
    assert any("loss_enhance_img" in row and "image_mass" in row for row in history)

    check_merged_answers_like_unmerged(tmp)
    again = finish(avar_stage(tmp, "sft_mm", RUN + outputs(tmp, "sft_mm", "lora")))
    assert "already finished" in again  # republished from the last checkpoint's adapter
    assert_same_weights(merged, weights(out))


def check_merged_answers_like_unmerged(tmp):
    from peft import PeftModel

    from avar.data import read_jsonl
    from avar.data.chats import conversations
    from avar.generate import generate
    from avar.segments import encode_batch, model_inputs

    merged = load_model(str(tmp / "models/lora"), "cpu", "fp32")  # from_pretrained, strict
    unmerged = PeftModel.from_pretrained(
        load_model(str(tmp / "models/base"), "cpu", "fp32"), str(tmp / "models/lora/adapter")
    ).eval()
    processor = load_processor(str(tmp / "models/lora"))
    root = tmp / "data/raw/heldout"
    records = read_jsonl(root / "data.jsonl")[:3]
    batch = encode_batch(processor, conversations(records, root, "You are a helpful assistant."))
    with torch.no_grad():
        a = merged(**model_inputs(batch)).logits
        b = unmerged(**model_inputs(batch)).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    prompts = [chat[:-1] for chat in conversations(records, root, "You are a helpful assistant.")]
    assert generate(merged, processor, prompts, 12) == generate(unmerged, processor, prompts, 12)


@pytest.mark.slow
def test_killed_lora_run_resumes_to_the_uninterrupted_adapter(project):
    check_kill_and_resume(project, "sft_mm", RUN, kill_at=3)


@pytest.mark.slow
def test_lora_grpo_kl_reference_is_the_model_without_adapters(
    tiny_dir, processor, visual_jsonl, tmp_path
):
    from grpo_steps import grpo_step

    from avar.config.schema import RlConfig
    from avar.data import read_jsonl
    from avar.data.chats import conversations
    from avar.segments import encode_batch, model_inputs
    from avar.stages.rl import prompt_rows
    from avar.train.grpo import GrpoObjective

    records = read_jsonl(visual_jsonl)[:2]
    rows = prompt_rows(records, visual_jsonl.parent, "You are a helpful assistant.")
    model = add_lora(load_model(str(tiny_dir), "cpu", "fp32"), LoraConfig(r=4, alpha=8), seed=0)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    objective = GrpoObjective.from_config(
        RlConfig(group_size=2, max_completion_tokens=6, kl_coef=0.1)
    )
    trainer = grpo_step(model, processor, rows, tmp_path, objective)
    assert trainer.ref_model is None  # no second copy of the weights
    assert trainer.state.log_history[0]["kl"] == 0.0  # B = 0: the policy was the reference
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert param.equal(frozen[name]), name  # the step moved adapters only
    assert any(p.abs().max() > 0 for n, p in model.named_parameters() if "lora_B" in n)

    batch = encode_batch(
        processor, conversations(records, visual_jsonl.parent, "You are a helpful assistant.")
    )
    inputs = model_inputs(batch)
    with torch.no_grad():
        start = load_model(str(tiny_dir), "cpu", "fp32")(**inputs).logits
        with trainer.reference(model) as reference:
            ref = reference(**inputs).logits
        policy = model(**inputs).logits  # adapters on again after the block
    assert torch.allclose(ref, start, atol=1e-5), (ref - start).abs().max()
    assert (policy - start).abs().max() > 1e-4
