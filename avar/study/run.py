"""`avar study` end to end: the grid as DVC experiments round by round, each finished
experiment read back and logged to MLflow as it lands, then the findings and the report."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from avar.config import load_params
from avar.io import atomic_write_text, write_json
from avar.stages import TRAINING_STAGES
from avar.study import tracking
from avar.study.experiments import Finished, read, require_repository, run_round
from avar.study.findings import Finding, findings
from avar.study.grid import Experiment, experiments, rounds
from avar.study.plots import draw
from avar.study.report import cell as shown
from avar.study.report import markdown
from avar.study.stats import jsonable
from avar.summary import accuracy_cell


@dataclass
class StudyOutcome:
    report: Path
    findings: list[Finding]
    run_id: str
    minutes: float
    text: str

    def lines(self) -> list[str]:
        return [f"{f.key} {f.verdict}: {f.why}" for f in self.findings] + [
            f"report: {self.report} ({self.minutes:.1f} min); MLflow study run {self.run_id}"
        ]


def write_report(found, finished, about: dict, report: Path) -> list[Path]:
    """reports/study.md, study.json (the findings' numbers) and the PNGs under study/."""
    pictures = draw(finished, found, report.parent / report.stem)
    text = markdown(found, finished, about)
    numbers = {"about": about, "findings": [jsonable(dataclasses.asdict(f)) for f in found]}
    data = write_json(report.with_suffix(".json"), numbers)
    return [atomic_write_text(report, text), data, *pictures.values()]


def run_study(
    workspace: Path,
    params_file: Path,
    overrides: list[str],
    quick: bool = False,
    jobs: int | None = None,
    echo: Callable[[str], None] = print,
) -> StudyOutcome:
    params = load_params(params_file, overrides)
    require_repository(workspace)
    stamp = time.strftime("%y%m%d%H%M%S")
    grid = experiments(params_file, params, quick, stamp, overrides)
    batches = rounds(grid)
    jobs = jobs or params.study.jobs
    metrics = {stage: getattr(params, stage).metrics for stage in TRAINING_STAGES}
    start = time.monotonic()
    echo(f"study {stamp}: {len(grid)} DVC experiments in {len(batches)} rounds, {jobs} at a time")
    study_id = tracking.start(params, workspace, "quick" if quick else "full", stamp)
    finished: list[Finished] = []
    found: list[Finding] = []
    files: list[Path] = []

    def landed(experiment: Experiment, seconds: float) -> None:
        item = read(experiment, workspace, metrics, params.study.metrics)
        item.seconds = round(seconds, 1)
        finished.append(item)
        tracking.log_experiment(params, study_id, item)
        m = item.measurement
        echo(
            f"[{len(finished)}/{len(grid)}] {experiment.label}: accuracy {accuracy_cell(m)} "
            f"(n={m['n']}), log10 VAS {shown(m.get('log10_vas'), 2)}, image mass "
            f"{shown(m.get('image_mass'), 3)}, system mass {shown(m.get('system_mass'), 4)} "
            f"({item.seconds:.0f} s into its round)"
        )

    ok = False
    try:
        for number, batch in enumerate(batches, start=1):
            trained = len(batch[0].chain)
            echo(
                f"round {number}/{len(batches)}: {len(batch)} experiments, "
                f"{trained} stage(s) trained after base"
            )
            run_round(batch, workspace, jobs, landed)
        finished.sort(key=lambda f: grid.index(f.experiment))  # as listed, not as they landed
        found = findings(finished, params.study.bootstrap)
        minutes = (time.monotonic() - start) / 60
        about = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "git_sha": tracking.git_sha(workspace),
            "grid": "quick" if quick else "full",
            "experiments": len(grid),
            "variants": len({e.variant for e in grid}),
            "seeds": ", ".join(
                str(s) for s in sorted({e.seed for e in grid if e.seed is not None})
            ),
            "bench": params.study.bench,
            "n": finished[0].measurement["n"],
            "minutes": minutes,
            "jobs": jobs,
            "mlflow_run_id": study_id,
        }
        report = workspace / params.study.report
        files = write_report(found, finished, about, report)
        ok = True
    finally:
        tracking.finish(params, study_id, found, files, ok)
    return StudyOutcome(report, found, study_id, minutes, files[0].read_text())
