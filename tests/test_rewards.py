"""GRPO rewards: TRL's contract, gating, and r_visual against a direct VAS measurement."""

from __future__ import annotations

import pytest
from PIL import Image

from avar.data import read_jsonl
from avar.data.chats import to_messages
from avar.eval.measure import VasSettings, measure_vas
from avar.rewards import VisualReward, accuracy_reward, format_reward

GOOD = "<think>\nthree shapes\n</think>\n<answer>3</answer>"


def test_accuracy_reward_lists_in_floats_out():
    completions = [GOOD, "<answer>4</answer>", [{"role": "assistant", "content": GOOD}], "3"]
    rewards = accuracy_reward(completions, answer=["3"] * 4, answer_type=["number"] * 4)
    assert rewards == [1.0, 0.0, 1.0, 0.0]


def test_format_reward():
    completions = [
        GOOD,
        "<answer>3</answer>",
        GOOD + " trailing",
        "<think></think><answer>3</answer>",
    ]
    assert format_reward(completions) == [1.0, 0.0, 0.0, 0.0]


def test_visual_reward_is_gated_vas(tiny_model, processor, visual_jsonl):
    records = read_jsonl(visual_jsonl)[:3]
    root = visual_jsonl.parent
    prompts = [to_messages(r, root, None, with_response=False) for r in records]
    right = [f"<think>\nlooked\n</think>\n<answer>{r['answer']}</answer>" for r in records]
    completions = [right[0], "<answer>wrong</answer>", right[2]]
    reward = VisualReward(tiny_model, processor, layers="1-3", batch_size=2)
    values = reward(
        prompts,
        completions,
        answer=[r["answer"] for r in records],
        answer_type=[r["answer_type"] for r in records],
        choices=[r["choices"] for r in records],
    )
    assert values[1] == 0.0  # wrong answer: no visual reward
    # The same completions measured by `avar vas`'s code path.
    as_records = [dict(r, response=c) for r, c in zip(records, completions, strict=True)]
    report = measure_vas(
        tiny_model, processor, as_records, root, VasSettings(layers="1-3", batch_size=3)
    )
    expected = [s["vas"] for s in report["samples"]]
    assert values[0] == pytest.approx(expected[0], rel=1e-5) and values[0] > 0
    assert values[2] == pytest.approx(expected[2], rel=1e-5)


def test_visual_reward_fills_trl_image_parts(tiny_model, processor, visual_jsonl):
    record = read_jsonl(visual_jsonl)[0]
    image = Image.open(visual_jsonl.parent / record["images"][0])
    parts = [{"type": "image"}, {"type": "text", "text": record["question"]}]
    bare = [{"role": "user", "content": parts}]
    completion = f"<think>\nx\n</think>\n<answer>{record['answer']}</answer>"
    reward = VisualReward(tiny_model, processor)
    kwargs = {"answer": [record["answer"]], "answer_type": [record["answer_type"]]}
    with_image = reward([bare], [completion], images=[[image]], **kwargs)
    full = to_messages(record, visual_jsonl.parent, None, with_response=False)
    assert with_image == pytest.approx(reward([full], [completion], **kwargs), rel=1e-5)
