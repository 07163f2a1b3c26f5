"""Pieces the training stages share: held-out score sets, the start model of a stage, and
the plan of a supervised stage."""

from __future__ import annotations

from pathlib import Path

from avar.attention.losses import AttentionGuidedLoss
from avar.config import Params
from avar.train.data import ChatCollator, ChatDataset, load_training_records
from avar.train.run import StagePlan
from avar.train.scoring import ScoreSet
from avar.train.sft import AvarTrainer


def heldout_scores(params: Params) -> ScoreSet:
    """The held-out visual questions every checkpoint is scored on (`checkpoint_eval`)."""
    cfg = params.checkpoint_eval
    records, root = load_training_records(cfg.data, "checkpoint_eval.data")
    if cfg.limit:
        records = records[: cfg.limit]
    return ScoreSet.from_records(
        "heldout",
        records,
        root,
        params.model.system_prompt,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        layers=params.vas.layers,
    )


def stage_model(params: Params, stage: str) -> str:
    """The published model of an earlier stage, which must exist."""
    out_dir = Path(getattr(params, stage).out_dir)
    if not (out_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{out_dir} holds no model: run `avar stage {stage}` first (or set the stage's "
            "init_from to a stage that has run)"
        )
    return str(out_dir)


def sft_plan(
    params: Params, name: str, init_stage: str, objective: AttentionGuidedLoss | None = None
) -> StagePlan:
    """Supervised fine-tuning of `init_stage`'s model on the records of `<name>.data`."""
    cfg = getattr(params, name)
    records, root = load_training_records(cfg.data, f"{name}.data")
    system = params.model.system_prompt
    return StagePlan(
        name=name,
        cfg=cfg,
        model_dir=stage_model(params, init_stage),
        build_dataset=lambda processor: ChatDataset.from_records(records, root, processor, system),
        collator=ChatCollator,
        trainer_class=AvarTrainer,
        objective=objective,
        score_sets=[heldout_scores(params)],
    )
