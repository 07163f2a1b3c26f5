"""The benchmark registry: for each benchmark, the files its public release distributes, where
they come from, and a loader that turns each row into an evaluation sample.

A sample is an avar record (question, answer, answer_type, choices, category) whose
`images` are decoded PIL images. Multiple-choice questions list their options as
`A. ...` lines and are graded by letter; free-form answers by number (with tolerance) or
by text and mathematical equivalence (avar.grading).

Files live under `<data-dir>/<bench>/` (the layouts are in the README's Evaluation section).
"""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from avar.data.files import (
    BenchmarkDataError,
    decode_image,
    field,
    read_rows,
    row_count,
    row_error,
)
from avar.data.schema import OPTION_LETTERS, choice_question, infer_answer_type

log = logging.getLogger(__name__)

IMAGE_TAG = re.compile(r"<image\s*(\d+)>")


@dataclass(frozen=True)
class Benchmark:
    name: str
    layouts: tuple[tuple[str, ...], ...]
    """Ways the files lie under `<data-dir>/<name>/`, tried in order: each a set of globs
    read together (the hub repository's layout first, then the files copied to the top)."""
    origin: str
    """Where the files come from, for the error when they are missing."""
    load_row: Callable[[dict, Path, int], dict | None]
    """(row, file, row number) -> sample, or None for a row the benchmark leaves out."""
    repo: str = ""
    """The Hugging Face dataset repository `avar benchmarks fetch` downloads from."""
    fetch: tuple[str, ...] = ()
    """The files of `repo` that are fetched (huggingface_hub allow_patterns)."""


@dataclass
class Loaded:
    """A benchmark's samples, and the rows that could not be read (file, row, reason)."""

    samples: list[dict]
    bad_rows: list[dict]


def sample(
    row_id, question, answer, images, category, choices=(), letter=False, query=None
) -> dict:
    """An evaluation sample. With `choices` (or `letter`), `answer` is an option letter.

    `question` is avar's prompt (the options as `A. ...` lines and the instruction), `stem`
    the question alone and `query` the release's own full prompt where it has one (MathVista's
    `query`, MathVerse's `query_wo`): the harness presets build their prompts from these."""
    answer = str(answer).strip()
    answer_type = "choice" if letter else infer_answer_type(answer, choices)
    return {
        "id": str(row_id),
        "question": choice_question(question, list(choices)) if choices else question.strip(),
        "stem": question.strip(),
        "query": str(query).strip() if query else "",
        "answer": answer,
        "answer_type": answer_type,
        "choices": list(choices),
        "category": str(category or "all"),
        "images": images,
    }


def letter_of(answer: str, options: list[str], path: Path, number: int) -> str:
    """The option letter of an answer given as a letter or as the option's text."""
    answer = str(answer).strip()
    if len(answer) == 1 and answer.upper() in OPTION_LETTERS[: len(options)]:
        return answer.upper()
    if answer in options:
        return OPTION_LETTERS[options.index(answer)]
    raise row_error(path, number, f"answer {answer!r} is neither a letter nor one of {options}")


def _image_column(row: dict, path: Path, number: int, *names: str):
    for name in names:
        if row.get(name):
            return decode_image(row[name], path.parent, path, number)
    raise row_error(path, number, f"no image in columns {list(names)}")


def _options(value, path: Path, number: int) -> list[str]:
    """Options as a list: a list, or its Python repr (MMMU stores them as a string)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise row_error(path, number, f"options {value[:60]!r} is not a list") from None
    if not isinstance(value, list | tuple):
        raise row_error(path, number, f"options must be a list, got {type(value).__name__}")
    return [str(v) for v in value]


def mathvista(row: dict, path: Path, number: int) -> dict:
    """AI4Math/MathVista testmini: pid, question, choices, answer, question_type,
    decoded_image (or image path), metadata.task."""
    options = _options(row.get("choices"), path, number)
    answer = field(row, "answer", path, number)
    multi = row.get("question_type") == "multi_choice" and options
    image = _image_column(row, path, number, "decoded_image", "image")
    category = (row.get("metadata") or {}).get("task")
    question = field(row, "question", path, number)
    if multi:
        answer = letter_of(answer, options, path, number)
    elif row.get("unit"):
        question = f"{question} (unit: {row['unit']})"
    return sample(
        row.get("pid", number),
        question,
        answer,
        [image],
        category,
        options if multi else (),
        query=row.get("query"),
    )


def mathvision(row: dict, path: Path, number: int) -> dict:
    """MathLLMs/MathVision: id, question (with <image1>), options, answer, decoded_image
    (or image path), subject."""
    options = _options(row.get("options"), path, number)
    answer = field(row, "answer", path, number)
    if options:
        answer = letter_of(answer, options, path, number)
    question = IMAGE_TAG.sub("", field(row, "question", path, number))
    image = _image_column(row, path, number, "decoded_image", "image")
    return sample(row.get("id", number), question, answer, [image], row.get("subject"), options)


def mathverse(row: dict, path: Path, number: int) -> dict | None:
    """AI4Math/MathVerse testmini, Vision Only rows: the question is drawn in the image;
    query_wo tells the model so. answer is a letter for multi-choice rows."""
    if row.get("problem_version") != "Vision Only":
        return None
    question = row.get("query_wo") or row.get("question") or "Answer the question in the image."
    image = _image_column(row, path, number, "image", "decoded_image")
    letter = row.get("question_type") == "multi-choice"
    category = (row.get("metadata") or {}).get("subject")
    return sample(
        row.get("sample_index", number),
        question,
        field(row, "answer", path, number),
        [image],
        category,
        letter=letter,
        query=row.get("query_wo"),
    )


def _mmmu_images(row: dict, path: Path, number: int) -> list:
    images = [
        decode_image(row[f"image_{i}"], path.parent, path, number)
        for i in range(1, 8)
        if row.get(f"image_{i}")
    ]
    if not images:
        raise row_error(path, number, "no image in image_1..image_7")
    return images


def mmmu(row: dict, path: Path, number: int) -> dict:
    """MMMU/MMMU validation (one parquet per subject): id, question (with <image N>),
    options (a list's repr), answer, question_type, image_1..image_7."""
    options = _options(row.get("options"), path, number)
    row_id = field(row, "id", path, number)
    question = IMAGE_TAG.sub(r"image \1", field(row, "question", path, number))
    multi = row.get("question_type", "multiple-choice") == "multiple-choice" and options
    answer = field(row, "answer", path, number)
    if multi:
        answer = letter_of(answer, options, path, number)
    subject = row.get("subject") or "_".join(str(row_id).split("_")[1:-1])
    return sample(
        row_id, question, answer, _mmmu_images(row, path, number), subject, options if multi else ()
    )


def mmmu_pro(row: dict, path: Path, number: int) -> dict:
    """MMMU/MMMU_Pro, `standard (10 options)` (as MMMU, with subject) or `vision` (id, image
    holding the question, options, answer, subject)."""
    if "question" in row:
        return mmmu(row, path, number)
    options = _options(field(row, "options", path, number), path, number)
    answer = letter_of(field(row, "answer", path, number), options, path, number)
    image = _image_column(row, path, number, "image")
    return sample(
        field(row, "id", path, number),
        "Answer the question in the image.",
        answer,
        [image],
        row.get("subject"),
        options,
    )


def mmstar(row: dict, path: Path, number: int) -> dict:
    """Lin-Chen/MMStar parquet (index, question with its options, image, answer letter,
    category) or VLMEvalKit's MMStar.tsv (the same with A-D columns, base64 image)."""
    options = [row[k] for k in "ABCD" if row.get(k)]
    question = field(row, "question", path, number)
    answer = field(row, "answer", path, number)
    image = _image_column(row, path, number, "image")
    if options:
        return sample(
            row.get("index", number),
            question,
            letter_of(answer, options, path, number),
            [image],
            row.get("category"),
            options,
        )
    return sample(
        row.get("index", number), question, answer, [image], row.get("category"), letter=True
    )


def hallusionbench(row: dict, path: Path, number: int) -> dict:
    """lmms-lab/HallusionBench parquet (`image` and `non_image` splits: question, gt_answer
    "1"/"0", image struct, empty in non_image), the release's HallusionBench.json (the same
    fields, `filename` relative to the file; none: text-only) or VLMEvalKit's
    HallusionBench.tsv (index, image base64, question, answer Yes/No, category)."""
    question = field(row, "question", path, number)
    if "gt_answer" in row:
        answer = {"1": "Yes", "0": "No"}.get(str(row["gt_answer"]).strip())
        if answer is None:
            raise row_error(path, number, f"gt_answer must be 1 or 0, got {row['gt_answer']!r}")
        if row.get("image"):
            images = [decode_image(row["image"], path.parent, path, number)]
        elif row.get("filename") and str(row.get("visual_input", "1")) != "0":
            images = [decode_image(row["filename"], path.parent, path, number)]
        else:
            images = []
        category = "/".join(str(row[k]) for k in ("category", "subcategory") if row.get(k))
        row_id = "_".join(
            str(row.get(k, ""))
            for k in ("category", "subcategory", "set_id", "figure_id", "question_id")
        )
        return sample(row_id, question, answer, images, category)
    images = [decode_image(row["image"], path.parent, path, number)] if row.get("image") else []
    return sample(
        row.get("index", number),
        question,
        field(row, "answer", path, number),
        images,
        row.get("category"),
    )


def synthetic(row: dict, path: Path, number: int) -> dict:
    """avar's own records (data.jsonl, images relative to it): the synthetic suite."""
    images = [decode_image(p, path.parent, path, number) for p in row.get("images", [])]
    fields = ("id", "question", "answer", "answer_type", "choices", "category")
    record = {k: field(row, k, path, number) for k in fields}
    return {**record, "stem": record["question"], "query": "", "images": images}


HUB = "huggingface.co/datasets/"

BENCHMARKS = {
    b.name: b
    for b in (
        Benchmark(
            "mathvista",
            (("data/testmini-*.parquet",), ("testmini-*.parquet",)),
            f"{HUB}AI4Math/MathVista (data/testmini-*.parquet)",
            mathvista,
            "AI4Math/MathVista",
            ("data/testmini-*.parquet",),
        ),
        Benchmark(
            "mathvision",
            (
                ("data/test-*.parquet",),
                ("test-*.parquet",),
                ("data/testmini-*.parquet",),
                ("testmini-*.parquet",),
            ),
            f"{HUB}MathLLMs/MathVision (data/test-*.parquet)",
            mathvision,
            "MathLLMs/MathVision",
            ("data/test-*.parquet",),
        ),
        Benchmark(
            "mathverse",
            (("testmini.parquet",), ("testmini-*.parquet",), ("testmini.json",)),
            f"{HUB}AI4Math/MathVerse (testmini.parquet, or testmini.json with its images; "
            "Vision Only rows)",
            mathverse,
            "AI4Math/MathVerse",
            ("testmini.parquet",),
        ),
        Benchmark(
            "mmmu",
            (("*/validation-*.parquet",), ("validation-*.parquet",)),
            f"{HUB}MMMU/MMMU (<Subject>/validation-*.parquet)",
            mmmu,
            "MMMU/MMMU",
            ("*/validation-*.parquet",),
        ),
        Benchmark(
            "mmmu_pro",
            (
                ("standard (10 options)/test-*.parquet",),
                ("vision/test-*.parquet",),
                ("test-*.parquet",),
            ),
            f"{HUB}MMMU/MMMU_Pro (standard (10 options)/test-*.parquet)",
            mmmu_pro,
            "MMMU/MMMU_Pro",
            ("standard (10 options)/test-*.parquet",),
        ),
        Benchmark(
            "mmstar",
            (("mmstar.parquet",), ("*.parquet",), ("MMStar.tsv",)),
            f"{HUB}Lin-Chen/MMStar (mmstar.parquet) or VLMEvalKit's MMStar.tsv",
            mmstar,
            "Lin-Chen/MMStar",
            ("mmstar.parquet",),
        ),
        Benchmark(
            "hallusionbench",
            (
                ("data/image-*.parquet", "data/non_image-*.parquet"),
                ("image-*.parquet", "non_image-*.parquet"),
                ("HallusionBench.tsv",),
                ("HallusionBench.json",),
            ),
            f"{HUB}lmms-lab/HallusionBench (data/image-*.parquet, data/non_image-*.parquet), "
            "VLMEvalKit's HallusionBench.tsv, or HallusionBench.json with its images from "
            "github.com/tianyi-lab/HallusionBench",
            hallusionbench,
            "lmms-lab/HallusionBench",
            ("data/*.parquet",),
        ),
        Benchmark(
            "synthetic",
            (("data.jsonl",),),
            "`avar prepare` (data/raw/heldout) or `avar stage curate` (data/curated/eval)",
            synthetic,
        ),
    )
}


def benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def find_files(bench: Benchmark, folder: Path) -> list[Path]:
    """The files of the first layout with any file in `folder`, or [] when none has."""
    for layout in bench.layouts:
        files = [path for pattern in layout for path in sorted(folder.glob(pattern))]
        if files:
            return files
    return []


def bench_files(bench: Benchmark, folder: Path) -> list[Path]:
    """The files of `bench` in `folder`, or an error naming what is expected and from where."""
    files = find_files(bench, folder)
    if files:
        return files
    expected = " or ".join(" + ".join(layout) for layout in bench.layouts)
    fetch = f"; `avar benchmarks fetch {bench.name}` downloads them" if bench.repo else ""
    raise BenchmarkDataError(
        f"{bench.name}: no {expected} in {folder}; get it from {bench.origin}{fetch}"
    )


def load_benchmark(bench: Benchmark, folder: Path, limit: int = 0, max_bad: float = 0.0) -> Loaded:
    """The samples of `bench` under `folder`, in file order (the first `limit` when > 0).

    A row that cannot be read is skipped and kept in `bad_rows` (file, row, reason) while
    they stay at most `max_bad` of the rows tried; past that the load stops with the count
    and the first one. A file that does not open at all stops it at once."""
    samples: list[dict] = []
    bad: list[dict] = []
    first: BenchmarkDataError | None = None
    for path in bench_files(bench, folder):
        for number, row in read_rows(path):
            try:
                item = bench.load_row(row, path, number)
            except BenchmarkDataError as err:
                first = first or err
                bad.append({"file": str(path), "row": number, "reason": err.reason or str(err)})
                continue
            if item is not None:
                samples.append(item)
            if limit and len(samples) >= limit:
                break
        if limit and len(samples) >= limit:
            break
    tried = len(samples) + len(bad)
    if bad and len(bad) > max_bad * tried:
        raise BenchmarkDataError(
            f"{bench.name}: {len(bad)} of {tried} rows unreadable, more than the "
            f"{max_bad:.0%} eval.max_bad_rows allows; first: {first}"
        )
    if bad:
        log.warning("%s: %d of %d rows skipped, first: %s", bench.name, len(bad), tried, first)
    return Loaded(samples, bad)


__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkDataError",
    "Loaded",
    "benchmark",
    "bench_files",
    "load_benchmark",
    "row_count",
]
