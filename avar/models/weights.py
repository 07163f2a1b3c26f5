"""Weights avar saved, loaded back whole: every saved tensor into the model, or an error.

transformers 5 renames checkpoint keys on load (Qwen2.5-VL: `visual.*` -> `model.visual.*`,
`model.*` -> `model.language_model.*`) and reverts the renaming on save, so the folders avar
writes (checkpoints, published models) carry the checkpoint's names while the model in
memory uses its own. Loading such a folder into a live model (resuming) must rename the
way `from_pretrained` does, and a key left unmatched on either side is an error that names
it, never a warning: `load_state_dict(strict=False)` on unrenamed keys loads nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import WeightRenaming, rename_source_key

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
SHOWN = 8  # names listed in an error; the rest are counted


class WeightMismatch(ValueError):
    """Saved weights and a model whose names do not pair up one to one (bad input: the CLI
    reports it as one line)."""


def weight_files(folder: str | Path) -> list[Path]:
    """The safetensors files of a saved model: the single file, or every shard of its index."""
    folder = Path(folder)
    if (folder / SAFE_INDEX).is_file():
        shards = json.loads((folder / SAFE_INDEX).read_text())["weight_map"].values()
        return [folder / name for name in sorted(set(shards))]
    if (folder / SAFE_WEIGHTS).is_file():
        return [folder / SAFE_WEIGHTS]
    raise WeightMismatch(f"{folder}: no {SAFE_WEIGHTS} or {SAFE_INDEX} to load weights from")


def model_names(model: torch.nn.Module, saved: list[str]) -> dict[str, str]:
    """Saved key -> the model's key, renamed as `from_pretrained` renames it."""
    conversions = getattr(model, "_weight_conversions", None) or get_model_conversion_mapping(model)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if not isinstance(c, WeightRenaming)]
    expected = dict.fromkeys(model.state_dict(), True)
    names = {}
    for key in saved:
        name, converter = rename_source_key(
            key, renamings, converters, model.base_model_prefix, expected
        )
        if converter is not None:  # a fused or split tensor: not a plain rename
            raise WeightMismatch(f"{key}: saved in a converted layout avar cannot load in place")
        names[key] = name
    return names


def unmatched(model: torch.nn.Module, loaded: set[str]) -> tuple[list[str], list[str]]:
    """(model keys no saved tensor fills, loaded keys the model lacks). A key tied to a loaded
    one (the LM head sharing the embeddings) is filled through it."""
    params = model.state_dict(keep_vars=True)
    filled = {id(params[name]) for name in loaded if name in params}
    missing = sorted(k for k, v in params.items() if k not in loaded and id(v) not in filled)
    return missing, sorted(loaded - set(params))


def mismatch_message(where: str, missing: list[str], unexpected: list[str]) -> str:
    parts = []
    for label, keys in (
        ("model weights not in the saved files", missing),
        ("saved weights the model has no place for", unexpected),
    ):
        if keys:
            more = f" (and {len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
            parts.append(f"{len(keys)} {label}: {', '.join(keys[:SHOWN])}{more}")
    return f"{where}: weights do not match the model; " + "; ".join(parts)


def saved_shapes(folder: str | Path) -> dict[str, list[int]]:
    """Saved key -> shape, from the safetensors headers (no tensor is read)."""
    shapes = {}
    for path in weight_files(folder):
        with safe_open(str(path), framework="pt") as handle:
            shapes.update({key: list(handle.get_slice(key).get_shape()) for key in handle.keys()})
    return shapes


def check_saved(model: torch.nn.Module, folder: str | Path) -> dict[str, str]:
    """Saved key -> model key for `folder`, from the file headers only; raises WeightMismatch
    unless every saved tensor and every model weight pair up with the same shape."""
    shapes = saved_shapes(folder)
    names = model_names(model, list(shapes))
    missing, unexpected = unmatched(model, set(names.values()))
    if missing or unexpected:
        raise WeightMismatch(mismatch_message(str(folder), missing, unexpected))
    params = model.state_dict()
    for key, name in names.items():
        if shapes[key] != list(params[name].shape):
            raise WeightMismatch(
                f"{folder}: {key} has shape {shapes[key]}, the model's {name} "
                f"{list(params[name].shape)}"
            )
    return names


@torch.no_grad()
def load_saved_weights(model: torch.nn.Module, folder: str | Path) -> int:
    """Copy every tensor of `folder` into `model` (in place, in the model's dtype and on its
    device); returns how many. Nothing is copied unless all of them pair up."""
    names = check_saved(model, folder)
    params = model.state_dict()
    for path in weight_files(folder):
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                params[names[key]].copy_(handle.get_tensor(key))
    return len(names)


SAMPLED_ABOVE = 256 << 20
"""Weight files larger than this (bytes) are fingerprinted by samples, not read whole."""
SAMPLE_BLOCKS = 64
SAMPLE_BYTES = 1 << 20


def weights_digest(path: str | Path, sampled_above: int | None = None) -> str:
    """What a stage's resume fingerprint records of a starting weights file.

    Up to `sampled_above` bytes: the sha256 of the whole file. Larger (a 7B model's 4 GB
    shards): the sha256 of its size, its safetensors header (every tensor's name, dtype,
    shape and offsets) and 64 blocks of 1 MiB spread evenly over the file, 64 MiB read
    instead of all of it. Training changes nearly every byte of every tensor, so any
    retrained or swapped model changes a sampled block; what it can miss is an edit
    confined to the bytes between samples that keeps every shape (one tensor rewritten
    in place, say)."""
    path = Path(path)
    size = path.stat().st_size
    sampled_above = SAMPLED_ABOVE if sampled_above is None else sampled_above
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if size <= sampled_above:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
            return digest.hexdigest()
        digest.update(str(size).encode())
        header = int.from_bytes(handle.read(8), "little")
        digest.update(handle.read(min(header, size - 8)))
        for i in range(SAMPLE_BLOCKS):
            handle.seek((size - SAMPLE_BYTES) * i // (SAMPLE_BLOCKS - 1))
            digest.update(handle.read(SAMPLE_BYTES))
    return f"sampled:{digest.hexdigest()}"
