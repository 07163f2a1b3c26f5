"""VAS arithmetic, the attention-guided losses by hand, and `avar vas` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from avar.attention.losses import attention_guided_loss, enhance_image_loss, suppress_system_loss
from avar.attention.vas import sequence_vas, vas_per_layer
from avar.cli import app
from avar.segments import Segment

S = Segment
PARAMS = str(Path(__file__).parents[1] / "params.yaml")


def masses_of(image, system):
    """[L, B, H, S] with the given image and system masses ([L, B, H] nested lists)."""
    image, system = torch.tensor(image), torch.tensor(system)
    masses = torch.zeros(*image.shape, len(Segment))
    masses[..., S.IMAGE], masses[..., S.SYSTEM] = image, system
    return masses


def test_vas_by_hand():
    # 2 layers, 1 sequence, 2 heads.
    masses = masses_of(image=[[[0.2, 0.4]], [[0.6, 0.2]]], system=[[[0.1, 0.1]], [[0.2, 0.0]]])
    # layer 0: image 0.3 / system 0.1 = 3; layer 1: image 0.4 / system 0.1 = 4
    torch.testing.assert_close(vas_per_layer(masses), torch.tensor([[3.0], [4.0]]))
    torch.testing.assert_close(sequence_vas(masses), torch.tensor([3.5]))


def test_vas_is_nan_without_system_mass():
    masses = masses_of(image=[[[0.5], [0.5]]], system=[[[0.25], [0.0]]])
    assert vas_per_layer(masses)[0, 0].item() == 2.0
    assert math.isnan(vas_per_layer(masses)[0, 1].item())


SEGMENTS = torch.tensor(
    [
        [S.SYSTEM, S.IMAGE, S.RESPONSE],
        [S.SYSTEM, S.USER_TEXT, S.RESPONSE],  # text only: no image keys
    ]
)


def test_enhance_image_loss_by_hand():
    masses = masses_of(image=[[[0.5, 0.25], [0.0, 0.0]]], system=[[[0.1, 0.1], [0.2, 0.2]]])
    loss, stats = enhance_image_loss(masses, SEGMENTS, eps=0.0)
    # Only the first sequence has image keys: -(log .5 + log .25) / 2 = 1.5 ln 2
    assert loss.item() == pytest.approx(1.5 * math.log(2))
    assert stats == {"loss": pytest.approx(1.5 * math.log(2)), "image_mass": pytest.approx(0.375)}


def test_suppress_system_loss_by_hand():
    masses = masses_of(image=[[[0.5, 0.5], [0.0, 0.0]]], system=[[[0.5, 0.5], [0.25, 0.25]]])
    loss, stats = suppress_system_loss(masses, SEGMENTS, eps=0.0)
    # Both sequences have system keys: (2 log .5 + 2 log .25) / 4 = -1.5 ln 2
    assert loss.item() == pytest.approx(-1.5 * math.log(2))
    assert stats["system_mass"] == pytest.approx(0.375)


def test_losses_without_the_segment_are_zero_and_keep_the_graph():
    masses = masses_of(image=[[[0.5]]], system=[[[0.5]]]).requires_grad_()
    text_only = torch.tensor([[S.USER_TEXT, S.RESPONSE]])
    loss, stats = enhance_image_loss(masses, text_only)
    assert loss.item() == 0.0 and stats["image_mass"] == 0.0
    loss.backward()
    assert masses.grad is not None


def test_attention_guided_loss_combines_and_pushes_the_right_way():
    image = torch.tensor([[[0.2]]], requires_grad=True)
    system = torch.tensor([[[0.4]]], requires_grad=True)
    masses = torch.zeros(1, 1, 1, len(Segment))
    masses = masses.index_put((torch.tensor([0]),) * 3 + (torch.tensor([S.IMAGE]),), image[0, 0])
    masses = masses.index_put((torch.tensor([0]),) * 3 + (torch.tensor([S.SYSTEM]),), system[0, 0])
    segments = torch.tensor([[S.SYSTEM, S.IMAGE, S.RESPONSE]])
    total, stats = attention_guided_loss(torch.tensor(2.0), masses, segments, 0.15, 0.15)
    expected = 2.0 + 0.15 * -math.log(0.2 + 1e-6) + 0.15 * math.log(0.4 + 1e-6)
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert set(stats) == {
        "loss",
        "loss_lm",
        "loss_enhance_img",
        "loss_suppress_sys",
        "image_mass",
        "system_mass",
        "attention_active",
    }
    total.backward()
    assert image.grad.item() < 0 < system.grad.item()  # descent raises image, lowers system


def test_bounded_terms_stop_at_the_target_ratio():
    # One layer, one sequence, three heads; target ratio 10. (image, system) per head:
    # (0.5, 0.01): ratio 50, past the target: neither term pushes;
    # (0.2, 0.1) and (0.05, 0.2): ratios 2 and 0.25, below it: both terms as the paper's.
    image = torch.tensor([0.5, 0.2, 0.05], requires_grad=True)
    system = torch.tensor([0.01, 0.1, 0.2], requires_grad=True)
    where = (torch.tensor([0]), torch.tensor([0]), torch.arange(3))
    masses = torch.zeros(1, 1, 3, len(Segment))
    masses = masses.index_put((*where, torch.tensor([S.IMAGE])), image)
    masses = masses.index_put((*where, torch.tensor([S.SYSTEM])), system)
    segments = torch.tensor([[S.SYSTEM, S.IMAGE, S.RESPONSE]])
    enhance, _ = enhance_image_loss(masses, segments, eps=0.0, target_ratio=10)
    suppress, _ = suppress_system_loss(masses, segments, eps=0.0, target_ratio=10)
    # the gated head counts 0 in the mean over 3 heads
    assert enhance.item() == pytest.approx(-(math.log(0.2) + math.log(0.05)) / 3, rel=1e-6)
    assert suppress.item() == pytest.approx((math.log(0.1) + math.log(0.2)) / 3, rel=1e-6)
    (enhance + suppress).backward(retain_graph=True)
    # d/dI -log(I) / 3 = -1 / (3 I); d/dS log(S) / 3 = 1 / (3 S); 0 on the gated head
    torch.testing.assert_close(image.grad, torch.tensor([0.0, -1 / 0.6, -1 / 0.15]))
    torch.testing.assert_close(system.grad, torch.tensor([0.0, 1 / 0.3, 1 / 0.6]))
    # the paper's form (ratio 0) pushes every head, the smallest system mass hardest
    image.grad, system.grad = None, None
    paper, _ = suppress_system_loss(masses, segments, eps=0.0)
    paper.backward(inputs=[system])
    torch.testing.assert_close(system.grad, 1 / (3 * system.detach()))
    _, stats = attention_guided_loss(torch.tensor(0.0), masses, segments, 0.15, 0.15, 10)
    assert stats["attention_active"] == pytest.approx(2 / 3)


def test_bounded_terms_without_system_keys_keep_the_image_term():
    masses = masses_of(image=[[[0.5]]], system=[[[0.0]]])
    no_system = torch.tensor([[S.IMAGE, S.RESPONSE]])
    enhance, _ = enhance_image_loss(masses, no_system, eps=0.0, target_ratio=10)
    assert enhance.item() == pytest.approx(-math.log(0.5))  # as the paper's


def test_objective_from_config():
    from avar.attention.losses import AttentionGuidedLoss
    from avar.config.schema import SftMmConfig

    assert AttentionGuidedLoss.from_config(SftMmConfig()).target_ratio == 10.0  # bounded
    paper = AttentionGuidedLoss.from_config(SftMmConfig(objective="paper", target_ratio=3))
    assert paper.target_ratio == 0.0 and (paper.alpha, paper.beta) == (0.15, 0.15)


def run_vas(tiny_dir, visual_jsonl, out, *extra):
    args = [
        "vas",
        "--model",
        str(tiny_dir),
        "--data",
        str(visual_jsonl),
        "--out",
        str(out),
        "--limit",
        "12",
        "--batch-size",
        "5",
        "--params",
        PARAMS,
        *extra,
    ]
    result = CliRunner().invoke(app, args)
    return result, (json.loads(out.read_text()) if out.exists() else None)


def test_vas_cli_efficient_agrees_with_eager(tiny_dir, visual_jsonl, tmp_path):
    _, efficient = run_vas(tiny_dir, visual_jsonl, tmp_path / "e.json", "--impl", "efficient")
    _, eager = run_vas(tiny_dir, visual_jsonl, tmp_path / "r.json", "--impl", "eager")
    assert efficient["n"] == eager["n"] == 12 and efficient["impl"] == "efficient"
    assert efficient["layers"] == [0, 1, 2, 3]
    for key in ("vas", "image_mass", "system_mass", "text_mass", "response_mass", "other_mass"):
        assert efficient[key] == pytest.approx(eager[key], rel=1e-4), key
    assert efficient["vas_per_layer"] == pytest.approx(eager["vas_per_layer"], rel=1e-4)
    for name, values in efficient["mass_per_layer"].items():
        assert values == pytest.approx(eager["mass_per_layer"][name], rel=1e-4), name
    masses = sum(efficient[f"{n}_mass"] for n in ("image", "system", "text", "response", "other"))
    assert masses == pytest.approx(1.0)
    sample = efficient["samples"][0]
    assert sample["vas"] > 0 and 0 < sample["image_mass"] < 1


def test_vas_cli_generates_with_intervention(tiny_dir, visual_jsonl, tmp_path):
    args = (
        "--generate",
        "--max-new-tokens",
        "6",
        "--intervene",
        "alpha=0.5,layers=1-2",
        "--layers",
        "1-3",
        "--queries",
        "last",
    )
    result, report = run_vas(tiny_dir, visual_jsonl, tmp_path / "g.json", *args)
    assert result.exit_code == 0, result.output
    assert report["layers"] == [1, 2, 3] and len(report["vas_per_layer"]) == 3
    assert report["settings"]["generate"] is True
    assert report["settings"]["intervene"] == "alpha=0.5,layers=1-2"
    assert report["settings"]["queries"] == "last"


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--layers", "0-9"), "the model has layers 0-3"),
        (("--intervene", "alpha=1"), "missing layers"),
        (("--impl", "eager", "--intervene", "alpha=1,layers=0-1"), "does not apply"),
        (("--queries", "images"), "queries must be one of"),
    ],
)
def test_vas_cli_bad_options(tiny_dir, visual_jsonl, tmp_path, extra, message):
    result, report = run_vas(tiny_dir, visual_jsonl, tmp_path / "bad.json", *extra)
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())
    assert report is None and not list(tmp_path.iterdir())  # nothing half-written


def test_vas_cli_bad_data_names_the_line(tiny_dir, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"id": "x"}\n')
    result, _ = run_vas(tiny_dir, data, tmp_path / "out.json")
    assert result.exit_code == 1
    assert "bad.jsonl:1" in result.output
