"""Benchmark loaders on small fixture files written in each release's format (parquet with
image structs, TSV with base64 images, JSON with image files), and their errors."""

from __future__ import annotations

import base64
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from avar.config.specs import BENCHMARK_NAMES
from avar.eval.benchmarks import BENCHMARKS, BenchmarkDataError, benchmark, load_benchmark


def png(color=(200, 30, 30), size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def image_struct(name="x.png", **kwargs) -> dict:
    return {"bytes": png(**kwargs), "path": name}


def write_parquet(path, rows: list[dict]):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_tsv(path, rows: list[dict]):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = list(rows[0])
    lines = ["\t".join(header)] + ["\t".join(str(r[k]) for k in header) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def load(name, folder, limit=0):
    return load_benchmark(benchmark(name), folder, limit).samples


def test_mathvista_testmini_parquet(tmp_path):
    write_parquet(
        tmp_path / "mathvista/testmini-00000-of-00001.parquet",
        [
            {
                "pid": "1",
                "question": "Which is largest?",
                "choices": ["3", "5", "7"],
                "unit": None,
                "answer": "7",
                "question_type": "multi_choice",
                "answer_type": "text",
                "decoded_image": image_struct(),
                "image": "images/1.jpg",
                "metadata": {"task": "figure question answering"},
            },
            {
                "pid": "2",
                "question": "How long is AB?",
                "choices": None,
                "unit": "cm",
                "answer": "2.5",
                "question_type": "free_form",
                "answer_type": "float",
                "decoded_image": image_struct(size=(20, 10)),
                "image": "images/2.jpg",
                "metadata": {"task": "geometry problem solving"},
            },
        ],
    )
    first, second = load("mathvista", tmp_path / "mathvista")
    assert first["answer"] == "C" and first["answer_type"] == "choice"
    assert first["question"].splitlines()[1:4] == ["A. 3", "B. 5", "C. 7"]
    assert first["category"] == "figure question answering"
    assert second["answer"] == "2.5" and second["answer_type"] == "number"
    assert second["question"] == "How long is AB? (unit: cm)" and second["choices"] == []
    assert second["images"][0].size == (20, 10)


def test_mathvision_parquet_strips_image_tags(tmp_path):
    write_parquet(
        tmp_path / "mathvision/test-00000-of-00001.parquet",
        [
            {
                "id": "7",
                "question": "<image1>\nHow many cubes?",
                "options": [],
                "answer": "12",
                "image": "images/7.jpg",
                "decoded_image": image_struct(),
                "subject": "counting",
                "level": 2,
            },
            {
                "id": "8",
                "question": "Which net folds? <image1>",
                "options": ["a", "b", "c"],
                "answer": "B",
                "image": "images/8.jpg",
                "decoded_image": image_struct(),
                "subject": "solid geometry",
                "level": 3,
            },
        ],
    )
    free, choice = load("mathvision", tmp_path / "mathvision")
    assert free["question"] == "How many cubes?" and free["answer_type"] == "number"
    assert choice["answer"] == "B" and choice["category"] == "solid geometry"
    assert "<image1>" not in choice["question"]


def test_mathverse_keeps_vision_only_rows(tmp_path):
    rows = [
        {
            "sample_index": str(i),
            "problem_version": version,
            "question": "q",
            "query_wo": "According to the image, answer the question.",
            "answer": "B",
            "question_type": "multi-choice",
            "image": image_struct(),
            "metadata": {"subject": "plane geometry"},
        }
        for i, version in enumerate(["Text Dominant", "Vision Only", "Text Lite", "Vision Only"])
    ]
    write_parquet(tmp_path / "mathverse/testmini.parquet", rows)
    samples = load("mathverse", tmp_path / "mathverse")
    assert [s["id"] for s in samples] == ["1", "3"]
    assert samples[0]["answer_type"] == "choice" and samples[0]["choices"] == []
    assert samples[0]["question"].startswith("According to the image")


def mmmu_row(row_id, **extra) -> dict:
    return {
        "id": row_id,
        "question": "Cost of <image 1> and <image 2>?",
        "options": "['$6', '$7', '$8']",
        "answer": "B",
        "question_type": "multiple-choice",
        "image_1": image_struct(),
        "image_2": image_struct(size=(8, 8)),
        "image_3": None,
        **extra,
    }


def test_mmmu_validation_per_subject_folders(tmp_path):
    write_parquet(
        tmp_path / "mmmu/Accounting/validation-00000-of-00001.parquet",
        [mmmu_row("validation_Accounting_1")],
    )
    write_parquet(
        tmp_path / "mmmu/Art_Theory/validation-00000-of-00001.parquet",
        [mmmu_row("validation_Art_Theory_3", question_type="open", options="[]", answer="42")],
    )
    accounting, art = load("mmmu", tmp_path / "mmmu")
    assert accounting["question"].startswith("Cost of image 1 and image 2?")
    assert accounting["choices"] == ["$6", "$7", "$8"] and accounting["answer"] == "B"
    assert len(accounting["images"]) == 2 and accounting["category"] == "Accounting"
    assert art["category"] == "Art_Theory" and art["answer_type"] == "number"


def test_mmmu_pro_standard_and_vision(tmp_path):
    options = str([f"option {i}" for i in range(10)])
    write_parquet(
        tmp_path / "standard/mmmu_pro/standard (10 options)/test-00000.parquet",
        [mmmu_row("test_Math_1", options=options, answer="J", subject="Math")],
    )
    (standard,) = load("mmmu_pro", tmp_path / "standard/mmmu_pro")
    assert standard["answer"] == "J" and len(standard["choices"]) == 10
    assert standard["category"] == "Math"
    write_parquet(
        tmp_path / "vision/mmmu_pro/vision/test-00000.parquet",
        [
            {
                "id": "v1",
                "image": image_struct(),
                "options": "['1', '2']",
                "answer": "A",
                "subject": "Physics",
            },
        ],
    )
    (vision,) = load("mmmu_pro", tmp_path / "vision/mmmu_pro")
    assert vision["question"].startswith("Answer the question in the image.")
    assert vision["answer"] == "A" and vision["category"] == "Physics"


def test_mmstar_parquet_and_vlmevalkit_tsv(tmp_path):
    write_parquet(
        tmp_path / "pq/mmstar/mmstar.parquet",
        [
            {
                "index": 0,
                "question": "What is shown?\nOptions: A: cat, B: dog",
                "answer": "B",
                "category": "coarse perception",
                "l2_category": "image scene",
                "image": image_struct(),
            },
        ],
    )
    (sample,) = load("mmstar", tmp_path / "pq/mmstar")
    assert sample["answer"] == "B" and sample["answer_type"] == "choice"
    assert sample["category"] == "coarse perception"
    encoded = base64.b64encode(png(size=(64, 48))).decode()
    write_tsv(
        tmp_path / "tsv/mmstar/MMStar.tsv",
        [
            {
                "index": 5,
                "question": "Which animal?",
                "A": "cat",
                "B": "dog",
                "C": "eel",
                "D": "",
                "answer": "C",
                "category": "fine-grained perception",
                "image": encoded,
            },
        ],
    )
    (row,) = load("mmstar", tmp_path / "tsv/mmstar")
    assert row["choices"] == ["cat", "dog", "eel"] and row["answer"] == "C"
    assert row["images"][0].size == (64, 48)


def test_hallusionbench_tsv_and_release_json(tmp_path):
    encoded = base64.b64encode(png()).decode()
    write_tsv(
        tmp_path / "tsv/hallusionbench/HallusionBench.tsv",
        [
            {
                "index": 0,
                "image": encoded,
                "question": "Is the circle red?",
                "answer": "Yes",
                "category": "VS",
                "l2-category": "chart",
            },
        ],
    )
    (row,) = load("hallusionbench", tmp_path / "tsv/hallusionbench")
    assert row["answer"] == "Yes" and row["answer_type"] == "text" and row["category"] == "VS"
    folder = tmp_path / "json/hallusionbench"
    (folder / "figures").mkdir(parents=True)
    (folder / "figures/0_0.png").write_bytes(png())
    (folder / "HallusionBench.json").write_text(
        json.dumps(
            [
                {
                    "category": "VD",
                    "subcategory": "illusion",
                    "set_id": "0",
                    "figure_id": "0",
                    "question_id": "0",
                    "question": "Are the lines equal?",
                    "gt_answer": "1",
                    "filename": "figures/0_0.png",
                    "visual_input": "1",
                },
                {
                    "category": "VS",
                    "subcategory": "table",
                    "set_id": "1",
                    "figure_id": "0",
                    "question_id": "1",
                    "question": "Was X president in 2000?",
                    "gt_answer": "0",
                    "filename": None,
                    "visual_input": "0",
                },
            ]
        )
    )
    with_image, text_only = load("hallusionbench", folder)
    assert with_image["answer"] == "Yes" and len(with_image["images"]) == 1
    assert with_image["category"] == "VD/illusion"
    assert text_only["answer"] == "No" and text_only["images"] == []


def test_synthetic_reads_avar_records(tmp_path):
    from avar.data import synthesize

    synthesize("visual", 5, 0, tmp_path / "synthetic")
    samples = load("synthetic", tmp_path / "synthetic", limit=3)
    assert len(samples) == 3 and samples[0]["id"] == "visual-000000"
    assert samples[0]["images"][0].size == (112, 112)


def test_every_benchmark_is_registered():
    """The names params.yaml accepts are the names with a loader, in the same order."""
    assert tuple(BENCHMARKS) == BENCHMARK_NAMES
    assert set(BENCHMARKS) == {
        "mathvista",
        "mathvision",
        "mathverse",
        "mmmu",
        "mmmu_pro",
        "mmstar",
        "hallusionbench",
        "synthetic",
    }


def test_missing_files_name_what_is_expected_and_where_from(tmp_path):
    with pytest.raises(
        BenchmarkDataError,
        match=r"mathvista: no data/testmini-\*\.parquet or testmini-\*\.parquet in .*"
        r"AI4Math/MathVista.*`avar benchmarks fetch mathvista`",
    ):
        load("mathvista", tmp_path / "mathvista")
    with pytest.raises(ValueError, match="unknown benchmark 'mathvistaa'"):
        benchmark("mathvistaa")


def test_malformed_rows_name_the_file_and_row(tmp_path):
    path = tmp_path / "mmstar/mmstar.parquet"
    good = {"index": 0, "question": "q", "answer": "A", "category": "c", "image": image_struct()}
    write_parquet(path, [good, {**good, "answer": None}])
    with pytest.raises(BenchmarkDataError, match=r"parquet: row 2: missing column 'answer'"):
        load("mmstar", path.parent)
    tsv = tmp_path / "hb/HallusionBench.tsv"
    write_tsv(
        tsv, [{"index": 0, "image": "x" * 600, "question": "q", "answer": "No", "category": "VS"}]
    )
    with pytest.raises(BenchmarkDataError, match=r"HallusionBench\.tsv: row 1: image does not"):
        load("hallusionbench", tsv.parent)
    write_parquet(
        tmp_path / "mmmu/Art/validation-0.parquet",
        [mmmu_row("validation_Art_1", options="[unclosed")],
    )
    with pytest.raises(BenchmarkDataError, match=r"validation-0\.parquet: row 1: options"):
        load("mmmu", tmp_path / "mmmu")
    write_parquet(
        tmp_path / "mv/testmini-0.parquet",
        [
            {
                "pid": "1",
                "question": "q",
                "choices": ["3", "5"],
                "answer": "9",
                "question_type": "multi_choice",
                "decoded_image": image_struct(),
            },
        ],
    )
    with pytest.raises(BenchmarkDataError, match=r"row 1: answer '9' is neither a letter"):
        load("mathvista", tmp_path / "mv")
    broken = tmp_path / "mathvision/test-0.parquet"
    broken.parent.mkdir()
    broken.write_bytes(b"not parquet")
    with pytest.raises(BenchmarkDataError, match=r"test-0\.parquet: not a readable parquet"):
        load("mathvision", broken.parent)


def test_mathverse_release_json_with_image_files(tmp_path):
    folder = tmp_path / "mathverse"
    (folder / "images_version_5").mkdir(parents=True)
    (folder / "images_version_5/image_1.png").write_bytes(png(size=(30, 20)))
    rows = [
        {
            "sample_index": "1",
            "problem_version": "Vision Only",
            "question": "",
            "query_wo": "Answer the question in the image.",
            "answer": "4",
            "question_type": "free-form",
            "image": "images_version_5/image_1.png",
            "metadata": {"subject": "plane geometry"},
        },
    ]
    (folder / "testmini.json").write_text(json.dumps(rows))
    (sample,) = load("mathverse", folder)
    assert sample["answer_type"] == "number" and sample["images"][0].size == (30, 20)
