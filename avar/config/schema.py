"""Typed sections of params.yaml.

Every section of params.yaml maps to one dataclass here; every field carries a docstring
(the string literal under it) and its validation lives in `check()`. `avar.config.load`
turns YAML into these classes and reports problems by key path and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from avar.config.errors import ConfigError
from avar.config.specs import layer_range, parse_intervention

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


def _require(ok: bool, key: str, expected: str, got: object) -> None:
    if not ok:
        raise ConfigError(key, f"expected {expected}, got {got!r}")


def _require_spec(parse, text: str, key: str) -> None:
    try:
        parse(text)
    except ValueError as err:
        raise ConfigError(key, str(err)) from None


@dataclass
class ModelConfig:
    name_or_path: str = "tiny"
    """HF hub id or local directory of the starting checkpoint; `tiny` or `small` builds the
    embedded Qwen2.5-VL-architecture model of that preset instead."""
    init_dir: str = "models/init"
    """Where `avar prepare` builds the embedded model (for `tiny` and `small` only)."""
    seed: int = 0
    """Initialisation seed of the embedded model."""
    dtype: Precision = "auto"
    """Weights dtype: `auto` is bf16 on CUDA and fp32 on CPU."""
    device: Device = "auto"
    """Where stages run: `auto` picks CUDA when available."""
    system_prompt: str = "You are a helpful assistant."
    """System prompt put at the start of every conversation avar builds."""
    min_pixels: int = 0
    """Smallest image area (pixels) the image processor resizes to; 0 keeps the checkpoint's."""
    max_pixels: int = 0
    """Largest image area (pixels) the image processor resizes to (bounds image tokens);
    0 keeps the checkpoint's."""

    def check(self, key: str) -> None:
        _require(bool(self.name_or_path), f"{key}.name_or_path", "a non-empty string", "")
        _require(self.min_pixels >= 0, f"{key}.min_pixels", "an int >= 0", self.min_pixels)
        _require(self.max_pixels >= 0, f"{key}.max_pixels", "an int >= 0", self.max_pixels)
        if self.min_pixels and self.max_pixels:
            _require(
                self.max_pixels >= self.min_pixels,
                f"{key}.max_pixels",
                f"an int >= min_pixels ({self.min_pixels})",
                self.max_pixels,
            )


@dataclass
class SynthConfig:
    n: int = 200
    """Number of records to generate."""
    seed: int = 0
    """Random seed; the same seed gives byte-identical output."""

    def check(self, key: str) -> None:
        _require(self.n >= 1, f"{key}.n", "an int >= 1", self.n)


@dataclass
class DataConfig:
    raw_dir: str = "data/raw"
    """Where the synthetic raw sources are written (one folder per kind)."""
    visual: SynthConfig = field(default_factory=lambda: SynthConfig(n=400, seed=0))
    """Synthetic visual questions over drawn scenes."""
    text: SynthConfig = field(default_factory=lambda: SynthConfig(n=200, seed=1))
    """Synthetic text-only arithmetic and logic word problems."""
    image_size: int = 112
    """Side in pixels of the drawn synthetic scenes."""

    def check(self, key: str) -> None:
        _require(self.image_size >= 28, f"{key}.image_size", "an int >= 28", self.image_size)
        self.visual.check(f"{key}.visual")
        self.text.check(f"{key}.text")


@dataclass
class TrainConfig:
    """Knobs shared by the training stages."""

    out_dir: str = ""
    """Directory the stage writes its checkpoint to."""
    max_steps: int = 100
    """Optimizer steps to run."""
    learning_rate: float = 1e-4
    """Peak learning rate."""
    batch_size: int = 8
    """Per-device batch size."""
    grad_accum: int = 1
    """Gradient accumulation steps."""
    save_steps: int = 50
    """Save a checkpoint every N steps."""
    resume: Literal["auto", "never"] = "auto"
    """`auto` continues from the last checkpoint in out_dir when there is one."""
    deepspeed: str = ""
    """Path of a DeepSpeed config json (e.g. docker/ds_zero2.json); empty runs without it."""
    seed: int = 0
    """Random seed for data order and initialisation."""

    def check(self, key: str) -> None:
        _require(bool(self.out_dir), f"{key}.out_dir", "a non-empty path", self.out_dir)
        for name in ("max_steps", "batch_size", "grad_accum", "save_steps"):
            value = getattr(self, name)
            _require(value >= 1, f"{key}.{name}", "an int >= 1", value)
        _require(self.learning_rate > 0, f"{key}.learning_rate", "a float > 0", self.learning_rate)


@dataclass
class BaseConfig(TrainConfig):
    out_dir: str = "models/base"
    """Directory the base model is written to."""


@dataclass
class CurateConfig:
    out_dir: str = "data/curated"
    """Directory of the curated cold-start, RL and eval sets."""
    eval_fraction: float = 0.2
    """Fraction of the visual source held out for evaluation."""
    max_response_tokens: int = 512
    """Drop traces whose response is longer than this many tokens."""

    def check(self, key: str) -> None:
        _require(
            0.0 < self.eval_fraction < 1.0,
            f"{key}.eval_fraction",
            "a float in (0, 1)",
            self.eval_fraction,
        )
        _require(
            self.max_response_tokens >= 1,
            f"{key}.max_response_tokens",
            "an int >= 1",
            self.max_response_tokens,
        )


@dataclass
class ColdstartTextConfig(TrainConfig):
    out_dir: str = "models/coldstart_text"
    """Directory the text-only cold-start checkpoint is written to."""


@dataclass
class SftMmConfig(TrainConfig):
    out_dir: str = "models/sft_mm"
    """Directory the multimodal SFT checkpoint is written to."""
    init_from: Literal["base", "coldstart_text"] = "coldstart_text"
    """Checkpoint the multimodal SFT starts from."""
    alpha: float = 0.15
    """Weight of L_enhance_img (attention to image tokens); 0 disables it."""
    beta: float = 0.15
    """Weight of L_suppress_sys (attention to system tokens); 0 disables it."""

    def check(self, key: str) -> None:
        super().check(key)
        _require(self.alpha >= 0, f"{key}.alpha", "a float >= 0", self.alpha)
        _require(self.beta >= 0, f"{key}.beta", "a float >= 0", self.beta)


@dataclass
class RlConfig(TrainConfig):
    out_dir: str = "models/rl"
    """Directory the GRPO checkpoint is written to."""
    learning_rate: float = 1e-5
    """Peak learning rate."""
    group_size: int = 4
    """Completions sampled per prompt (GRPO group)."""
    kl_coef: float = 0.0
    """KL penalty coefficient against the reference model."""
    lambda_visual: float = 0.3
    """Weight of the visual-attention reward, paid only on correct answers."""
    lambda_format: float = 0.1
    """Weight of the format reward."""
    max_prompt_tokens: int = 512
    """Longest prompt, in tokens."""
    max_completion_tokens: int = 128
    """Longest sampled completion, in tokens."""

    def check(self, key: str) -> None:
        super().check(key)
        _require(self.group_size >= 2, f"{key}.group_size", "an int >= 2", self.group_size)
        for name in ("kl_coef", "lambda_visual", "lambda_format"):
            value = getattr(self, name)
            _require(value >= 0, f"{key}.{name}", "a float >= 0", value)


@dataclass
class VasConfig:
    queries: Literal["response", "prompt", "last"] = "response"
    """Query tokens whose attention is measured."""
    layers: str = "all"
    """Layers averaged: `all` or an inclusive range such as `0-3`."""
    impl: Literal["efficient", "eager"] = "efficient"
    """`efficient` never materialises L x L maps; `eager` is the reference."""
    out: str = "metrics/vas.json"
    """Where the VAS of every checkpoint is written."""

    def check(self, key: str) -> None:
        _require_spec(layer_range, self.layers, f"{key}.layers")


@dataclass
class EvalConfig:
    benches: list[str] = field(default_factory=lambda: ["synthetic"])
    """Benchmarks to evaluate every checkpoint on."""
    limit: int = 0
    """Samples per benchmark; 0 means all."""
    intervene: str = ""
    """Training-free intervention, e.g. `alpha=0.2,layers=2-8`; empty disables it."""
    out: str = "metrics/eval.json"
    """Where the scores of every checkpoint are written."""

    def check(self, key: str) -> None:
        _require(len(self.benches) > 0, f"{key}.benches", "a non-empty list", self.benches)
        _require(self.limit >= 0, f"{key}.limit", "an int >= 0", self.limit)
        _require_spec(parse_intervention, self.intervene, f"{key}.intervene")


@dataclass
class RegisterConfig:
    model_name: str = "AVAR-Thinker"
    """Registered model name in the MLflow registry."""
    alias: str = "champion"
    """Alias moved to the new version only when it beats the current holder."""
    metric: str = "eval/synthetic/accuracy"
    """Metric that decides whether the new version beats the champion."""


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlruns.db"
    """MLflow tracking URI (a server address or a local store)."""
    experiment: str = "avar"
    """MLflow experiment name."""


@dataclass
class Params:
    """All of params.yaml: one attribute per section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
    coldstart_text: ColdstartTextConfig = field(default_factory=ColdstartTextConfig)
    sft_mm: SftMmConfig = field(default_factory=SftMmConfig)
    rl: RlConfig = field(default_factory=RlConfig)
    vas: VasConfig = field(default_factory=VasConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def check(self) -> None:
        for name, section in vars(self).items():
            if hasattr(section, "check"):
                section.check(name)
