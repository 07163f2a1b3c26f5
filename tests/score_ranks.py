"""Score a tiny model's checkpoint the way a training stage does, on however many ranks
this runs under (plain python: one; torchrun: several); rank 0 writes the row and the
answer rows as JSON to argv[2]. Used by tests/test_launch.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from avar import ranks
from avar.data.chats import load_records
from avar.eval.harness import answer
from avar.models.loader import load
from avar.train.scoring import ScoreSet, score

if __name__ == "__main__":
    project, out = Path(sys.argv[1]), Path(sys.argv[2])
    ranks.start(torch.device("cpu"))
    from avar.config.schema import ModelConfig

    model, processor = load(str(project / "models/base"), ModelConfig())
    records, root = load_records(str(project / "data/raw/heldout/data.jsonl"))
    scores = ScoreSet.from_records(
        "heldout", records, root, "You are a helpful assistant.", max_new_tokens=10, batch_size=2
    )
    row = score(model, processor, scores)
    answers = answer(model, processor, scores.prompts, records, 10, 2)
    if ranks.is_main():
        out.write_text(json.dumps({"row": row, "answers": answers.rows()}))
    ranks.leave()
