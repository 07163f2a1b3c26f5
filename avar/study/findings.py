"""F1-F4 from the study's experiments: numbers with their intervals, and a verdict each.

Verdicts are one of REPRODUCED, NOT_REPRODUCED or INCONCLUSIVE, by rules stated beside
each finding (and in the report): a claim counts as reproduced only when its interval
excludes the null, and as refuted only when the interval excludes the claim.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avar.study.experiments import Finished
from avar.study.stats import (
    Estimate,
    bootstrap_correlation,
    paired_difference,
    pearson,
    seed_interval,
    spearman,
    t_interval,
)

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
BASE, TEXT, MULTIMODAL, AVAR = "base", "text_coldstart", "mm_from_base", "avar"
"""The variants the findings are about (names under `study.variants`)."""
STRONG = 0.5
"""F1: an interval of r wholly under this rules out "accuracy tracks VAS" (paper: 0.96)."""
PAPER_R = 0.9616
"""F1: the paper's r between VAS and accuracy across models."""
PAPER_GAIN = 0.01
"""F3: the paper's smallest gain from the intervention (+1 point)."""
MASSES = ("log10_vas", "image_mass", "system_mass")


@dataclass
class Finding:
    key: str
    claim: str
    verdict: str
    why: str
    numbers: dict = field(default_factory=dict)


def by_variant(finished: list[Finished]) -> dict[str, list[Finished]]:
    """variant -> its experiments, by seed."""
    groups: dict[str, list[Finished]] = defaultdict(list)
    for item in finished:
        groups[item.experiment.variant].append(item)
    for items in groups.values():
        items.sort(key=lambda f: -1 if f.experiment.seed is None else f.experiment.seed)
    return dict(groups)


def finite(*values) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def model_points(finished: list[Finished]) -> list[dict]:
    """One point per experiment: its model's accuracy, VAS and masses on the benchmark."""
    points = []
    for item in finished:
        m = item.measurement
        if finite(m.get("log10_vas"), m.get("accuracy"), m.get("image_mass")):
            points.append(
                {
                    "label": item.experiment.label,
                    "variant": item.experiment.variant,
                    "flagged": bool(m.get("vas_flag")),
                    **{k: m[k] for k in ("accuracy", *MASSES)},
                }
            )
    return points


def checkpoint_points(finished: list[Finished]) -> list[dict]:
    """Every scored checkpoint of every experiment's trained stages, each once (an
    experiment that found a stage in DVC's run cache carries the same rows)."""
    seen, points = set(), []
    for item in finished:
        for stage, report in item.stages.items():
            for row in report.get("checkpoints", []):
                values = [row.get(f"heldout/{k}") for k in ("accuracy", *MASSES)]
                key = (stage, row.get("step"), *values)
                if key in seen or not finite(*values):
                    continue
                seen.add(key)
                points.append(
                    {
                        "label": f"{stage}-{row['step']}",
                        "variant": item.experiment.variant,
                        "flagged": bool(row.get("heldout/vas_flag")),
                        **dict(zip(("accuracy", *MASSES), values, strict=True)),
                    }
                )
    return points


def correlations(points: list[dict], resamples: int) -> dict:
    """Pearson and Spearman r of accuracy with log10 VAS and with image mass alone."""
    accuracy = [p["accuracy"] for p in points]
    found: dict[str, Any] = {"n": len(points)}
    for x in ("log10_vas", "image_mass"):
        values = [p[x] for p in points]
        for name, fn in (("pearson", pearson), ("spearman", spearman)):
            found[f"{name}_{x}"] = bootstrap_correlation(values, accuracy, fn, resamples)
    return found


def f1_verdict(r: Estimate) -> tuple[str, str]:
    """The stronger rule decides: an interval wholly under STRONG rules the claim out,
    and only an interval above 0 that reaches STRONG counts as reproducing it."""
    if not math.isfinite(r.value):
        return INCONCLUSIVE, "accuracy or VAS does not vary over the measured models"
    if r.low is None:
        return INCONCLUSIVE, f"Pearson r = {r.cell(2)} over {r.n} models: no interval"
    if r.below(STRONG):
        return NOT_REPRODUCED, (
            f"Pearson r = {r.cell(2)} over {r.n} models lies below {STRONG}: "
            "accuracy does not track VAS closely"
        )
    if r.above(0):
        why = f"Pearson r = {r.cell(2)} over {r.n} models lies above 0 and reaches {STRONG}"
        return REPRODUCED, why + (
            f", though below the paper's {PAPER_R}" if r.below(PAPER_R) else ""
        )
    return INCONCLUSIVE, f"Pearson r = {r.cell(2)} over {r.n} models includes 0"


def f1(finished: list[Finished], resamples: int) -> Finding:
    """Decided on the models whose VAS is measured (a collapsed system mass flags it: its
    VAS is a ratio over almost nothing); the correlation with every model beside it."""
    points = model_points(finished)
    models = correlations([p for p in points if not p["flagged"]], resamples)
    with_flagged = correlations(points, resamples)
    checkpoints = correlations(checkpoint_points(finished), resamples)
    r = models["pearson_log10_vas"]
    verdict, why = f1_verdict(r)
    flagged = with_flagged["n"] - models["n"]
    if flagged:
        everyone = with_flagged["pearson_log10_vas"]
        why += f" (left out: {flagged} flagged models; with them r = {everyone.cell(2)})"
    image = models["pearson_image_mass"]
    why += f"; image mass alone gives r = {image.cell(2)}" if finite(image.value, r.value) else ""
    return Finding(
        "F1",
        "Reasoning accuracy tracks VAS across models (paper: r = 0.9616)",
        verdict,
        why,
        {"models": models, "models_with_flagged": with_flagged, "checkpoints": checkpoints},
    )


def seed_values(items: list[Finished], key: str) -> np.ndarray:
    return np.array([item.measurement.get(key) for item in items], dtype=float)


def f2(groups: dict[str, list[Finished]]) -> Finding:
    claim = (
        "Lazy attention localization: multimodal cold-start leaves VAS near base's, "
        "text-only cold-start raises it"
    )
    if BASE not in groups:
        return Finding("F2", claim, INCONCLUSIVE, "no base variant was measured")
    base = groups[BASE][0].measurement
    if not finite(*(base.get(k) for k in MASSES)):
        return Finding(
            "F2", claim, INCONCLUSIVE, f"base's VAS was not measured ({base.get('vas_flag')})"
        )
    deltas = {}
    for name, items in groups.items():
        values = {k: seed_values(items, k) - base[k] for k in MASSES}
        if items[0].experiment.model in ("coldstart_text", "sft_mm") and all(
            np.isfinite(v).all() for v in values.values()
        ):
            deltas[name] = {k: t_interval(v) for k, v in values.items()}
    numbers: dict[str, Any] = {"base": {k: base[k] for k in MASSES}, "deltas": deltas}
    if TEXT not in deltas or MULTIMODAL not in deltas:
        return Finding(
            "F2", claim, INCONCLUSIVE, f"needs the variants {TEXT} and {MULTIMODAL}", numbers
        )
    text, multimodal = (
        {i.experiment.seed: i.measurement["log10_vas"] for i in groups[name]}
        for name in (TEXT, MULTIMODAL)
    )
    gap = t_interval([text[s] - multimodal[s] for s in text if s in multimodal])
    numbers["text_minus_multimodal"] = gap
    rise = deltas[TEXT]["log10_vas"]
    if rise.above(0) and gap.above(0):
        verdict = REPRODUCED
    elif rise.below(0) or gap.below(0):
        verdict = NOT_REPRODUCED
    else:
        verdict = INCONCLUSIVE
    why = (
        f"log10 VAS, text cold-start minus base: {rise.cell(2)}; minus the multimodal "
        f"cold-start: {gap.cell(2)}; multimodal cold-start minus base: "
        f"{deltas[MULTIMODAL]['log10_vas'].cell(2)}"
    )
    driven = [
        name
        for name, d in deltas.items()
        if d["log10_vas"].above(0) and d["system_mass"].below(0) and not d["image_mass"].above(0)
    ]
    if driven:
        why += (
            f"; the reviewer's objection holds for {', '.join(driven)}: VAS rises while the "
            "image mass does not, the system mass falls"
        )
    return Finding("F2", claim, verdict, why, numbers)


def grades(items: list[Finished], setting: str = "") -> np.ndarray:
    """[seeds, questions] grades of a variant (under an intervention setting)."""
    rows = [i.grades["intervened"][setting] if setting else i.grades["correct"] for i in items]
    return np.array(rows, dtype=float)


def f3(groups: dict[str, list[Finished]]) -> Finding:
    claim = "A training-free intervention toward image tokens helps (paper: +1-2 points)"
    swept = {n: items for n, items in groups.items() if items[0].grades.get("intervened")}
    if not swept:
        return Finding("F3", claim, INCONCLUSIVE, "no variant was measured under the intervention")
    numbers, verdicts = {}, {}
    for name, items in swept.items():
        settings = list(items[0].grades["intervened"])
        level = 1 - 0.05 / len(settings)  # Bonferroni over the settings, for the verdict
        plain = grades(items)
        rows, strict = {}, {}
        for setting in settings:
            rows[setting] = paired_difference(grades(items, setting), plain)
            strict[setting] = paired_difference(grades(items, setting), plain, level=level)
        numbers[name] = rows
        if any(e.above(0) for e in strict.values()):
            verdicts[name] = REPRODUCED
        elif all(e.below(PAPER_GAIN) for e in strict.values()):
            verdicts[name] = NOT_REPRODUCED
        else:
            verdicts[name] = INCONCLUSIVE
    verdict = (
        REPRODUCED
        if REPRODUCED in verdicts.values()
        else NOT_REPRODUCED
        if set(verdicts.values()) == {NOT_REPRODUCED}
        else INCONCLUSIVE
    )
    why = "; ".join(f"{name}: {v}" for name, v in verdicts.items())
    why += (
        " (a setting helps when its Bonferroni-adjusted interval lies above 0; refuted when "
        f"every one lies below +{PAPER_GAIN:.2f})"
    )
    return Finding("F3", claim, verdict, why, numbers)


def aligned(a: list[Finished], b: list[Finished]) -> tuple[np.ndarray, np.ndarray]:
    """Grades of two variants on the same (seed, question) pairs: common seeds, or a
    seedless variant's one row against each seed of the other."""
    ids_a, ids_b = a[0].grades["ids"], b[0].grades["ids"]
    if ids_a != ids_b:
        raise ValueError(
            f"{a[0].experiment.name} and {b[0].experiment.name} answered different questions"
        )
    if a[0].experiment.seed is None or b[0].experiment.seed is None:
        ga, gb = grades(a), grades(b)
        rows = max(len(ga), len(gb))
        return np.repeat(ga, rows // len(ga), 0), np.repeat(gb, rows // len(gb), 0)
    common = {i.experiment.seed for i in a} & {i.experiment.seed for i in b}
    pick = lambda items: [i for i in items if i.experiment.seed in common]  # noqa: E731
    return grades(pick(a)), grades(pick(b))


def f4(groups: dict[str, list[Finished]]) -> Finding:
    claim = "Full AVAR beats each of its parts left out (paper: +7.0 over base on average)"
    accuracy = {name: seed_interval(grades(items)) for name, items in groups.items()}
    numbers: dict = {"accuracy": accuracy, "avar_minus": {}}
    if AVAR not in groups:
        return Finding("F4", claim, INCONCLUSIVE, f"no {AVAR} variant was measured", numbers)
    for name, items in groups.items():
        if name != AVAR:
            ours, theirs = aligned(groups[AVAR], items)
            numbers["avar_minus"][name] = paired_difference(ours, theirs)
    gaps: dict[str, Estimate] = numbers["avar_minus"]
    losses = [n for n, e in gaps.items() if e.below(0)]
    if gaps and all(e.above(0) for e in gaps.values()):
        verdict, why = REPRODUCED, "AVAR's paired gain is above 0 against every other variant"
    elif losses:
        verdict, why = NOT_REPRODUCED, "AVAR is worse than " + ", ".join(losses)
    else:
        ties = [n for n, e in gaps.items() if not e.above(0)]
        verdict, why = INCONCLUSIVE, "AVAR's gain includes 0 against " + ", ".join(ties)
    if BASE in gaps:
        why += f"; AVAR minus base: {gaps[BASE].cell(3)}"
    return Finding("F4", claim, verdict, why, numbers)


def findings(finished: list[Finished], resamples: int) -> list[Finding]:
    groups = by_variant(finished)
    return [f1(finished, resamples), f2(groups), f3(groups), f4(groups)]
