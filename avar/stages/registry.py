"""Every pipeline stage, declared once: its name, the params section it reads, the module
whose `run(params)` it is, the file its numbers go to and how they are logged.

`avar stage NAME`, the Prefect flow, MLflow tracking and the dvc.yaml test all read this
table (CONTRIBUTING.md: adding a stage). Importing it loads no stage code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from avar.config import Params, flatten

Rows = list[tuple[int | None, dict]]
"""(step, flat numbers) pairs: what a stage's MLflow run logs from its metrics file."""


def flat_rows(report: dict) -> Rows:
    return [(None, flatten(report))]


def training_rows(report: dict) -> Rows:
    """The loss history by step. Checkpoint rows are logged with their LoggedModels."""
    return [
        (entry["step"], {f"train/{k}": v for k, v in entry.items() if k != "step"})
        for entry in report.get("history", [])
        if "step" in entry
    ]


def curate_rows(report: dict) -> Rows:
    flat = {f"curate/sets/{k}": v for k, v in report.get("sets", {}).items()}
    flat.update({f"curate/dropped/{k}": v for k, v in report.get("dropped", {}).items()})
    return [(None, {**flat, "curate/seconds": report.get("seconds")})]


def vas_rows(report: dict) -> Rows:
    return [(None, {f"{name}/vas": row.get("vas") for name, row in report["stages"].items()})]


def eval_rows(report: dict) -> Rows:
    return [
        (None, {f"{name}/{k}": v for k, v in row["metrics"].items()})
        for name, row in report["models"].items()
    ]


def spec_slug(spec: str) -> str:
    """An intervention setting as MLflow allows in a metric name: alpha_0.3_layers_0-3."""
    return spec.replace("=", "_").replace(",", "_")


def study_rows(report: dict) -> Rows:
    row = {f"study/{k}": v for k, v in report.items() if k != "intervened"}
    for spec, numbers in report.get("intervened", {}).items():
        row.update({f"study/intervened/{spec_slug(spec)}/{k}": v for k, v in numbers.items()})
    return [(None, row)]


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline."""

    name: str
    """`avar stage NAME`, the dvc.yaml stage, the MLflow stage run."""
    section: str
    """The params.yaml section the stage reads (and logs as the run's params)."""
    rows: Callable[[dict], Rows] = flat_rows
    """How the stage's metrics file becomes MLflow metrics."""
    trains: bool = False
    """Trains a model: publishes `<section>.out_dir`, scores a row per checkpoint."""
    plots: bool = False
    """Draws PNGs into `plots/` beside its metrics file (logged as artifacts)."""
    ranks: bool = False
    """Runs on several ranks when `launch` asks (avar.launch); others run as one process."""

    def metrics_file(self, params: Params) -> str:
        """Where the stage writes its numbers ('' for none)."""
        return getattr(getattr(params, self.section), "metrics", "")

    def run(self, params: Params):
        """Run the stage: `avar.stages.<name>.run(params)`."""
        return importlib.import_module(f"avar.stages.{self.name}").run(params)


PIPELINE = (
    Stage("prepare", "data"),
    Stage("base", "base", training_rows, trains=True, ranks=True),
    Stage("curate", "curate", curate_rows),
    Stage("coldstart_text", "coldstart_text", training_rows, trains=True, ranks=True),
    Stage("sft_mm", "sft_mm", training_rows, trains=True, ranks=True),
    Stage("rl", "rl", training_rows, trains=True, ranks=True),
    Stage("vas", "vas", vas_rows, plots=True, ranks=True),
    Stage("eval", "eval", eval_rows, ranks=True),
    Stage("study", "study", study_rows),
    Stage("register", "register"),
)
STAGES = {stage.name: stage for stage in PIPELINE}
"""The stages by name, in pipeline order."""
TRAINING_STAGES = tuple(stage.name for stage in PIPELINE if stage.trains)
"""The stages that train a model: each publishes `<stage>.out_dir` and scores checkpoints."""


def stage(name: str) -> Stage:
    """The stage called `name`, or a ValueError listing the names there are."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}")
    return STAGES[name]
