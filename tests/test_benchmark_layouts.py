"""Benchmark folders as the hub lays them out (parquet under `data/`, several shards, the
splits avar must not read beside the one it must), HallusionBench's hub parquet with both
splits, rows that cannot be read, `avar benchmarks list`, and `avar benchmarks fetch` against
a hub on loopback (and with no network)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_hub import FakeHub
from PIL import Image
from typer.testing import CliRunner

from avar.cli import app
from avar.eval.benchmarks import BenchmarkDataError, benchmark, load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def png(size=(24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def image(name="x.png", size=(24, 16)) -> dict:
    return {"bytes": png(size), "path": name}


def parquet_bytes(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def write(path: Path, data: bytes | list[dict]):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(parquet_bytes(data) if isinstance(data, list) else data)


def mathvista_rows(split: str, n: int) -> list[dict]:
    return [
        {
            "pid": f"{split}-{i}",
            "question": f"How many bars? ({i})",
            "choices": None,
            "unit": None,
            "answer": str(i + 1) if split == "testmini" else "",  # the test split has none
            "question_type": "free_form",
            "query": f"Hint: answer with an integer.\nQuestion: How many bars? ({i})",
            "decoded_image": image(),
            "metadata": {"task": "figure question answering"},
        }
        for i in range(n)
    ]


def mmmu_rows(split: str, subject: str, n: int) -> list[dict]:
    return [
        {
            "id": f"{split}_{subject}_{i}",
            "question": "Which is cheaper? <image 1>",
            "options": "['$6', '$7', '$8']",
            "answer": "ABC"[i % 3],
            "question_type": "multiple-choice",
            "image_1": image(),
            "image_2": None,
        }
        for i in range(n)
    ]


def mmmu_pro_rows(shard: int, n: int, options: int = 10) -> list[dict]:
    letters = "ABCDEFGHIJ"[:options]
    return [
        {
            "id": f"test_Math_{shard}_{i}",
            "question": "Solve <image 1>",
            "options": str([f"option {k}" for k in range(options)]),
            "answer": letters[(shard + i) % options],
            "question_type": "multiple-choice",
            "subject": "Math",
            "image_1": image(),
        }
        for i in range(n)
    ]


def hallusion_rows(split: str, n: int) -> list[dict]:
    return [
        {
            "category": "VD" if split == "image" else "VS",
            "subcategory": "ocr",
            "visual_input": "1" if split == "image" else "0",
            "set_id": str(i),
            "figure_id": "0",
            "sample_note": "",
            "question_id": "0",
            "question": f"Is the sign red? ({split} {i})",
            "gt_answer_details": "",
            "gt_answer": "1" if i % 2 == 0 else "0",
            "filename": f"./hallusion_bench/VD/ocr/{i}_0.png" if split == "image" else None,
            "image": image() if split == "image" else None,
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory) -> Path:
    """Every benchmark's folder as `huggingface-cli download REPO --local-dir` leaves it."""
    root = tmp_path_factory.mktemp("benchmarks")
    (root / "mathvista/README.md").parent.mkdir(parents=True)
    (root / "mathvista/README.md").write_text("MathVista")
    (root / "mathvista/annot_testmini.json").write_text("{}")
    write(
        root / "mathvista/data/testmini-00000-of-00001-725687bf7a18d64b.parquet",
        mathvista_rows("testmini", 4),
    )
    write(
        root / "mathvista/data/test-00000-of-00002-6b81bd7f7e2065e6.parquet",
        mathvista_rows("test", 3),
    )
    vision = [
        {
            "id": str(i),
            "question": "<image1>\nHow many cubes?",
            "options": [],
            "answer": str(10 + i),
            "decoded_image": image(),
            "subject": "counting",
        }
        for i in range(3)
    ]
    write(root / "mathvision/data/test-00000-of-00001-3532b8d3f1b4047a.parquet", vision)
    write(root / "mathvision/data/testmini-00000-of-00001-f8ff70fcb2f29b1d.parquet", vision[:1])
    verse = [
        {
            "sample_index": str(i),
            "problem_version": version,
            "question": "q",
            "query_wo": "According to the image, answer.",
            "answer": "AB"[i % 2],
            "question_type": "multi-choice",
            "image": image(),
            "metadata": {"subject": "plane"},
        }
        for i, version in enumerate(["Vision Only", "Text Lite", "Vision Only", "Vision Only"])
    ]
    write(root / "mathverse/testmini.parquet", verse)
    text_only = [
        {
            "sample_index": "9",
            "problem_version": "Text Only",
            "question": "q",
            "answer": "C",
            "question_type": "multi-choice",
            "image": None,
        }
    ]
    write(root / "mathverse/testmini_text_only.parquet", text_only)
    for subject, n in (("Accounting", 2), ("Art_Theory", 3)):
        for split in ("dev", "validation", "test"):
            write(
                root / f"mmmu/{subject}/{split}-00000-of-00001.parquet",
                mmmu_rows(split, subject, n),
            )
    for shard in range(2):
        write(
            root / f"mmmu_pro/standard (10 options)/test-0000{shard}-of-00002.parquet",
            mmmu_pro_rows(shard, 2),
        )
        write(
            root / f"mmmu_pro/standard (4 options)/test-0000{shard}-of-00002.parquet",
            mmmu_pro_rows(shard, 5, options=4),
        )
    write(
        root / "mmmu_pro/vision/test-00000-of-00004.parquet",
        [{"id": "v", "image": image(), "options": "['1', '2']", "answer": "A"}],
    )
    stars = [
        {
            "index": i,
            "question": "What is shown?\nOptions: A: cat, B: dog",
            "answer": "AB"[i % 2],
            "category": "coarse perception",
            "l2_category": "scene",
            "image": image(),
        }
        for i in range(3)
    ]
    write(root / "mmstar/mmstar.parquet", stars)
    write(root / "hallusionbench/data/image-00000-of-00001.parquet", hallusion_rows("image", 3))
    write(
        root / "hallusionbench/data/non_image-00000-of-00001.parquet",
        hallusion_rows("non_image", 2),
    )
    return root


def load(name: str, root: Path, **kwargs):
    return load_benchmark(benchmark(name), root / name, **kwargs)


def test_hub_layouts_read_the_evaluated_split_with_its_gold_answers(hub_dir):
    mathvista = load("mathvista", hub_dir).samples
    assert [s["id"] for s in mathvista] == [f"testmini-{i}" for i in range(4)]
    assert [s["answer"] for s in mathvista] == ["1", "2", "3", "4"]
    assert mathvista[0]["query"].startswith("Hint: answer with an integer.")
    mathvision = load("mathvision", hub_dir).samples
    assert [s["answer"] for s in mathvision] == ["10", "11", "12"]  # test, not testmini
    mathverse = load("mathverse", hub_dir).samples
    assert [(s["id"], s["answer"]) for s in mathverse] == [("0", "A"), ("2", "A"), ("3", "B")]
    mmmu = load("mmmu", hub_dir).samples  # validation only, every subject folder
    assert [s["id"] for s in mmmu] == [
        *(f"validation_Accounting_{i}" for i in range(2)),
        *(f"validation_Art_Theory_{i}" for i in range(3)),
    ]
    assert [s["answer"] for s in mmmu] == ["A", "B", "A", "B", "C"]
    mmmu_pro = load("mmmu_pro", hub_dir).samples  # both shards of the 10-option set only
    assert [s["id"] for s in mmmu_pro] == [f"test_Math_{k}_{i}" for k in range(2) for i in range(2)]
    assert [s["answer"] for s in mmmu_pro] == ["A", "B", "B", "C"]
    assert all(len(s["choices"]) == 10 for s in mmmu_pro)
    assert [s["answer"] for s in load("mmstar", hub_dir).samples] == ["A", "B", "A"]


def test_hallusionbench_hub_parquet_reads_both_splits(hub_dir):
    samples = load("hallusionbench", hub_dir).samples
    assert len(samples) == 5
    with_image, without = samples[:3], samples[3:]
    assert [s["answer"] for s in with_image] == ["Yes", "No", "Yes"]
    assert [s["answer"] for s in without] == ["Yes", "No"]
    assert all(len(s["images"]) == 1 and s["images"][0].size == (24, 16) for s in with_image)
    assert all(s["images"] == [] for s in without)
    assert with_image[0]["category"] == "VD/ocr" and without[0]["category"] == "VS/ocr"


def test_unreadable_rows_are_skipped_and_named_up_to_the_allowed_share(tmp_path):
    rows = [
        {"index": i, "question": "q", "answer": "A", "category": "c", "image": image()}
        for i in range(200)
    ]
    rows[57]["answer"] = None
    rows[120]["image"] = {"bytes": b"not an image", "path": "x.png"}
    path = tmp_path / "mmstar/mmstar.parquet"
    write(path, rows)
    loaded = load("mmstar", tmp_path, max_bad=0.01)
    assert len(loaded.samples) == 198
    assert [(b["file"], b["row"]) for b in loaded.bad_rows] == [(str(path), 58), (str(path), 121)]
    assert loaded.bad_rows[0]["reason"].startswith("missing column 'answer'")
    assert loaded.bad_rows[1]["reason"].startswith("image does not decode")
    with pytest.raises(BenchmarkDataError, match=r"mmstar: 2 of 200 rows unreadable.*0%.*row 58"):
        load("mmstar", tmp_path, max_bad=0.0)
    with pytest.raises(BenchmarkDataError, match=r"mmstar: 1 of 99 rows unreadable, more than"):
        load("mmstar", tmp_path, max_bad=0.01, limit=98)


def test_benchmarks_list_shows_each_folder(hub_dir, tmp_path):
    result = CliRunner().invoke(app, ["benchmarks", "list", "--data-dir", str(hub_dir)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if "│" in line[:3]}
    expected_rows = {
        "mathvista": 4,
        "mathvision": 3,
        "mathverse": 4,
        "mmmu": 5,
        "mmmu_pro": 4,
        "mmstar": 3,
        "hallusionbench": 5,
    }
    for name, rows in expected_rows.items():
        cells = [c.strip() for c in lines[name].split("│")]
        assert cells[2:4] == ["found", str(rows)], lines[name]
    assert "missing" in lines["synthetic"]
    broken = tmp_path / "mmstar/mmstar.parquet"
    broken.parent.mkdir()
    broken.write_bytes(b"not parquet")
    result = CliRunner().invoke(app, ["benchmarks", "list", "--data-dir", str(tmp_path)])
    mmstar = next(line for line in result.output.splitlines() if " mmstar " in line)
    assert "unreadable" in mmstar and "mathvista" in result.output


def fetch(data_dir: Path, env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "avar.cli", "benchmarks", "fetch", "mathvista"]
    command += ["--data-dir", str(data_dir), "--params", str(ROOT / "params.yaml")]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


@pytest.mark.slow
def test_fetch_downloads_the_files_avar_reads_in_the_hub_layout(tmp_path):
    testmini = "data/testmini-00000-of-00001-725687bf7a18d64b.parquet"
    hub = FakeHub(
        {
            "AI4Math/MathVista": {
                testmini: parquet_bytes(mathvista_rows("testmini", 3)),
                "data/test-00000-of-00002-6b81bd7f7e2065e6.parquet": b"not fetched",
                "images.zip": b"not fetched either",
                "README.md": b"# MathVista",
            }
        }
    )
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    try:
        done = fetch(tmp_path / "benchmarks", env)
    finally:
        hub.close()
    assert done.returncode == 0, done.stderr
    assert set(hub.requested) == {testmini}  # HEAD and GET of that file, nothing else
    folder = tmp_path / "benchmarks/mathvista"
    assert "mathvista: 1 file(s), 3 rows in" in done.stderr
    assert [s["answer"] for s in load("mathvista", tmp_path / "benchmarks").samples] == list("123")
    assert not (folder / "images.zip").exists() and (folder / testmini).is_file()


@pytest.mark.slow
def test_fetch_without_network_names_the_repo_and_the_folder(tmp_path):
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = fetch(tmp_path / "benchmarks", offline)
    assert done.returncode == 1
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    folder = tmp_path / "benchmarks/mathvista"
    assert line.startswith("error: mathvista: could not download")
    assert "https://huggingface.co/datasets/AI4Math/MathVista (" in line
    expected = f"put data/testmini-*.parquet from it into {folder} by hand (README: Evaluation)"
    assert line.endswith(expected)
    assert not folder.exists()  # nothing half-written left behind
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    assert fetch(tmp_path / "benchmarks", offline).returncode == 1
    assert (folder / "notes.txt").read_text() == "mine"  # a folder avar did not create stays


@pytest.mark.slow
def test_eval_on_a_hub_folder_names_preset_judge_and_sample_count(tiny_dir, hub_dir, tmp_path):
    out = tmp_path / "mathvista.json"
    args = ["eval", "--model", str(tiny_dir), "--bench", "mathvista", "--preset", "lmms-eval"]
    args += ["--data-dir", str(hub_dir), "--out", str(out), "-S", "eval.max_new_tokens=4"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert (report["preset"], report["judge"], report["limit"]) == (
        "lmms-eval",
        {"kind": "none"},
        0,
    )
    bench = report["benchmarks"]["mathvista"]
    assert bench["n"] == len(bench["samples"]) == 4 and bench["bad_rows"] == []
    assert bench["harness"]["preset"] == "lmms-eval" and bench["harness"]["max_pixels"] == 1605632
    assert (
        bench["samples"][2]["prompt"]
        == "Hint: answer with an integer.\nQuestion: How many bars? (2)"
    )
    assert [s["answer"] for s in bench["samples"]] == ["1", "2", "3", "4"]
    assert report["metrics"]["eval/mathvista/n"] == 4
    assert report["metrics"]["eval/mathvista/bad_rows"] == 0
