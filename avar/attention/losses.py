"""The attention-guided SFT objective: L = L_LM + alpha * L_enhance_img + beta * L_suppress_sys.

Both terms read the masses of one forward pass ([L, B, H, S], differentiable, from
`mass_probe`). For each layer, sequence and head, the image (system) mass is the mean over
the response tokens of the attention they put on all image (system) keys together.

    L_enhance_img  = -mean_{layers, sequences, heads} log(image mass + eps)
    L_suppress_sys = +mean_{layers, sequences, heads} log(system mass + eps)

Sequences without image keys (text-only records) are left out of L_enhance_img, and
sequences without system keys out of L_suppress_sys; with none left a term is 0.

The paper's L_suppress_sys is unbounded below until eps: on the tiny model alpha = beta =
0.15 meet it by driving the system mass from about 0.03 to 4e-9, and the VAS (image /
system) past 1e9. Flooring the system mass in L_suppress_sys alone is not enough: the
softmax lets L_enhance_img take the mass from the system keys too (measured: floor 0.02,
system mass 0.0025 and a VAS of 1.3e4 after 300 steps). The `bounded` objective (the
default) therefore gates both terms on a target ratio R, per layer, sequence and head:

    active = [image mass < R * system mass]         (no gradient through the gate)
    L_enhance_img  = -mean active * log(image mass + eps)
    L_suppress_sys = +mean active * log(system mass + eps)

so once a head's image mass is R times its system mass neither term pushes it further,
and what moves the ratio after that is the language-modelling loss alone. (A sequence
without system keys keeps the paper's L_enhance_img, which is bounded: image mass <= 1.)
`paper` keeps the published form exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from avar.config.schema import SftMmConfig
from avar.segments import Segment

EPS = 1e-6


def below_target(masses: torch.Tensor, segment_ids: torch.Tensor, ratio: float) -> torch.Tensor:
    """[L, B, H] bool: where the image mass is below `ratio` x the system mass (detached).
    ratio 0 (the paper's objective): everywhere. Sequences without system keys: everywhere."""
    image = masses[..., Segment.IMAGE].detach()
    if ratio <= 0:
        return torch.ones_like(image, dtype=torch.bool)
    has_system = (segment_ids == Segment.SYSTEM).any(dim=1).to(masses.device)  # [B]
    below = image < ratio * masses[..., Segment.SYSTEM].detach()
    return below | ~has_system[None, :, None]


def _log_mass(masses, segment_ids, segment: Segment, active: torch.Tensor, eps: float):
    """(mean active * log(mass + eps), mean mass) over sequences holding `segment`."""
    present = (segment_ids == segment).any(dim=1).to(masses.device)  # [B]
    mass = masses[:, present, :, segment]  # [L, B', H]
    if mass.numel() == 0:
        zero = masses.sum() * 0.0  # keeps the graph connected
        return zero, zero.detach()
    gate = active[:, present].to(mass.dtype)  # [L, B', H]
    return (gate * torch.log(mass + eps)).mean(), mass.detach().mean()


def enhance_image_loss(masses, segment_ids, eps: float = EPS, target_ratio: float = 0.0):
    """(-mean active * log(image mass + eps), stats); target_ratio 0 is the paper's term."""
    active = below_target(masses, segment_ids, target_ratio)
    log_mass, mean_mass = _log_mass(masses, segment_ids, Segment.IMAGE, active, eps)
    loss = -log_mass
    return loss, {"loss": loss.detach().item(), "image_mass": mean_mass.item()}


def suppress_system_loss(masses, segment_ids, eps: float = EPS, target_ratio: float = 0.0):
    """(+mean active * log(system mass + eps), stats); target_ratio 0 is the paper's term."""
    active = below_target(masses, segment_ids, target_ratio)
    loss, mean_mass = _log_mass(masses, segment_ids, Segment.SYSTEM, active, eps)
    return loss, {"loss": loss.detach().item(), "system_mass": mean_mass.item()}


def attention_guided_loss(
    lm_loss, masses, segment_ids, alpha: float, beta: float, target_ratio: float = 0.0
):
    """(L_LM + alpha * L_enhance_img + beta * L_suppress_sys, every component detached).
    target_ratio > 0: the bounded terms; 0: the paper's. `attention_active` is the share of
    (layer, sequence, head) entries the terms still push."""
    enhance, enhance_stats = enhance_image_loss(masses, segment_ids, target_ratio=target_ratio)
    suppress, suppress_stats = suppress_system_loss(masses, segment_ids, target_ratio=target_ratio)
    total = lm_loss + alpha * enhance + beta * suppress
    active = below_target(masses, segment_ids, target_ratio).float().mean()
    stats = {
        "loss": total.detach().item(),
        "loss_lm": lm_loss.detach().item(),
        "loss_enhance_img": enhance_stats["loss"],
        "loss_suppress_sys": suppress_stats["loss"],
        "image_mass": enhance_stats["image_mass"],
        "system_mass": suppress_stats["system_mass"],
        "attention_active": active.item(),
    }
    return total, stats


@dataclass(frozen=True)
class AttentionGuidedLoss:
    """The sft_mm objective as the trainer applies it: weights, the probed layers and the
    target ratio (0: the paper's unbounded terms). alpha = beta = 0 is plain SFT (no probe
    runs)."""

    alpha: float = 0.0
    beta: float = 0.0
    layers: str = "all"
    target_ratio: float = 0.0

    @classmethod
    def from_config(cls, cfg: SftMmConfig) -> AttentionGuidedLoss:
        ratio = cfg.target_ratio if cfg.objective == "bounded" else 0.0
        return cls(cfg.alpha, cfg.beta, cfg.layers, ratio)

    @property
    def probes(self) -> bool:
        """Whether the attention terms are on (the masses are needed)."""
        return bool(self.alpha or self.beta)

    def __call__(self, lm_loss, masses, segment_ids):
        """(L_LM + alpha * L_enhance_img + beta * L_suppress_sys, stats)."""
        return attention_guided_loss(
            lm_loss, masses, segment_ids, self.alpha, self.beta, self.target_ratio
        )
