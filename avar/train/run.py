"""What every training stage shares: resume, train, score each checkpoint, publish, report.

A stage builds its model, data and Trainer class; `train_stage` does the rest and writes
the stage's metrics file (a row per checkpoint: step, VAS, masses, accuracies, losses).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerState
from transformers.integrations import is_deepspeed_zero3_enabled

from avar import ranks
from avar.attention.losses import AttentionGuidedLoss
from avar.config import Params
from avar.config.schema import TrainConfig
from avar.engine.client import engine_spec
from avar.engine.policy import PolicyEngine
from avar.io import write_json
from avar.models.loader import load_model, load_processor, resolve_device, resolve_dtype
from avar.models.weights import weights_digest
from avar.summary import accuracy_cell, mass_cell, vas_cell
from avar.train.arguments import training_arguments
from avar.train.checkpoints import TRAINER_STATE, publish_checkpoint, publish_model, resume_point
from avar.train.grpo import GrpoObjective
from avar.train.lora import add_lora, load_adapter
from avar.train.scoring import ScoreCheckpoints, ScoreSet, score

log = logging.getLogger(__name__)
NOT_FINGERPRINTED = (
    "resume",
    "log_steps",
    "metrics",
    "out_dir",
    "save_total_limit",
    "gradient_checkpointing",  # the same gradients, to float rounding
)


@dataclass
class StageResult:
    """What a stage returns (and saves to its metrics file)."""

    stage: str
    out_dir: str
    steps: int
    seconds: float
    final: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)
    checkpoints: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)

    def line(self) -> str:
        """One-line summary: steps, time, the final row's scores and the training loss."""
        parts = [f"{self.steps} steps in {self.seconds:.0f} s", headline(self.final)]
        if self.final.get("train/loss") is not None:
            parts.append(f"train/loss {self.final['train/loss']:.3f}")
        return f"{self.stage}: {', '.join(p for p in parts if p)} -> {self.out_dir}"


def headline(row: dict) -> str:
    """Per score set of a checkpoint row: its accuracy with n and the 95% interval, and its
    VAS (or the flag) with the image and system masses."""
    parts = []
    for key in row:
        if key.endswith("/accuracy") and key.count("/") == 1:
            name = key.split("/")[0]
            scores = {k[len(name) + 1 :]: v for k, v in row.items() if k.startswith(f"{name}/")}
            parts.append(f"{name} accuracy {accuracy_cell(scores)} (n={scores.get('n')})")
            if scores.get("vas") is not None:
                masses = f"image {mass_cell(scores.get('image_mass'))}, "
                masses += f"system {mass_cell(scores.get('system_mass'))}"
                parts.append(f"{name} VAS {vas_cell(scores)} ({masses})")
    return ", ".join(parts)


@dataclass
class StagePlan:
    """A stage's parts, handed to `train_stage`."""

    name: str
    cfg: TrainConfig
    model_dir: str
    build_dataset: Callable[[Any], Any]  # processor -> torch Dataset
    trainer_class: type
    collator: Callable[[Any], Any] | None = None  # processor -> collate function
    objective: AttentionGuidedLoss | GrpoObjective | None = None  # what the trainer optimises
    score_sets: list[ScoreSet] = field(default_factory=list)
    sampling: str = "random"
    reference: dict = field(default_factory=dict)  # fixed numbers to report beside the rows


def fingerprint(plan: StagePlan, world_size: int = 1) -> dict:
    """What the checkpoints depend on: the stage's params, the number of ranks (they make
    the global batch), the content of its data file and of the weights it starts from (a
    re-curated set, a retrained base or another rank count starts afresh). Large weight
    files are fingerprinted by samples (avar.models.weights.weights_digest)."""
    section = {k: v for k, v in asdict(plan.cfg).items() if k not in NOT_FINGERPRINTED}
    data = getattr(plan.cfg, "data", "")
    weights = sorted(Path(plan.model_dir).glob("*.safetensors"))
    return {
        "stage": plan.name,
        "params": section,
        **({"world_size": world_size} if world_size > 1 else {}),
        "init": str(plan.model_dir),
        "data_sha256": file_digest(data) if data and Path(data).is_file() else None,
        "init_sha256": {p.name: weights_digest(p) for p in weights},
    }


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_step(checkpoint: str | Path) -> int:
    """`.../checkpoint-120` -> 120"""
    return int(Path(checkpoint).name.rsplit("-", 1)[1])


def previous_rows(path: str | Path, resumed_from: str | None) -> list[dict]:
    """Checkpoint rows already written for the checkpoints a resumed run keeps."""
    path = Path(path)
    if resumed_from is None or not path.is_file():
        return []
    step = checkpoint_step(resumed_from)
    return [
        row for row in json.loads(path.read_text()).get("checkpoints", []) if row["step"] <= step
    ]


def train_stage(plan: StagePlan, params: Params) -> StageResult:
    """Train `plan` from its model_dir; write out_dir and the metrics file; return results."""
    cfg = plan.cfg
    device = resolve_device(params.model.device)
    args = training_arguments(
        cfg, device.type, resolve_dtype(params.model.dtype, device), plan.sampling
    )
    if cfg.deepspeed:  # ZeRO-3 partitions the weights on load: the group must exist first
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo" if device.type == "cpu" else "nccl")
    with args.main_process_first(desc="checkpoints"):
        resumed_from = resume_point(
            cfg.checkpoint_dir, fingerprint(plan, args.world_size), cfg.resume
        )
    processor = load_processor(plan.model_dir, params.model.min_pixels, params.model.max_pixels)
    finished = None  # the final checkpoint, when a finished stage runs again
    if resumed_from is not None and checkpoint_step(resumed_from) >= cfg.max_steps:
        finished = resumed_from
    lora = cfg.lora.r > 0
    # full fine-tuning keeps fp32 master weights (bf16 autocast on GPUs); LoRA's frozen
    # weights take the weights dtype (`model.dtype`: bf16 on CUDA), its adapters stay fp32.
    # A finished LoRA stage's checkpoint holds its adapter: rebuild it on the start model.
    dtype = "fp32"
    if lora:
        weights = resolve_dtype(params.model.dtype, device)
        dtype = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(weights, "fp32")
    source = plan.model_dir if lora else (finished or plan.model_dir)
    model = load_model(source, "cpu", dtype, params.model.attention)
    if lora:
        model = add_lora(model, cfg.lora, cfg.seed)
        if finished:
            load_adapter(model, finished)
    if is_deepspeed_zero3_enabled():
        # transformers' ZeRO-3 loader keeps every candidate key renaming, used or not, and
        # reverting them all on save misnames the weights (model.model.*); the model's
        # default mapping saves checkpoints under the checkpoint's own names.
        model._weight_conversions = None
    rows = previous_rows(cfg.metrics, resumed_from)

    def save_rows(row: dict | None = None, **summary) -> None:
        """Every rank keeps the rows (they decide what is left to score); the main writes."""
        if row is not None:
            rows.append(row)
        if args.process_index != 0:
            return
        if row is not None:
            log.info("%s checkpoint %d: %s", plan.name, row["step"], headline(row))
        write_json(cfg.metrics, {"stage": plan.name, **summary, "checkpoints": rows})

    collator = plan.collator(processor) if plan.collator else None
    dataset = plan.build_dataset(processor)
    if device.type == "cuda" and not finished:
        vllm = params.generate.backend == "vllm"  # the engine's share of the GPU beside it
        share = params.generate.vllm.gpu_memory_utilization if vllm else 0.0
        check_memory(plan, model, dataset, args, share)
    # generate.backend: vllm: one engine for the stage, started when first asked (GRPO's
    # first rollout, the first checkpoint scored), its weights following the model's
    spec = engine_spec(params.generate, params.model, cfg.seed)
    engine = PolicyEngine(spec, processor) if spec else None
    try:
        trainer = plan.trainer_class(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=collator,
            processing_class=processor,
            callbacks=[
                ScoreCheckpoints(
                    processor, plan.score_sets, save_rows, {row["step"] for row in rows}, engine
                )
            ],
            objective=plan.objective,
            **({"engine": engine} if getattr(plan.trainer_class, "takes_engine", False) else {}),
        )
        topology = ranks.topology(args.device)
        start = time.monotonic()
        if finished:  # a re-run of a finished stage: publish its last checkpoint again
            log.info("%s already finished at %s", plan.name, finished)
            trainer.state = TrainerState.load_from_json(str(Path(finished) / TRAINER_STATE))
        else:
            trainer.train(resume_from_checkpoint=resumed_from)
        seconds = time.monotonic() - start
        step = trainer.state.global_step
        if not rows or rows[-1]["step"] != step:
            row = {"step": step}
            for scores in plan.score_sets:
                synced = engine.synced(trainer.model, step) if engine else None
                row.update(score(trainer.model, processor, scores, synced))
            save_rows(row)
    finally:
        if engine is not None:
            engine.close()
    if finished and not lora:  # the checkpoint holds the final weights as they were saved
        publish_checkpoint(trainer, finished, plan.model_dir, cfg.out_dir)
    else:
        publish_model(trainer, plan.model_dir, cfg.out_dir)
    result = StageResult(
        plan.name,
        cfg.out_dir,
        step,
        seconds,
        rows[-1],
        plan.reference,
        rows,
        trainer.state.log_history,
    )
    peak = None  # on a GPU: what `avar plan` estimates, measured
    if device.type == "cuda":
        peak = round(torch.cuda.max_memory_allocated(args.device) / 1e9, 2)
        log.info("%s: peak GPU memory %.2f GB", plan.name, peak)
    save_rows(
        steps=step,
        seconds=round(seconds, 1),
        peak_gpu_gb=peak,
        final=result.final,
        reference=plan.reference,
        history=result.history,
        launch=topology,
    )
    return result


def check_memory(plan: StagePlan, model, dataset, args, engine_share: float = 0.0) -> None:
    """On a GPU, stop before training when `avar plan` says the stage does not fit, sized
    by the longest of its first training sequences (GRPO's prompts are not checked)."""
    from avar.segments import Segment
    from avar.train.plan import GB, longest, require_fit, stage_setup

    sizes = longest(dataset, int(Segment.IMAGE))
    if sizes is None:
        return
    gpu_gb = torch.cuda.get_device_properties(args.device).total_memory / GB
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    where = (per_node, args.world_size // per_node)
    frozen = 2  # bytes per frozen weight (LoRA): the loaded model's own
    if plan.cfg.lora.r:
        frozen = next(p for p in model.parameters() if not p.requires_grad).element_size()
    setup = stage_setup(plan.cfg, where, *sizes, gpu_gb, frozen, engine_share)
    result = require_fit(plan.name, model.config, setup, plan.cfg.lora)
    log.info("%s: about %.1f GB per GPU of %.1f GB", plan.name, result.total / GB, gpu_gb)
