"""Which process of a stage this is, and how work is split across ranks and gathered back.

A stage runs as one process, or as several ranks started by torch's elastic launcher or by
Ray Train (`avar.launch`); either way the ranks see torchrun's environment (RANK,
WORLD_SIZE, LOCAL_RANK, ...). Inference work (checkpoint scoring, `avar eval`, the vas
stage) is cut into chunks of one batch each; chunk i goes to rank i % world size and the
rows are gathered back in chunk order. A chunk is computed the same way whichever rank
has it, so the rows equal one rank's, in the same order.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

T = TypeVar("T")
NODE_ENV = "AVAR_NODE"
"""Set by the Ray engine to the Ray node id of the worker: how ranks tell their nodes apart."""
ENGINE_ENV = "AVAR_ENGINE"
"""Set by `avar.launch` in every rank it starts: `torchrun` or `ray`."""


def world() -> tuple[int, int]:
    """(rank, world size): from the process group when there is one, else the environment."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Rank 0, the one that writes files, prints summaries and logs to MLflow."""
    return world()[0] == 0


def start(device: torch.device) -> None:
    """Join the stage's process group when several ranks run and none is set up yet (the
    trainers' arguments set one up themselves; inference stages call this)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL's collectives run on the rank's own GPU
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def leave() -> None:
    """Leave the stage's process group, once its work is done. A gloo group left for the
    interpreter's exit can abort the rank ("terminate called without an active
    exception"), failing a stage that had finished; not called after an error, where
    the other ranks may still be inside a collective."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def chunks(n: int, size: int, shard: bool = True) -> list[range]:
    """The chunks (index ranges of one batch each) of `n` items that this rank computes:
    every `world`-th chunk starting at its rank, or all of them with `shard=False`."""
    rank, ranks = world() if shard else (0, 1)
    starts = range(0, n, max(size, 1))
    return [range(s, min(s + size, n)) for i, s in enumerate(starts) if i % ranks == rank]


def gather(local: Sequence[T], n_chunks: int, shard: bool = True) -> list[T]:
    """Every rank's per-chunk results (`local`, in the order `chunks` gave them), put back
    in chunk order on every rank."""
    ranks = world()[1] if shard else 1
    if ranks == 1:
        return list(local)
    every: list[list[T] | None] = [None] * ranks
    dist.all_gather_object(every, list(local))
    ordered = []
    for i in range(n_chunks):
        theirs = every[i % ranks]
        assert theirs is not None  # all_gather_object filled every slot
        ordered.append(theirs[i // ranks])
    return ordered


def sharded(
    n: int, size: int, compute: Callable[[range], T], shard: bool = True, progress: str = ""
) -> list[T]:
    """`compute(chunk)` for every chunk of `n` items, this rank's share computed here, the
    results of all in chunk order on every rank. `progress` names a bar of this rank's
    chunks (shown by rank 0 only)."""
    mine = chunks(n, size, shard)
    bar = tqdm(mine, desc=progress, unit="batch", disable=not progress or not is_main())
    return gather([compute(chunk) for chunk in bar], len(range(0, n, max(size, 1))), shard)


def pooled_means(values: dict[str, list[float]]) -> dict[str, float]:
    """The mean of each named list over every rank's values (all ranks must call it)."""
    local = {k: (sum(v), len(v)) for k, v in values.items() if v}
    _, ranks = world()
    every: list[dict | None] = [local]
    if ranks > 1:
        every = [None] * ranks
        dist.all_gather_object(every, local)
    totals: dict[str, list[float]] = {}
    for part in every:
        for key, (total, count) in (part or {}).items():
            pooled = totals.setdefault(key, [0.0, 0])
            pooled[0] += total
            pooled[1] += count
    return {k: total / count for k, (total, count) in sorted(totals.items())}


def node() -> str:
    """This rank's node: the Ray node id under Ray, else the host and torchrun's node rank."""
    return os.environ.get(NODE_ENV) or f"{socket.gethostname()}/{os.environ.get('GROUP_RANK', 0)}"


def topology(device: torch.device) -> dict:
    """What ran the stage: engine, world size, nodes and each rank's device (all ranks
    must call it; every rank gets the answer)."""
    mine = {"node": node(), "device": str(device)}
    _, ranks = world()
    every = [mine]
    if ranks > 1:
        gathered: list[dict | None] = [None] * ranks
        dist.all_gather_object(gathered, mine)
        every = [g for g in gathered if g is not None]
    return {
        "engine": os.environ.get(ENGINE_ENV, "torchrun" if ranks > 1 else "none"),
        "world_size": ranks,
        "nodes": len({r["node"] for r in every}),
        "devices": [r["device"] for r in every],
    }
