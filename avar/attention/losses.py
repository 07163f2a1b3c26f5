"""The attention-guided SFT objective: L = L_LM + alpha * L_enhance_img + beta * L_suppress_sys.

Both terms read the masses of one forward pass ([L, B, H, S], differentiable, from
`mass_probe`). For each layer, sequence and head, the image (system) mass is the mean over
the response tokens of the attention they put on all image (system) keys together.

    L_enhance_img  = -mean_{layers, sequences, heads} log(image mass + eps)
    L_suppress_sys = +mean_{layers, sequences, heads} log(system mass + eps)

Sequences without image keys (text-only records) are left out of L_enhance_img, and
sequences without system keys out of L_suppress_sys; with none left a term is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from avar.config.schema import SftMmConfig
from avar.segments import Segment

EPS = 1e-6


def _log_mass(masses: torch.Tensor, segment_ids: torch.Tensor, segment: Segment, eps: float):
    present = (segment_ids == segment).any(dim=1).to(masses.device)  # [B]
    mass = masses[:, present, :, segment]  # [L, B', H]
    if mass.numel() == 0:
        zero = masses.sum() * 0.0  # keeps the graph connected
        return zero, zero.detach()
    return torch.log(mass + eps).mean(), mass.detach().mean()


def enhance_image_loss(masses, segment_ids, eps: float = EPS):
    """(-mean log(image mass + eps), stats)."""
    log_mass, mean_mass = _log_mass(masses, segment_ids, Segment.IMAGE, eps)
    loss = -log_mass
    return loss, {"loss": loss.detach().item(), "image_mass": mean_mass.item()}


def suppress_system_loss(masses, segment_ids, eps: float = EPS):
    """(+mean log(system mass + eps), stats)."""
    loss, mean_mass = _log_mass(masses, segment_ids, Segment.SYSTEM, eps)
    return loss, {"loss": loss.detach().item(), "system_mass": mean_mass.item()}


def attention_guided_loss(lm_loss, masses, segment_ids, alpha: float, beta: float):
    """(L_LM + alpha * L_enhance_img + beta * L_suppress_sys, every component detached)."""
    enhance, enhance_stats = enhance_image_loss(masses, segment_ids)
    suppress, suppress_stats = suppress_system_loss(masses, segment_ids)
    total = lm_loss + alpha * enhance + beta * suppress
    stats = {
        "loss": total.detach().item(),
        "loss_lm": lm_loss.detach().item(),
        "loss_enhance_img": enhance_stats["loss"],
        "loss_suppress_sys": suppress_stats["loss"],
        "image_mass": enhance_stats["image_mass"],
        "system_mass": suppress_stats["system_mass"],
    }
    return total, stats


@dataclass(frozen=True)
class AttentionGuidedLoss:
    """The sft_mm objective as the trainer applies it: weights and the probed layers.
    alpha = beta = 0 is plain SFT (no probe runs)."""

    alpha: float = 0.0
    beta: float = 0.0
    layers: str = "all"

    @classmethod
    def from_config(cls, cfg: SftMmConfig) -> AttentionGuidedLoss:
        return cls(cfg.alpha, cfg.beta, cfg.layers)

    @property
    def probes(self) -> bool:
        """Whether the attention terms are on (the masses are needed)."""
        return bool(self.alpha or self.beta)

    def __call__(self, lm_loss, masses, segment_ids):
        """(L_LM + alpha * L_enhance_img + beta * L_suppress_sys, stats)."""
        return attention_guided_loss(lm_loss, masses, segment_ids, self.alpha, self.beta)
