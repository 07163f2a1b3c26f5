"""The loader and segments on tiny random Qwen2-VL and Qwen3-VL checkpoints too."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoTokenizer,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)
from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

from avar.config.schema import ModelConfig
from avar.models.loader import claim_family_processor, load
from avar.models.processor import ImageTextProcessor
from avar.models.tiny import chat_template
from avar.segments import Segment, encode_batch


def token_ids(tokenizer) -> dict:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def qwen2_vl(tokenizer):
    text = {
        "vocab_size": 704,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]},
    }
    vision = {"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2}
    config = Qwen2VLConfig(text_config=text, vision_config=vision, **token_ids(tokenizer))
    return Qwen2VLForConditionalGeneration(config), 14, "Qwen2VLProcessor"


def qwen3_vl(tokenizer):
    text = {
        "vocab_size": 704,
        "hidden_size": 64,
        "intermediate_size": 128,
        "head_dim": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1e4,
            "mrope_section": [2, 3, 3],
            "mrope_interleaved": True,
        },
    }
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [0],
    }
    config = Qwen3VLConfig(text_config=text, vision_config=vision, **token_ids(tokenizer))
    return Qwen3VLForConditionalGeneration(config), 16, "Qwen3VLProcessor"


@pytest.mark.parametrize("build", [qwen2_vl, qwen3_vl], ids=["qwen2_vl", "qwen3_vl"])
def test_family_loads_encodes_and_runs(build, tiny_dir, tmp_path, multi_image_chat):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    torch.manual_seed(0)
    model, patch, processor_class = build(tokenizer)
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch, min_pixels=(2 * patch) ** 2, max_pixels=(8 * patch) ** 2
    )
    ImageTextProcessor(image_processor, tokenizer, chat_template=chat_template()).save_pretrained(
        tmp_path
    )
    tokenizer.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    claim_family_processor(tmp_path, processor_class)

    loaded, processor = load(str(tmp_path), ModelConfig(device="cpu", dtype="fp32"))
    assert type(loaded) is type(model)
    assert processor.image_processor.patch_size == patch
    messages = multi_image_chat
    batch = encode_batch(processor, [messages, messages[:2]], padding_side="left")
    reference = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
    expected = reference["input_ids"][0]
    n = len(expected)  # the longer row has no padding
    assert batch["input_ids"][0, -n:].tolist() == expected
    merged = (batch["image_grid_thw"].prod(-1) // 4).sum()
    assert int((batch["segment_ids"] == Segment.IMAGE).sum()) == int(merged)
    batch.pop("segment_ids")
    with torch.no_grad():
        out = loaded(**batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("build", [qwen2_vl, qwen3_vl], ids=["qwen2_vl", "qwen3_vl"])
def test_family_masses_equal_eager_maps(build, tiny_dir, multi_image_chat):
    """The mass probe on the other families' attention modules, against the same pass's
    eager maps (left-padded, three images)."""
    from avar.attention.mass import select_queries
    from avar.attention.probe import mass_probe, masses_from_maps

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    torch.manual_seed(1)
    model, patch, _ = build(tokenizer)
    model.eval().set_attn_implementation("eager")
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch, min_pixels=(2 * patch) ** 2, max_pixels=(8 * patch) ** 2
    )
    processor = ImageTextProcessor(image_processor, tokenizer, chat_template=chat_template())
    batch = encode_batch(processor, [multi_image_chat, multi_image_chat[:2]], padding_side="left")
    segments = batch.pop("segment_ids")
    batch.pop("labels")
    queries = select_queries(segments, "response")
    with torch.no_grad(), mass_probe(model, segments) as probe:
        maps = model(**batch, output_attentions=True).attentions
    reference = masses_from_maps(maps, segments, queries, list(range(len(maps))))
    torch.testing.assert_close(probe.masses(), reference, rtol=1e-5, atol=1e-7)
