"""`avar plan` on Qwen2.5-VL-7B's config.json (tests/fixtures: the public file, no weights):
the parameter count, model states equal to DeepSpeed's own estimators, and the verdicts a
user gets for ZeRO-3 on 8x80 GB and for full fine-tuning on one 80 GB GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
from typer.testing import CliRunner

from avar.cli import app
from avar.train.plan import GB, Setup, count, estimate, load_config, model_states

ROOT = Path(__file__).resolve().parents[1]
QWEN_7B = ROOT / "tests/fixtures/qwen2_5_vl_7b"


@pytest.fixture(scope="module")
def qwen():
    config = load_config(str(QWEN_7B))
    return config, *count(config)[:2]


def test_qwen_7b_counts_8_29_billion_parameters_on_the_meta_device(qwen):
    _, params, largest = qwen
    assert params == 8_292_166_656
    assert largest == 152064 * 3584  # the token embedding (untied from the LM head)


@pytest.mark.parametrize("ranks", [1, 8, 16])
@pytest.mark.parametrize("offload", [False, True])
def test_model_states_equal_deepspeeds_estimators(qwen, ranks, offload):
    _, params, largest = qwen
    setup = dict(gpus_per_node=min(ranks, 8), nodes=max(1, ranks // 8), offload_optimizer=offload)
    ours = sum(model_states(params, largest, Setup(zero=3, **setup)).values())
    _, theirs, _ = estimate_zero3_model_states_mem_needs(
        params, largest, setup["gpus_per_node"], setup["nodes"], offload, False
    )
    assert ours == pytest.approx(theirs, rel=1e-6)
    ours = sum(model_states(params, largest, Setup(zero=2, **setup)).values())
    _, theirs = estimate_zero2_model_states_mem_needs(
        params, setup["gpus_per_node"], setup["nodes"], offload
    )
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_plain_data_parallel_keeps_16_bytes_a_parameter(qwen):
    _, params, largest = qwen
    assert sum(model_states(params, largest, Setup(zero=0)).values()) == 16 * params


def test_activation_checkpointing_keeps_less_than_a_quarter(qwen):
    config = qwen[0]
    full = estimate(config, Setup(zero=3, gpus_per_node=8)).parts["activations"]
    kept = estimate(config, Setup(zero=3, gpus_per_node=8, gradient_checkpointing=True))
    assert kept.parts["activations"] < full / 4


def test_grpo_counts_the_logits_of_its_completions_only(qwen):
    from avar.config.schema import RlConfig
    from avar.train.plan import stage_setup

    config = qwen[0]
    rl = RlConfig(batch_size=2, group_size=8, max_completion_tokens=511)
    setup = stage_setup(rl, (8, 1), seq_len=2048, image_tokens=1024, gpu_gb=80)
    parts = estimate(config, setup).parts
    # 16 sequences x 512 positions x 152,064 entries x 4 B (bf16 logits and their gradient)
    assert parts["logits"] == 16 * 512 * 152_064 * 4
    sft = estimate(config, Setup(seq_len=2048, micro_batch=16)).parts["logits"]
    assert sft == 16 * 2048 * 152_064 * 8  # every position, bf16 and the fp32 softmax


def plan(*args: str) -> Result:
    """`avar plan sft_mm` on the 7B config, in this process (the CLI as a user calls it)."""
    command = ["plan", "sft_mm", "--model", str(QWEN_7B), "--params", str(ROOT / "params.yaml")]
    overrides = [*args, "-S", "sft_mm.batch_size=1"]
    return CliRunner().invoke(app, [*command, *overrides], catch_exceptions=False)


def test_zero3_on_8_h100_fits_and_full_fine_tuning_on_one_does_not():
    fits = plan("-S", "sft_mm.deepspeed=zero3", "--gpus-per-node", "8", "--gpu-gb", "80")
    assert fits.exit_code == 0, fits.stdout + fits.stderr
    assert "ZeRO-3; 8 GPU(s)" in fits.stdout and fits.stdout.rstrip().endswith("fits")
    single = plan("--gpus-per-node", "1", "--gpu-gb", "80")
    assert single.exit_code == 1
    lines = single.stdout.splitlines()
    assert "  optimizer        66.3 GB" in lines  # Adam's fp32 moments: 8 B x 8.29 B params
    assert lines[-1].startswith("does not fit: 168.1 GB needed, 72.0 GB usable")


def test_lora_counts_r_times_inputs_plus_outputs_of_each_adapted_linear(qwen):
    from avar.config.schema import LoraConfig

    config, params, _ = qwen
    hidden, kv, inner = 3584, 4 * 128, 18944  # Qwen2.5-VL-7B: 4 KV heads of 128
    per_layer = 2 * (hidden + hidden) + 2 * (hidden + kv) + 3 * (hidden + inner)
    _, _, adapters = count(config, LoraConfig(r=16))
    assert adapters == 16 * per_layer * 28 == 40_370_176
    _, _, with_vision = count(config, LoraConfig(r=16, vision=True))
    vision, vision_inner = 1280, 3420  # 32 blocks: qkv, proj and the SwiGLU MLP
    block = (vision + 3 * vision) + 2 * vision + 3 * (vision + vision_inner)
    assert with_vision - adapters == 16 * block * 32
    states = model_states(params, 0, Setup(lora_params=adapters, frozen_bytes=2))
    assert states == {
        "weights": 2 * params + 4 * adapters,  # frozen bf16 weights, fp32 adapters
        "gradients": 4 * adapters,
        "optimizer": 8 * adapters,
    }


def test_lora_on_one_24_gb_and_one_80_gb_gpu_answers_with_numbers():
    lora = ["-S", "sft_mm.lora.r=16", "-S", "sft_mm.gradient_checkpointing=true"]
    small = plan(
        *lora,
        "--gpus-per-node",
        "1",
        "--gpu-gb",
        "24",
        "--seq-len",
        "2048",
        "--image-tokens",
        "512",
    )
    lines = small.stdout.splitlines()
    assert "LoRA (40.4 M adapter parameters train)" in lines[1]
    assert "  weights          16.7 GB" in lines  # 2 B x 8.29 B frozen + 4 B x 40.4 M
    assert "  optimizer         0.3 GB" in lines
    assert small.exit_code == 0 and lines[-1] == "fits", small.stdout
    long = plan(*lora, "--gpus-per-node", "1", "--gpu-gb", "24", "--seq-len", "8192")
    assert long.exit_code == 1 and long.stdout.splitlines()[-1].startswith("does not fit")
    big = plan(*lora, "--gpus-per-node", "1", "--gpu-gb", "80", "--seq-len", "8192")
    assert big.exit_code == 0, big.stdout


def test_a_stage_that_does_not_train_is_named_and_refused():
    command = ["plan", "eval", "--params", str(ROOT / "params.yaml")]
    done = CliRunner().invoke(app, command, catch_exceptions=False)
    assert done.exit_code == 1 and "expected a training stage: base" in done.stderr


def test_a_stage_that_would_not_fit_stops_with_the_plan(qwen):
    from avar.config.schema import SftMmConfig
    from avar.train.plan import DoesNotFit, require_fit, stage_setup

    config = qwen[0]
    section = SftMmConfig(deepspeed="zero3", batch_size=1)
    assert require_fit("sft_mm", config, stage_setup(section, (8, 1), 4096, 1024, 80.0)).fits
    with pytest.raises(DoesNotFit) as err:
        require_fit("sft_mm", config, stage_setup(section, (1, 1), 4096, 1024, 24.0))
    message = str(err.value)
    assert message.startswith("sft_mm would not fit in GPU memory (run `avar plan sft_mm`")
    assert "ZeRO-3; 1 GPU(s)" in message and "does not fit" in message


def test_the_stage_check_is_sized_by_its_longest_training_sequence(processor, visual_jsonl):
    from avar.data import read_jsonl
    from avar.segments import Segment
    from avar.train.data import ChatDataset
    from avar.train.plan import longest

    records = read_jsonl(visual_jsonl)
    dataset = ChatDataset.from_records(records, visual_jsonl.parent, processor, "You help.")
    items = [dataset[i] for i in range(len(dataset))]
    tokens, images = longest(dataset, int(Segment.IMAGE))
    assert tokens == max(len(item.input_ids) for item in items)
    assert 0 < images < tokens
    assert longest([{"prompt": []}], int(Segment.IMAGE)) is None  # GRPO rows: not checked


def test_the_vllm_engines_share_comes_off_the_budget_and_must_hold_its_weights(qwen):
    from avar.config.schema import RlConfig
    from avar.train.plan import stage_setup

    config = qwen[0]
    rl = RlConfig(batch_size=1, deepspeed="zero3", gradient_checkpointing=True)
    alone = estimate(config, stage_setup(rl, (8, 1), 2048, 1024, 80.0))
    beside = estimate(config, stage_setup(rl, (8, 1), 2048, 1024, 80.0, engine_share=0.3))
    assert beside.parts == alone.parts  # training's own parts do not change
    assert alone.budget == pytest.approx(80 * GB * 0.9)
    assert beside.budget == pytest.approx(80 * GB * (1 - 0.1 - 0.3))  # 48 GB
    assert beside.engine_weights == 2 * alone.params  # bf16: 16.6 GB of 24 GB
    assert beside.fits and "vLLM engine" in "\n".join(beside.lines())
    small = estimate(config, stage_setup(rl, (8, 1), 2048, 1024, 80.0, engine_share=0.15))
    assert not small.fits  # 12 GB cannot hold 16.6 GB of weights
    assert "raise generate.vllm.gpu_memory_utilization" in small.lines()[-1]
