"""`avar stage rl`: GRPO with the visual-anchored reward (avar.train.grpo).

Starts from `rl.init_from` (sft_mm by default) and samples `group_size` completions for
each question of `rl.data`; rewards are accuracy, format and, for correct answers, the
completion's VAS under the policy, weighted by `lambda_visual` and `lambda_format`.
"""

from __future__ import annotations

import logging

from avar.config import Params
from avar.data.chats import prompts
from avar.segments import encode
from avar.stages.common import heldout_scores, stage_model
from avar.train.data import load_training_records
from avar.train.grpo import GrpoObjective, GrpoTrainer
from avar.train.run import StagePlan, StageResult, train_stage

log = logging.getLogger(__name__)


def prompt_rows(records, root, system_prompt) -> list[dict]:
    """One row per question: its prompt (chat up to the user turn) and what grades it."""
    chats = prompts(records, root, system_prompt)
    return [
        {
            "prompt": chat,
            "answer": r["answer"],
            "answer_type": r["answer_type"],
            "choices": r["choices"],
        }
        for chat, r in zip(chats, records, strict=True)
    ]


def within_length(rows: list[dict], processor, max_tokens: int) -> list[dict]:
    """The rows whose prompt fits in `max_tokens` (longer ones are dropped, and counted)."""
    kept = [
        row
        for row in rows
        if len(encode(processor, row["prompt"], add_generation_prompt=True).input_ids) <= max_tokens
    ]
    if len(kept) < len(rows):
        log.warning(
            "rl: dropped %d prompts longer than rl.max_prompt_tokens=%d",
            len(rows) - len(kept),
            max_tokens,
        )
    if not kept:
        raise ValueError(f"rl.max_prompt_tokens={max_tokens}: every prompt of rl.data is longer")
    return kept


def keep_rows(rows: list[dict]) -> list[dict]:
    """The collator: a batch is the list of its rows."""
    return rows


def run(params: Params) -> StageResult:
    cfg = params.rl
    records, root = load_training_records(cfg.data, "rl.data")
    rows = prompt_rows(records, root, params.model.system_prompt)
    plan = StagePlan(
        name="rl",
        cfg=cfg,
        model_dir=stage_model(params, cfg.init_from),
        build_dataset=lambda processor: within_length(rows, processor, cfg.max_prompt_tokens),
        collator=lambda processor: keep_rows,
        trainer_class=GrpoTrainer,
        objective=GrpoObjective.from_config(cfg),
        score_sets=[heldout_scores(params)],
    )
    return train_stage(plan, params)
