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
