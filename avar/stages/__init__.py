"""The pipeline's stages: each is `run(params) -> result`, called by `avar stage NAME`,
dvc.yaml and the Prefect flow alike, and declared once in `registry`."""

from avar.stages.registry import STAGES, TRAINING_STAGES, Stage, stage

__all__ = ["STAGES", "TRAINING_STAGES", "Stage", "stage"]
