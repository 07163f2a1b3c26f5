"""Rich tables for what commands print at the end."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from avar.data import Report
from avar.segments import Segment
from avar.stats import interval_cell


def validation_table(report: Report) -> Table:
    table = Table(title=f"{report.records} valid records, {report.images} images")
    table.add_column("kind/category")
    table.add_column("records", justify="right")
    for name, count in sorted(report.by_category.items()):
        table.add_row(name, str(count))
    return table


def print_prepare_summary(result) -> None:
    console = Console()
    model = Table(title="model", show_header=False)
    model.add_row("checkpoint", result.model_dir)
    model.add_row("parameters", f"{result.n_parameters:,}")
    model.add_row("vocabulary", str(result.vocab_size))
    console.print(model)
    console.print(validation_table(result.report))
    segments = Table(title="tokens per segment (first record of each kind)")
    segments.add_column("kind")
    names = [s.name for s in Segment if s != Segment.PAD]
    for name in names:
        segments.add_column(name.lower(), justify="right")
    segments.add_column("LM loss", justify="right")
    for kind, counts in result.segment_tokens.items():
        row = [str(counts.get(name, 0)) for name in names]
        segments.add_row(kind, *row, f"{result.loss[kind]:.3f}")
    console.print(segments)
    console.print("datasets: " + ", ".join(result.datasets.values()))


def vas_table(result: dict) -> Table:
    """Per-layer VAS (or its flag) and masses, then the means."""
    table = Table(title=f"VAS over {result['n']} records ({result['impl']})")
    for column in ("layer", "VAS", "image mass", "system mass", "text mass"):
        table.add_column(column, justify="right")
    per_layer = result["mass_per_layer"]
    for i, layer in enumerate(result["layers"]):
        masses = (per_layer[name][i] for name in ("image", "system", "text"))
        vas = {"vas": result["vas_per_layer"][i], "vas_flag": result["vas_flag_per_layer"][i]}
        table.add_row(str(layer), vas_cell(vas), *map(mass_cell, masses))
    means = (result[f"{name}_mass"] for name in ("image", "system", "text"))
    table.add_row("mean", vas_cell(result), *map(mass_cell, means), style="bold")
    return table


def number_cell(value: float | None) -> str:
    """Accuracies as 0.123, large values as 4.7e+09."""
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) >= 1e3 else f"{value:.3f}"


def mass_cell(value: float | None) -> str:
    """Attention masses span 1 to 1e-10: three significant digits (0.0312, 4.1e-09)."""
    return "-" if value is None else f"{value:.3g}"


def vas_cell(row: dict) -> str:
    """A VAS as tables show it: 2.35, or the flag when its system mass is below the floor
    (`avar.attention.vas.vas_summary`): such a ratio reads the denominator, not the image."""
    if row.get("vas") is None:
        return "-"
    if row.get("vas_flag"):
        return f"flagged: {row['vas_flag']}"
    return number_cell(row["vas"])


def accuracy_cell(row: dict) -> str:
    """0.203 [0.123, 0.317] from a row's accuracy and its 95% interval."""
    return interval_cell(row.get("accuracy"), row.get("accuracy_low"), row.get("accuracy_high"))


SCORE_COLUMNS = ("n", "accuracy [95% CI]", "VAS", "log10 VAS", "image mass", "system mass")
CHECKPOINT_COLUMNS = ("stage", "step", *SCORE_COLUMNS)
MODEL_COLUMNS = ("stage", "benchmark", *SCORE_COLUMNS)


def score_cells(row: dict) -> list[str]:
    """n, accuracy with its interval, VAS (or its flag), log10 VAS and the two masses."""
    log10_vas = row.get("log10_vas")
    return [
        "-" if row.get("n") is None else str(row["n"]),
        accuracy_cell(row),
        vas_cell(row),
        "-" if log10_vas is None else f"{log10_vas:.2f}",
        mass_cell(row.get("image_mass")),
        mass_cell(row.get("system_mass")),
    ]


def pipeline_rows(params) -> tuple[list[list[str]], list[list[str]]]:
    """Cells of the results: per checkpoint, accuracy and VAS on the held-out questions
    (metrics/vas.json); per stage model and benchmark, the same (metrics/eval.json)."""
    import json
    from pathlib import Path

    vas_path, eval_path = Path(params.vas.metrics), Path(params.eval.metrics)
    if not vas_path.is_file():
        raise FileNotFoundError(f"{vas_path} is missing: run the pipeline (`dvc repro`) first")
    checkpoints = [
        [row["stage"], str(row["step"]), *score_cells(row)]
        for row in json.loads(vas_path.read_text())["checkpoints"]
    ]
    models = []
    if eval_path.is_file():
        for stage, report in json.loads(eval_path.read_text())["models"].items():
            for bench, result in report["benchmarks"].items():
                models.append([stage, bench, *score_cells(result)])
    return checkpoints, models


def pipeline_tables(params) -> list[Table]:
    """The results as rich tables (`avar results`)."""
    checkpoints, models = pipeline_rows(params)
    tables = []
    for title, columns, rows in (
        (f"Checkpoints on {params.checkpoint_eval.data}", CHECKPOINT_COLUMNS, checkpoints),
        (f"Stage models on {', '.join(params.eval.benches)}", MODEL_COLUMNS, models),
    ):
        table = Table(title=title)
        for column in columns:
            left = column in ("stage", "benchmark")
            table.add_column(column, justify="left" if left else "right")
        for row in rows:
            table.add_row(*row)
        tables.append(table)
    return tables


def pipeline_markdown(params) -> str:
    """The results as Markdown tables (the Prefect flow's artifact)."""
    checkpoints, models = pipeline_rows(params)
    parts = []
    for title, columns, rows in (
        ("Checkpoints (held-out questions)", CHECKPOINT_COLUMNS, checkpoints),
        ("Stage models (benchmarks)", MODEL_COLUMNS, models),
    ):
        lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
