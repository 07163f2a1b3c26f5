"""Shared fixtures: one tiny model and one small synthetic dataset per test session."""

from __future__ import annotations

import pytest
from PIL import Image

from avar.data import synthesize
from avar.models.loader import load_model, load_processor
from avar.models.tiny import init_tiny


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return init_tiny(tmp_path_factory.mktemp("models") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="session")
def processor(tiny_dir):
    return load_processor(str(tiny_dir))


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    return load_model(str(tiny_dir), device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def visual_jsonl(tmp_path_factory):
    return synthesize("visual", 40, 0, tmp_path_factory.mktemp("data") / "visual")


@pytest.fixture(scope="session")
def text_jsonl(tmp_path_factory):
    return synthesize("text", 40, 0, tmp_path_factory.mktemp("data") / "text")


def image(width, height, color=(200, 30, 30)):
    return Image.new("RGB", (width, height), color)


@pytest.fixture()
def multi_image_chat():
    """Two user turns: two images (112x112, 56 wide x 84 high), then one more."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image(112, 112)},
                {"type": "text", "text": "Compare"},
                {"type": "image", "image": image(56, 84, (0, 0, 255))},
                {"type": "text", "text": "and"},
            ],
        },
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": [{"type": "image", "image": image(112, 112)}]},
        {"role": "assistant", "content": "Again."},
    ]
