"""`avar prepare`: the embedded model and the synthetic raw sources, validated.

Builds the `tiny`/`small` model named by `model.name_or_path` (a real checkpoint is only
loaded), writes the synthetic visual, text and held-out visual sources under
`data.raw_dir`, validates them, and encodes one record of each kind through the model as a
smoke check.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from avar.config import Params
from avar.data import Report, read_jsonl, require_valid, synthesize
from avar.data.chats import to_messages
from avar.models.loader import load
from avar.models.tiny import PRESETS, init_tiny
from avar.segments import Segment, collate, encode


@dataclass
class PrepareResult:
    model_dir: str
    n_parameters: int
    vocab_size: int
    datasets: dict[str, str]
    report: Report
    segment_tokens: dict[str, Counter] = field(default_factory=dict)
    loss: dict[str, float] = field(default_factory=dict)


def run(cfg: Params) -> PrepareResult:
    model_dir = cfg.model.name_or_path
    if model_dir in PRESETS:
        model_dir = str(init_tiny(cfg.model.init_dir, model_dir, cfg.model.seed))
    raw = Path(cfg.data.raw_dir)
    datasets = {
        "visual": str(
            synthesize(
                "visual",
                cfg.data.visual.n,
                cfg.data.visual.seed,
                raw / "visual",
                cfg.data.image_size,
            )
        ),
        "text": str(synthesize("text", cfg.data.text.n, cfg.data.text.seed, raw / "text")),
        "heldout": str(
            synthesize(
                "visual",
                cfg.data.heldout.n,
                cfg.data.heldout.seed,
                raw / "heldout",
                cfg.data.image_size,
                prefix="heldout",
            )
        ),
    }
    report = require_valid(list(datasets.values()))
    model, processor = load(model_dir, cfg.model)
    result = PrepareResult(
        model_dir=model_dir,
        n_parameters=sum(p.numel() for p in model.parameters()),
        vocab_size=len(processor.tokenizer),
        datasets=datasets,
        report=report,
    )
    for kind, path in datasets.items():
        record = read_jsonl(path)[0]
        messages = to_messages(record, Path(path).parent, cfg.model.system_prompt)
        encoded = encode(processor, messages)
        result.segment_tokens[kind] = Counter(Segment(s).name for s in encoded.segment_ids)
        batch = {k: v.to(model.device) for k, v in collate(processor, [encoded]).items()}
        batch.pop("segment_ids")
        with torch.no_grad():
            result.loss[kind] = float(model(**batch).loss)
    return result
