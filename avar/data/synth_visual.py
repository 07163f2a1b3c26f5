"""Visual questions over drawn scenes whose answers need the image.

Categories: count, color, position, compare, arithmetic. Each generator returns the
question fields with a step-by-step solution that first states what the image shows,
or None when the scene cannot support that question (then another category is tried).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from PIL import Image

from avar.data.scenes import COLORS, SHAPES, describe, draw_scene, plural, random_scene
from avar.data.schema import DIFFICULTIES, OPTION_LETTERS, choice_question, question_fields

CATEGORIES = ("count", "color", "position", "compare", "arithmetic")


def _overview(scene: dict) -> str:
    width = scene["width"]
    parts = "; ".join(describe(o, width) for o in scene["objects"])
    n = len(scene["objects"])
    return f"The image shows {n} shape{'s' if n != 1 else ''}: {parts}."


def q_count(rng: random.Random, scene: dict) -> dict | None:
    objects = scene["objects"]
    attr = rng.choice(("color", "shape"))
    values = sorted(COLORS) if attr == "color" else list(SHAPES)
    value = rng.choice(values)
    matches = [o for o in objects if o[attr] == value]
    noun = f"{value} shapes" if attr == "color" else plural(value)
    width = scene["width"]
    listed = "; ".join(describe(o, width) for o in matches) or "none"
    return question_fields(
        f"How many {noun} are there in the image?",
        len(matches),
        [
            _overview(scene),
            f"The {noun} are: {listed}.",
            f"So the count is {len(matches)}.",
        ],
    )


def q_color(rng: random.Random, scene: dict) -> dict | None:
    objects = scene["objects"]
    unique = [o for o in objects if sum(p["shape"] == o["shape"] for p in objects) == 1]
    if not unique:
        return None
    target = rng.choice(unique)
    return question_fields(
        f"What color is the {target['shape']} in the image?",
        target["color"],
        [
            _overview(scene),
            f"There is exactly one {target['shape']}: {describe(target, scene['width'])}.",
            f"So the {target['shape']} is {target['color']}.",
        ],
    )


def _name(obj: dict) -> str:
    return f"{obj['color']} {obj['shape']}"


def q_position(rng: random.Random, scene: dict) -> dict | None:
    objects = scene["objects"]
    unique = [o for o in objects if sum(_name(p) == _name(o) for p in objects) == 1]
    pairs = [(a, b) for a in unique for b in unique if a is not b]
    rng.shuffle(pairs)
    for a, b in pairs:
        dx = a["center"][0] - b["center"][0]
        dy = a["center"][1] - b["center"][1]
        if max(abs(dx), abs(dy)) < 6 or abs(abs(dx) - abs(dy)) < 4:
            continue  # too close to call by eye
        if abs(dx) > abs(dy):
            relation = "left of" if dx < 0 else "right of"
        else:
            relation = "above" if dy < 0 else "below"
        options = ["left of", "right of", "above", "below"]
        letter = OPTION_LETTERS[options.index(relation)]
        width = scene["width"]
        return question_fields(
            choice_question(f"Where is the {_name(a)} relative to the {_name(b)}?", options),
            letter,
            [
                _overview(scene),
                f"The {_name(a)} is {describe(a, width).split(' at ')[1]}; "
                f"the {_name(b)} is {describe(b, width).split(' at ')[1]}.",
                f"So the {_name(a)} is {relation} the {_name(b)}: option {letter}.",
            ],
            options,
        )
    return None


def q_compare(rng: random.Random, scene: dict) -> dict | None:
    first, second = rng.sample(list(SHAPES), 2)
    n_first = sum(o["shape"] == first for o in scene["objects"])
    n_second = sum(o["shape"] == second for o in scene["objects"])
    options = [plural(first), plural(second), "the same number"]
    if n_first > n_second:
        index = 0
    elif n_second > n_first:
        index = 1
    else:
        index = 2
    return question_fields(
        choice_question(
            f"Are there more {plural(first)} or more {plural(second)} in the image?", options
        ),
        OPTION_LETTERS[index],
        [
            _overview(scene),
            f"There are {n_first} {plural(first)} and {n_second} {plural(second)}.",
            f"So the answer is {options[index]}: option {OPTION_LETTERS[index]}.",
        ],
        options,
    )


def q_arithmetic(rng: random.Random, scene: dict) -> dict | None:
    objects = scene["objects"]
    if rng.random() < 0.5:
        first, second = rng.sample(list(SHAPES), 2)
        a = sum(o["shape"] == first for o in objects)
        b = sum(o["shape"] == second for o in objects)
        return question_fields(
            f"How many {plural(first)} and {plural(second)} are there in total?",
            a + b,
            [
                _overview(scene),
                f"There are {a} {plural(first)} and {b} {plural(second)}.",
                f"{a} + {b} = {a + b}, so there are {a + b} in total.",
            ],
        )
    color = rng.choice(sorted(COLORS))
    total = len(objects)
    colored = sum(o["color"] == color for o in objects)
    return question_fields(
        f"If every {color} shape were removed, how many shapes would remain?",
        total - colored,
        [
            _overview(scene),
            f"There are {total} shapes, {colored} of them {color}.",
            f"{total} - {colored} = {total - colored}, so {total - colored} shapes remain.",
        ],
    )


GENERATORS: dict[str, Callable[[random.Random, dict], dict | None]] = {
    "count": q_count,
    "color": q_color,
    "position": q_position,
    "compare": q_compare,
    "arithmetic": q_arithmetic,
}


def visual_record(rng: random.Random, index: int, width: int) -> tuple[dict, Image.Image]:
    """One record and its image. Falls back through categories until one fits the scene."""
    difficulty = DIFFICULTIES[index % len(DIFFICULTIES)]
    first = rng.randrange(len(CATEGORIES))
    while True:
        scene = random_scene(rng, width, difficulty)
        for offset in range(len(CATEGORIES)):
            category = CATEGORIES[(first + offset) % len(CATEGORIES)]
            fields = GENERATORS[category](rng, scene)
            if fields is not None:
                record_id = f"visual-{index:06d}"
                record = {
                    "id": record_id,
                    "kind": "visual",
                    "source": "synthetic",
                    "category": category,
                    "difficulty": difficulty,
                    "images": [f"images/{record_id}.png"],
                    "scene": scene,
                    **fields,
                }
                return record, draw_scene(scene)
