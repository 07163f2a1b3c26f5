"""Rich tables for what commands print at the end."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from avar.data import Report
from avar.segments import Segment


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


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def vas_table(result: dict) -> Table:
    """Per-layer VAS and masses, then the means."""
    table = Table(title=f"VAS over {result['n']} records ({result['impl']})")
    for column in ("layer", "VAS", "image mass", "system mass", "text mass"):
        table.add_column(column, justify="right")
    per_layer = result["mass_per_layer"]
    for i, layer in enumerate(result["layers"]):
        masses = (per_layer[name][i] for name in ("image", "system", "text"))
        table.add_row(str(layer), _fmt(result["vas_per_layer"][i]), *map(_fmt, masses))
    means = (result[f"{name}_mass"] for name in ("image", "system", "text"))
    table.add_row("mean", _fmt(result["vas"]), *map(_fmt, means), style="bold")
    return table


def number_cell(value: float | None) -> str:
    """Accuracies as 0.123, VAS (which reaches 1e9 on the tiny model) as 4.7e+09."""
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) >= 1e3 else f"{value:.3f}"


CHECKPOINT_COLUMNS = ("stage", "step", "VAS", "accuracy", "image mass", "system mass")
MODEL_COLUMNS = ("stage", "metric", "value")


def pipeline_rows(params) -> tuple[list[list[str]], list[list[str]]]:
    """Cells of the results: per checkpoint, VAS and accuracy on the held-out questions
    (metrics/vas.json); per stage model, benchmark accuracy and VAS (metrics/eval.json)."""
    import json
    from pathlib import Path

    vas_path, eval_path = Path(params.vas.metrics), Path(params.eval.metrics)
    if not vas_path.is_file():
        raise FileNotFoundError(f"{vas_path} is missing: run the pipeline (`dvc repro`) first")
    checkpoints = [
        [
            row["stage"],
            str(row["step"]),
            *(number_cell(row[k]) for k in ("vas", "accuracy", "image_mass", "system_mass")),
        ]
        for row in json.loads(vas_path.read_text())["checkpoints"]
    ]
    models = []
    if eval_path.is_file():
        for stage, row in json.loads(eval_path.read_text())["models"].items():
            models += [
                [stage, key, number_cell(value)]
                for key, value in row["metrics"].items()
                if key.count("/") == 2
            ]  # overall accuracy and VAS, not per category
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
            table.add_column(column, justify="left" if column in ("stage", "metric") else "right")
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
