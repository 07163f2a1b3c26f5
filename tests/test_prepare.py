"""`avar prepare` (what `make run` runs) end to end, and clear CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from avar.cli import app
from avar.data import read_jsonl

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def test_prepare_builds_validates_and_summarises(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            "prepare",
            "--params",
            str(ROOT / "params.yaml"),
            "-S",
            "data.visual.n=12",
            "-S",
            "data.text.n=6",
            "-S",
            "data.heldout.n=4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "models/init/model.safetensors").is_file()
    assert len(read_jsonl(tmp_path / "data/raw/visual/data.jsonl")) == 12
    assert len(read_jsonl(tmp_path / "data/raw/text/data.jsonl")) == 6
    heldout = read_jsonl(tmp_path / "data/raw/heldout/data.jsonl")
    assert [r["id"] for r in heldout] == [f"heldout-{i:06d}" for i in range(4)]
    assert all((tmp_path / "data/raw/heldout" / r["images"][0]).is_file() for r in heldout)
    assert "22 valid records, 16 images" in result.output
    assert "tokens per segment" in result.output
    # re-running is safe and gives the same data
    before = (tmp_path / "data/raw/visual/data.jsonl").read_bytes()
    again = runner.invoke(
        app,
        [
            "prepare",
            "--params",
            str(ROOT / "params.yaml"),
            "-S",
            "data.visual.n=12",
            "-S",
            "data.text.n=6",
            "-S",
            "data.heldout.n=4",
        ],
    )
    assert again.exit_code == 0
    assert (tmp_path / "data/raw/visual/data.jsonl").read_bytes() == before
    assert not [p for p in (tmp_path / "data/raw").iterdir() if p.name.startswith(".")]


def test_bad_override_exits_2_naming_the_key(tmp_path):
    result = runner.invoke(
        app, ["prepare", "--params", str(ROOT / "params.yaml"), "-S", "rl.group_size=1"]
    )
    assert result.exit_code == 2
    assert "override 'rl.group_size=1': rl.group_size: expected an int >= 2, got 1" in (
        result.output
    )


def test_params_show_resolves_overrides():
    result = runner.invoke(
        app, ["params", "show", "--params", str(ROOT / "params.yaml"), "-S", "sft_mm.alpha=0.5"]
    )
    assert result.exit_code == 0
    assert json.loads(result.output)["sft_mm"]["alpha"] == 0.5


def test_bad_synth_arguments_exit_1_without_output(tmp_path):
    result = runner.invoke(
        app, ["data", "synth", "--kind", "audio", "--n", "3", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 1 and "--kind must be 'visual' or 'text'" in result.output
    assert not (tmp_path / "x").exists()


def test_failed_synthesis_leaves_nothing_half_written(tmp_path, monkeypatch):
    import avar.data.synth as synth

    out = synth.synthesize("text", 3, 0, tmp_path / "d")
    before = out.read_bytes()

    def broken(rng, index):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth, "text_record", broken)
    try:
        synth.synthesize("text", 3, 1, tmp_path / "d")
    except RuntimeError:
        pass
    assert out.read_bytes() == before  # the earlier output is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temp folder left
