"""`avar stage sft_mm`: multimodal SFT with the attention-guided objective.

    L = L_LM + alpha * L_enhance_img + beta * L_suppress_sys

on the visual-anchored traces, starting from `sft_mm.init_from` (base or coldstart_text).
The attention terms are read from the training forward pass itself (avar.train.sft);
alpha = beta = 0 is plain multimodal SFT, the paper's ablation.
"""

from __future__ import annotations

from avar.attention.losses import AttentionGuidedLoss
from avar.config import Params
from avar.stages.common import sft_plan
from avar.train.run import StageResult, train_stage


def run(params: Params) -> StageResult:
    cfg = params.sft_mm
    objective = AttentionGuidedLoss.from_config(cfg)
    return train_stage(sft_plan(params, "sft_mm", cfg.init_from, objective), params)
