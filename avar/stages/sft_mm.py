"""`avar stage sft_mm`: multimodal SFT with the attention-guided objective.

    L = L_LM + alpha * L_enhance_img + beta * L_suppress_sys

on the visual-anchored traces, starting from `sft_mm.init_from` (base or coldstart_text).
The attention terms are read from the training forward pass itself (avar.train.sft);
alpha = beta = 0 is plain multimodal SFT, the paper's ablation.
"""

from __future__ import annotations

from avar.config import Params
from avar.stages.common import heldout_scores, stage_model
from avar.train.data import ChatCollator, ChatDataset, load_training_records
from avar.train.run import StagePlan, StageResult, train_stage
from avar.train.sft import AvarTrainer


def run(params: Params) -> StageResult:
    cfg = params.sft_mm
    records, root = load_training_records(cfg.data, "sft_mm.data")
    system = params.model.system_prompt
    plan = StagePlan(
        name="sft_mm",
        cfg=cfg,
        model_dir=stage_model(params, cfg.init_from),
        build_dataset=lambda processor: ChatDataset.from_records(records, root, processor, system),
        collator=ChatCollator,
        trainer_class=AvarTrainer,
        trainer_kwargs={"alpha": cfg.alpha, "beta": cfg.beta, "layers": cfg.layers},
        score_sets=[heldout_scores(params)],
    )
    return train_stage(plan, params)
