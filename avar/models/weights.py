"""Weights avar saved, loaded back whole: every saved tensor into the model, or an error.

transformers 5 renames checkpoint keys on load (Qwen2.5-VL: `visual.*` -> `model.visual.*`,
`model.*` -> `model.language_model.*`) and reverts the renaming on save, so the folders avar
writes (checkpoints, published models) carry the checkpoint's names while the model in
memory uses its own. Loading such a folder into a live model (resuming) must rename the
way `from_pretrained` does, and a key left unmatched on either side is an error that names
it, never a warning: `load_state_dict(strict=False)` on unrenamed keys loads nothing.
"""

from __future__ import annotations

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
