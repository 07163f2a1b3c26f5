"""`avar study correlate`: F1 over checkpoints named by hand, measured with the same
harness as `avar eval --vas`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from avar.cli import app
from avar.models.tiny import init_tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    from avar.data import synthesize

    root = tmp_path_factory.mktemp("benchmarks")
    synthesize("visual", 8, 4, root / "synthetic")
    return root


def test_correlate_measures_each_model_and_correlates_them(tmp_path, bench_dir):
    models = [str(init_tiny(tmp_path / f"m{seed}", "tiny", seed=seed)) for seed in range(3)]
    out = tmp_path / "f1.json"
    common = ["-S", f"eval.data_dir={bench_dir}", "-S", "eval.max_new_tokens=16"]
    result = CliRunner().invoke(
        app,
        [
            "study",
            "correlate",
            "--models",
            ",".join(models),
            "--bench",
            "synthetic",
            "--out",
            str(out),
            *common,
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [p["label"] for p in report["models"]] == models
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    # each model's numbers are what `avar eval --vas` reports for it
    single = tmp_path / "one.json"
    CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            models[1],
            "--bench",
            "synthetic",
            "--vas",
            "--out",
            str(single),
            *common,
        ],
        catch_exceptions=False,
    )
    alone = json.loads(single.read_text())["benchmarks"]["synthetic"]
    point = report["models"][1]
    assert (point["n"], point["accuracy"]) == (alone["n"], alone["accuracy"])
    assert point["image_mass"] == pytest.approx(alone["image_mass"])
    # r is Pearson's over the listed points (numpy's, independently), nan if one side is flat
    x = [p["log10_vas"] for p in report["models"]]
    y = [p["accuracy"] for p in report["models"]]
    found = report["correlations"]["pearson_log10_vas"]
    if np.ptp(x) and np.ptp(y):
        assert found["value"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    else:  # untrained models can all score 0: no correlation, and no interval pretending one
        assert math.isnan(found["value"]) and found["low"] is None and found["high"] is None
    assert report["correlations"]["n"] == 3


def test_correlate_needs_two_models(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "study",
            "correlate",
            "--models",
            "models/rl",
            "--bench",
            "synthetic",
            "--out",
            str(tmp_path / "x.json"),
        ],
    )
    assert result.exit_code == 1
    assert "at least 2 models" in result.output
