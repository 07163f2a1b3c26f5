"""`avar data synth`: write DIR/data.jsonl (and DIR/images/*.png for visual records)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image
from rich.progress import track

from avar.data.synth_text import text_record
from avar.data.synth_visual import visual_record
from avar.io import atomic_dir


def synthesize(
    kind: str, n: int, seed: int, out: str | Path, image_size: int = 112, prefix: str = ""
) -> Path:
    """Generate `n` records of `kind` ('visual' or 'text'); same seed, same bytes.

    Ids (and image names) are `<kind>-000123`, or `<prefix>-000123` when given, so that
    sets generated apart never share an id.
    """
    if kind not in ("visual", "text"):
        raise ValueError(f"--kind must be 'visual' or 'text', got {kind!r}")
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    rng = random.Random(f"avar-{kind}-{seed}")
    lines = []
    with atomic_dir(out) as tmp:
        if kind == "visual":
            (tmp / "images").mkdir()
        for index in track(range(n), description=f"synth {kind}", transient=True):
            image: Image.Image | None = None
            if kind == "visual":
                record, image = visual_record(rng, index, image_size)
            else:
                record = text_record(rng, index)
            if prefix:
                record["id"] = record["id"].replace(kind, prefix, 1)
                record["images"] = [f"images/{record['id']}.png" for _ in record["images"]]
            if image is not None:
                image.save(tmp / record["images"][0], format="PNG")
            lines.append(json.dumps(record, sort_keys=True))
        (tmp / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(out) / "data.jsonl"


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file (blank lines skipped). Validate first for clear errors."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
