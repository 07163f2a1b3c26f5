"""`avar study correlate`: F1 over checkpoints given by hand, the paper's cross-model
figure: each model answers the same benchmark, with the VAS of its answers; Pearson and
Spearman r of accuracy with log10 VAS and with image mass alone, with bootstrap intervals."""

from __future__ import annotations

from pathlib import Path

from avar.config import Params
from avar.eval.run import EvalRequest, evaluate
from avar.io import save_figure, write_json
from avar.stages.study import measured
from avar.study.findings import correlations
from avar.study.plots import pyplot, scatter_fit
from avar.study.stats import jsonable


def correlate(models: list[str], bench: str, limit: int, params: Params, out: Path) -> dict:
    """Measure each model; write `out` (JSON) and a PNG beside it; return the numbers."""
    if len(models) < 2:
        raise ValueError(f"--models: a correlation needs at least 2 models, got {len(models)}")
    points = []
    for model in models:
        request = EvalRequest(model, [bench], params.eval.data_dir, limit, "", vas=True)
        row, _ = measured(evaluate(request, params), bench)
        if row.get("log10_vas") is None:
            raise ValueError(f"{model}: no VAS measured on {bench} (no image questions?)")
        points.append(
            {"label": model, "variant": model, "flagged": bool(row.get("vas_flag")), **row}
        )
    found = correlations(points, params.study.bootstrap)
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    scatter_fit(axes[0], points, "log10_vas", bench, found["pearson_log10_vas"])
    scatter_fit(axes[1], points, "image_mass", "image mass alone", found["pearson_image_mass"])
    for point in points:
        axes[0].annotate(
            Path(point["label"]).name, (point["log10_vas"], point["accuracy"]), fontsize=7
        )
    figure.tight_layout()
    save_figure(figure, out.with_suffix(".png"))
    plt.close(figure)
    report = {
        "bench": bench,
        "models": points,
        "correlations": jsonable(found),
    }
    write_json(out, report)
    return report
