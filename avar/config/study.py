"""The `study` section: the paper's findings over a grid of variants x seeds (avar/study)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from avar.config.errors import require as _require
from avar.config.errors import require_spec
from avar.config.specs import BENCHMARK_NAMES, parse_intervention

StageModel = Literal["base", "coldstart_text", "sft_mm", "rl"]


def _check_overrides(items: list[str], key: str) -> None:
    for item in items:
        name, sep, _ = item.partition("=")
        _require(bool(sep) and "." in name, key, "section.key=value overrides", item)


@dataclass
class StudyVariant:
    """One arm of the study: the pipeline with some params changed, ending at one model."""

    model: StageModel = "rl"
    """The stage whose published model the variant ends with (what the study measures);
    DVC runs only that stage and what it starts from."""
    set: list[str] = field(default_factory=list)
    """The variant's changes to the pipeline's params, `section.key=value` as in `dvc exp
    run -S`, e.g. `sft_mm.alpha=0`."""
    sweep: bool = False
    """Also measure every `study.sweep` intervention setting on this variant's model (F3)."""

    def check(self, key: str) -> None:
        _check_overrides(self.set, f"{key}.set")


SWEEP = [
    "alpha=0.1,layers=0-3",
    "alpha=0.3,layers=0-3",
    "alpha=0.6,layers=0-3",
    "alpha=0.3,layers=2-3",
    "alpha=0.6,layers=2-3",
    "alpha=0.3,layers=0-1",
]
PLAIN_SFT = ["sft_mm.alpha=0.0", "sft_mm.beta=0.0"]


def default_variants() -> dict[str, StudyVariant]:
    """The paper's arms: base; each cold-start alone; text cold-start straight to RL; AVAR
    and AVAR with the attention loss or the visual reward left out."""
    return {
        "base": StudyVariant("base", sweep=True),
        "text_coldstart": StudyVariant("coldstart_text"),
        "mm_from_base": StudyVariant("sft_mm", ["sft_mm.init_from=base", *PLAIN_SFT]),
        "mm_from_text": StudyVariant("sft_mm", list(PLAIN_SFT)),
        "attention_from_text": StudyVariant("sft_mm"),
        "text_rl": StudyVariant("rl", ["rl.init_from=coldstart_text"]),
        "avar": StudyVariant("rl", sweep=True),
        "avar_no_attention_loss": StudyVariant("rl", list(PLAIN_SFT)),
        "avar_no_visual_reward": StudyVariant("rl", ["rl.lambda_visual=0.0"]),
    }


@dataclass
class StudyQuick:
    """`avar study --quick`: a smaller grid with shorter training, for a first look and
    the tests."""

    seeds: list[int] = field(default_factory=lambda: [0, 1])
    """Training seeds of the quick grid."""
    variants: list[str] = field(
        default_factory=lambda: [
            "base",
            "text_coldstart",
            "mm_from_base",
            "attention_from_text",
            "avar",
            "avar_no_visual_reward",
        ]
    )
    """The variants it runs (names under `study.variants`); empty: all."""
    sweep: list[str] = field(default_factory=lambda: ["alpha=0.3,layers=0-3"])
    """Its intervention settings; empty: `study.sweep`."""
    set: list[str] = field(
        default_factory=lambda: [
            "base.max_steps=400",
            "base.save_steps=200",
            "coldstart_text.max_steps=100",
            "coldstart_text.save_steps=50",
            "sft_mm.max_steps=100",
            "sft_mm.save_steps=50",
            "rl.max_steps=6",
            "rl.save_steps=3",
            "checkpoint_eval.limit=32",
            "study.limit=120",
        ]
    )
    """Overrides every quick experiment gets on top of its variant's (fewer steps)."""


@dataclass
class StudyConfig:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Training seeds: each variant's stages after base train once per seed (the base
    model, like a released checkpoint, is shared)."""
    jobs: int = 2
    """DVC experiments run at once (`dvc queue start -j`); the cores are shared out."""
    bench: str = "synthetic"
    """Benchmark each variant's model is measured on (accuracy and VAS of its answers)."""
    limit: int = 0
    """The first N questions of the benchmark; 0: all."""
    model: StageModel = "rl"
    """What the `study` stage measures in one experiment (each variant sets it)."""
    intervene: list[str] = field(default_factory=list)
    """Intervention settings the `study` stage also measures (a variant with `sweep` sets
    it to `study.sweep`)."""
    sweep: list[str] = field(default_factory=lambda: list(SWEEP))
    """F3's settings: `alpha=F,layers=A-B[,beta=F]`, as `avar eval --intervene`."""
    bootstrap: int = 2000
    """Bootstrap resamples behind F1's correlation intervals (seed-level intervals are t ones)."""
    metrics: str = "metrics/study.json"
    """The `study` stage's numbers (per-question grades beside it, in metrics/study/)."""
    report: str = "reports/study.md"
    """Where `avar study` writes the findings (plots beside it, in study/)."""
    variants: dict[str, StudyVariant] = field(default_factory=default_variants)
    """The arms, by name; one named `base` with model base anchors F2 and F4."""
    quick: StudyQuick = field(default_factory=StudyQuick)
    """The `--quick` grid."""

    def check(self, key: str) -> None:
        _require(bool(self.seeds), f"{key}.seeds", "a non-empty list of ints", self.seeds)
        _require(
            len(set(self.seeds)) == len(self.seeds), f"{key}.seeds", "distinct seeds", self.seeds
        )
        _require(self.jobs >= 1, f"{key}.jobs", "an int >= 1", self.jobs)
        _require(
            self.bench in BENCHMARK_NAMES,
            f"{key}.bench",
            f"one of {sorted(BENCHMARK_NAMES)}",
            self.bench,
        )
        _require(self.limit >= 0, f"{key}.limit", "an int >= 0", self.limit)
        _require(self.bootstrap >= 100, f"{key}.bootstrap", "an int >= 100", self.bootstrap)
        for name in ("intervene", "sweep"):
            for i, spec in enumerate(getattr(self, name)):
                _require_intervention(spec, f"{key}.{name}[{i}]")
        for i, spec in enumerate(self.quick.sweep):
            _require_intervention(spec, f"{key}.quick.sweep[{i}]")
        for name, variant in self.variants.items():
            _require(
                name.replace("_", "").isalnum(),
                f"{key}.variants.{name}",
                "a name of letters, digits and underscores",
                name,
            )
            variant.check(f"{key}.variants.{name}")
        unknown = [v for v in self.quick.variants if v not in self.variants]
        _require(
            not unknown, f"{key}.quick.variants", f"names from {sorted(self.variants)}", unknown
        )
        _check_overrides(self.quick.set, f"{key}.quick.set")


def _require_intervention(spec: str, key: str) -> None:
    _require(bool(spec.strip()), key, "alpha=F,layers=A-B[,beta=F]", spec)
    require_spec(parse_intervention, spec, key)
