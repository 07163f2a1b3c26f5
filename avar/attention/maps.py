"""`avar attention-map`: where a response looks in the image, and VAS per layer.

Left: the record's (first) image with the response tokens' attention over its merged
patches overlaid (mean over the selected layers and heads). Right: per-layer VAS bars with
the image and system masses beside them. Read from one teacher-forced pass through the
efficient probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from avar.attention.probe import mass_probe
from avar.attention.steering import steer
from avar.attention.vas import head_mean_masses, vas_per_layer
from avar.data.chats import conversations
from avar.io import save_figure
from avar.segments import Segment, conversation_images, encode_batch, model_inputs


@dataclass
class AttentionMap:
    image: Image.Image
    heat: np.ndarray  # [rows, cols] of merged patches: share of response attention
    layers: list[int]
    vas_per_layer: list[float]
    image_mass_per_layer: list[float]
    system_mass_per_layer: list[float]
    title: str


def attention_map(
    model,
    processor,
    record,
    root,
    system_prompt=None,
    layers="all",
    response=None,
    intervention=None,
):
    """The attention map of one record, teacher-forced on its (or the given) response."""
    if not record["images"]:
        raise ValueError(f"record {record['id']!r} has no image to draw attention over")
    chat = conversations([record], root, system_prompt, [response] if response else None)[0]
    batch = encode_batch(processor, [chat])
    batch = {k: v.to(model.device) for k, v in batch.items()}
    segments = batch["segment_ids"]
    with torch.no_grad(), steer(model, intervention, segments) as steering:
        with mass_probe(model, segments, "response", layers, steering) as probe:
            model(**model_inputs(batch))
    n_queries = probe.query_mask.sum().item()
    per_key = probe.key_profiles()[:, 0].mean(dim=(0, 1)).cpu() / n_queries  # [T]
    _, grid_h, grid_w = batch["image_grid_thw"][0].tolist()
    merge = processor.image_processor.merge_size
    rows, cols = grid_h // merge, grid_w // merge
    image_keys = (segments[0] == Segment.IMAGE).nonzero().squeeze(1).cpu()[: rows * cols]
    masses = probe.masses().cpu()
    layer_masses = head_mean_masses(masses)
    return AttentionMap(
        image=conversation_images(chat)[0],
        heat=per_key[image_keys].reshape(rows, cols).numpy(),
        layers=probe.layers,
        vas_per_layer=vas_per_layer(masses)[:, 0].tolist(),
        image_mass_per_layer=layer_masses["image"][:, 0].tolist(),
        system_mass_per_layer=layer_masses["system"][:, 0].tolist(),
        title=f"{record['id']}: {record['question'].splitlines()[0][:70]}",
    )


def draw(amap: AttentionMap, out: str | Path) -> Path:
    """Write the two-panel PNG (atomically)."""

    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.8), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[1, 1.3])
    width, height = amap.image.size
    left.imshow(amap.image)
    shown = left.imshow(
        amap.heat, cmap="inferno", alpha=0.55, extent=(0, width, height, 0), interpolation="nearest"
    )
    figure.colorbar(shown, ax=left, shrink=0.8, label="share of response attention per patch")
    left.set_title(f"response -> image ({amap.heat.sum():.1%} of attention)")
    left.axis("off")
    positions = np.arange(len(amap.layers))
    right.bar(positions, amap.vas_per_layer, color="tab:blue", label="VAS (image / system)")
    right.set_xticks(positions, [str(layer) for layer in amap.layers])
    right.set_xlabel("layer")
    right.set_ylabel("VAS")
    right.set_ylim(0, 1.35 * max(np.nanmax(amap.vas_per_layer), 1e-6))  # room for the legend
    masses = right.twinx()
    masses.plot(positions, amap.image_mass_per_layer, "o-", color="tab:orange", label="image mass")
    masses.plot(
        positions, amap.system_mass_per_layer, "s--", color="tab:green", label="system mass"
    )
    masses.set_ylabel("attention mass")
    masses.set_ylim(0, 1.35 * max(amap.image_mass_per_layer + amap.system_mass_per_layer))
    handles = right.get_legend_handles_labels()[0] + masses.get_legend_handles_labels()[0]
    right.legend(handles=handles, loc="upper left", fontsize="small")
    right.set_title(f"VAS per layer (mean {np.nanmean(amap.vas_per_layer):.3f})")
    figure.suptitle(amap.title)
    return save_figure(figure, out)
