"""`avar vas`: measure the Visual Attention Score of a model on a dataset.

Each record is teacher-forced on its reference response (or, with `generate`, on the
model's own greedy response) and the attention masses of the chosen query tokens are
read from the forward pass: efficiently (`mass_probe`) or from eager maps (reference).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from avar.attention.hooks import decoder_attention
from avar.attention.mass import QUERY_SETS
from avar.attention.probe import eager_masses, mass_probe
from avar.attention.steering import steer
from avar.attention.vas import head_mean_masses, vas_per_layer, vas_summary
from avar.config.specs import InterventionSpec, layer_list, layer_range
from avar.data.chats import conversations, prompts
from avar.generate import generate
from avar.ranks import sharded
from avar.segments import encode_batch, model_inputs

IMPLS = ("efficient", "eager")
# A report's dataset-level VAS values: what scoring rows, eval results and the results show.
SUMMARY_KEYS = ("vas", "log10_vas", "vas_of_means", "vas_flag", "image_mass", "system_mass")


@dataclass
class VasSettings:
    queries: str = "response"
    layers: str = "all"
    impl: str = "efficient"
    generate: bool = False
    intervene: InterventionSpec | None = None
    batch_size: int = 8
    max_new_tokens: int = 128

    def __post_init__(self) -> None:
        """Fail before any model is loaded."""
        if self.impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {self.impl!r}")
        if self.queries not in QUERY_SETS:
            raise ValueError(f"queries must be one of {QUERY_SETS}, got {self.queries!r}")
        if self.impl == "eager" and self.intervene is not None:
            raise ValueError("the eager reference does not apply the intervention")
        layer_range(self.layers)


def batch_masses(model, batch: dict, settings: VasSettings) -> torch.Tensor:
    """[L, B, H, S] masses of one collated batch (right-padded, teacher-forced)."""
    segments = batch["segment_ids"]
    if settings.impl == "eager":
        return eager_masses(model, model_inputs(batch), segments, settings.queries, settings.layers)
    with steer(model, settings.intervene, segments) as steering:
        with mass_probe(model, segments, settings.queries, settings.layers, steering) as probe:
            model(**model_inputs(batch))
    return probe.masses()


def chat_masses(model, processor, chats, settings: VasSettings, progress: bool = False):
    """Masses [L, N, H, S] (float32, on CPU) of whole chats, teacher-forced, in batches."""
    per_batch = []
    starts = range(0, len(chats), settings.batch_size)
    for start in tqdm(starts, desc="vas", unit="batch", disable=not progress):
        batch = encode_batch(processor, chats[start : start + settings.batch_size])
        batch = {k: v.to(model.device) for k, v in batch.items()}
        with torch.no_grad():
            per_batch.append(batch_masses(model, batch, settings).float().cpu())
    return torch.cat(per_batch, dim=1)


def measure_vas(
    model,
    processor,
    records,
    root,
    settings: VasSettings,
    system_prompt=None,
    shard=True,
    engine=None,
):
    """The VAS report (see `report`) of `records`, whose images live under `root`. Under
    several ranks each measures every world-size-th batch; every rank gets the report.
    With `settings.generate` and an `engine` (vLLM), the engine writes the answers."""
    turns = prompts(records, root, system_prompt)

    def batch_masses_of(chunk: range) -> torch.Tensor:
        part = [records[i] for i in chunk]
        responses = None
        if settings.generate:
            responses = generate(
                model,
                processor,
                [turns[i] for i in chunk],
                settings.max_new_tokens,
                settings.batch_size,
                settings.intervene,
                progress=False,
                engine=engine,
            )
        chats = conversations(part, root, system_prompt, responses)
        return chat_masses(model, processor, chats, settings)

    parts = sharded(len(records), settings.batch_size, batch_masses_of, shard, "vas")
    n_layers = len(decoder_attention(model))
    return report(torch.cat(parts, dim=1), records, settings, layer_list(settings.layers, n_layers))


def _mean(values: torch.Tensor) -> float | None:
    """Mean over finite values; None when there are none (JSON has no NaN)."""
    finite = values[torch.isfinite(values)]
    return finite.mean().item() if finite.numel() else None


def layer_flags(ratios: torch.Tensor, layer_masses: dict) -> list[str | None]:
    """Per layer: why its VAS is not worth reading (its system mass under the floor), or
    None. ratios [L, N]; layer_masses name -> [L, N]."""
    rows = zip(ratios, layer_masses["image"], layer_masses["system"], strict=True)
    return [vas_summary(_mean(r), _mean(i), _mean(s))["vas_flag"] for r, i, s in rows]


def report(masses: torch.Tensor, records, settings: VasSettings, layers: list[int]) -> dict:
    """Dataset means, per-layer values and per-sample rows from masses [L, N, H, S]."""
    layer_masses = head_mean_masses(masses)  # name -> [L, N]
    ratios = vas_per_layer(masses)  # [L, N]
    sample_vas = ratios.mean(dim=0)  # [N]
    vas = _mean(sample_vas)
    means = {f"{name}_mass": _mean(m.mean(dim=0)) for name, m in layer_masses.items()}
    flags = layer_flags(ratios, layer_masses)
    summary = vas_summary(vas, means["image_mass"], means["system_mass"])
    collapsed = [f"layer {n}: {flag}" for n, flag in zip(layers, flags, strict=True) if flag]
    if summary["vas_flag"] is None and collapsed:  # such a layer dominates the mean ratio
        more = f" (and {len(collapsed) - 1} more layers)" if len(collapsed) > 1 else ""
        summary["vas_flag"] = collapsed[0] + more
    return {
        "vas": vas,
        **summary,
        "vas_per_layer": [_mean(row) for row in ratios],
        "vas_flag_per_layer": flags,
        "layers": layers,
        **means,
        "mass_per_layer": {name: [_mean(row) for row in m] for name, m in layer_masses.items()},
        "n": len(records),
        "n_without_system": int((~torch.isfinite(sample_vas)).sum()),
        "impl": settings.impl,
        "settings": {**asdict(settings), "intervene": str(settings.intervene or "")},
        "samples": [
            {
                "id": record["id"],
                "vas": None if math.isnan(v) else v,
                "image_mass": layer_masses["image"][:, i].mean().item(),
                "system_mass": layer_masses["system"][:, i].mean().item(),
            }
            for i, (record, v) in enumerate(zip(records, sample_vas.tolist(), strict=True))
        ],
    }
