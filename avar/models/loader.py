"""Load (model, processor) for Qwen2-VL, Qwen2.5-VL and Qwen3-VL checkpoints.

By local path or hub id. The family's own processor is used where it can be built; where
it cannot (no torchvision for its video half, or no video config), avar's image-only
`ImageTextProcessor` is built from the same files.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from avar.config.schema import ModelConfig
from avar.models.processor import ImageTextProcessor
from avar.models.weights import WeightMismatch, mismatch_message

log = logging.getLogger(__name__)

FAMILIES = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` is CUDA when available; each rank of a stage takes its own GPU (LOCAL_RANK)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on CUDA and fp32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def looks_local(name_or_path: str) -> bool:
    """A folder path rather than a hub id (`org/name`): it exists, or it starts like a path."""
    text = str(name_or_path)
    return Path(text).exists() or text.startswith((".", "/", "~")) or text.count("/") > 1


def model_family(name_or_path: str) -> str:
    """The checkpoint's model_type, checked to be a supported family."""
    if looks_local(name_or_path):
        folder = Path(name_or_path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"model {name_or_path}: no such folder")
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"model {name_or_path}: no config.json in the folder")
    family = AutoConfig.from_pretrained(name_or_path).model_type
    if family not in FAMILIES:
        raise ValueError(
            f"{name_or_path}: model_type '{family}' is not supported; "
            f"expected one of {sorted(FAMILIES)}"
        )
    return family


def load_processor(name_or_path: str, min_pixels: int = 0, max_pixels: int = 0):
    """The family's processor, else the image-only one; pixel bounds overridden when > 0."""
    processor: Any = None
    try:
        processor = AutoProcessor.from_pretrained(name_or_path)
    except (OSError, ImportError, ValueError, TypeError) as err:
        log.debug("family processor of %s unavailable: %s", name_or_path, err)
        log.info("%s: using avar's image-only processor", name_or_path)
    if getattr(processor, "image_processor", None) is None:
        processor = ImageTextProcessor.from_pretrained(name_or_path)
    if min_pixels or max_pixels:
        size = dict(processor.image_processor.size)
        size["shortest_edge"] = min_pixels or size["shortest_edge"]
        size["longest_edge"] = max_pixels or size["longest_edge"]
        processor.image_processor.size = type(processor.image_processor.size)(**size)
    return processor


def load_model(
    name_or_path: str,
    device: str = "auto",
    dtype: str = "auto",
    attn_implementation: str = "sdpa",
):
    """The model in eval mode on `device`, with the requested attention implementation.

    Every weight of the checkpoint must fill a weight of the model and every weight of the
    model must come from the checkpoint: anything else raises WeightMismatch with the names.
    """
    model_family(name_or_path)
    target = resolve_device(device)
    require_kernel(attn_implementation)
    try:
        model, info = AutoModelForImageTextToText.from_pretrained(
            name_or_path,
            dtype=resolve_dtype(dtype, target),
            attn_implementation=attn_implementation,
            output_loading_info=True,
        )
    except (OSError, RuntimeError, ValueError, SafetensorError) as err:
        if not looks_local(name_or_path):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightMismatch(
            f"model {name_or_path}: its weights do not load ({first}); the files may be "
            "truncated or corrupt: rebuild them (`dvc repro`, or rerun the stage)"
        ) from None
    missing, unexpected = info["missing_keys"], info["unexpected_keys"]
    if missing or unexpected:
        raise WeightMismatch(mismatch_message(name_or_path, sorted(missing), sorted(unexpected)))
    if info["mismatched_keys"]:
        shapes = ", ".join(f"{key} {list(a)} vs {list(b)}" for key, a, b in info["mismatched_keys"])
        raise WeightMismatch(f"{name_or_path}: weights of the wrong shape: {shapes}")
    return model.to(target).eval()


def require_kernel(attn_implementation: str) -> None:
    """flash_attention_2 only where it can run, else one line saying what it needs."""
    if attn_implementation != "flash_attention_2":
        return
    if not torch.cuda.is_available():
        raise ValueError(
            "model.attention: flash_attention_2 needs a CUDA GPU; use sdpa on this machine"
        )
    if importlib.util.find_spec("flash_attn") is None:
        raise ValueError(
            "model.attention: flash_attention_2 needs the flash-attn package (in avar's GPU "
            "image; elsewhere `pip install flash-attn --no-build-isolation`), or use sdpa"
        )


def load(name_or_path: str, section: ModelConfig, attn_implementation: str | None = None):
    """(model, processor) of a checkpoint with the `model` section's device, dtype and pixel
    bounds: how every command and stage loads a model to run it."""
    attention = attn_implementation or section.attention
    model = load_model(name_or_path, section.device, section.dtype, attention)
    return model, load_processor(name_or_path, section.min_pixels, section.max_pixels)


def claim_family_processor(directory: Path, processor_class: str = "Qwen2_5_VLProcessor") -> None:
    """Name the family's processor class in saved configs, as real checkpoints do."""
    for name in ("processor_config.json", "tokenizer_config.json"):
        path = Path(directory) / name
        if path.exists():
            data = json.loads(path.read_text())
            data["processor_class"] = processor_class
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
