"""Supervised fine-tuning with the attention-guided objective.

    L = L_LM + alpha * L_enhance_img + beta * L_suppress_sys

The two attention terms come from the same forward pass as L_LM: `mass_probe` computes,
inside each probed layer, the response tokens' attention on each segment without
materialising L x L maps, and its masses carry gradients. With alpha = beta = 0 no probe
runs and this is plain SFT (the ablation).
"""

from __future__ import annotations

import math
from collections import defaultdict
from contextlib import ExitStack, contextmanager

from transformers import Trainer

from avar.attention.losses import AttentionGuidedLoss
from avar.attention.probe import mass_probe
from avar.ranks import pooled_means
from avar.train.checkpoints import ExactResume


class LoggedStats(Trainer):
    """Trainer mixin: numbers put in `self._stats` each step are logged as their means
    (over every rank's steps when several ranks train)."""

    _stats: dict[str, list[float]]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the means since the last log to the Trainer's log (console, log_history)."""
        if "loss" in logs:
            logs.update(pooled_means(self._stats))
            self._stats.clear()
        super().log(logs, start_time)


class ProbesThroughBackward(Trainer):
    """Trainer mixin: a mass probe opened in `compute_loss` (`self.probing(...)`) stays
    attached until `training_step`'s backward pass is done.

    With activation checkpointing (`gradient_checkpointing`) each decoder layer runs its
    forward again during backward to rebuild what it saved; the probe's computation was
    part of that forward, so it must run in the rerun too, or torch's checkpoint finds
    fewer saved tensors and stops. Outside training (no backward) the probe detaches at
    the end of the block."""

    _probes: ExitStack | None = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        with ExitStack() as probes:
            self._probes = probes
            try:
                return super().training_step(model, inputs, num_items_in_batch)
            finally:
                self._probes = None

    @contextmanager
    def probing(self, model, segment_ids, layers: str, detached: bool = False):
        """`mass_probe` of the response tokens on the unwrapped `model`, for one forward
        (`detached`: masses without a graph, for a reward)."""
        core = self.accelerator.unwrap_model(model)
        probe = mass_probe(core, segment_ids, "response", layers, detached=detached)
        if self._probes is None:
            with probe as attached:
                yield attached
        else:
            yield self._probes.enter_context(probe)


class AvarTrainer(LoggedStats, ProbesThroughBackward, ExactResume):
    """HF Trainer whose loss adds the attention terms; every component is logged."""

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, *args, objective: AttentionGuidedLoss | None = None, **kw):
        super().__init__(*args, **kw)
        self.objective = objective or AttentionGuidedLoss()
        self._stats = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        segment_ids = inputs.pop("segment_ids")
        if not self.objective.probes:
            outputs = model(**inputs)
            self._stats["loss_lm"].append(outputs.loss.item())
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        with self.probing(model, segment_ids, self.objective.layers) as probe:
            outputs = model(**inputs)
        loss, stats = self.objective(outputs.loss, probe.masses(), segment_ids)
        for name, value in stats.items():
            value = float(value)
            if name != "loss" and math.isfinite(value):
                self._stats[name].append(value)
        return (loss, outputs) if return_outputs else loss
