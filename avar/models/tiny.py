"""`avar model init-tiny`: a randomly initialised Qwen2.5-VL-architecture model.

The directory it writes is a standard HF checkpoint (config.json, model.safetensors,
tokenizer.json, preprocessor_config.json, chat_template.jinja) that
`AutoModelForImageTextToText.from_pretrained` loads. The tokenizer is trained on a
synthetic corpus (both record kinds, formatted as avar's reasoning traces).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)
from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

from avar.data.synth_text import text_record
from avar.data.synth_visual import visual_record
from avar.io import atomic_dir
from avar.models.loader import claim_family_processor
from avar.models.processor import ImageTextProcessor
from avar.models.tokenizer import train_tokenizer


@dataclass(frozen=True)
class Preset:
    """Sizes of an embedded model."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vision_hidden: int
    vision_depth: int
    vision_heads: int
    max_positions: int
    min_pixels: int
    max_pixels: int


PRESETS = {
    # ~1.2M parameters: the embedded default and the test model.
    "tiny": Preset(1024, 128, 384, 4, 4, 2, 64, 2, 2, 8192, 56 * 56, 112 * 112),
    # ~41M parameters: for benchmarks at thousands of (mostly image) tokens.
    "small": Preset(4096, 512, 1536, 12, 8, 2, 256, 4, 4, 32768, 56 * 56, 448 * 448),
}


def chat_template() -> str:
    return resources.files("avar.templates").joinpath("qwen_vl_chat.jinja").read_text()


def tokenizer_corpus(n: int = 1500, seed: int = 0) -> list[str]:
    """Synthetic questions and traces of both kinds, plus the template's words."""
    rng = random.Random(f"avar-tokenizer-{seed}")
    corpus = ["system\nYou are a helpful assistant.", "user\n", "assistant\n"]
    for index in range(n):
        for record in (visual_record(rng, index, 112)[0], text_record(rng, index)):
            steps = " ".join(record["solution"])
            corpus.append(record["question"])
            corpus.append(f"<think>\n{steps}\n</think>\n<answer>{record['answer']}</answer>")
    return corpus


def build_config(preset: Preset, tokenizer) -> Qwen2_5_VLConfig:
    ids = tokenizer.convert_tokens_to_ids
    head_dim = preset.hidden_size // preset.num_heads
    half = head_dim // 2  # M-RoPE splits the rotary half-dims into (t, h, w) sections
    mrope = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    vocab = -(-len(tokenizer) // 64) * 64
    text = {
        "vocab_size": vocab,
        "hidden_size": preset.hidden_size,
        "intermediate_size": preset.intermediate_size,
        "num_hidden_layers": preset.num_layers,
        "num_attention_heads": preset.num_heads,
        "num_key_value_heads": preset.num_kv_heads,
        "max_position_embeddings": preset.max_positions,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
        "bos_token_id": ids("<|endoftext|>"),
        "eos_token_id": ids("<|im_end|>"),
        "pad_token_id": ids("<|endoftext|>"),
        "tie_word_embeddings": True,
    }
    vision = {
        "depth": preset.vision_depth,
        "hidden_size": preset.vision_hidden,
        "intermediate_size": 2 * preset.vision_hidden,
        "num_heads": preset.vision_heads,
        "out_hidden_size": preset.hidden_size,
        "fullatt_block_indexes": list(range(1, preset.vision_depth, 2)),
        "window_size": 56,
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def init_tiny(out: str | Path, preset: str | Preset = "tiny", seed: int = 0) -> Path:
    """Build, initialise and save a model of `preset` (a name, or sizes of its own) with its
    tokenizer and processor."""
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    sizes = PRESETS[preset] if isinstance(preset, str) else preset
    tokenizer = train_tokenizer(tokenizer_corpus(), sizes.vocab_size)
    tokenizer.chat_template = chat_template()
    config = build_config(sizes, tokenizer)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[config.text_config.eos_token_id, config.text_config.pad_token_id],
        pad_token_id=config.text_config.pad_token_id,
        do_sample=False,
    )
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=sizes.min_pixels, max_pixels=sizes.max_pixels
    )
    processor = ImageTextProcessor(image_processor, tokenizer, chat_template=chat_template())
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        claim_family_processor(tmp)
    return Path(out)
