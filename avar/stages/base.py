"""`avar stage base`: the model every later stage starts from.

A real checkpoint (hub id or local folder in `model.name_or_path`) is copied into
`base.out_dir` as it is. The embedded `tiny`/`small` model is built from its config and
pretrained on perception questions (avar.data.perception) until it can see: a curriculum of
zoomed-in single objects first, then real scenes. Its checkpoints are scored on held-out
perception questions (accuracy per category, beside the majority-answer bar) and on the
held-out reasoning questions of `checkpoint_eval`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from avar.config import Params
from avar.data.chats import to_messages
from avar.data.perception import majority_accuracy, perception_set
from avar.io import atomic_dir
from avar.models.tiny import PRESETS, init_tiny
from avar.stages.common import heldout_scores
from avar.train.data import ChatCollator, ChatDataset
from avar.train.run import StagePlan, StageResult, train_stage
from avar.train.scoring import ScoreSet
from avar.train.sft import AvarTrainer

PERCEPTION_SEED_OFFSET = 1000  # the held-out perception set never shares the training seed


def perception_chats(pairs, system_prompt: str, with_response: bool = True) -> list[list[dict]]:
    """Chat messages for in-memory perception records and their images."""
    return [
        to_messages({**record, "images": [image]}, None, system_prompt, with_response)
        for record, image in pairs
    ]


def resolve_checkpoint(name_or_path: str, out_dir: str) -> Path:
    """Copy a local checkpoint, or download a hub one, into `out_dir` whole."""
    with atomic_dir(out_dir) as tmp:
        if Path(name_or_path).is_dir():
            shutil.copytree(name_or_path, tmp, dirs_exist_ok=True)
        else:
            from huggingface_hub import snapshot_download

            snapshot_download(name_or_path, local_dir=tmp)
        if not (tmp / "config.json").is_file():
            raise FileNotFoundError(f"model.name_or_path {name_or_path!r} has no config.json")
    return Path(out_dir)


def run(params: Params) -> StageResult:
    cfg, model_cfg = params.base, params.model
    if model_cfg.name_or_path not in PRESETS:
        out = resolve_checkpoint(model_cfg.name_or_path, cfg.out_dir)
        return StageResult("base", str(out), 0, 0.0)
    init_dir = model_cfg.init_dir  # built by `avar stage prepare`; built here when missing
    if not (Path(init_dir) / "config.json").is_file():
        init_tiny(init_dir, model_cfg.name_or_path, model_cfg.seed)
    width = params.data.image_size
    n_train = cfg.max_steps * cfg.batch_size * cfg.grad_accum
    train = perception_set(n_train, cfg.seed, width, cfg.curriculum)
    heldout = perception_set(cfg.heldout, cfg.seed + PERCEPTION_SEED_OFFSET, width)
    system = model_cfg.system_prompt
    perception = ScoreSet(
        "perception",
        [r for r, _ in heldout],
        perception_chats(heldout, system, False),
        max_new_tokens=8,
        batch_size=64,
        layers=params.vas.layers,
    )
    plan = StagePlan(
        name="base",
        cfg=cfg,
        model_dir=init_dir,
        build_dataset=lambda processor: ChatDataset(perception_chats(train, system), processor),
        collator=ChatCollator,
        trainer_class=AvarTrainer,
        score_sets=[perception, heldout_scores(params)],
        sampling="sequential",
        reference=chance_bar(perception.records),
    )
    return train_stage(plan, params)


def chance_bar(records: list[dict]) -> dict[str, float]:
    """Accuracy of the majority answer, overall and per category: what 'above chance' means."""
    per_category = majority_accuracy(records)
    counts = {c: sum(r["category"] == c for r in records) for c in per_category}
    overall = sum(per_category[c] * counts[c] for c in per_category) / len(records)
    return {
        "perception/chance": overall,
        **{f"perception/chance/{c}": v for c, v in per_category.items()},
    }
