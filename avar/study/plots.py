"""The study's four pictures, each a PNG beside the report: VAS against accuracy with the
fit line (and image mass alone), the masses after each cold-start, the intervention
curves, and the variants' accuracies with their intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avar.io import save_figure
from avar.study.findings import Finding, checkpoint_points, model_points
from avar.study.stats import Estimate


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def arms(estimates: list[Estimate]) -> np.ndarray:
    """Error bar arms (2, n) of estimates; 0 where there is no interval."""
    low = [e.value - e.low if e.low is not None else 0.0 for e in estimates]
    high = [e.high - e.value if e.high is not None else 0.0 for e in estimates]
    return np.array([low, high])


def scatter_fit(ax, points: list[dict], x: str, title: str, r: Estimate) -> None:
    for flagged, marker in ((False, "o"), (True, "o")):
        chosen = [p for p in points if p["flagged"] == flagged]
        ax.scatter(
            [p[x] for p in chosen],
            [p["accuracy"] for p in chosen],
            s=28,
            facecolors="none" if flagged else "C0",
            edgecolors="C0",
            marker=marker,
            label="flagged VAS (system mass < 1e-3)" if flagged else "measured",
        )
    xs = np.array([p[x] for p in points])
    if len(points) >= 2 and np.ptp(xs) > 0:
        slope, intercept = np.polyfit(xs, [p["accuracy"] for p in points], 1)
        line = np.linspace(xs.min(), xs.max(), 20)
        ax.plot(line, slope * line + intercept, color="C3", label="least-squares fit")
    ax.set_title(f"{title}: Pearson r = {r.cell(2)}", fontsize=9)
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)


def draw(finished, found: list[Finding], folder: Path) -> dict[str, Path]:
    plt = pyplot()
    by_key = {f.key: f for f in found}
    written = {}
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    models = by_key["F1"].numbers["models"]
    checkpoints = by_key["F1"].numbers["checkpoints"]
    scatter_fit(
        axes[0],
        model_points(finished),
        "log10_vas",
        "variants' models",
        models["pearson_log10_vas"],
    )
    scatter_fit(
        axes[1],
        model_points(finished),
        "image_mass",
        "image mass alone",
        models["pearson_image_mass"],
    )
    scatter_fit(
        axes[2],
        checkpoint_points(finished),
        "log10_vas",
        "every checkpoint",
        checkpoints["pearson_log10_vas"],
    )
    figure.tight_layout()
    written["vas_accuracy"] = save_figure(figure, folder / "vas_accuracy.png")
    plt.close(figure)

    deltas = by_key["F2"].numbers.get("deltas", {})
    if deltas:
        figure, axes = plt.subplots(1, 3, figsize=(15, 3.8))
        names = list(deltas)
        for ax, key in zip(axes, ("log10_vas", "image_mass", "system_mass"), strict=True):
            values = [deltas[n][key] for n in names]
            ax.barh(names, [e.value for e in values], xerr=arms(values), color="C1", capsize=3)
            ax.axvline(0, color="k", lw=0.8)
            ax.set_title(
                f"{key.replace('_', ' ')} minus base's (mean over seeds, t interval)", fontsize=9
            )
        figure.tight_layout()
        written["masses"] = save_figure(figure, folder / "masses.png")
        plt.close(figure)

    swept = by_key["F3"].numbers
    if swept:
        figure, ax = plt.subplots(figsize=(8, 4))
        for i, (name, rows) in enumerate(swept.items()):
            settings = list(rows)
            positions = np.arange(len(settings)) + (i - (len(swept) - 1) / 2) * 0.15
            values = [rows[s] for s in settings]
            ax.errorbar(
                positions,
                [e.value for e in values],
                yerr=arms(values),
                fmt="o",
                capsize=3,
                label=name,
            )
        ax.set_xticks(range(len(settings)), settings, rotation=20, fontsize=7)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel("accuracy change (paired, same questions)")
        ax.set_title("intervention toward image keys", fontsize=9)
        ax.legend(fontsize=7)
        figure.tight_layout()
        written["intervention"] = save_figure(figure, folder / "intervention.png")
        plt.close(figure)

    accuracy = by_key["F4"].numbers["accuracy"]
    figure, ax = plt.subplots(figsize=(8, 0.45 * len(accuracy) + 1.2))
    names = list(accuracy)
    values = [accuracy[n] for n in names]
    ax.barh(names, [e.value for e in values], xerr=arms(values), color="C0", capsize=3)
    ax.set_xlabel("accuracy (mean over seeds; interval over seeds and questions)")
    ax.invert_yaxis()
    figure.tight_layout()
    written["variants"] = save_figure(figure, folder / "variants.png")
    plt.close(figure)
    return written
