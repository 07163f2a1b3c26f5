"""`avar stage coldstart_text`: text-only cold-start SFT on reasoning traces.

Trains the base model on `<think>…</think><answer>…</answer>` traces of text-only
problems, with the loss on the response tokens only (avar.segments labels). The paper finds
this text-only cold start, not multimodal SFT, is what lifts attention to the image.
"""

from __future__ import annotations

from avar.config import Params
from avar.stages.common import heldout_scores, stage_model
from avar.train.data import ChatCollator, ChatDataset, load_training_records
from avar.train.run import StagePlan, StageResult, train_stage
from avar.train.sft import AvarTrainer


def run(params: Params) -> StageResult:
    cfg = params.coldstart_text
    records, root = load_training_records(cfg.data, "coldstart_text.data")
    system = params.model.system_prompt
    plan = StagePlan(
        name="coldstart_text",
        cfg=cfg,
        model_dir=stage_model(params, "base"),
        build_dataset=lambda processor: ChatDataset.from_records(records, root, processor, system),
        collator=ChatCollator,
        trainer_class=AvarTrainer,
        score_sets=[heldout_scores(params)],
    )
    return train_stage(plan, params)
