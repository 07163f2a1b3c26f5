"""Visual Attention Score from attention masses.

For a sequence and a layer, the image mass and the system mass are the head-averaged
mean attention that the query tokens put on image keys and on system-prompt keys. The
layer's VAS is image mass / system mass; the sequence's VAS is the mean over the selected
layers. The absolute masses are always reported beside the ratio: a ratio can rise just
because the system mass falls.

Summaries (`vas_summary`): beside the paper's mean of per-layer ratios, the ratio of the
layer-averaged masses and log10 of the VAS. Where the system mass is below `SYSTEM_FLOOR`
the ratio measures how close to zero the denominator got, not attention on the image, and
reports flag it instead of printing a number like 5e9.
"""

from __future__ import annotations

import math

import torch

from avar.segments import Segment

# Below this mean system mass (one part in a thousand of the response's attention) a VAS is
# flagged, not shown: the tiny model drove it to 1e-10 under the paper's unbounded loss.
SYSTEM_FLOOR = 1e-3

# Reported masses: name -> segment of the keys.
MASS_SEGMENTS = {
    "image": Segment.IMAGE,
    "system": Segment.SYSTEM,
    "text": Segment.USER_TEXT,
    "response": Segment.RESPONSE,
    "other": Segment.TEMPLATE,
}


def head_mean_masses(masses: torch.Tensor) -> dict[str, torch.Tensor]:
    """masses [L, B, H, S] -> name -> [L, B], averaged over heads."""
    return {name: masses[..., segment].mean(dim=-1) for name, segment in MASS_SEGMENTS.items()}


def vas_per_layer(masses: torch.Tensor) -> torch.Tensor:
    """[L, B]: image mass / system mass per layer; NaN where a sequence has no system mass."""
    layer_masses = head_mean_masses(masses)
    system = layer_masses["system"]
    return torch.where(system > 0, layer_masses["image"] / system, torch.nan)


def sequence_vas(masses: torch.Tensor) -> torch.Tensor:
    """[B]: VAS per sequence, the mean of its per-layer ratios."""
    return vas_per_layer(masses).mean(dim=0)


def vas_summary(vas: float | None, image_mass: float | None, system_mass: float | None) -> dict:
    """What reports show beside a VAS: `log10_vas`, `vas_of_means` (mean image mass / mean
    system mass) and `vas_flag` (None, or why the VAS is not worth reading)."""
    flag = None
    if system_mass is not None and system_mass < SYSTEM_FLOOR:
        flag = f"system mass {system_mass:.1e} < {SYSTEM_FLOOR:g}"
    return {
        "log10_vas": math.log10(vas) if vas is not None and vas > 0 else None,
        "vas_of_means": image_mass / system_mass
        if image_mass is not None and system_mass
        else None,
        "vas_flag": flag,
    }
