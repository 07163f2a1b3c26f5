"""reports/study.md: the verdicts first, then each finding's numbers, the experiments and
the pictures; and the same findings as flat numbers for MLflow."""

from __future__ import annotations

from avar.study.experiments import Finished
from avar.study.findings import PAPER_GAIN, STRONG, Finding
from avar.study.stats import Estimate

RULES = f"""Verdict rules (every interval 95%):
- F1: on the variants' models whose VAS is not flagged (collapsed system mass), not
  reproduced when the bootstrap interval of Pearson r between log10 VAS and accuracy lies
  below {STRONG}; else reproduced when it lies above 0 (so it reaches {STRONG}).
- F2: reproduced when the text cold-start's log10 VAS minus base's, and minus the
  multimodal cold-start's, both have t intervals over seeds above 0; not reproduced when
  either lies below 0.
- Intervals over seeds are Student's t ones (seed and question spread, Welch-Satterthwaite
  degrees of freedom), as few seeds need.
- F3: per model, reproduced when some setting's paired accuracy change has a
  Bonferroni-adjusted interval above 0; not reproduced when every one lies below
  +{PAPER_GAIN:.2f} (the paper's smallest gain).
- F4: reproduced when AVAR's paired accuracy gain over every other variant lies above 0;
  not reproduced when it lies below 0 against one of them.
- Otherwise: inconclusive at this scale."""


def cell(value, digits: int = 3) -> str:
    if isinstance(value, Estimate):
        return value.cell(digits)
    if isinstance(value, int | float):
        return f"{value:.{digits}f}"
    return "-"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(found: list[Finding], finished: list[Finished], about: dict) -> str:
    by_key = {f.key: f for f in found}
    lines = [
        "# avar study: the paper's findings on this model",
        "",
        f"{about['when']}, git {about['git_sha'][:10]}, {about['grid']} grid: "
        f"{about['experiments']} DVC experiments ({about['variants']} variants, seeds "
        f"{about['seeds']}), each model measured on {about['bench']} (n = {about['n']} "
        f"questions), {about['minutes']:.1f} minutes with {about['jobs']} jobs.",
        "",
        *table(
            ["finding", "claim", "verdict", "why"],
            [[f.key, f.claim, f"**{f.verdict}**", f.why] for f in found],
        ),
        "",
    ]
    f1 = by_key["F1"].numbers
    lines += ["## F1: VAS and accuracy", ""]
    rows = []
    for what, label in (
        ("models", "variants' models, VAS not flagged (benchmark)"),
        ("models_with_flagged", "variants' models, all (benchmark)"),
        ("checkpoints", "every checkpoint (held-out)"),
    ):
        numbers = f1[what]
        rows.append(
            [label, str(numbers["n"])]
            + [
                cell(numbers[k], 2)
                for k in (
                    "pearson_log10_vas",
                    "spearman_log10_vas",
                    "pearson_image_mass",
                    "spearman_image_mass",
                )
            ]
        )
    lines += table(
        [
            "points",
            "n",
            "Pearson r, log10 VAS",
            "Spearman, log10 VAS",
            "Pearson r, image mass",
            "Spearman, image mass",
        ],
        rows,
    )
    lines += ["", "![VAS against accuracy](study/vas_accuracy.png)", ""]

    f2 = by_key["F2"].numbers
    lines += ["## F2: after each cold-start, against base", ""]
    if not f2.get("deltas"):
        lines += [f"Not computed: {by_key['F2'].why}.", ""]
    if f2.get("deltas"):
        base = f2["base"]
        lines.append(
            f"base: log10 VAS {base['log10_vas']:.3f}, image mass {base['image_mass']:.4f}, "
            f"system mass {base['system_mass']:.4f}."
        )
        lines.append("")
        rows = [
            [name] + [cell(d[k], 4) for k in ("log10_vas", "image_mass", "system_mass")]
            for name, d in f2["deltas"].items()
        ]
        lines += table(
            [
                "variant",
                "log10 VAS minus base's",
                "image mass minus base's",
                "system mass minus base's",
            ],
            rows,
        )
        if "text_minus_multimodal" in f2:
            lines += [
                "",
                f"Text cold-start minus multimodal cold-start, log10 VAS: "
                f"{cell(f2['text_minus_multimodal'], 3)} (t interval over seeds).",
            ]
        lines += ["", "![Masses after each cold-start](study/masses.png)", ""]

    f3 = by_key["F3"].numbers
    lines += ["## F3: the intervention", ""]
    if not f3:
        lines += [f"Not computed: {by_key['F3'].why}.", ""]
    if f3:
        settings = list(next(iter(f3.values())))
        rows = [[name] + [cell(rows[s], 3) for s in settings] for name, rows in f3.items()]
        lines += table(["model", *settings], rows)
        lines += [
            "",
            "Accuracy with the intervention minus without, on the same questions and seeds.",
            "",
            "![Intervention](study/intervention.png)",
            "",
        ]

    f4 = by_key["F4"].numbers
    lines += ["## F4: the variants", ""]
    rows = [
        [name, cell(estimate), cell(f4["avar_minus"].get(name))]
        for name, estimate in f4["accuracy"].items()
    ]
    lines += table(["variant", "accuracy", "AVAR minus it (paired)"], rows)
    lines += ["", "![Variants](study/variants.png)", "", "## Experiments", ""]
    rows = [
        [
            f.experiment.name,
            f.experiment.variant,
            str(f.experiment.seed if f.experiment.seed is not None else "-"),
            " → ".join(("base", *f.experiment.chain)),
            cell(f.measurement.get("accuracy")),
            cell(f.measurement.get("log10_vas"), 2),
            cell(f.measurement.get("image_mass"), 4),
            cell(f.measurement.get("system_mass"), 4),
            f.rev[:7],
        ]
        for f in finished
    ]
    lines += table(
        [
            "experiment",
            "variant",
            "seed",
            "stages",
            "accuracy",
            "log10 VAS",
            "image mass",
            "system mass",
            "commit",
        ],
        rows,
    )
    lines += [
        "",
        "`dvc exp show --drop '.*' --keep "
        "'^(Experiment|accuracy|log10_vas|image_mass|system_mass|study.model|rl.seed)$'` "
        "lists the same experiments; `dvc exp apply NAME` brings one into the workspace.",
        "",
        RULES,
        "",
    ]
    return "\n".join(lines)


def flat(found: list[Finding]) -> dict[str, float]:
    """The findings' numbers as MLflow metrics (names MLflow accepts)."""
    from avar.stages.registry import spec_slug

    metrics: dict[str, float] = {}

    def put(name: str, value) -> None:
        if isinstance(value, Estimate):
            metrics[name] = value.value
            if value.low is not None and value.high is not None:
                metrics[f"{name}_low"], metrics[f"{name}_high"] = value.low, value.high
        elif isinstance(value, dict):
            for key, inner in value.items():
                put(f"{name}/{spec_slug(str(key))}", inner)
        elif isinstance(value, int | float):
            metrics[name] = float(value)

    for finding in found:
        put(finding.key, finding.numbers)
    return metrics
