"""`avar stage register`: the `register.stage` model (rl) becomes a new version of
AVAR-Thinker in the MLflow registry; the alias (`champion`) moves to it only when its
`register.metric` in the eval stage's report beats the current champion's."""

from __future__ import annotations

import json
from pathlib import Path

from avar.config import Params
from avar.io import write_json
from avar.tracking.registry import Registration, register


def candidate_score(params: Params) -> float:
    """The registered stage's `register.metric` from the eval stage's report."""
    cfg, path = params.register, Path(params.eval.metrics)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `avar stage eval` first")
    models = json.loads(path.read_text())["models"]
    if cfg.stage not in models:
        raise ValueError(f"{path}: no scores of stage {cfg.stage!r} (register.stage)")
    metrics = models[cfg.stage]["metrics"]
    if cfg.metric not in metrics:
        raise ValueError(f"{path}: register.metric {cfg.metric!r} is not among {sorted(metrics)}")
    return float(metrics[cfg.metric])


def run(params: Params) -> Registration:
    score = candidate_score(params)
    registration = register(params, getattr(params, params.register.stage).out_dir, score)
    write_json(params.register.metrics, registration.as_dict())
    return registration
