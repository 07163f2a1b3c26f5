"""GRPO rewards: TRL's contract, gating, and r_visual against a direct VAS measurement."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from avar.data import read_jsonl
from avar.data.chats import to_messages
from avar.eval.measure import VasSettings, measure_vas
from avar.rewards import (
    VisualAnchoredReward,
    VisualReward,
    accuracy_reward,
    format_reward,
    gated_visual,
    visual_score,
)
from avar.segments import Segment

GOOD = "<think>\nthree shapes\n</think>\n<answer>3</answer>"


def test_accuracy_reward_lists_in_floats_out():
    completions = [GOOD, "<answer>4</answer>", [{"role": "assistant", "content": GOOD}], "3"]
    rewards = accuracy_reward(completions, answer=["3"] * 4, answer_type=["number"] * 4)
    assert rewards == [1.0, 0.0, 1.0, 1.0]  # a bare "3": right, as the evaluation grades it


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
    reward = VisualReward(tiny_model, processor, layers="1-3", batch_size=2, transform="ratio")
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


def hand_made_masses() -> torch.Tensor:
    """[L=2, N=3, H=1, S] masses: a healthy sequence, a collapsed system mass, no system."""
    masses = torch.zeros(2, 3, 1, len(Segment))
    image, system = int(Segment.IMAGE), int(Segment.SYSTEM)
    masses[0, 0, 0, image], masses[0, 0, 0, system] = 0.3, 0.1  # I/S 3
    masses[1, 0, 0, image], masses[1, 0, 0, system] = 0.2, 0.2  # I/S 1
    masses[:, 1, 0, image], masses[:, 1, 0, system] = 0.5, 1e-10  # I/S 5e9
    masses[:, 2, 0, image] = 0.4  # no system prompt: undefined
    return masses


def test_visual_transforms_on_hand_made_masses():
    masses = hand_made_masses()
    # ratio, the paper's: (3 + 1) / 2 = 2; 5e9; undefined -> 0
    assert visual_score(masses, "ratio").tolist() == pytest.approx([2.0, 5e9, 0.0], rel=1e-5)
    # share: (0.3/0.4 + 0.2/0.4) / 2 = 0.625; 0.5 / (0.5 + 1e-10) = 1 - 2e-10
    assert visual_score(masses, "share").tolist() == pytest.approx([0.625, 1.0, 0.0], rel=1e-6)
    # log_ratio: (log10(3) / 4 + 1/2 + log10(1) / 4 + 1/2) / 2 = (0.619280 + 0.5) / 2;
    # log10(5e9) = 9.7 is clipped to 2: 2 / 4 + 1/2 = 1
    expected = [(0.619280 + 0.5) / 2, 1.0, 0.0]
    assert visual_score(masses, "log_ratio").tolist() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="visual_reward must be one of"):
        visual_score(masses, "sqrt")


def test_log_ratio_floor_and_gate():
    masses = torch.zeros(1, 2, 1, len(Segment))
    masses[0, 0, 0, int(Segment.IMAGE)], masses[0, 0, 0, int(Segment.SYSTEM)] = 0.001, 0.5
    masses[0, 1, 0, int(Segment.SYSTEM)] = 0.5  # no image attention at all: log10(0) clipped
    assert visual_score(masses, "log_ratio").tolist() == [0.0, 0.0]  # I/S 0.002 < 0.01
    correct = torch.tensor([True, False, True])
    gated = gated_visual(hand_made_masses(), correct, "share")
    assert gated.tolist() == pytest.approx([0.625, 0.0, 0.0])


def test_bounded_default_keeps_accuracy_visible():
    """On a collapsed system mass the paper's r_visual is 5e9 and drowns r_acc; the share
    adds at most lambda_visual, so a right answer (1 + <= 0.3) still outranks the format."""
    good = "<think>x</think><answer>3</answer>"
    kwargs = {"answer": ["3"] * 3, "answer_type": ["number"] * 3}
    paper = VisualAnchoredReward(0.3, 0.1, "all", "ratio")
    share = VisualAnchoredReward(0.3, 0.1, "all", "share")
    completions = [good, good, good]
    assert paper(completions, hand_made_masses(), **kwargs)["total"][1] > 1e9
    total = share(completions, hand_made_masses(), **kwargs)["total"]
    assert total.tolist() == pytest.approx([1 + 0.3 * 0.625 + 0.1, 1 + 0.3 + 0.1, 1 + 0.1])
