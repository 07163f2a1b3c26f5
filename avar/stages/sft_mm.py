"""`avar stage sft_mm`: multimodal SFT with the attention-guided objective.

    L = L_LM + alpha * L_enhance_img + beta * L_suppress_sys

on the visual-anchored traces, starting from `sft_mm.init_from` (base or coldstart_text).
The attention terms are read from the training forward pass itself (avar.train.sft);
alpha = beta = 0 is plain multimodal SFT, the paper's ablation.
"""

from __future__ import annotations

from avar.config import Params
from avar.stages.common import sft_plan
from avar.train.run import StageResult, train_stage


def run(params: Params) -> StageResult:
    cfg = params.sft_mm
    plan = sft_plan(
        params, "sft_mm", cfg.init_from, alpha=cfg.alpha, beta=cfg.beta, layers=cfg.layers
    )
    return train_stage(plan, params)
