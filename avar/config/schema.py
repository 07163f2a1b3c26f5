"""Typed sections of params.yaml.

Every section of params.yaml maps to one dataclass here; every field carries a docstring
(the string literal under it) and its validation lives in `check()`. `avar.config.load`
turns YAML into these classes and reports problems by key path and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from avar.config.errors import ConfigError
from avar.config.errors import require as _require
from avar.config.errors import require_spec as _require_spec
from avar.config.specs import BENCHMARK_NAMES, RANKED_STAGES, layer_range, parse_intervention
from avar.config.study import StudyConfig

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


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
    """Weights dtype where avar answers (eval, VAS, scoring) and of LoRA's frozen weights:
    `auto` is bf16 on CUDA and fp32 on CPU. Full fine-tuning keeps fp32 master weights
    and computes in this dtype under autocast (DeepSpeed's bf16 does the same)."""
    device: Device = "auto"
    """Where stages run: `auto` picks CUDA when available."""
    attention: Literal["sdpa", "flash_attention_2"] = "sdpa"
    """Attention kernel of the language model when avar trains and answers:
    `flash_attention_2` needs a CUDA GPU and the flash-attn package (the GPU image has it).
    The attention probe and the intervention ride on either."""
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
    heldout: SynthConfig = field(default_factory=lambda: SynthConfig(n=300, seed=2))
    """Synthetic visual questions kept out of training, for scoring checkpoints."""
    image_size: int = 112
    """Side in pixels of the drawn synthetic scenes."""

    def check(self, key: str) -> None:
        _require(self.image_size >= 28, f"{key}.image_size", "an int >= 28", self.image_size)
        self.visual.check(f"{key}.visual")
        self.text.check(f"{key}.text")
        self.heldout.check(f"{key}.heldout")


LANGUAGE_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraConfig:
    """Low-rank adapters (peft) instead of training every weight."""

    r: int = 0
    """Adapter rank; 0 trains every weight (full fine-tuning)."""
    alpha: int = 32
    """Scaling: the adapter's update is multiplied by alpha / r."""
    dropout: float = 0.05
    """Dropout on the adapter's input."""
    target_modules: list[str] = field(default_factory=lambda: list(LANGUAGE_LINEARS))
    """Linear layers of the language model's decoder layers that get adapters."""
    vision: bool = False
    """Also adapt the vision tower's blocks (attention qkv/proj and MLP)."""

    def check(self, key: str) -> None:
        _require(self.r >= 0, f"{key}.r", "an int >= 0 (0: no LoRA)", self.r)
        if self.r:
            _require(self.alpha > 0, f"{key}.alpha", "an int > 0", self.alpha)
            _require(0 <= self.dropout < 1, f"{key}.dropout", "a float in [0, 1)", self.dropout)
            _require(bool(self.target_modules), f"{key}.target_modules", "a non-empty list", [])


@dataclass
class TrainConfig:
    """Knobs shared by the training stages."""

    out_dir: str = ""
    """Directory the stage writes its final model to (replaced whole when the stage ends)."""
    checkpoint_dir: str = ""
    """Directory of the stage's checkpoints (`checkpoint-<step>`), kept for resuming."""
    metrics: str = ""
    """JSON file the stage writes its metrics to: a row per checkpoint and a summary."""
    max_steps: int = 100
    """Optimizer steps to run."""
    learning_rate: float = 1e-4
    """Peak learning rate (cosine decay after warmup)."""
    warmup: float = 0.05
    """Warmup, as a fraction of max_steps."""
    batch_size: int = 8
    """Per-device batch size (sequences per forward pass)."""
    grad_accum: int = 1
    """Gradient accumulation steps."""
    save_steps: int = 50
    """Save a checkpoint (and measure its VAS and accuracy) every N steps."""
    gradient_checkpointing: bool = False
    """Activation checkpointing: keep only each decoder layer's inputs and run its forward
    again during backward (less memory for long multimodal sequences, one more forward of
    compute); the attention probe reruns with it, so losses and gradients are unchanged."""
    save_total_limit: int = 0
    """Keep only the newest N checkpoints on disk (a 7B checkpoint with its optimizer
    state is about 100 GB); 0 keeps all. The metrics file and MLflow keep every
    checkpoint's scores either way, and a stage resumes from the newest one kept."""
    log_steps: int = 10
    """Log the losses every N steps."""
    resume: Literal["auto", "never"] = "auto"
    """`auto` continues from the last checkpoint in checkpoint_dir when it was written with
    the same params; `never` (or changed params) starts over."""
    deepspeed: str = ""
    """DeepSpeed config: `zero2` or `zero3` (avar's files), a path to a json, or empty."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """`lora.r > 0`: train low-rank adapters on the frozen model; the stage publishes the
    merged model (a standard HF folder) with the adapter beside it in `adapter/`."""
    seed: int = 0
    """Random seed for data order and initialisation."""

    def check(self, key: str) -> None:
        self.lora.check(f"{key}.lora")
        _require(
            not (self.lora.r and "zero3" in self.deepspeed),
            f"{key}.deepspeed",
            "zero2 or none with LoRA (avar merges adapters on one rank; ZeRO-3 partitions "
            "the weights)",
            self.deepspeed,
        )
        for name in ("out_dir", "checkpoint_dir", "metrics"):
            value = getattr(self, name)
            _require(bool(value), f"{key}.{name}", "a non-empty path", value)
        for name in ("max_steps", "batch_size", "grad_accum", "save_steps", "log_steps"):
            value = getattr(self, name)
            _require(value >= 1, f"{key}.{name}", "an int >= 1", value)
        _require(self.learning_rate > 0, f"{key}.learning_rate", "a float > 0", self.learning_rate)
        _require(
            self.save_total_limit >= 0,
            f"{key}.save_total_limit",
            "an int >= 0 (0 keeps every checkpoint)",
            self.save_total_limit,
        )
        _require(0 <= self.warmup < 1, f"{key}.warmup", "a float in [0, 1)", self.warmup)


@dataclass
class BaseConfig(TrainConfig):
    out_dir: str = "models/base"
    """Directory the base model is written to."""
    checkpoint_dir: str = "checkpoints/base"
    """Directory of the pretraining checkpoints (embedded models only)."""
    metrics: str = "metrics/base.json"
    """JSON file of the base stage's metrics."""
    max_steps: int = 1500
    """Pretraining steps of the embedded model."""
    learning_rate: float = 1.5e-3
    """Peak learning rate of the pretraining."""
    batch_size: int = 16
    """Perception questions per device per step."""
    save_steps: int = 500
    """Save (and score) a checkpoint every N steps."""
    heldout: int = 300
    """Held-out perception questions scored at every checkpoint (embedded models only)."""
    curriculum: float = 0.4
    """Fraction of the pretraining data that are single zoomed-in objects, shrinking to
    their true size, before the real scenes (embedded models only)."""

    def check(self, key: str) -> None:
        super().check(key)
        _require(self.heldout >= 1, f"{key}.heldout", "an int >= 1", self.heldout)
        _require(
            0 <= self.curriculum < 1, f"{key}.curriculum", "a float in [0, 1)", self.curriculum
        )


SOURCE_FIELDS = (
    "id",
    "question",
    "answer",
    "answer_type",
    "choices",
    "images",
    "image",
    "category",
    "difficulty",
    "solution",
    "response",
)


@dataclass
class SourceConfig:
    name: str = ""
    """Short name: the `source` of its records and its row in the curation report."""
    path: str = ""
    """A JSONL or parquet file (images relative to it, or parquet image structs)."""
    split: Literal["train", "eval"] = "train"
    """`train`: text rows go to the text set, visual rows are split into eval, SFT and RL;
    `eval`: every row is held out for evaluation."""
    columns: dict[str, str] = field(default_factory=dict)
    """avar field -> this source's column, for real datasets whose names differ, e.g.
    `{question: problem, answer: solution, images: image}`."""
    traces: Literal["auto", "scene", "teacher", "keep"] = "auto"
    """How visual SFT traces are written: `scene` from the record's scene description,
    `teacher` by curate.teacher, `keep` the record's own; `auto` is scene when the record
    has one, else teacher (or keep when no teacher is set)."""

    def check(self, key: str) -> None:
        _require(bool(self.name.strip()), f"{key}.name", "a non-empty name", self.name)
        _require(
            self.path.endswith((".jsonl", ".parquet")),
            f"{key}.path",
            "a .jsonl or .parquet file",
            self.path,
        )
        unknown = sorted(set(self.columns) - set(SOURCE_FIELDS))
        _require(not unknown, f"{key}.columns", f"keys from {list(SOURCE_FIELDS)}", unknown)


@dataclass
class TeacherConfig:
    kind: Literal["none", "http", "local"] = "none"
    """`http`: an OpenAI-compatible chat completions endpoint; `local`: an HF model."""
    model: str = ""
    """The model name sent to the endpoint, or the local checkpoint (dir or HF id)."""
    url: str = ""
    """Base URL of the endpoint, e.g. http://127.0.0.1:8000/v1."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (unset: no Authorization header)."""
    cache: str = "data/cache/teacher.jsonl"
    """Response cache: a request already answered is never sent again."""
    retries: int = 4
    """Attempts after the first on timeouts, connection errors, 429 and 5xx."""
    workers: int = 4
    """Requests in flight at once (http; a local teacher answers one at a time)."""
    backoff: float = 1.0
    """Seconds before the first retry; doubled each time."""
    timeout: float = 120.0
    """Seconds per request."""
    max_new_tokens: int = 1024
    """Length limit of each trace."""
    temperature: float = 0.0
    """Sampling temperature (0: greedy)."""

    def check(self, key: str) -> None:
        if self.kind != "none":
            _require(bool(self.model), f"{key}.model", "a model name", self.model)
        if self.kind == "http":
            _require(
                self.url.startswith(("http://", "https://")),
                f"{key}.url",
                "an http(s) URL",
                self.url,
            )
        _require(self.retries >= 0, f"{key}.retries", "an int >= 0", self.retries)
        _require(self.workers >= 1, f"{key}.workers", "an int >= 1", self.workers)
        _require(
            self.max_new_tokens >= 1, f"{key}.max_new_tokens", "an int >= 1", self.max_new_tokens
        )


def _default_sources() -> list[SourceConfig]:
    return [
        SourceConfig("synthetic-visual", "data/raw/visual/data.jsonl"),
        SourceConfig("synthetic-text", "data/raw/text/data.jsonl"),
        SourceConfig("synthetic-heldout", "data/raw/heldout/data.jsonl", split="eval"),
    ]


@dataclass
class CurateConfig:
    out_dir: str = "data/curated"
    """Directory of the curated sets: text/, visual/, rl/, eval/ (each a data.jsonl)."""
    metrics: str = "metrics/curate.json"
    """The curation report: counts kept and dropped per reason, per source."""
    sources: list[SourceConfig] = field(default_factory=_default_sources)
    """Raw sources, in order (earlier sources win deduplication)."""
    eval_fraction: float = 0.1
    """Fraction of the train sources' visual rows held out for evaluation."""
    rl_fraction: float = 0.25
    """Fraction of the remaining visual rows that go to the RL set instead of SFT."""
    reflection_rate: float = 0.3
    """Scene traces whose first reading of the image is wrong and corrected on re-checking."""
    max_response_tokens: int = 512
    """Drop traces whose response is longer than this many tokens."""
    seed: int = 0
    """Seed of the splits and of which traces get a corrected first reading."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """Writes anchored, reflective traces for rows without a scene."""

    def check(self, key: str) -> None:
        for name in ("eval_fraction", "rl_fraction"):
            value = getattr(self, name)
            _require(0.0 < value < 1.0, f"{key}.{name}", "a float in (0, 1)", value)
        _require(
            0.0 <= self.reflection_rate <= 1.0,
            f"{key}.reflection_rate",
            "a float in [0, 1]",
            self.reflection_rate,
        )
        _require(
            self.max_response_tokens >= 1,
            f"{key}.max_response_tokens",
            "an int >= 1",
            self.max_response_tokens,
        )
        _require(bool(self.sources), f"{key}.sources", "a non-empty list", self.sources)
        names = [source.name for source in self.sources]
        for index, source in enumerate(self.sources):
            source.check(f"{key}.sources[{index}]")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        _require(not duplicates, f"{key}.sources", "unique names", duplicates)
        self.teacher.check(f"{key}.teacher")


@dataclass
class ColdstartTextConfig(TrainConfig):
    out_dir: str = "models/coldstart_text"
    """Directory the text-only cold-start model is written to."""
    checkpoint_dir: str = "checkpoints/coldstart_text"
    """Directory of the text-only cold-start checkpoints."""
    metrics: str = "metrics/coldstart_text.json"
    """JSON file of the stage's metrics."""
    data: str = "data/curated/text/data.jsonl"
    """Text-only reasoning traces to train on (JSONL in avar's record schema)."""
    max_steps: int = 300
    """Optimizer steps of the text-only cold start."""
    learning_rate: float = 2e-3
    """Peak learning rate (cosine decay after warmup)."""
    save_steps: int = 150
    """Save (and score) a checkpoint every N steps."""


@dataclass
class SftMmConfig(TrainConfig):
    out_dir: str = "models/sft_mm"
    """Directory the multimodal SFT model is written to."""
    checkpoint_dir: str = "checkpoints/sft_mm"
    """Directory of the multimodal SFT checkpoints."""
    metrics: str = "metrics/sft_mm.json"
    """JSON file of the stage's metrics."""
    data: str = "data/curated/visual/data.jsonl"
    """Multimodal (visual-anchored) reasoning traces to train on."""
    max_steps: int = 300
    """Optimizer steps of the multimodal SFT."""
    learning_rate: float = 2e-3
    """Peak learning rate (cosine decay after warmup)."""
    save_steps: int = 150
    """Save (and score) a checkpoint every N steps."""
    init_from: Literal["base", "coldstart_text"] = "coldstart_text"
    """Checkpoint the multimodal SFT starts from."""
    alpha: float = 0.15
    """Weight of L_enhance_img (attention to image tokens); 0 disables it."""
    beta: float = 0.15
    """Weight of L_suppress_sys (attention to system tokens); 0 disables it."""
    layers: str = "all"
    """Decoder layers whose attention the two attention terms average over."""
    objective: Literal["bounded", "paper"] = "bounded"
    """`paper`: both terms as published; L_suppress_sys is unbounded below until 1e-6 (on
    the tiny model it drives the system mass to ~1e-9 and the VAS past 1e9). `bounded`: the
    same terms, gated off per layer, sequence and head once image mass >= target_ratio x
    system mass (avar/attention/losses.py)."""
    target_ratio: float = 10.0
    """`bounded` objective: the image/system mass ratio at which both terms stop pushing."""

    def check(self, key: str) -> None:
        super().check(key)
        _require(self.alpha >= 0, f"{key}.alpha", "a float >= 0", self.alpha)
        _require(self.beta >= 0, f"{key}.beta", "a float >= 0", self.beta)
        ratio = self.target_ratio
        _require(ratio > 0, f"{key}.target_ratio", "a float > 0", ratio)
        _require_spec(layer_range, self.layers, f"{key}.layers")


@dataclass
class RlConfig(TrainConfig):
    out_dir: str = "models/rl"
    """Directory the GRPO model is written to."""
    checkpoint_dir: str = "checkpoints/rl"
    """Directory of the GRPO checkpoints."""
    metrics: str = "metrics/rl.json"
    """JSON file of the stage's metrics."""
    data: str = "data/curated/rl/data.jsonl"
    """Questions to sample completions for (their answers grade them)."""
    init_from: str = "sft_mm"
    """Stage whose model GRPO starts from (its out_dir is read from these params)."""
    max_steps: int = 40
    """GRPO steps."""
    learning_rate: float = 1e-4
    """Peak learning rate."""
    batch_size: int = 4
    """Prompts per device per step; each is sampled group_size times."""
    save_steps: int = 20
    """Save (and score) a checkpoint every N steps."""
    group_size: int = 8
    """Completions sampled per prompt (GRPO group)."""
    kl_coef: float = 0.0
    """KL penalty coefficient against the reference model."""
    lambda_visual: float = 0.3
    """Weight of the visual-attention reward, paid only on correct answers."""
    lambda_format: float = 0.1
    """Weight of the format reward."""
    max_prompt_tokens: int = 512
    """Longest prompt, in tokens."""
    max_completion_tokens: int = 96
    """Longest sampled completion, in tokens."""
    temperature: float = 0.7
    """Sampling temperature of the completions: they are drawn from softmax(logits / T),
    with no top-k, top-p or repetition penalty (the checkpoint's generation_config.json is
    set aside), and the loss's log-probs are those of the same distribution."""
    loss_type: Literal["grpo", "dr_grpo"] = "grpo"
    """`grpo`: the mean over each completion's tokens, then over completions (GRPO, as the
    paper trains); `dr_grpo`: the sum over every token / (completions x
    max_completion_tokens), Dr. GRPO's length-unbiased form."""
    scale_rewards: Literal["group", "none"] = "group"
    """Advantages are the rewards minus their group's mean, divided by the group's std
    (`group`: GRPO, the paper) or not (`none`: Dr. GRPO). Dividing makes any lambda_visual
    > 0 act at full size in a group whose answers are all right (only r_visual differs)."""
    layers: str = "all"
    """Decoder layers r_visual averages the completion's image/system ratio over."""
    visual_reward: Literal["share", "log_ratio", "ratio"] = "share"
    """r_visual from the completion's per-layer image (I) and system (S) masses, averaged
    over `layers`: `share` I/(I+S) in [0, 1]; `log_ratio` clip(log10(I/S), -2, 2)/4 + 1/2
    in [0, 1]; `ratio` I/S, the paper's raw VAS (unbounded: 1e9 on a collapsed system mass)."""

    def check(self, key: str) -> None:
        super().check(key)
        _require(self.group_size >= 2, f"{key}.group_size", "an int >= 2", self.group_size)
        for name in ("kl_coef", "lambda_visual", "lambda_format"):
            value = getattr(self, name)
            _require(value >= 0, f"{key}.{name}", "a float >= 0", value)
        _require(self.temperature > 0, f"{key}.temperature", "a float > 0", self.temperature)
        _require(
            self.init_from in ("base", "coldstart_text", "sft_mm"),
            f"{key}.init_from",
            "one of ['base', 'coldstart_text', 'sft_mm']",
            self.init_from,
        )
        _require_spec(layer_range, self.layers, f"{key}.layers")


@dataclass
class CheckpointEvalConfig:
    data: str = "data/raw/heldout/data.jsonl"
    """Held-out visual questions every training checkpoint is scored on."""
    limit: int = 64
    """Questions scored per checkpoint (the first N); 0 means all."""
    max_new_tokens: int = 160
    """Generation length of the greedy answers."""
    batch_size: int = 32
    """Questions per generation batch."""

    def check(self, key: str) -> None:
        _require(self.limit >= 0, f"{key}.limit", "an int >= 0", self.limit)
        for name in ("max_new_tokens", "batch_size"):
            value = getattr(self, name)
            _require(value >= 1, f"{key}.{name}", "an int >= 1", value)


@dataclass
class VllmConfig:
    python: str = ""
    """The Python of the environment vLLM is installed in: empty means $AVAR_VLLM_PYTHON
    when set (the GPU image sets it), else `.avar/vllm-env/bin/python` (`make vllm-env`).
    vLLM pins transformers and fastapi versions that conflict with avar's, so it runs in a
    process of its own (avar.engine.worker), never imported by avar."""
    gpu_memory_utilization: float = 0.3
    """Share of the GPU's memory the engine takes (its weights and KV cache), beside the
    training process on the same GPU (`avar plan rl` counts it)."""
    kv_cache_gib: int = 1
    """On CPU: GiB of KV cache (vLLM's VLLM_CPU_KVCACHE_SPACE, whole GiB)."""
    max_model_len: int = 2048
    """Longest prompt + completion the engine schedules, in tokens."""
    enforce_eager: bool = False
    """No CUDA graphs (less memory, slower decoding); always on for CPU."""
    max_images: int = 4
    """Most images one prompt may carry (vLLM sizes its profiling run by it)."""

    def check(self, key: str) -> None:
        share = self.gpu_memory_utilization
        _require(0 < share < 1, f"{key}.gpu_memory_utilization", "a float in (0, 1)", share)
        _require(self.kv_cache_gib >= 1, f"{key}.kv_cache_gib", "an int >= 1", self.kv_cache_gib)
        _require(self.max_images >= 1, f"{key}.max_images", "an int >= 1", self.max_images)
        length = self.max_model_len
        _require(length >= 64, f"{key}.max_model_len", "an int >= 64", length)


@dataclass
class GenerateConfig:
    backend: Literal["hf", "vllm"] = "hf"
    """What samples GRPO's groups and writes greedy answers (rl, checkpoint scoring, eval,
    `avar vas --generate`, the study): `hf` is transformers' `generate` in the stage's own
    process; `vllm` is a vLLM engine per stage process (its weights follow the policy after
    every GRPO step). Grading, r_visual and VAS always come from avar's own forward;
    answers under an intervention always come from `hf` (the steering is a hook on it)."""
    vllm: VllmConfig = field(default_factory=VllmConfig)
    """The engine's settings, for `backend: vllm`."""

    def check(self, key: str) -> None:
        self.vllm.check(f"{key}.vllm")


@dataclass
class VasConfig:
    queries: Literal["response", "prompt", "last"] = "response"
    """Query tokens whose attention is measured."""
    layers: str = "all"
    """Layers averaged: `all` or an inclusive range such as `0-3`."""
    impl: Literal["efficient", "eager"] = "efficient"
    """`efficient` never materialises L x L maps; `eager` is the reference."""
    metrics: str = "metrics/vas.json"
    """Where the VAS of every checkpoint is written."""

    def check(self, key: str) -> None:
        _require_spec(layer_range, self.layers, f"{key}.layers")


@dataclass
class JudgeConfig(TeacherConfig):
    """An LLM that extracts the final answer of a long response before avar's rules grade
    it, as lmms-eval and VLMEvalKit do for MathVista and MathVerse."""

    cache: str = "data/cache/judge.jsonl"
    """Reply cache: a response already judged (same model, prompt and settings) is never
    sent again."""
    max_new_tokens: int = 64
    """Length limit of the extracted answer."""
    timeout: float = 60.0
    """Seconds per request."""


TEMPLATE_FIELDS = ("question", "stem", "options", "query")


def _check_template(template: str | None, key: str) -> None:
    import string

    if template is None:
        return
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ConfigError(key, f"not a valid template ({err})") from None
    unknown = sorted(names - set(TEMPLATE_FIELDS))
    _require(not unknown, key, f"a template with fields from {list(TEMPLATE_FIELDS)}", template)


@dataclass
class PromptConfig:
    """One benchmark's prompt over the preset's; a field left null keeps the preset's."""

    choice: str | None = None
    """Template of a question with options: {question}, {stem}, {options}, {query}."""
    free: str | None = None
    """Template of every other question (the same fields)."""
    system_prompt: str | None = None
    """The system turn; "" for none of avar's (the chat template's default)."""
    min_pixels: int | None = None
    """Smallest image area the image processor resizes to; 0: the model section's."""
    max_pixels: int | None = None
    """Largest image area the image processor resizes to; 0: the model section's."""

    def check(self, key: str) -> None:
        _check_template(self.choice, f"{key}.choice")
        _check_template(self.free, f"{key}.free")
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            _require(value is None or value >= 0, f"{key}.{name}", "an int >= 0", value)


@dataclass
class EvalConfig:
    benches: list[str] = field(default_factory=lambda: ["synthetic"])
    """Benchmarks to evaluate every checkpoint on (BENCHMARK_NAMES; each has a loader in
    avar.eval.benchmarks)."""
    data_dir: str = "data/benchmarks"
    """Folder with one subfolder of files per benchmark (README: Evaluation)."""
    limit: int = 0
    """Samples per benchmark (the first N); 0 means all (the synthetic suite: 300, a 95%
    interval of about +-0.05)."""
    vas: bool = True
    """Also measure the VAS of the answers (one more teacher-forced pass)."""
    max_new_tokens: int = 192
    """Generation length of the greedy answers."""
    batch_size: int = 8
    """Questions per generation batch."""
    intervene: str = ""
    """Training-free intervention, e.g. `alpha=0.2,layers=2-8` (layers 2 to 8, both
    included; PAI's (start, end) leaves out end); empty disables it."""
    metrics: str = "metrics/eval.json"
    """Where the scores of every checkpoint are written."""
    preset: Literal["avar", "lmms-eval", "vlmevalkit"] = "avar"
    """Prompts, system prompt and pixel bounds per benchmark: avar's own, or those of
    lmms-eval or VLMEvalKit for Qwen2.5-VL (avar.eval.presets; README: Evaluation)."""
    prompts: dict[str, PromptConfig] = field(default_factory=dict)
    """Per benchmark, over the preset: templates, system prompt, pixel bounds."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """`kind: http` or `local`: an LLM extracts each final answer, avar's rules grade it, and
    both scores are reported; `none` (the default): avar's rules alone."""
    max_bad_rows: float = 0.01
    """Share of a benchmark's rows that may be unreadable (skipped, counted and named in the
    results) before the evaluation stops."""

    def check(self, key: str) -> None:
        _require(len(self.benches) > 0, f"{key}.benches", "a non-empty list", self.benches)
        _require(
            0 <= self.max_bad_rows <= 1,
            f"{key}.max_bad_rows",
            "a share in [0, 1]",
            self.max_bad_rows,
        )
        unknown = [b for b in self.prompts if b not in BENCHMARK_NAMES]
        _require(
            not unknown,
            f"{key}.prompts",
            f"benchmark names from {sorted(BENCHMARK_NAMES)}",
            unknown,
        )
        for name, prompt in self.prompts.items():
            prompt.check(f"{key}.prompts.{name}")
        self.judge.check(f"{key}.judge")
        _require(self.limit >= 0, f"{key}.limit", "an int >= 0", self.limit)
        for name in ("max_new_tokens", "batch_size"):
            value = getattr(self, name)
            _require(value >= 1, f"{key}.{name}", "an int >= 1", value)
        _require_spec(parse_intervention, self.intervene, f"{key}.intervene")
        unknown = [b for b in self.benches if b not in BENCHMARK_NAMES]
        _require(not unknown, f"{key}.benches", f"names from {sorted(BENCHMARK_NAMES)}", unknown)


@dataclass
class RegisterConfig:
    model_name: str = "AVAR-Thinker"
    """Registered model name in the MLflow registry."""
    alias: str = "champion"
    """Alias moved to the new version only when it beats the current holder."""
    metric: str = "eval/synthetic/accuracy"
    """Metric (of metrics/eval.json) that decides whether the new version beats the
    champion."""
    stage: Literal["base", "coldstart_text", "sft_mm", "rl"] = "rl"
    """The stage whose model is registered."""
    metrics: str = "metrics/register.json"
    """What the register stage did: version, scores, whether the alias moved."""


@dataclass
class ReevaluateConfig:
    tolerance: float = 0.02
    """A re-evaluation flags a regression when the champion scores more than this below
    its score at registration, or below the base model."""
    metrics: str = "metrics/reevaluate.json"
    """The latest re-evaluation's report."""

    def check(self, key: str) -> None:
        _require(self.tolerance >= 0, f"{key}.tolerance", "a float >= 0", self.tolerance)


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlruns.db"
    """MLflow tracking URI (a server address or a local store); the MLFLOW_TRACKING_URI
    environment variable takes precedence, as in MLflow itself."""
    experiment: str = "avar"
    """MLflow experiment name."""


@dataclass
class OrchestrateConfig:
    backend: Literal["local", "docker"] = "local"
    """Where the Prefect flow runs each `dvc repro <stage>`: a local subprocess, or a
    container of `image` started with the docker SDK (`avar images build` makes it)."""
    retries: int = 1
    """Retries of a stage that failed (a transient error: a lost connection, a killed
    container); DVC resumes from the last finished stage."""
    retry_delay_s: int = 30
    """Seconds between retries."""
    image: str = "ghcr.io/avar-ml/avar-gpu:0.1.0"
    """Container image of the docker backend (docker/Dockerfile): the CUDA variant's tag;
    `avar-cpu:0.1.0` for the CPU variant."""
    gpus: str = "all"
    """GPUs handed to the container: `all`, a count such as `2`, or `none` (the CPU image)."""
    shm_size: str = "16g"
    """Shared memory of the container (dataloader workers and NCCL need more than 64m)."""
    workdir: str = "/workspace"
    """Where the workspace is mounted in the container."""
    env: list[str] = field(
        default_factory=lambda: [
            "MLFLOW_TRACKING_URI",
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
            "MLFLOW_TRACKING_TOKEN",
            "MLFLOW_S3_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "HF_TOKEN",
            "AVAR_PARENT_RUN_ID",
        ]
    )
    """Environment variables passed through to the container when set."""

    def check(self, key: str) -> None:
        _require(self.retries >= 0, f"{key}.retries", "an int >= 0", self.retries)
        _require(self.retry_delay_s >= 0, f"{key}.retry_delay_s", "an int >= 0", self.retry_delay_s)
        _require(
            self.gpus in ("all", "none") or self.gpus.isdigit(),
            f"{key}.gpus",
            "`all`, `none` or a GPU count",
            self.gpus,
        )
        _require(bool(self.image), f"{key}.image", "a non-empty image reference", "")


def _check_nproc(value: str, key: str, inherit: bool = False) -> None:
    ok = value == "auto" or (value.isdigit() and int(value) >= 1) or (inherit and value == "")
    _require(ok, key, "`auto` or a process count >= 1" + (" (or empty)" * inherit), value)


@dataclass
class StageRanks:
    """One stage's own ranks; an empty or zero field takes the shared `launch` value."""

    nproc_per_node: str = ""
    """Processes per host for this stage: `auto`, a count, or empty for the shared value."""
    nnodes: int = 0
    """Hosts this stage spans; 0 for the shared value."""


@dataclass
class LaunchConfig:
    engine: Literal["torchrun", "ray"] = "torchrun"
    """What starts a stage's ranks: `torchrun` (torch's elastic launcher on this host; on
    several hosts every host runs the same `avar stage NAME` and they meet at
    `rdzv_endpoint`) or `ray` (Ray Train places the ranks on a running Ray cluster's nodes;
    the workspace must be shared by the nodes)."""
    nproc_per_node: str = "auto"
    """Processes (ranks) per host: `auto` is one per GPU visible where `avar stage` runs
    and one on a CPU host (under Ray, whose GPUs are on other nodes, give a count)."""
    nnodes: int = 1
    """Hosts a stage spans."""
    rdzv_endpoint: str = ""
    """`host:port` where torchrun's ranks of several hosts meet (c10d rendezvous); unused
    on one host (a free local port is picked)."""
    rdzv_id: str = "avar"
    """Rendezvous id shared by the hosts of one multi-host torchrun stage."""
    ray_address: str = "auto"
    """The Ray cluster to use (`ray.init(address=...)`): `auto` finds the cluster this host
    belongs to, or `host:6379`."""
    log_dir: str = ".avar/logs"
    """Where every rank's stdout and stderr are kept (one folder per stage run)."""
    stages: dict[str, StageRanks] = field(default_factory=dict)
    """Per-stage ranks, e.g. `sft_mm: {nproc_per_node: 8}`; other stages take the shared
    values. Only the stages in RANKED_STAGES run on several ranks."""

    def check(self, key: str) -> None:
        _check_nproc(self.nproc_per_node, f"{key}.nproc_per_node")
        _require(self.nnodes >= 1, f"{key}.nnodes", "an int >= 1", self.nnodes)
        for name, ranks in self.stages.items():
            _require(
                name in RANKED_STAGES,
                f"{key}.stages.{name}",
                "a stage that runs on several ranks: " + ", ".join(RANKED_STAGES),
                name,
            )
            _check_nproc(ranks.nproc_per_node, f"{key}.stages.{name}.nproc_per_node", True)
            _require(ranks.nnodes >= 0, f"{key}.stages.{name}.nnodes", "an int >= 0", ranks.nnodes)
        multi_host = max([self.nnodes, *(r.nnodes for r in self.stages.values())]) > 1
        if self.engine == "torchrun" and multi_host:
            _require(
                ":" in self.rdzv_endpoint,
                f"{key}.rdzv_endpoint",
                "host:port of the rendezvous when a stage spans several hosts under torchrun",
                self.rdzv_endpoint,
            )

    def ranks(self, stage: str) -> tuple[str, int]:
        """(nproc_per_node, nnodes) of `stage`: its own setting, else the shared one."""
        own = self.stages.get(stage, StageRanks())
        return own.nproc_per_node or self.nproc_per_node, own.nnodes or self.nnodes


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
    checkpoint_eval: CheckpointEvalConfig = field(default_factory=CheckpointEvalConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    vas: VasConfig = field(default_factory=VasConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    reevaluate: ReevaluateConfig = field(default_factory=ReevaluateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    orchestrate: OrchestrateConfig = field(default_factory=OrchestrateConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def check(self) -> None:
        for name, section in vars(self).items():
            if hasattr(section, "check"):
                section.check(name)
