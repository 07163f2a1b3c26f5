"""One GRPO step on however many ranks this runs under, with rewards that differ within
each group (the completion's length); every rank writes what it sampled and its weights'
checksum to argv[2]/rank<N>.json. Used by tests/test_launch.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grpo_steps import LengthRewarded, grpo_step

from avar.config.schema import RlConfig
from avar.data import read_jsonl
from avar.models.loader import load_model, load_processor
from avar.ranks import leave
from avar.stages.rl import prompt_rows
from avar.train.grpo import GrpoObjective, group_advantages


class Recorded(LengthRewarded):
    """Keeps what this rank sampled: its prompts, rewards and advantages."""

    seen: list[dict] = []

    def rewards(self, texts, records, masses):
        rewards = super().rewards(texts, records, masses)
        advantages = group_advantages(rewards["total"], self.objective.group_size)
        self.seen.append(
            {
                "ids": [str(r["prompt"]) for r in records],
                "rewards": rewards["total"].tolist(),
                "advantages": advantages.tolist(),
            }
        )
        return rewards


if __name__ == "__main__":
    model_dir, out = sys.argv[1], Path(sys.argv[2])
    data = Path(sys.argv[3])
    model = load_model(model_dir, device="cpu", dtype="fp32")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = prompt_rows(read_jsonl(data)[:4], data.parent, "You are a helpful assistant.")
    rl = RlConfig(group_size=3, max_completion_tokens=8, learning_rate=1e-3)
    processor = load_processor(model_dir)
    objective = GrpoObjective.from_config(rl)
    trainer = grpo_step(model, processor, rows, out / "checkpoints", objective, Recorded)
    after = model.state_dict()
    moved = sum(not before[k].equal(after[k]) for k in before) / len(before)
    checksum = sum(float(v.double().sum()) for v in after.values())
    (out / f"rank{trainer.args.process_index}.json").write_text(
        json.dumps({"seen": Recorded.seen, "moved": moved, "checksum": checksum})
    )
    leave()
