"""`avar attention-map`: the heat map's numbers and a PNG that opens."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from avar.attention.maps import attention_map
from avar.cli import app
from avar.data import read_jsonl

PARAMS = str(Path(__file__).parents[1] / "params.yaml")


def test_heat_covers_the_image_patches(tiny_model, processor, visual_jsonl):
    record = read_jsonl(visual_jsonl)[0]
    amap = attention_map(tiny_model, processor, record, visual_jsonl.parent)
    # A 112x112 scene at patch 14 and merge 2 is a 4x4 grid of merged patches.
    assert amap.heat.shape == (4, 4)
    assert (amap.heat > 0).all()
    # One image: its patches hold the whole image mass (mean over layers).
    mean_image_mass = sum(amap.image_mass_per_layer) / len(amap.layers)
    assert amap.heat.sum() == pytest.approx(mean_image_mass, rel=1e-5)
    assert amap.layers == [0, 1, 2, 3] and len(amap.vas_per_layer) == 4


def test_attention_map_cli_writes_a_png(tiny_dir, visual_jsonl, tmp_path):
    out = tmp_path / "maps" / "map.png"
    args = [
        "attention-map",
        "--model",
        str(tiny_dir),
        "--data",
        str(visual_jsonl),
        "--index",
        "2",
        "--out",
        str(out),
        "--params",
        PARAMS,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.size == (1210, 528)
        assert len(picture.getcolors(2**16) or range(2**16)) > 50  # drawn, not blank


@pytest.mark.parametrize("index, message", [(99, "records 0-39"), (-1, "records 0-39")])
def test_attention_map_cli_bad_index(tiny_dir, visual_jsonl, tmp_path, index, message):
    out = tmp_path / "m.png"
    args = [
        "attention-map",
        "--model",
        str(tiny_dir),
        "--data",
        str(visual_jsonl),
        "--index",
        str(index),
        "--out",
        str(out),
        "--params",
        PARAMS,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and message in result.output
    assert not out.exists()


def test_text_only_record_has_no_map(tiny_model, processor, text_jsonl):
    with pytest.raises(ValueError, match="has no image"):
        attention_map(tiny_model, processor, read_jsonl(text_jsonl)[0], text_jsonl.parent)
