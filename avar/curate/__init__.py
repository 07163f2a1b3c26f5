"""`avar stage curate`: raw sources -> the text cold-start set, the visual-anchored
multimodal cold-start set, the RL set and the eval set, with a report of every filter.

    sources ─ dedup (question + image hash) ─ split: text | visual → eval / rl / sft
            ─ leakage (no eval image, question or pair in a training set)
            ─ sft traces (scene, teacher, or the record's own) ─ answer and format checks
            ─ length filter (response tokens) ─ write + validate ─ report
"""

from __future__ import annotations

import io
import json
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path

from PIL import Image

from avar.config import Params
from avar.curate.sources import Candidate, read_source
from avar.curate.teacher import teacher_chat
from avar.curate.traces import scene_trace
from avar.data.chats import format_response
from avar.data.files import open_image
from avar.endpoints import build_teacher
from avar.grading import grade
from avar.io import atomic_dir, write_json
from avar.rewards import format_reward

log = logging.getLogger(__name__)
SETS = ("text", "visual", "rl", "eval")
EXAMPLES_PER_REASON = 5


class CurationReport:
    """Counts read, kept per set and dropped per reason, per source; a few examples."""

    def __init__(self) -> None:
        self.read: Counter = Counter()
        self.kept: dict[str, Counter] = defaultdict(Counter)
        self.dropped: dict[str, Counter] = defaultdict(Counter)
        self.examples: dict[str, list[dict]] = defaultdict(list)

    def drop(self, source: str, reason: str, where: str, detail: str = "") -> None:
        self.dropped[source][reason] += 1
        if len(self.examples[reason]) < EXAMPLES_PER_REASON:
            self.examples[reason].append({"where": where, "detail": detail})

    def as_dict(self, sets: dict[str, list[Candidate]], seconds: float, teacher) -> dict:
        sources = sorted(set(self.read) | set(self.dropped))
        return {
            "sets": {name: len(rows) for name, rows in sets.items()},
            "sources": {
                s: {
                    "read": self.read[s],
                    "kept": dict(self.kept[s]),
                    "dropped": dict(self.dropped[s]),
                }
                for s in sources
            },
            "dropped": dict(sum((self.dropped[s] for s in sources), Counter())),
            "examples": dict(self.examples),
            "teacher": teacher and {"cached": teacher.hits, "asked": teacher.misses},
            "seconds": round(seconds, 1),
        }


def dedup(candidates: list[Candidate], report: CurationReport) -> list[Candidate]:
    seen: dict[tuple, str] = {}
    kept = []
    for c in candidates:
        key = c.key()
        if key in seen:
            report.drop(c.source, "duplicate", c.where, f"same question and images as {seen[key]}")
            continue
        seen[key] = c.where
        kept.append(c)
    return kept


def drop_leaks(
    train: list[Candidate], held: list[Candidate], report: CurationReport
) -> list[Candidate]:
    """Training rows sharing an image with an eval row, or the question of a text-only eval
    row, or both question and images of any eval row, are dropped."""
    images = {h for c in held for h in c.image_hashes()}
    text_questions = {c.key()[0] for c in held if not c.images}
    pairs = {c.key() for c in held}
    kept = []
    for c in train:
        if images & set(c.image_hashes()):
            report.drop(c.source, "leak", c.where, "an image of the eval set")
        elif c.key() in pairs or (not c.images and c.key()[0] in text_questions):
            report.drop(c.source, "leak", c.where, "a question of the eval set")
        else:
            kept.append(c)
    return kept


def split(visual: list[Candidate], fraction: float, rng: random.Random):
    """(first, rest): a seeded `fraction` of the rows and the others, in input order."""
    order = list(range(len(visual)))
    rng.shuffle(order)
    chosen = set(order[: round(fraction * len(visual))])
    return (
        [c for i, c in enumerate(visual) if i in chosen],
        [c for i, c in enumerate(visual) if i not in chosen],
    )


def trace_mode(c: Candidate, mode: str, has_teacher: bool) -> str:
    if mode != "auto":
        return mode
    if c.record.get("scene") and len(c.record["solution"]) >= 2:
        return "scene"
    return "teacher" if has_teacher else "keep"


def write_traces(sft, modes: Mapping[str, str], cfg, teacher, report: CurationReport, rng) -> list:
    """Give every SFT row its response; drop wrong, malformed or failed teacher traces."""
    kept, asked = [], []
    for c in sft:
        mode = trace_mode(c, modes[c.source], teacher is not None)
        if mode == "scene":
            c.record["response"] = scene_trace(c.record, rng, cfg.reflection_rate)
        elif mode == "teacher":
            if teacher is None:
                raise ValueError(
                    f"curate source {c.source!r} asks for teacher traces; "
                    "set curate.teacher.kind to http or local"
                )
            asked.append(c)
            continue
        else:
            c.record["response"] = format_response(c.record)
        kept.append(c)
    if asked:
        chats = [teacher_chat(c.record["question"], _pil(c)) for c in asked]
        for c, text in zip(asked, teacher.complete(chats), strict=True):
            if text is None:
                report.drop(c.source, "teacher_error", c.where, "the teacher did not answer")
            elif not format_reward([text])[0]:
                report.drop(c.source, "bad_format", c.where, text[:120])
            elif not grade(text, c.record["answer"], c.record["answer_type"], c.record["choices"]):
                report.drop(
                    c.source,
                    "wrong_answer",
                    c.where,
                    f"expected {c.record['answer']}: {text[-80:]}",
                )
            else:
                c.record["response"] = text
                kept.append(c)
    return kept


def _pil(c: Candidate) -> list[Image.Image]:
    return [open_image(io.BytesIO(data)) for data in c.images]


def within_length(rows, tokenizer, limit: int, report: CurationReport) -> list[Candidate]:
    kept = []
    for c in rows:
        n = len(tokenizer(c.record["response"]).input_ids)
        if n > limit:
            report.drop(c.source, "too_long", c.where, f"{n} response tokens > {limit}")
        else:
            kept.append(c)
    return kept


def write_set(folder: Path, rows: list[Candidate]) -> None:
    """data.jsonl and images/ of one set; ids made unique across sources."""
    (folder / "images").mkdir(parents=True)
    used, lines = set(), []
    for c in rows:
        record = dict(c.record)
        if record["id"] in used:
            record["id"] = f"{c.source}-{record['id']}"
        used.add(record["id"])
        names = []
        for index, data in enumerate(c.images):
            extension = (Image.open(io.BytesIO(data)).format or "png").lower()
            names.append(f"images/{record['id']}-{index}.{extension}")
            (folder / names[-1]).write_bytes(data)
        record["images"] = names
        lines.append(json.dumps(record, sort_keys=True))
    (folder / "data.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def curate(params: Params, tokenizer) -> dict:
    """Build the four sets under `curate.out_dir`; write and return the report."""
    from avar.data import require_valid

    cfg = params.curate
    start = time.monotonic()
    report = CurationReport()
    pools: dict[str, list[Candidate]] = {"train": [], "eval": []}
    modes = {}
    for source in cfg.sources:
        rows = read_source(
            source,
            lambda reason, where, detail, s=source.name: report.drop(s, reason, where, detail),
        )
        report.read[source.name] += len(rows) + sum(report.dropped[source.name].values())
        pools[source.split] += rows
        modes[source.name] = source.traces
    held = dedup(pools["eval"], report)
    train = dedup(pools["train"], report)
    rng = random.Random(f"avar-curate-{cfg.seed}")
    text = [c for c in train if c.record["kind"] == "text"]
    visual = [c for c in train if c.record["kind"] == "visual"]
    held_out, visual = split(visual, cfg.eval_fraction, rng)
    held += held_out
    text, visual = drop_leaks(text, held, report), drop_leaks(visual, held, report)
    rl, sft = split(visual, cfg.rl_fraction, rng)
    teacher = build_teacher(cfg.teacher, params.model.device, params.model.dtype)
    sft = write_traces(sft, modes, cfg, teacher, report, rng)
    for c in text:
        c.record["response"] = format_response(c.record)
    text = within_length(text, tokenizer, cfg.max_response_tokens, report)
    sft = within_length(sft, tokenizer, cfg.max_response_tokens, report)
    sets = {"text": text, "visual": sft, "rl": rl, "eval": held}
    for name, rows in sets.items():
        for c in rows:
            report.kept[c.source][name] += 1
    with atomic_dir(cfg.out_dir) as tmp:
        for name, rows in sets.items():
            write_set(tmp / name, rows)
        for name in SETS:  # each set on its own: a source's id may recur in another set
            if sets[name]:
                require_valid([tmp / name / "data.jsonl"])
        result = report.as_dict(sets, time.monotonic() - start, teacher)
        write_json(tmp / "report.json", result)
    write_json(cfg.metrics, result)
    for name, count in result["sets"].items():
        log.info("curate: %s set %d rows", name, count)
    return result


__all__ = ["SETS", "curate"]
