"""Perception data for pretraining the embedded model: short visual questions.

The tiny model starts from random weights, so before it can reason about an image it has
to see one. These records ask what is in a drawn scene (what shapes, what colours, how
many) and answer in a word or two, with no reasoning trace (`response` is the bare
answer). A from-scratch model learns this far faster with a curriculum (see
`perception_set`): first single objects blown up to fill the image, then real scenes.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from PIL import Image

from avar.data.scenes import COLORS, SHAPES, draw_scene, plural, random_scene
from avar.data.schema import infer_answer_type

CATEGORIES = ("count_all", "count_color", "count_shape", "color_of", "shape_of")
ZOOM_CATEGORIES = ("color_of", "shape_of", "count_color")
DIFFICULTIES = ("easy", "medium")


def _unique(objects: list[dict], attr: str) -> list[dict]:
    counts = Counter(o[attr] for o in objects)
    return [o for o in objects if counts[o[attr]] == 1]


def perception_question(rng: random.Random, category: str, scene: dict) -> tuple[str, str] | None:
    """(question, answer) of `category` about `scene`, or None when the scene has no such."""
    objects = scene["objects"]
    if category == "count_all":
        return "How many shapes are there?", str(len(objects))
    if category == "count_color":
        color = rng.choice(sorted(COLORS))
        return f"How many {color} shapes are there?", str(sum(o["color"] == color for o in objects))
    if category == "count_shape":
        shape = rng.choice(SHAPES)
        return f"How many {plural(shape)} are there?", str(
            sum(o["shape"] == shape for o in objects)
        )
    if category == "color_of":
        unique = _unique(objects, "shape")
        if not unique:
            return None
        target = rng.choice(unique)
        return f"What color is the {target['shape']}?", target["color"]
    if category == "shape_of":
        unique = _unique(objects, "color")
        if not unique:
            return None
        target = rng.choice(unique)
        return f"What shape is the {target['color']} one?", target["shape"]
    raise ValueError(f"unknown perception category {category!r}")


def zoomed(scene: dict, zoom: float) -> dict:
    """The scene's first object alone, its box grown by `zoom` (0..1) toward the canvas."""
    obj = dict(scene["objects"][0])
    width = scene["width"]
    half = (obj["bbox"][2] - obj["bbox"][0]) / 2
    grown = half + zoom * (width / 2 - half)
    cx = min(max(obj["center"][0], grown), width - 1 - grown)
    cy = min(max(obj["center"][1], grown), width - 1 - grown)
    obj["center"] = [round(cx), round(cy)]
    obj["bbox"] = [round(cx - grown), round(cy - grown), round(cx + grown), round(cy + grown)]
    return {**scene, "objects": [obj]}


SceneMaker = Callable[[random.Random, int, str], dict]  # (rng, width, difficulty) -> scene


def perception_record(
    rng: random.Random,
    index: int,
    width: int,
    zoom: float | None = None,
    make_scene: SceneMaker = random_scene,
) -> tuple[dict, Image.Image]:
    """One record (schema of avar.data.schema, `response` = the answer) and its image.

    `zoom` (0..1) asks instead about one object drawn that much bigger than its size: the
    first steps of a curriculum, where every image token shows the object.
    """
    difficulty = DIFFICULTIES[index % len(DIFFICULTIES)]
    category = CATEGORIES[index % len(CATEGORIES)]
    if zoom is not None:
        category = ZOOM_CATEGORIES[index % len(ZOOM_CATEGORIES)]
    while True:
        scene = make_scene(rng, width, difficulty)
        if zoom is not None:
            scene = zoomed(scene, zoom)
        qa = perception_question(rng, category, scene)
        if qa is not None:
            break
    question, answer = qa
    record_id = f"perception-{index:06d}"
    record = {
        "id": record_id,
        "kind": "visual",
        "source": "perception",
        "category": category,
        "difficulty": difficulty,
        "question": question,
        "answer": answer,
        "answer_type": infer_answer_type(answer),
        "choices": [],
        "images": [f"images/{record_id}.png"],
        "scene": scene,
        "solution": [],
        "response": answer,
    }
    return record, draw_scene(scene)


def perception_set(
    n: int,
    seed: int,
    width: int,
    curriculum: float = 0.0,
    make_scene: SceneMaker = random_scene,
) -> list[tuple[dict, Image.Image]]:
    """`n` records with their images, in memory; the same seed gives the same set.

    The first `curriculum` fraction are single zoomed objects whose zoom shrinks from 1
    (the object fills the image) to 0 (its own size); train on them in order.
    """
    rng = random.Random(f"avar-perception-{seed}")
    n_zoomed = round(curriculum * n)
    return [
        perception_record(rng, i, width, 1 - i / n_zoomed if i < n_zoomed else None, make_scene)
        for i in range(n)
    ]


def majority_accuracy(records: list[dict]) -> dict[str, float]:
    """Accuracy of always giving each category's most common answer (the chance bar)."""
    by_category: dict[str, Counter] = {}
    for record in records:
        by_category.setdefault(record["category"], Counter())[record["answer"]] += 1
    return {
        category: counts.most_common(1)[0][1] / sum(counts.values())
        for category, counts in sorted(by_category.items())
    }
