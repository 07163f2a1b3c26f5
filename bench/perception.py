"""Perception experiments: the embedded model's pretraining under a variation, scored on
the standard held-out scenes.

Trains a fresh tiny model on perception questions the way the base stage does (its
params.yaml settings: steps, batch, learning rate, AdamW with warmup and cosine decay,
clipping at 1.0, the zoom curriculum) with a plain loop, so that one variation at a time
can be tried, and scores it every --eval-every steps on the base stage's held-out
perception questions (standard scenes whatever the training scenes were). Prints the
curve and a Markdown row (accuracy with its 95% Wilson interval, each category, and the
majority bar), and writes them to --out as JSON. The rows marked (b) in the README's
"Perception is the limit" table come from this script.

    python bench/perception.py                               # the base recipe
    python bench/perception.py --scenes large-few            # easier training scenes
    python bench/perception.py --dense-aux 1.0 -S base.max_steps=4000
    python bench/perception.py --question-first --preset '{"vision_depth": 4}'

One run of 1500 steps takes about 3.5 minutes on one CPU thread (2-core machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy
import torch
from PIL import Image, ImageDraw

from avar.config import load_params
from avar.data.perception import (
    CATEGORIES,
    majority_accuracy,
    perception_question,
    perception_set,
)
from avar.data.scenes import (
    COLORS,
    OBJECTS_PER_DIFFICULTY,
    SHAPES,
    SIZES,
    draw_shape,
    random_scene,
)
from avar.eval.harness import answer
from avar.models.loader import load_model, load_processor
from avar.models.tiny import PRESETS, init_tiny
from avar.stages.base import PERCEPTION_SEED_OFFSET, perception_chats
from avar.stats import accuracy_summary
from avar.train.data import ChatCollator, ChatDataset


def grid_scene(rng: random.Random, width: int, difficulty: str, cell: int = 28) -> dict:
    """Objects centred in cells of `cell` px (one merged image token each at 112 px)."""
    n = width // cell
    objects = []
    for index in rng.sample(range(n * n), rng.randint(*OBJECTS_PER_DIFFICULTY[difficulty])):
        size = rng.choice(SIZES)
        half = 8 if size == "small" else 12
        cx, cy = (index % n) * cell + cell // 2, (index // n) * cell + cell // 2
        objects.append(
            {
                "shape": rng.choice(SHAPES),
                "color": rng.choice(sorted(COLORS)),
                "size": size,
                "center": [cx, cy],
                "bbox": [cx - half, cy - half, cx + half, cy + half],
            }
        )
    return {"width": width, "height": width, "background": "white", "objects": objects}


COLUMNS = ("count_all", "color_of", "count_color", "count_shape", "shape_of")  # README order
SCENES = {
    "standard": random_scene,
    # boxes about twice as large, and fewer objects per difficulty
    "large-few": functools.partial(
        random_scene,
        counts={"easy": (1, 2), "medium": (2, 3), "hard": (3, 4)},
        extent={"small": 0.14, "large": 0.22},
    ),
    "grid": grid_scene,
}


def token_labels(scene: dict, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per merged image token (row-major): 1 + the shape and 1 + the colour index of the
    object covering most of its cell, 0 where objects cover under 2.5% of it."""
    width = scene["width"]
    mask = Image.new("L", (width, width), 0)
    draw = ImageDraw.Draw(mask)
    for k, obj in enumerate(scene["objects"], 1):
        draw_shape(draw, obj, k)
    owner = torch.from_numpy(numpy.array(mask, dtype=numpy.int64))
    colors = sorted(COLORS)
    shape, color = [], []
    for r in range(rows):
        for c in range(cols):
            cell = owner[
                r * width // rows : (r + 1) * width // rows,
                c * width // cols : (c + 1) * width // cols,
            ]
            counts = torch.bincount(cell.flatten(), minlength=len(scene["objects"]) + 1)
            counts[0] = 0
            k = int(counts.argmax())
            if counts[k] < 0.025 * cell.numel():
                shape.append(0)
                color.append(0)
            else:
                obj = scene["objects"][k - 1]
                shape.append(1 + SHAPES.index(obj["shape"]))
                color.append(1 + colors.index(obj["color"]))
    return torch.tensor(shape), torch.tensor(color)


def more_questions(chats: list[list[dict]], pairs, k: int, seed: int) -> list[list[dict]]:
    """Each chat goes on for k - 1 more turns about the same scene, one per next category."""
    rng = random.Random(f"avar-perception-more-{seed}")
    for chat, (record, _) in zip(chats, pairs, strict=True):
        first = CATEGORIES.index(record["category"])
        for j in range(1, k):
            qa = perception_question(
                rng, CATEGORIES[(first + j) % len(CATEGORIES)], record["scene"]
            )
            if qa is not None:
                chat.append({"role": "user", "content": [{"type": "text", "text": qa[0]}]})
                chat.append({"role": "assistant", "content": qa[1]})
    return chats


def question_first(chats: list[list[dict]]) -> list[list[dict]]:
    """The user turn's question before its image."""
    for chat in chats:
        for message in chat:
            if message["role"] == "user" and isinstance(message["content"], list):
                parts = message["content"]
                message["content"] = [p for p in parts if p["type"] == "text"] + [
                    p for p in parts if p["type"] != "text"
                ]
    return chats


class DenseAux(torch.nn.Module):
    """Linear shape and colour heads on the vision tower's merged tokens (training only)."""

    def __init__(self, model) -> None:
        super().__init__()
        hidden = model.config.text_config.hidden_size
        self.shape = torch.nn.Linear(hidden, 1 + len(SHAPES))
        self.color = torch.nn.Linear(hidden, 1 + len(COLORS))
        self.features: torch.Tensor | None = None
        model.model.visual.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self.features = getattr(output, "pooler_output", output)

    @staticmethod
    def labels(scenes: list[dict], grid_thw: torch.Tensor, merge: int) -> tuple[torch.Tensor, ...]:
        pairs = [
            token_labels(s, int(h) // merge, int(w) // merge)
            for s, (_, h, w) in zip(scenes, grid_thw, strict=True)
        ]
        return torch.cat([s for s, _ in pairs]), torch.cat([c for _, c in pairs])

    def loss(self, scenes: list[dict], grid_thw: torch.Tensor, merge: int) -> torch.Tensor:
        shapes, colors = self.labels(scenes, grid_thw, merge)
        ce = torch.nn.functional.cross_entropy
        return ce(self.shape(self.features), shapes) + ce(self.color(self.features), colors)

    @torch.no_grad()
    def read(self, model, processor, heldout) -> dict:
        """How often the heads read the shape and colour of held-out tokens an object covers."""
        merge = model.config.vision_config.spatial_merge_size
        inputs = processor.image_processor(images=[im for _, im in heldout], return_tensors="pt")
        model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
        scenes = [r["scene"] for r, _ in heldout]
        shapes, colors = self.labels(scenes, inputs["image_grid_thw"], merge)
        covered = shapes > 0

        def share(head: torch.nn.Linear, labels: torch.Tensor) -> float:
            return (head(self.features).argmax(-1) == labels)[covered].float().mean().item()

        return {"token_shape": share(self.shape, shapes), "token_color": share(self.color, colors)}


def evaluate(model, processor, heldout, prompts) -> dict:
    """Overall and per-category accuracy summaries on the held-out questions."""
    answers = answer(model, processor, prompts, [r for r, _ in heldout], 8, 64, with_vas=False)
    return {"all": accuracy_summary(answers.correct), **answers.by_category()}


def run(args) -> dict:
    params = load_params(args.params, args.set)
    torch.manual_seed(params.base.seed)
    torch.set_num_threads(args.threads)
    sizes = dataclasses.replace(PRESETS["tiny"], **json.loads(args.preset))
    with tempfile.TemporaryDirectory(prefix="avar-perception-") as scratch:
        init_dir = init_tiny(Path(scratch) / "init", sizes, params.model.seed)
        model = load_model(str(init_dir), device="cpu", dtype="fp32").train()
        return train(args, params, model, load_processor(str(init_dir)))


def train(args, params, model, processor) -> dict:
    """The base recipe's loop under the variation in `args`; the curve and the bars."""
    cfg, width = params.base, params.data.image_size
    system = params.model.system_prompt
    steps, batch = cfg.max_steps, cfg.batch_size
    pairs = perception_set(steps * batch, cfg.seed, width, cfg.curriculum, SCENES[args.scenes])
    heldout = perception_set(cfg.heldout, cfg.seed + PERCEPTION_SEED_OFFSET, width)
    order = question_first if args.question_first else (lambda chats: chats)
    chats = more_questions(perception_chats(pairs, system), pairs, args.questions, cfg.seed)
    dataset = ChatDataset(order(chats), processor)
    prompts = order(perception_chats(heldout, system, False))
    collate = ChatCollator(processor)
    aux = DenseAux(model) if args.dense_aux else None
    trained = list(model.parameters()) + (list(aux.parameters()) if aux else [])
    optimizer = torch.optim.AdamW(trained, lr=cfg.learning_rate, weight_decay=0.0)
    # linear warmup times a cosine over all the steps (the Trainer's cosine starts after
    # the warmup: the same shape to within the warmup's 5%)
    warmup = max(1, round(cfg.warmup * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda k: min(1.0, (k + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, k / steps))),
    )
    merge = model.config.vision_config.spatial_merge_size
    curve, started = [], time.time()
    for step in range(steps):
        window = range(step * batch, (step + 1) * batch)
        inputs = collate([dataset[i] for i in window])
        inputs.pop("segment_ids", None)
        loss = model(**inputs).loss
        if aux:
            scenes = [pairs[i][0]["scene"] for i in window]
            loss = loss + args.dense_aux * aux.loss(scenes, inputs["image_grid_thw"], merge)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if (step + 1) % args.eval_every == 0 or step + 1 == steps:
            scores = evaluate(model, processor, heldout, prompts)
            if aux:
                scores["tokens"] = aux.read(model, processor, heldout)
            curve.append({"step": step + 1, "loss": loss.item(), **scores})
            print(progress_line(step + 1, steps, scores, time.time() - started), flush=True)
    records = [r for r, _ in heldout]
    bar = majority_accuracy(records)
    sizes = Counter(r["category"] for r in records)
    bar["all"] = sum(bar[c] * sizes[c] for c in bar) / len(records)
    return {"args": vars(args), "curve": curve, "majority": bar, "seconds": time.time() - started}


def progress_line(step: int, steps: int, scores: dict, seconds: float) -> str:
    total = scores["all"]
    line = (
        f"step {step}/{steps}: held-out {total['accuracy']:.3f} "
        f"[{total['low']:.3f}, {total['high']:.3f}] (n = {total['n']}), {seconds:.0f} s"
    )
    if "tokens" in scores:
        line += ", per token shape {token_shape:.2f} colour {token_color:.2f}".format(
            **scores["tokens"]
        )
    return line


def markdown(result: dict, label: str) -> str:
    final = result["curve"][-1]
    s = final["all"]
    cells = [f"{s['accuracy']:.3f} [{s['low']:.3f}, {s['high']:.3f}]"]
    cells += [f"{final[c]['accuracy']:.2f}" for c in COLUMNS]
    bar = result["majority"]
    bars = [f"{bar[c]:.2f}" for c in ("all", *COLUMNS)]
    curve = ", ".join(f"{p['all']['accuracy']:.3f}" for p in result["curve"])
    return (
        "| variation | accuracy [95% CI] | "
        + " | ".join(COLUMNS)
        + " |\n"
        + "| --- " * (2 + len(COLUMNS))
        + "|\n"
        + f"| majority bar | {' | '.join(bars)} |\n"
        + f"| {label} | {' | '.join(cells)} |\n\n"
        + f"curve (steps {', '.join(str(p['step']) for p in result['curve'])}): {curve}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--scenes",
        choices=sorted(SCENES),
        default="standard",
        help="training scenes (the held-out scenes are always standard)",
    )
    parser.add_argument("--question-first", action="store_true")
    parser.add_argument(
        "--dense-aux",
        type=float,
        default=0.0,
        metavar="WEIGHT",
        help="per-token shape/colour loss on the vision tower's output",
    )
    parser.add_argument(
        "--questions", type=int, default=1, help="questions per training image, as turns"
    )
    parser.add_argument("--preset", default="{}", help="JSON overrides of the tiny preset")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the curve and settings here (JSON)")
    args = parser.parse_args()
    result = run(args)
    label = " ".join(
        [f"scenes {args.scenes}"]
        + ["question first"] * args.question_first
        + [f"{args.questions} questions per image"] * (args.questions > 1)
        + [f"dense aux {args.dense_aux}"] * bool(args.dense_aux)
        + [f"preset {args.preset}"] * (args.preset != "{}")
        + args.set
    )
    print(markdown(result, label))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
