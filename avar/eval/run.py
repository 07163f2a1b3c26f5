"""`avar eval`: a checkpoint on one or more benchmarks -> accuracy (overall, per category),
optionally the VAS of the same answers, per-sample rows, one JSON file and a table.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from avar.config import Params
from avar.config.specs import parse_intervention
from avar.data.chats import prompts
from avar.eval.benchmarks import benchmark, load_samples
from avar.eval.harness import answer
from avar.eval.measure import SUMMARY_KEYS
from avar.stats import accuracy_summary
from avar.summary import accuracy_cell, mass_cell, vas_cell

log = logging.getLogger(__name__)


@dataclass
class EvalRequest:
    model: str
    benches: list[str]
    data_dir: str
    limit: int = 0
    intervene: str = ""
    vas: bool = False


def bench_folder(name: str, data_dir: Path, params: Params, scratch: Path) -> Path:
    """Where a benchmark's files are: `<data-dir>/<name>/`. The synthetic suite falls back
    to the curated eval set, then params' held-out set, and builds that (in scratch space)
    when neither exists."""
    folder = data_dir / name
    if name != "synthetic" or (folder / "data.jsonl").is_file():
        return folder
    heldout = Path(params.checkpoint_eval.data)
    for candidate in (Path(params.curate.out_dir) / "eval/data.jsonl", heldout):
        if candidate.is_file():
            return candidate.parent
    from avar.data import synthesize

    cfg = params.data.heldout
    log.info("synthetic: %s not found; generating %d held-out questions", heldout, cfg.n)
    return synthesize(
        "visual", cfg.n, cfg.seed, scratch / "synthetic", params.data.image_size, prefix="heldout"
    ).parent


def evaluate(request: EvalRequest, params: Params) -> dict:
    """Load, answer, grade (and measure) every benchmark; the report as a dict."""
    from avar.models.loader import load

    benches = [benchmark(name) for name in request.benches]  # unknown names fail first
    intervention = parse_intervention(request.intervene)
    cfg = params.eval
    results, metrics = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        folders = {
            b.name: bench_folder(b.name, Path(request.data_dir), params, Path(scratch))
            for b in benches
        }
        samples = {b.name: list(load_samples(b, folders[b.name], request.limit)) for b in benches}
    model, processor = load(request.model, params.model)
    for bench in benches:
        items = samples[bench.name]
        if not items:
            raise ValueError(f"{bench.name}: no samples in {folders[bench.name]}")
        start = time.monotonic()
        log.info("%s: %d samples", bench.name, len(items))
        answers = answer(
            model,
            processor,
            prompts(items, None, params.model.system_prompt or None),
            items,
            cfg.max_new_tokens,
            cfg.batch_size,
            params.vas.layers,
            intervention,
            with_vas=request.vas,
            progress=True,
        )
        overall = accuracy_summary(answers.correct)
        result = {
            "n": len(items),
            "accuracy": overall["accuracy"],
            "accuracy_low": overall["low"],
            "accuracy_high": overall["high"],
            "categories": answers.by_category(),
            **{k: (answers.vas or {}).get(k) for k in SUMMARY_KEYS},
            "seconds": round(time.monotonic() - start, 1),
            "samples": answers.rows(),
        }
        results[bench.name] = result
        prefix = f"eval/{bench.name}"
        metrics.update(answers.metrics(prefix))
        if answers.vas:
            metrics.update({f"{prefix}/{k}": result[k] for k in SUMMARY_KEYS if k != "vas_flag"})
    return {
        "model": request.model,
        "intervention": request.intervene,
        "metrics": metrics,
        "benchmarks": results,
    }


def results_table(report: dict) -> Table:
    title = f"{report['model']}" + (
        f" (intervention {report['intervention']})" if report["intervention"] else ""
    )
    table = Table(title=title)
    columns = ("benchmark", "n", "accuracy [95% CI]", "VAS", "image mass", "system mass", "worst")
    for column in columns:
        table.add_column(column, justify="left" if column in ("benchmark", "worst") else "right")
    for name, result in report["benchmarks"].items():
        worst, summary = min(result["categories"].items(), key=lambda kv: kv[1]["accuracy"])
        accuracy = accuracy_cell(result)
        masses = [vas_cell(result), *(mass_cell(result[k]) for k in ("image_mass", "system_mass"))]
        worst_cell = f"{worst} {summary['accuracy']:.3f} (n={summary['n']})"
        table.add_row(name, str(result["n"]), accuracy, *masses, worst_cell)
    return table
