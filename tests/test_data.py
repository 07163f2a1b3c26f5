"""Synthetic data: deterministic, answers that follow from the drawn image, valid schema."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import Counter

from PIL import Image

from avar.data import read_jsonl, synthesize, validate_files
from avar.data.perception import perception_set
from avar.data.scenes import COLORS, random_scene
from avar.data.synth_visual import CATEGORIES


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_identical_bytes(tmp_path):
    first = synthesize("visual", 50, 0, tmp_path / "a")
    second = synthesize("visual", 50, 0, tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    for record in read_jsonl(first):
        image = record["images"][0]
        assert digest(first.parent / image) == digest(second.parent / image)
    other = synthesize("visual", 50, 1, tmp_path / "c")
    assert other.read_bytes() != first.read_bytes()


def test_text_kind_is_deterministic_and_has_no_images(tmp_path):
    a = synthesize("text", 30, 3, tmp_path / "a")
    b = synthesize("text", 30, 3, tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    records = read_jsonl(a)
    assert all(r["images"] == [] and r["scene"] is None for r in records)
    assert {r["category"] for r in records} == {"arithmetic", "multiply", "ordering"}


def test_every_object_is_drawn_where_the_scene_says(visual_jsonl):
    for record in read_jsonl(visual_jsonl):
        image = Image.open(visual_jsonl.parent / record["images"][0]).convert("RGB")
        for obj in record["scene"]["objects"]:
            assert image.getpixel(tuple(obj["center"])) == COLORS[obj["color"]], record["id"]


def test_count_answers_recomputed_from_the_scene(visual_jsonl):
    checked = 0
    for record in read_jsonl(visual_jsonl):
        objects = record["scene"]["objects"]
        question = record["question"]
        if record["category"] == "count":
            noun = re.match(r"How many (.+?) are there", question).group(1)
            if noun.endswith(" shapes"):  # "red shapes"
                expected = sum(o["color"] == noun.split()[0] for o in objects)
            else:  # "triangles"
                expected = sum(o["shape"] + "s" == noun for o in objects)
            assert record["answer"] == str(expected), record["id"]
            checked += 1
        if record["category"] == "arithmetic" and "removed" in question:
            color = question.split()[2]  # "If every <color> shape were removed..."
            expected = sum(o["color"] != color for o in objects)
            assert record["answer"] == str(expected), record["id"]
            checked += 1
    assert checked >= 5


def test_position_answers_follow_the_coordinates(visual_jsonl):
    letters = {"left of": "A", "right of": "B", "above": "C", "below": "D"}
    for record in read_jsonl(visual_jsonl):
        if record["category"] != "position":
            continue
        a_name, b_name = re.search(
            r"Where is the (\w+ \w+) relative to the (\w+ \w+)\?", record["question"]
        ).groups()
        by_name = {f"{o['color']} {o['shape']}": o for o in record["scene"]["objects"]}
        (ax, ay), (bx, by) = by_name[a_name]["center"], by_name[b_name]["center"]
        if abs(ax - bx) > abs(ay - by):
            relation = "left of" if ax < bx else "right of"
        else:
            relation = "above" if ay < by else "below"
        assert record["answer"] == letters[relation]


def test_categories_and_difficulties_covered(tmp_path):
    records = read_jsonl(synthesize("visual", 120, 0, tmp_path / "v"))
    assert set(Counter(r["category"] for r in records)) == set(CATEGORIES)
    assert set(Counter(r["difficulty"] for r in records)) == {"easy", "medium", "hard"}
    n_objects = {
        d: [len(r["scene"]["objects"]) for r in records if r["difficulty"] == d]
        for d in ("easy", "hard")
    }
    assert max(n_objects["easy"]) < min(n_objects["hard"])


def test_solutions_start_from_what_the_image_shows(visual_jsonl):
    for record in read_jsonl(visual_jsonl):
        n = len(record["scene"]["objects"])
        assert record["solution"][0].startswith(f"The image shows {n} shape")
        assert record["answer"] in record["solution"][-1]


def test_generated_files_validate(visual_jsonl, text_jsonl):
    report = validate_files([visual_jsonl, text_jsonl])
    assert report.ok, report.problem_lines()
    assert report.records == 80 and report.images == 40


def test_records_are_sorted_json_lines(visual_jsonl):
    for line in visual_jsonl.read_text().splitlines():
        assert line == json.dumps(json.loads(line), sort_keys=True)


def test_perception_scenes_follow_the_scene_maker():
    """The default scenes (boxes of 16 and 26 px at 112 px, 2-3 or 4-5 objects) and a
    maker of larger, fewer objects, as bench/perception.py trains on."""
    standard = perception_set(40, 0, 112)
    sides = {o["bbox"][2] - o["bbox"][0] for r, _ in standard for o in r["scene"]["objects"]}
    assert sides == {16, 26}  # 2 * round(0.07 * 112), 2 * round(0.12 * 112)
    for record, _ in standard:
        lo, hi = {"easy": (2, 3), "medium": (4, 5)}[record["difficulty"]]
        assert lo <= len(record["scene"]["objects"]) <= hi
    few = functools.partial(
        random_scene,
        counts={"easy": (1, 1), "medium": (2, 2)},
        extent={"small": 0.14, "large": 0.22},
    )
    larger = perception_set(40, 0, 112, make_scene=few)
    for record, image in larger:
        objects = record["scene"]["objects"]
        assert len(objects) == {"easy": 1, "medium": 2}[record["difficulty"]]
        for obj in objects:
            assert obj["bbox"][2] - obj["bbox"][0] in {32, 50}  # 2 * 16, 2 * 25
            assert image.getpixel(tuple(obj["center"])) == COLORS[obj["color"]]
