"""`avar eval` end to end on the tiny model: the synthetic suite with VAS, a benchmark read
from its distributed format, the intervention, and clear errors."""

from __future__ import annotations

import base64
import io
import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from avar.cli import app
from avar.grading import grade
from avar.stats import wilson

pytestmark = pytest.mark.slow


def run_eval(*args: str):
    return CliRunner().invoke(app, ["eval", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    from avar.data import synthesize

    root = tmp_path_factory.mktemp("benchmarks")
    synthesize("visual", 50, 3, root / "synthetic")
    return root


def test_synthetic_suite_with_vas(tiny_dir, synthetic_dir, tmp_path):
    out = tmp_path / "r.json"
    result = run_eval(
        "--model",
        str(tiny_dir),
        "--bench",
        "synthetic",
        "--limit",
        "50",
        "--vas",
        "--out",
        str(out),
        "--data-dir",
        str(synthetic_dir),
        "-S",
        "eval.max_new_tokens=24",
        "-S",
        "eval.batch_size=25",
    )
    assert result.exit_code == 0, result.output
    assert "synthetic" in result.output and f"wrote {out}" in result.output
    report = json.loads(out.read_text())
    bench = report["benchmarks"]["synthetic"]
    samples = bench["samples"]
    assert bench["n"] == len(samples) == 50
    records = [json.loads(line) for line in (synthetic_dir / "synthetic/data.jsonl").open()]
    for row, record in zip(samples, records, strict=True):  # graded again, independently
        assert row["id"] == record["id"]
        ok = grade(row["response"], record["answer"], record["answer_type"], record["choices"])
        assert row["correct"] is ok
    assert bench["accuracy"] == pytest.approx(sum(r["correct"] for r in samples) / 50)
    categories = {r["category"] for r in samples}
    assert set(bench["categories"]) == categories
    for category, summary in bench["categories"].items():
        rows = [r for r in samples if r["category"] == category]
        right = sum(r["correct"] for r in rows)
        assert summary["n"] == len(rows) and summary["correct"] == right
        assert summary["accuracy"] == pytest.approx(right / len(rows))
        assert (summary["low"], summary["high"]) == wilson(right, len(rows))
        metric = report["metrics"][f"eval/synthetic/accuracy_high/{category}"]
        assert metric == summary["high"]
    assert (bench["accuracy_low"], bench["accuracy_high"]) == wilson(
        sum(r["correct"] for r in samples), 50
    )
    assert report["metrics"]["eval/synthetic/n"] == 50
    vas = [r["vas"] for r in samples]
    assert all(v is not None and v > 0 for v in vas)
    assert bench["vas"] == pytest.approx(sum(vas) / len(vas))
    assert report["metrics"]["eval/synthetic/accuracy"] == bench["accuracy"]
    assert report["metrics"]["eval/synthetic/vas"] == bench["vas"]
    check_vas_against_eager(tiny_dir, records[0], synthetic_dir / "synthetic", samples[0])


def check_vas_against_eager(tiny_dir, record, root, row):
    """The first answer's VAS, recomputed from eager output_attentions maps."""
    from avar.attention.probe import eager_masses
    from avar.attention.vas import sequence_vas
    from avar.data.chats import conversations
    from avar.models.loader import load_model, load_processor
    from avar.segments import encode_batch, model_inputs

    eager = load_model(str(tiny_dir), "cpu", "fp32", attn_implementation="eager")
    processor = load_processor(str(tiny_dir))
    chat = conversations([record], root, "You are a helpful assistant.", [row["response"]])
    batch = encode_batch(processor, chat)
    with torch.no_grad():
        masses = eager_masses(eager, model_inputs(batch), batch["segment_ids"])
    assert sequence_vas(masses).item() == pytest.approx(row["vas"], rel=1e-4)


def test_a_distributed_format_benchmark_and_the_intervention(tiny_dir, tmp_path):
    rows = []
    for index, color in enumerate([(220, 20, 20), (20, 20, 220), (20, 200, 20), (220, 20, 20)]):
        buffer = io.BytesIO()
        Image.new("RGB", (112, 112), color).save(buffer, format="PNG")
        encoded = base64.b64encode(buffer.getvalue()).decode()
        cells = [str(index), "What color is the image?", "red", "blue", "green", "A", "color"]
        rows.append("\t".join([*cells, encoded]))
    folder = tmp_path / "benchmarks/mmstar"
    folder.mkdir(parents=True)
    (folder / "MMStar.tsv").write_text(
        "index\tquestion\tA\tB\tC\tanswer\tcategory\timage\n" + "\n".join(rows) + "\n"
    )
    masses = {}
    for name, extra in (("plain", []), ("steered", ["--intervene", "alpha=2.0,layers=0-3"])):
        out = tmp_path / f"{name}.json"
        result = run_eval(
            "--model",
            str(tiny_dir),
            "--bench",
            "mmstar",
            "--vas",
            "--out",
            str(out),
            "--data-dir",
            str(tmp_path / "benchmarks"),
            "-S",
            "eval.max_new_tokens=8",
            *extra,
        )
        assert result.exit_code == 0, result.output
        report = json.loads(out.read_text())
        bench = report["benchmarks"]["mmstar"]
        assert bench["n"] == 4 and bench["categories"].keys() == {"color"}
        assert all(r["answer"] == "A" for r in bench["samples"])
        masses[name] = bench["image_mass"]
    assert report["intervention"] == "alpha=2.0,layers=0-3"
    assert masses["steered"] > masses["plain"]


def test_synthetic_builds_its_questions_when_none_exist(tiny_dir, tmp_path):
    out = tmp_path / "r.json"
    synthetic = [
        *("--model", str(tiny_dir), "--bench", "synthetic"),
        *("--out", str(out), "--data-dir", str(tmp_path / "none")),
    ]
    short = ["-S", "eval.max_new_tokens=4"]
    missing = [
        *("-S", f"checkpoint_eval.data={tmp_path}/missing/data.jsonl"),
        *("-S", f"curate.out_dir={tmp_path}/no-curated"),
        *("-S", "data.heldout.n=6"),
    ]
    result = run_eval(*synthetic, *missing, *short)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["benchmarks"]["synthetic"]["n"] == 6
    assert report["benchmarks"]["synthetic"]["vas"] is None  # not asked for
    assert report["benchmarks"]["synthetic"]["samples"][0]["id"] == "heldout-000000"
    from avar.data import synthesize

    synthesize("visual", 3, 5, tmp_path / "curated/eval", prefix="curated")
    result = run_eval(*synthetic, *short, "-S", f"curate.out_dir={tmp_path}/curated")
    assert result.exit_code == 0, result.output
    samples = json.loads(out.read_text())["benchmarks"]["synthetic"]["samples"]
    assert [r["id"] for r in samples] == [f"curated-{i:06d}" for i in range(3)]


def test_errors_name_the_benchmark_and_the_files(tiny_dir, tmp_path):
    out = tmp_path / "r.json"
    result = run_eval("--model", str(tiny_dir), "--bench", "mmlu", "--out", str(out))
    assert result.exit_code == 1 and "unknown benchmark 'mmlu'" in result.output
    result = run_eval(
        "--model",
        str(tiny_dir),
        "--bench",
        "hallusionbench",
        "--out",
        str(out),
        "--data-dir",
        str(tmp_path),
    )
    assert result.exit_code == 1
    assert "HallusionBench.tsv" in result.output and str(tmp_path) in result.output
    assert not out.exists()
