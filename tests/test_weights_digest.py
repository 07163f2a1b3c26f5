"""The resume fingerprint of large starting weights: the size, the safetensors header and
64 evenly spread blocks instead of the whole file. It changes when a model is retrained or
swapped, and (its stated limit) not for an edit confined to the bytes between blocks."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save_file

from avar.models import weights
from avar.train.run import StagePlan, fingerprint


@pytest.fixture
def small_blocks(monkeypatch):
    """4 KiB blocks, so that an 8 MiB file is sampled with gaps between the blocks."""
    monkeypatch.setattr(weights, "SAMPLE_BYTES", 4096)
    monkeypatch.setattr(weights, "SAMPLED_ABOVE", 1 << 20)


def save(path, tensors):
    save_file(tensors, str(path))
    return path


def test_small_files_are_hashed_whole(tmp_path):
    path = save(tmp_path / "model.safetensors", {"w": torch.arange(1000.0)})
    assert weights.weights_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_large_files_are_sampled_and_a_retrained_or_reshaped_model_changes_it(
    tmp_path, small_blocks
):
    start = torch.randn(2 << 20)  # 8 MiB of float32
    first = weights.weights_digest(save(tmp_path / "a.safetensors", {"w": start}))
    again = weights.weights_digest(save(tmp_path / "b.safetensors", {"w": start.clone()}))
    assert first.startswith("sampled:") and first == again
    trained = weights.weights_digest(save(tmp_path / "c.safetensors", {"w": start + 1e-3}))
    reshaped = {"w": start.view(2, -1)}
    assert trained != first
    assert weights.weights_digest(save(tmp_path / "d.safetensors", reshaped)) != first
    renamed = weights.weights_digest(save(tmp_path / "e.safetensors", {"v": start}))
    assert renamed != first


def test_an_edit_between_the_sampled_blocks_is_what_it_can_miss(tmp_path, small_blocks):
    path = save(tmp_path / "model.safetensors", {"w": torch.randn(2 << 20)})
    before = weights.weights_digest(path)
    data = bytearray(path.read_bytes())
    size = len(data)
    gap = (size - 4096) * 10 // 63 + 4096 + 100  # just past the 11th block: not sampled
    data[gap] ^= 0xFF
    path.write_bytes(bytes(data))
    assert weights.weights_digest(path) == before
    data[(size - 4096) * 10 // 63 + 10] ^= 0xFF  # inside the 11th block: caught
    path.write_bytes(bytes(data))
    assert weights.weights_digest(path) != before


def test_the_stage_fingerprint_follows_the_starting_weights(tmp_path, small_blocks):
    from avar.config.schema import SftMmConfig

    save(tmp_path / "model.safetensors", {"w": torch.randn(2 << 20)})
    plan = StagePlan("sft_mm", SftMmConfig(), str(tmp_path), lambda p: None, object)
    first = fingerprint(plan)
    save(tmp_path / "model.safetensors", {"w": torch.randn(2 << 20)})
    assert fingerprint(plan)["init_sha256"] != first["init_sha256"]
    assert fingerprint(plan, world_size=2)["world_size"] == 2
