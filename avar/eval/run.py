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

from avar import ranks
from avar.config import Params
from avar.config.specs import parse_intervention
from avar.data.chats import prompts
from avar.eval.benchmarks import benchmark, load_benchmark
from avar.eval.harness import answer
from avar.eval.judge import build_judge
from avar.eval.measure import SUMMARY_KEYS
from avar.eval.presets import Harness, harness
from avar.stats import accuracy_metrics, accuracy_summary
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
    """Load, answer, grade (and measure) every benchmark; the report as a dict.

    Each benchmark is asked as `eval.preset` and `eval.prompts` say (avar.eval.presets);
    with `eval.judge`, an LLM also extracts each final answer and its score is reported
    beside the rule-based one. Unreadable rows are skipped, counted and named."""
    from avar.engine.client import answering_engine
    from avar.models.loader import load

    benches = [benchmark(name) for name in request.benches]  # unknown names fail first
    intervention = parse_intervention(request.intervene)
    cfg = params.eval
    harnesses = {b.name: harness(params, b.name) for b in benches}
    # one judge per run: under several ranks rank 0 asks it (the others write no results)
    judge = build_judge(cfg.judge) if ranks.is_main() else None
    results, metrics = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        folders = {
            b.name: bench_folder(b.name, Path(request.data_dir), params, Path(scratch))
            for b in benches
        }
        loaded = {
            b.name: load_benchmark(b, folders[b.name], request.limit, cfg.max_bad_rows)
            for b in benches
        }
    model, processor = load(request.model, params.model)
    steered = intervention is not None
    with answering_engine(params.generate, params.model, request.model, steered) as engine:
        for bench in benches:
            items, how = loaded[bench.name].samples, harnesses[bench.name]
            if not items:
                raise ValueError(f"{bench.name}: no samples in {folders[bench.name]}")
            start = time.monotonic()
            log.info("%s: %d samples, preset %s", bench.name, len(items), how.preset)
            texts = [how.prompt(item) for item in items]
            asked = [{**item, "question": text} for item, text in zip(items, texts, strict=True)]
            answers = answer(
                model,
                processor_for(request.model, how, params, processor),
                prompts(asked, None, how.system_prompt),
                items,
                cfg.max_new_tokens,
                cfg.batch_size,
                params.vas.layers,
                intervention,
                with_vas=request.vas,
                progress=True,
                engine=engine,
            )
            rows = answers.rows()
            for row, text in zip(rows, texts, strict=True):
                row["prompt"] = text
            result = {
                **scored(answers.correct),
                "categories": answers.by_category(),
                **{k: (answers.vas or {}).get(k) for k in SUMMARY_KEYS},
                "harness": how.describe(),
                "bad_rows": loaded[bench.name].bad_rows,
            }
            prefix = f"eval/{bench.name}"
            metrics.update(answers.metrics(prefix))
            metrics[f"{prefix}/bad_rows"] = len(result["bad_rows"])
            if judge is not None:
                judged = judge.grade(items, texts, answers.responses)
                result["judge"] = {**scored(judged.correct), "failed": judged.failed}
                for row, extracted, ok in zip(rows, judged.extracted, judged.correct, strict=True):
                    row["judge_extracted"], row["judge_correct"] = extracted, ok
                categories = [item["category"] for item in items]
                metrics.update(accuracy_metrics(f"{prefix}/judge", judged.correct, categories))
            if answers.vas:
                summaries = [k for k in SUMMARY_KEYS if k != "vas_flag"]
                metrics.update({f"{prefix}/{k}": result[k] for k in summaries})
            result["seconds"] = round(time.monotonic() - start, 1)
            result["samples"] = rows
            results[bench.name] = result
    return {
        "model": request.model,
        "intervention": request.intervene,
        "preset": cfg.preset,
        "judge": judge.describe() if judge else {"kind": "none"},
        "limit": request.limit,
        "metrics": metrics,
        "benchmarks": results,
    }


def scored(correct: list[bool]) -> dict:
    """n, accuracy and its 95% interval, under the names the results use."""
    summary = accuracy_summary(correct)
    return {
        "n": summary["n"],
        "accuracy": summary["accuracy"],
        "accuracy_low": summary["low"],
        "accuracy_high": summary["high"],
    }


def processor_for(model: str, how: Harness, params: Params, loaded):
    """The processor with the harness's pixel bounds: `loaded` when they are the model
    section's, else one built for them (0 keeps the model section's bound)."""
    from avar.models.loader import load_processor

    section = params.model
    bounds = (how.min_pixels or section.min_pixels, how.max_pixels or section.max_pixels)
    if bounds == (section.min_pixels, section.max_pixels):
        return loaded
    return load_processor(model, *bounds)


def results_table(report: dict) -> Table:
    title = f"{report['model']}" + (
        f" (intervention {report['intervention']})" if report["intervention"] else ""
    )
    judged = any("judge" in r for r in report["benchmarks"].values())
    bad = any(r.get("bad_rows") for r in report["benchmarks"].values())
    table = Table(title=title, caption=f"preset {report.get('preset', 'avar')}")
    columns = ["benchmark", "n", "accuracy [95% CI]"]
    columns += ["judge [95% CI]"] * judged + ["VAS", "image mass", "system mass", "worst"]
    columns += ["bad rows"] * bad
    for column in columns:
        table.add_column(column, justify="left" if column in ("benchmark", "worst") else "right")
    for name, result in report["benchmarks"].items():
        worst, summary = min(result["categories"].items(), key=lambda kv: kv[1]["accuracy"])
        cells = [name, str(result["n"]), accuracy_cell(result)]
        if judged:
            cells.append(accuracy_cell(result["judge"]) if "judge" in result else "-")
        cells += [vas_cell(result), *(mass_cell(result[k]) for k in ("image_mass", "system_mass"))]
        cells.append(f"{worst} {summary['accuracy']:.3f} (n={summary['n']})")
        if bad:
            cells.append(str(len(result.get("bad_rows", []))))
        table.add_row(*cells)
    return table
