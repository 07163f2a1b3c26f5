"""Procedurally drawn scenes: coloured shapes on a canvas, and their structured description.

A scene is a plain dict (it is stored in each record's `scene` field, and later stages turn
it into visual anchors):

    {"width": 112, "height": 112, "background": "white",
     "objects": [{"shape": "circle", "color": "red", "size": "small",
                  "center": [30, 41], "bbox": [22, 33, 38, 49]}, ...]}
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
}
SIZES = ("small", "large")
OBJECTS_PER_DIFFICULTY = {"easy": (2, 3), "medium": (4, 5), "hard": (6, 8)}


EXTENT = {"small": 0.07, "large": 0.12}  # half a box's side, as a fraction of the width


def half_extent(size: str, width: int, extent: dict[str, float] = EXTENT) -> int:
    """Half the side of a shape's bounding box, in pixels."""
    return max(3, round(width * extent[size]))


def random_scene(
    rng: random.Random,
    width: int,
    difficulty: str,
    counts: dict[str, tuple[int, int]] = OBJECTS_PER_DIFFICULTY,
    extent: dict[str, float] = EXTENT,
) -> dict:
    """Place non-overlapping random shapes; more of them for harder difficulties.

    `counts` (objects per difficulty) and `extent` (box sizes) default to the scenes every
    dataset is drawn from; bench/perception.py varies them for its training scenes.
    """
    lo, hi = counts[difficulty]
    target = rng.randint(lo, hi)
    objects: list[dict] = []
    for _ in range(200 * target):
        if len(objects) == target:
            break
        size = rng.choice(SIZES)
        half = half_extent(size, width, extent)
        cx = rng.randint(half + 1, width - half - 2)
        cy = rng.randint(half + 1, width - half - 2)
        bbox = [cx - half, cy - half, cx + half, cy + half]
        if any(_overlaps(bbox, other["bbox"], gap=2) for other in objects):
            continue
        objects.append(
            {
                "shape": rng.choice(SHAPES),
                "color": rng.choice(sorted(COLORS)),
                "size": size,
                "center": [cx, cy],
                "bbox": bbox,
            }
        )
    return {"width": width, "height": width, "background": "white", "objects": objects}


def _overlaps(a: list[int], b: list[int], gap: int) -> bool:
    return not (a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1])


def draw_scene(scene: dict) -> Image.Image:
    """Render the scene description to an RGB image."""
    image = Image.new("RGB", (scene["width"], scene["height"]), scene["background"])
    draw = ImageDraw.Draw(image)
    for obj in scene["objects"]:
        draw_shape(draw, obj, COLORS[obj["color"]])
    return image


def draw_shape(draw: ImageDraw.ImageDraw, obj: dict, fill) -> None:
    """Draw one object's shape in its box with `fill` (a colour, or a label in a mask)."""
    x0, y0, x1, y1 = obj["bbox"]
    if obj["shape"] == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif obj["shape"] == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)


def plural(noun: str) -> str:
    """'circle' -> 'circles', 'box' -> 'boxes'."""
    return f"{noun}es" if noun.endswith(("s", "x")) else f"{noun}s"


def region(obj: dict, width: int) -> str:
    """Where an object sits on a 3x3 grid, in words ('top left', 'center', ...)."""
    cx, cy = obj["center"]
    col = ("left", "center", "right")[min(2, 3 * cx // width)]
    row = ("top", "middle", "bottom")[min(2, 3 * cy // width)]
    if row == "middle":
        return "center" if col == "center" else col
    return row if col == "center" else f"{row} {col}"


def describe(obj: dict, width: int) -> str:
    """'a small red circle at the top left'."""
    return f"a {obj['size']} {obj['color']} {obj['shape']} at the {region(obj, width)}"
