"""Work split across ranks and gathered back: which chunks a rank computes, that two real
gloo ranks get every chunk's result in order, and that logged means pool every rank's
values (checked by hand)."""

from __future__ import annotations

import os

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from ports import free_port

from avar import ranks


def test_one_process_computes_every_chunk_in_order():
    assert ranks.chunks(7, 3) == [range(0, 3), range(3, 6), range(6, 7)]
    assert ranks.sharded(5, 2, lambda c: list(c)) == [[0, 1], [2, 3], [4]]
    assert ranks.pooled_means({"a": [1.0, 2.0], "empty": []}) == {"a": 1.5}


def test_rank_one_of_two_takes_every_other_batch(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert ranks.chunks(7, 2) == [range(2, 4), range(6, 7)]
    assert ranks.chunks(7, 2, shard=False) == [range(0, 2), range(2, 4), range(4, 6), range(6, 7)]
    assert not ranks.is_main()


def _two_ranks(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        seen = []
        gathered = ranks.sharded(7, 2, lambda c: (seen.append(c.start), [i * 10 for i in c])[1])
        # rank 0 logged 1, 3 over two steps; rank 1 logged 5 once: the mean of all is 3
        means = ranks.pooled_means({"x": [1.0, 3.0] if rank == 0 else [5.0]})
        results[rank] = (seen, gathered, means, ranks.topology(torch_cpu()))
    finally:
        dist.destroy_process_group()


def torch_cpu():
    import torch

    return torch.device("cpu")


@pytest.mark.slow
def test_two_gloo_ranks_share_the_chunks_and_gather_them_in_order():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_two_ranks, args=(free_port(), results), nprocs=2, join=True)
        results = dict(results)
    everything = [[0, 10], [20, 30], [40, 50], [60]]
    assert results[0][:3] == ([0, 4], everything, {"x": 3.0})
    assert results[1][:3] == ([2, 6], everything, {"x": 3.0})
    topology = results[0][3]
    assert topology["world_size"] == 2 and topology["nodes"] == 1
    assert topology["devices"] == ["cpu", "cpu"]
