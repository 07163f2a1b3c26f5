"""`avar stage vas`: the Visual Attention Score of every stage's model and every checkpoint.

Each published stage model (base, coldstart_text, sft_mm, rl) is measured on the same
held-out questions (`checkpoint_eval.data`, teacher-forced on the reference answers, with
the `vas` section's queries, layers and implementation). The per-checkpoint VAS and
accuracy the training stages scored on their greedy answers are gathered beside them.
Writes `vas.metrics` and, next to it, `plots/`: the data DVC plots (checkpoints.json,
stages.json) and the same two plots as PNG for MLflow and the README.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from avar import ranks
from avar.config import Params
from avar.data.chats import load_records
from avar.eval.measure import VasSettings, measure_vas
from avar.io import write_json
from avar.stages import TRAINING_STAGES

log = logging.getLogger(__name__)


@dataclass
class VasResult:
    out: str
    stages: dict[str, dict]
    checkpoints: list[dict]

    def line(self) -> str:
        shown = ", ".join(
            f"{k} {v['vas']:.3g}" for k, v in self.stages.items() if v["vas"] is not None
        )
        n = len(self.checkpoints)
        return f"vas: {shown or 'no stage models'}; {n} checkpoints -> {self.out}"


def stage_models(params: Params) -> dict[str, str]:
    """stage -> published model folder, for the stages that have run."""
    folders = {stage: getattr(params, stage).out_dir for stage in TRAINING_STAGES}
    return {s: d for s, d in folders.items() if (Path(d) / "config.json").is_file()}


def checkpoint_rows(params: Params) -> list[dict]:
    """Every scored checkpoint of the training stages, in pipeline order."""
    rows = []
    for stage in TRAINING_STAGES:
        path = Path(getattr(params, stage).metrics)
        if not path.is_file():
            continue
        for row in json.loads(path.read_text()).get("checkpoints", []):
            rows.append(
                {
                    "stage": stage,
                    "step": row["step"],
                    "vas": row.get("heldout/vas"),
                    "accuracy": row.get("heldout/accuracy"),
                    "image_mass": row.get("heldout/image_mass"),
                    "system_mass": row.get("heldout/system_mass"),
                }
            )
    for row in rows:
        row["log10_vas"] = log10(row["vas"])
    return rows


def log10(vas: float | None) -> float | None:
    """VAS spans 1 to 1e9+ across stages: plots read it on a log scale (None: no value)."""
    return math.log10(vas) if vas and vas > 0 else None


def measure_stages(params: Params) -> dict[str, dict]:
    from avar.models.loader import load

    cfg = params.vas
    records, root = load_records(params.checkpoint_eval.data, params.checkpoint_eval.limit)
    settings = VasSettings(
        queries=cfg.queries,
        layers=cfg.layers,
        impl=cfg.impl,
        batch_size=params.checkpoint_eval.batch_size,
    )
    measured = {}
    for stage, folder in stage_models(params).items():
        attention = "eager" if cfg.impl == "eager" else "sdpa"
        model, processor = load(folder, params.model, attention)
        report = measure_vas(model, processor, records, root, settings, params.model.system_prompt)
        measured[stage] = {
            k: report[k] for k in ("vas", "image_mass", "system_mass", "n", "vas_per_layer")
        }
        if ranks.is_main():
            log.info("vas %s: %s", stage, report["vas"])
    return measured


def draw_plots(stages: dict[str, dict], checkpoints: list[dict], folder: Path) -> None:
    """vas.png: VAS vs accuracy across checkpoints (scatter) beside VAS per stage (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avar.io import save_figure

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage in TRAINING_STAGES:
        points = [
            r
            for r in checkpoints
            if r["stage"] == stage and r["log10_vas"] is not None and r["accuracy"] is not None
        ]
        if points:
            left.scatter(
                [r["log10_vas"] for r in points], [r["accuracy"] for r in points], label=stage, s=36
            )
    left.set(
        xlabel="log10 VAS (held-out answers)",
        ylabel="held-out accuracy",
        title="Checkpoints: VAS vs accuracy",
    )
    left.legend(fontsize=8)
    names = [s for s in stages if log10(stages[s]["vas"]) is not None]
    right.bar(names, [log10(stages[s]["vas"]) for s in names], color="tab:purple")
    right.set(ylabel="log10 VAS (reference answers)", title="VAS per stage")
    figure.tight_layout()
    save_figure(figure, folder / "vas.png")
    plt.close(figure)


def run(params: Params) -> VasResult:
    from avar.models.loader import resolve_device

    device = resolve_device(params.model.device)
    ranks.start(device)  # several ranks: each measures its share, all get every row
    stages = measure_stages(params)
    checkpoints = checkpoint_rows(params)
    topology = ranks.topology(device)
    out = Path(params.vas.metrics)
    if ranks.is_main():
        plots = out.parent / "plots"
        write_json(plots / "checkpoints.json", checkpoints)
        write_json(
            plots / "stages.json",
            [
                {"stage": s, "vas": v["vas"], "log10_vas": log10(v["vas"])}
                for s, v in stages.items()
            ],
        )
        draw_plots(stages, checkpoints, plots)
        write_json(out, {"stages": stages, "checkpoints": checkpoints, "launch": topology})
    return VasResult(str(out), stages, checkpoints)
