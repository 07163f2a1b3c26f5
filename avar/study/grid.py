"""The study's experiments: each variant of the `study` section once per seed (a variant
that ends at the base model once), as the `-S` overrides of one `dvc exp run`.

Experiments run in rounds by how many stages they train after base, so that an
experiment finds the stages it shares with a shorter one (the text cold-start of its
seed, an SFT model) in DVC's run cache instead of training them again alongside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avar.config import ConfigError, Params, load_params

INIT = {"coldstart_text": "base"}
"""A training stage's starting model where params do not name one."""
SEEDED = ("coldstart_text", "sft_mm", "rl")
"""The stages a study seed seeds (base, like a released checkpoint, is shared)."""


@dataclass(frozen=True)
class Experiment:
    variant: str
    seed: int | None
    """The training seed; None for a variant that ends at the base model."""
    model: str
    """The stage whose model is measured."""
    chain: tuple[str, ...]
    """The stages trained after base to reach the model, in order."""
    overrides: tuple[str, ...]
    """`section.key=value` for `dvc exp run -S`: the variant's, the seed's, the study's."""
    name: str
    """The DVC experiment's name (and the MLflow child run's)."""

    @property
    def label(self) -> str:
        return self.variant if self.seed is None else f"{self.variant} seed {self.seed}"


def chain(params: Params, model: str) -> tuple[str, ...]:
    """The training stages after base that lead to `model`'s stage, in order."""
    stages: list[str] = []
    while model != "base":
        if model in stages:
            raise ConfigError(
                f"{model}.init_from", f"a chain of stages that ends at base: {stages}"
            )
        stages.insert(0, model)
        model = INIT.get(model) or getattr(params, model).init_from
    return tuple(stages)


def yaml_list(items: list[str]) -> str:
    """A list as `dvc exp run -S` and avar's -S both read it: ['a=1,b=2', ...]."""
    return "[" + ",".join(f"'{item}'" for item in items) + "]"


def experiments(
    params_file: Path, params: Params, quick: bool, stamp: str, given: list[str] | None = None
) -> list[Experiment]:
    """Every experiment of the grid (the quick one with `quick`), checked: each one's
    params load with its overrides, or the variant is named in one line. `given`: the
    overrides of `avar study -S`, which every experiment gets first."""
    cfg = params.study
    seeds = cfg.quick.seeds if quick else cfg.seeds
    names = (cfg.quick.variants or list(cfg.variants)) if quick else list(cfg.variants)
    sweep = (cfg.quick.sweep or cfg.sweep) if quick else cfg.sweep
    common = [*(given or []), *(cfg.quick.set if quick else [])]
    if not names:
        raise ConfigError("study.variants", "expected at least one variant, got none")
    found = []
    for name in names:
        variant = cfg.variants[name]
        for seed in [None] if variant.model == "base" else seeds:
            seeded = [] if seed is None else [f"{stage}.seed={seed}" for stage in SEEDED]
            study = [f"study.model={variant.model}"]
            study.append(f"study.intervene={yaml_list(sweep if variant.sweep else [])}")
            overrides = (*common, *variant.set, *seeded, *study)
            try:
                resolved = load_params(params_file, list(overrides))
            except ConfigError as err:
                raise ConfigError(f"study.variants.{name}", str(err)) from None
            suffix = "" if seed is None else f"-s{seed}"
            found.append(
                Experiment(
                    variant=name,
                    seed=seed,
                    model=variant.model,
                    chain=chain(resolved, variant.model),
                    overrides=overrides,
                    name=f"{name.replace('_', '-')}{suffix}-{stamp}",
                )
            )
    return found


def rounds(found: list[Experiment]) -> list[list[Experiment]]:
    """The experiments grouped by how many stages they train, shortest first."""
    lengths = sorted({len(e.chain) for e in found})
    return [[e for e in found if len(e.chain) == n] for n in lengths]
