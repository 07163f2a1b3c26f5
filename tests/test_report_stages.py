"""The vas and register stages' bookkeeping, on hand-written metrics files: checkpoint rows
gathered in pipeline order with their intervals and VAS summaries, the results' cells (a
collapsed VAS flagged, never shown bare), the plot files, and the register stage's score
lookup with its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avar.config import load_params
from avar.stages import register, vas

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def params(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return load_params(ROOT / "params.yaml")


def write(path: str, data) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data))


def heldout(step: int, **scores) -> dict:
    return {"step": step, **{f"heldout/{k}": v for k, v in scores.items()}}


FLAG = "system mass 4.6e-09 < 0.001"


def test_checkpoint_rows_in_pipeline_order_with_their_summaries(params):
    rl = heldout(
        10, vas=1000.0, log10_vas=3.0, accuracy=0.5, n=64, accuracy_low=0.38, accuracy_high=0.62
    )
    write(params.rl.metrics, {"checkpoints": [rl]})
    write(params.base.metrics, {"checkpoints": [heldout(500, vas=None, accuracy=0.25)]})
    rows = vas.checkpoint_rows(params)  # sft_mm and coldstart_text have no file: skipped
    assert [(r["stage"], r["step"]) for r in rows] == [("base", 500), ("rl", 10)]
    assert rows[0]["log10_vas"] is None and rows[1]["log10_vas"] == 3.0
    assert rows[1]["accuracy"] == 0.5 and rows[1]["image_mass"] is None
    assert (rows[1]["n"], rows[1]["accuracy_low"], rows[1]["accuracy_high"]) == (64, 0.38, 0.62)


def test_results_show_intervals_masses_and_flags(params):
    from avar.summary import pipeline_rows

    readable = {"vas": 2.345, "log10_vas": 0.370, "image_mass": 0.31, "system_mass": 0.132}
    collapsed = {"vas": 1.6e10, "log10_vas": 10.2, "image_mass": 0.76, "system_mass": 4.6e-9}
    interval = {"accuracy": 0.219, "n": 64, "accuracy_low": 0.135, "accuracy_high": 0.333}
    checkpoints = [
        {"stage": "base", "step": 500, **interval, **readable, "vas_flag": None},
        {"stage": "sft_mm", "step": 300, **interval, **collapsed, "vas_flag": FLAG},
    ]
    write(params.vas.metrics, {"checkpoints": checkpoints})
    bench = {**interval, **readable, "vas_flag": None}
    write(params.eval.metrics, {"models": {"rl": {"benchmarks": {"synthetic": bench}}}})
    rows, models = pipeline_rows(params)
    cells = ["64", "0.219 [0.135, 0.333]", "2.345", "0.37", "0.31", "0.132"]
    assert rows[0] == ["base", "500", *cells]
    # no 1.6e+10 without its reason; the masses beside it
    assert rows[1] == ["sft_mm", "300", *cells[:2], f"flagged: {FLAG}", "10.20", "0.76", "4.6e-09"]
    assert models == [["rl", "synthetic", *cells]]


def test_plots_are_written(params, tmp_path):
    rows = [
        {"stage": "rl", "step": 1, "log10_vas": 2.0, "accuracy": 0.5, "vas_flag": None}
        | {"accuracy_low": 0.3, "accuracy_high": 0.7},
        {"stage": "sft_mm", "step": 1, "log10_vas": 9.0, "accuracy": 0.4, "vas_flag": FLAG}
        | {"accuracy_low": None, "accuracy_high": None},
    ]
    stages = {
        "base": {"vas": 10.0, "image_mass": 0.3, "system_mass": 0.03, "vas_flag": None},
        "rl": {"vas": 1e9, "image_mass": 0.7, "system_mass": 7e-10, "vas_flag": FLAG},
    }
    vas.draw_plots(stages, rows, tmp_path)
    # error bars: a lower bound of 0 is a bound (0/n answers right), not a missing one
    assert vas.interval_arm({"accuracy": 0.1, "accuracy_low": 0.0}, "low") == 0.1
    assert vas.interval_arm(rows[1], "high") == 0.0
    assert (tmp_path / "vas.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_register_reads_the_stage_metric(params):
    with pytest.raises(FileNotFoundError, match="avar stage eval"):
        register.candidate_score(params)
    write(
        params.eval.metrics, {"models": {"sft_mm": {"metrics": {"eval/synthetic/accuracy": 0.2}}}}
    )
    with pytest.raises(ValueError, match="no scores of stage 'rl'"):
        register.candidate_score(params)
    write(params.eval.metrics, {"models": {"rl": {"metrics": {"eval/mmstar/accuracy": 0.4}}}})
    with pytest.raises(ValueError, match="eval/synthetic/accuracy"):
        register.candidate_score(params)
    write(params.eval.metrics, {"models": {"rl": {"metrics": {"eval/synthetic/accuracy": 0.375}}}})
    assert register.candidate_score(params) == 0.375


def test_a_failed_eval_leaves_the_previous_answers_whole(params, monkeypatch):
    """The per-sample answers of metrics/eval/ are replaced whole or not at all: a run that
    dies on its second model leaves the last complete folder, not a mix."""
    from avar.stages import eval as eval_stage

    for stage in ("base", "rl"):
        write(f"{getattr(params, stage).out_dir}/config.json", {})
    old = Path(params.eval.metrics).parent / "eval"
    write(str(old / "base.json"), {"run": "old"})
    write(str(old / "rl.json"), {"run": "old"})
    calls = []

    def evaluate(request, params):
        calls.append(request.model)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return {"metrics": {"eval/synthetic/accuracy": 0.5}, "benchmarks": {}, "run": "new"}

    monkeypatch.setattr(eval_stage, "evaluate", evaluate)
    with pytest.raises(RuntimeError, match="killed"):
        eval_stage.run(params)
    assert len(calls) == 2
    assert sorted(p.name for p in old.parent.iterdir()) == ["eval"]  # no temp folder left
    assert {p.name: json.loads(p.read_text())["run"] for p in old.iterdir()} == {
        "base.json": "old",
        "rl.json": "old",
    }


def test_temp_folders_of_a_killed_run_go_on_the_next_write(tmp_path):
    from avar.io import atomic_dir

    stale = tmp_path / ".curated.x1y2.tmp"  # what a SIGKILL mid-curate leaves
    (stale / "visual").mkdir(parents=True)
    mine = tmp_path / ".curated.notes"  # not avar's naming: kept
    mine.write_text("keep")
    with atomic_dir(tmp_path / "curated") as out:
        (out / "data.jsonl").write_text("{}\n")
    assert not stale.exists() and mine.read_text() == "keep"
    assert (tmp_path / "curated/data.jsonl").read_text() == "{}\n"


def test_vas_table_flags_a_collapsed_layer_and_shows_tiny_masses():
    """Two layers, one record: layer 0 image 0.3 / system 0.1 = 3; layer 1 image 0.7 /
    system 4e-9 = 1.75e8. The mean system mass (0.05) is above the floor, but the mean of
    the ratios (8.75e7) is layer 1's doing: the report flags it and names the layer."""
    from rich.console import Console

    from avar.eval.measure import VasSettings, report
    from avar.segments import Segment
    from avar.summary import vas_table

    masses = torch.zeros(2, 1, 1, len(Segment))  # [L, N, H, S]
    masses[:, 0, 0, int(Segment.IMAGE)] = torch.tensor([0.3, 0.7])
    masses[:, 0, 0, int(Segment.SYSTEM)] = torch.tensor([0.1, 4e-9])
    result = report(masses, [{"id": "r0"}], VasSettings(), [0, 1])
    assert result["vas_flag_per_layer"] == [None, "system mass 4.0e-09 < 0.001"]
    assert result["vas_flag"] == "layer 1: system mass 4.0e-09 < 0.001"
    assert result["vas"] == pytest.approx((3 + 0.7 / 4e-9) / 2, rel=1e-5)  # kept in the JSON
    assert result["vas_of_means"] == pytest.approx(0.5 / 0.05, rel=1e-5)
    console = Console(record=True, width=200)
    console.print(vas_table(result))
    text = console.export_text()
    assert "flagged: system mass 4.0e-09 < 0.001" in text  # layer 1's row
    assert "flagged: layer 1: system mass 4.0e-09 < 0.001" in text  # the mean's row
    assert "e+07" not in text and "e+08" not in text
    assert "4e-09" in text and "3.000" in text  # the mass itself (not 0.0000); layer 0's VAS
