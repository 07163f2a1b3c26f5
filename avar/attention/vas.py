"""Visual Attention Score from attention masses.

For a sequence and a layer, the image mass and the system mass are the head-averaged
mean attention that the query tokens put on image keys and on system-prompt keys. The
layer's VAS is image mass / system mass; the sequence's VAS is the mean over the selected
layers. The absolute masses are always reported beside the ratio: a ratio can rise just
because the system mass falls.
"""

from __future__ import annotations

import torch

from avar.segments import Segment

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
