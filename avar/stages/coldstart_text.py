"""`avar stage coldstart_text`: text-only cold-start SFT on reasoning traces.

Trains the base model on `<think>…</think><answer>…</answer>` traces of text-only
problems, with the loss on the response tokens only (avar.segments labels). The paper finds
this text-only cold start, not multimodal SFT, is what lifts attention to the image.
"""

from __future__ import annotations

from avar.config import Params
from avar.stages.common import sft_plan
from avar.train.run import StageResult, train_stage


def run(params: Params) -> StageResult:
    return train_stage(sft_plan(params, "coldstart_text", "base"), params)
