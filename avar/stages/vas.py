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
from dataclasses import dataclass
from pathlib import Path

from avar import ranks
from avar.attention.vas import SYSTEM_FLOOR
from avar.config import Params
from avar.data.chats import load_records
from avar.eval.measure import SUMMARY_KEYS, VasSettings, measure_vas
from avar.io import write_json
from avar.stages import TRAINING_STAGES
from avar.summary import vas_cell

log = logging.getLogger(__name__)


@dataclass
class VasResult:
    out: str
    stages: dict[str, dict]
    checkpoints: list[dict]

    def line(self) -> str:
        shown = ", ".join(f"{k} {vas_cell(v)}" for k, v in self.stages.items())
        n = len(self.checkpoints)
        return f"vas: {shown or 'no stage models'}; {n} checkpoints -> {self.out}"


def stage_models(params: Params) -> dict[str, str]:
    """stage -> published model folder, for the stages that have run."""
    folders = {stage: getattr(params, stage).out_dir for stage in TRAINING_STAGES}
    return {s: d for s, d in folders.items() if (Path(d) / "config.json").is_file()}


# What the results show of each checkpoint's held-out scores (`heldout/<key>` in its row).
CHECKPOINT_KEYS = ("accuracy", "accuracy_low", "accuracy_high", "n", *SUMMARY_KEYS)
STAGE_KEYS = (*SUMMARY_KEYS, "n")


def checkpoint_rows(params: Params) -> list[dict]:
    """Every scored checkpoint of the training stages, in pipeline order."""
    rows = []
    for stage in TRAINING_STAGES:
        path = Path(getattr(params, stage).metrics)
        if not path.is_file():
            continue
        for row in json.loads(path.read_text()).get("checkpoints", []):
            scores = {k: row.get(f"heldout/{k}") for k in CHECKPOINT_KEYS}
            rows.append({"stage": stage, "step": row["step"], **scores})
    return rows


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
        model, processor = load(folder, params.model, "eager" if cfg.impl == "eager" else None)
        report = measure_vas(model, processor, records, root, settings, params.model.system_prompt)
        measured[stage] = {k: report[k] for k in (*STAGE_KEYS, "vas_per_layer")}
        if ranks.is_main():
            log.info("vas %s: %s", stage, vas_cell(report))
    return measured


def interval_arm(row: dict, side: str) -> float:
    """How far the accuracy's 95% interval reaches below ("low") or above it (0: none)."""
    bound = row.get(f"accuracy_{side}")
    return 0.0 if bound is None else abs(row["accuracy"] - bound)


def draw_plots(stages: dict[str, dict], checkpoints: list[dict], folder: Path) -> None:
    """vas.png: accuracy (with its 95% interval) against log10 VAS across checkpoints,
    flagged ones hollow; beside it each stage's image and system masses on a log scale,
    with the floor below which a VAS is flagged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avar.io import save_figure

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    for stage in TRAINING_STAGES:
        points = [
            r
            for r in checkpoints
            if r["stage"] == stage and r["log10_vas"] is not None and r["accuracy"] is not None
        ]
        for flagged in (False, True):
            shown = [r for r in points if bool(r["vas_flag"]) == flagged]
            if not shown:
                continue
            errors = [
                [interval_arm(r, "low") for r in shown],
                [interval_arm(r, "high") for r in shown],
            ]
            left.errorbar(
                [r["log10_vas"] for r in shown],
                [r["accuracy"] for r in shown],
                yerr=errors,
                fmt="o",
                mfc="none" if flagged else None,
                capsize=3,
                label=f"{stage}{' (system mass < floor)' if flagged else ''}",
            )
    left.set(
        xlabel="log10 VAS (held-out answers)",
        ylabel="held-out accuracy (95% interval)",
        title="Checkpoints: VAS vs accuracy",
    )
    left.legend(fontsize=7)
    names = [s for s in stages if stages[s]["image_mass"] is not None]
    x = range(len(names))
    for offset, mass, color in ((-0.2, "image_mass", "tab:green"), (0.2, "system_mass", "tab:red")):
        right.bar(
            [i + offset for i in x],
            [max(stages[s][mass] or 0.0, 1e-12) for s in names],
            width=0.4,
            color=color,
            label=mass.replace("_", " "),
        )
    right.axhline(SYSTEM_FLOOR, color="grey", linestyle="--", linewidth=1, label="VAS floor")
    for i, stage in zip(x, names, strict=True):
        row = stages[stage]
        text = "flagged" if row["vas_flag"] else f"VAS {row['vas']:.3g}"
        right.annotate(text, (i, 1.0), ha="center", va="bottom", fontsize=8)
    right.set_yscale("log")
    right.set_xticks(list(x), names)
    right.set(ylabel="mean attention mass (reference answers)", title="Masses per stage")
    right.legend(fontsize=7, loc="lower left")
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
            [{"stage": s, **{k: v[k] for k in STAGE_KEYS}} for s, v in stages.items()],
        )
        draw_plots(stages, checkpoints, plots)
        write_json(out, {"stages": stages, "checkpoints": checkpoints, "launch": topology})
    return VasResult(str(out), stages, checkpoints)
