"""Small string specs used in params.yaml and on the command line.

- a layer spec: `all` or an inclusive range `A-B`;
- an intervention spec: `alpha=0.2,layers=2-8[,beta=0.1]`, PAI-style attention steering
  toward image keys (and, with beta > 0, away from system keys) in layers A..B.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALL_LAYERS = "all"
BENCHMARK_NAMES = (
    "mathvista",
    "mathvision",
    "mathverse",
    "mmmu",
    "mmmu_pro",
    "mmstar",
    "hallusionbench",
    "synthetic",
)
"""The benchmarks `eval.benches` may name; avar.eval.benchmarks has a loader for each."""
RANKED_STAGES = ("base", "coldstart_text", "sft_mm", "rl", "vas", "eval")
"""The stages that run on several ranks when `launch` asks (avar.stages.registry agrees)."""


def layer_range(spec: str) -> tuple[int, int] | None:
    """(first, last) of an inclusive `A-B` spec; None for `all`. ValueError if malformed."""
    if spec == ALL_LAYERS:
        return None
    first, sep, last = spec.partition("-")
    if not (sep and first.isdigit() and last.isdigit() and int(first) <= int(last)):
        raise ValueError(f"expected 'all' or an inclusive layer range like '0-3', got {spec!r}")
    return int(first), int(last)


def layer_list(spec: str, n_layers: int) -> list[int]:
    """The layers a spec names, checked against the model's depth."""
    bounds = layer_range(spec)
    if bounds is None:
        return list(range(n_layers))
    if bounds[1] >= n_layers:
        raise ValueError(f"layers {spec!r}: the model has layers 0-{n_layers - 1}")
    return list(range(bounds[0], bounds[1] + 1))


@dataclass(frozen=True)
class InterventionSpec:
    """Add `alpha * |score|` to image-key scores (and subtract `beta * |score|` from
    system-key scores) in the given layers, for generated / response query rows."""

    alpha: float
    layers: str
    beta: float = 0.0

    def __str__(self) -> str:
        beta = f",beta={self.beta:g}" if self.beta else ""
        return f"alpha={self.alpha:g},layers={self.layers}{beta}"


def parse_intervention(text: str) -> InterventionSpec | None:
    """`alpha=0.2,layers=2-8[,beta=0.1]` -> InterventionSpec; empty -> None."""
    if not text.strip():
        return None
    fields: dict[str, str] = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or name not in ("alpha", "layers", "beta"):
            raise ValueError(
                f"intervention {text!r}: expected comma-separated alpha=F, layers=A-B, "
                f"optional beta=F; got {item.strip()!r}"
            )
        fields[name] = value.strip()
    missing = {"alpha", "layers"} - fields.keys()
    if missing:
        raise ValueError(f"intervention {text!r}: missing {', '.join(sorted(missing))}")
    try:
        alpha, beta = float(fields["alpha"]), float(fields.get("beta", 0))
    except ValueError:
        raise ValueError(f"intervention {text!r}: alpha and beta must be numbers") from None
    if not (math.isfinite(alpha) and math.isfinite(beta)) or alpha < 0 or beta < 0:
        raise ValueError(f"intervention {text!r}: alpha and beta must be finite and >= 0")
    if layer_range(fields["layers"]) is None:
        raise ValueError(f"intervention {text!r}: layers must be a range like 2-8, not 'all'")
    return InterventionSpec(alpha, fields["layers"], beta)
