"""The embedded model: a standard HF checkpoint that loads, tokenizes and runs."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoTokenizer
from typer.testing import CliRunner

from avar.cli import app
from avar.data import read_jsonl
from avar.data.chats import to_messages
from avar.models.loader import load_processor, model_family
from avar.models.processor import ImageTextProcessor
from avar.models.tiny import PRESETS, build_config, init_tiny, tokenizer_corpus
from avar.models.tokenizer import QWEN_SPECIAL_TOKENS, REASONING_TOKENS, train_tokenizer
from avar.segments import collate, encode


def test_cli_init_tiny_then_plain_transformers_load_and_forward(tmp_path, visual_jsonl):
    out = tmp_path / "M"
    result = CliRunner().invoke(app, ["model", "init-tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert model.config.model_type == "qwen2_5_vl"
    assert 1_000_000 <= model.num_parameters() <= 5_000_000
    processor = load_processor(str(out))
    record = read_jsonl(visual_jsonl)[0]
    messages = to_messages(record, visual_jsonl.parent, "You are a helpful assistant.")
    batch = collate(processor, [encode(processor, messages)])
    batch.pop("segment_ids")
    with torch.no_grad():
        output = model(**batch)
    assert output.logits.shape[:2] == batch["input_ids"].shape
    # A random model is near-uniform: loss close to log(vocab).
    vocab = model.config.text_config.vocab_size
    assert abs(float(output.loss) - torch.log(torch.tensor(float(vocab)))) < 0.5


def test_saved_directory_is_a_standard_checkpoint(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "processor_config.json",
        "generation_config.json",
    } <= names
    processor_config = json.loads((tiny_dir / "processor_config.json").read_text())
    assert processor_config["processor_class"] == "Qwen2_5_VLProcessor"
    assert processor_config["image_processor"]["size"]["longest_edge"] == 112 * 112
    assert model_family(str(tiny_dir)) == "qwen2_5_vl"


def test_tokenizer_has_every_special_token_as_one_token(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    for token in QWEN_SPECIAL_TOKENS + REASONING_TOKENS:
        assert tokenizer.tokenize(token) == [token]
    ids = tokenizer("<think>a</think><answer>4</answer><|im_end|>")["input_ids"]
    # Reasoning tags survive skipping special tokens (answers are parsed from them).
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>a</think><answer>4</answer>"


def test_config_token_ids_match_the_tokenizer(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    config = AutoModelForImageTextToText.from_pretrained(tiny_dir).config
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert config.text_config.vocab_size >= len(tokenizer)
    head_dim = config.text_config.hidden_size // config.text_config.num_attention_heads
    assert sum(config.text_config.rope_parameters["mrope_section"]) == head_dim // 2


def test_small_preset_size():
    tokenizer = train_tokenizer(tokenizer_corpus(n=50), PRESETS["small"].vocab_size)
    config = build_config(PRESETS["small"], tokenizer)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    assert 30_000_000 <= model.num_parameters() <= 100_000_000


def test_init_tiny_takes_sizes_of_its_own(tmp_path):
    """bench/perception.py builds variations of the tiny preset; a bad name is one line."""
    sizes = dataclasses.replace(PRESETS["tiny"], vision_depth=4, vision_hidden=32)
    config = json.loads((init_tiny(tmp_path / "M", sizes) / "config.json").read_text())
    assert config["vision_config"]["depth"] == 4
    assert config["vision_config"]["hidden_size"] == 32
    with pytest.raises(ValueError, match=r"--preset must be one of \['small', 'tiny'\]"):
        init_tiny(tmp_path / "N", "huge")
    assert not (tmp_path / "N").exists()


def test_falls_back_to_the_image_only_processor(tiny_dir):
    processor = load_processor(str(tiny_dir))
    assert isinstance(processor, ImageTextProcessor)  # no video processor config/torchvision


def test_pixel_bounds_override_changes_image_tokens(tiny_dir, visual_jsonl):
    record = read_jsonl(visual_jsonl)[0]
    messages = to_messages(record, visual_jsonl.parent, None, with_response=False)
    default = encode(load_processor(str(tiny_dir)), messages)
    bigger = encode(load_processor(str(tiny_dir), max_pixels=224 * 224), messages)
    # 112x112 scene: default bound 112*112 keeps it (8x8 patches, 16 tokens); 224*224
    # allows no upscaling beyond the image (smart_resize keeps 112x112): equal counts.
    assert default.image_grid_thw.tolist() == bigger.image_grid_thw.tolist() == [[1, 8, 8]]
    smaller = encode(load_processor(str(tiny_dir), max_pixels=56 * 56), messages)
    assert smaller.image_grid_thw.tolist() == [[1, 4, 4]]  # downscaled to 56x56


def test_unknown_family_is_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type 'llama' is not supported"):
        model_family(str(tmp_path))


def test_flash_attention_where_it_cannot_run_is_one_clear_line(tiny_dir):
    from avar.models.loader import load_model

    if torch.cuda.is_available():
        pytest.skip("this machine can run flash attention's checks")
    with pytest.raises(ValueError, match=r"^model\.attention: flash_attention_2 needs a CUDA GPU"):
        load_model(str(tiny_dir), "cpu", "fp32", "flash_attention_2")
