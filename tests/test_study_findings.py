"""The study's grid from params.yaml, and F1-F4 with their verdicts on hand-made
experiment results (the numbers a DVC experiment's files would hold)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avar.config import ConfigError, load_params
from avar.study.experiments import Finished
from avar.study.findings import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    STRONG,
    by_variant,
    f1,
    f2,
    f3,
    f4,
)
from avar.study.grid import Experiment, experiments, rounds

ROOT = Path(__file__).resolve().parents[1]
IDS = [f"q{i}" for i in range(200)]


def grades_at(accuracy: float, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(v) for v in rng.random(len(IDS)) < accuracy]


def finished(
    variant, seed, correct, masses=(0.6, 0.29, 0.105), intervened=None, model="rl", flag=None
):
    log10_vas, image, system = masses
    experiment = Experiment(variant, seed, model, (), (), f"{variant}-s{seed}")
    measurement = {
        "n": len(IDS),
        "accuracy": float(np.mean(correct)),
        "log10_vas": log10_vas,
        "image_mass": image,
        "system_mass": system,
        "vas_flag": flag,
    }
    grades = {"ids": IDS, "correct": list(correct), "intervened": intervened or {}}
    return Finished(experiment, "0" * 40, measurement, grades)


def test_the_grid_has_every_variant_per_seed_and_base_once():
    params = load_params(ROOT / "params.yaml")
    grid = experiments(ROOT / "params.yaml", params, quick=False, stamp="t")
    assert len(grid) == 1 + (len(params.study.variants) - 1) * len(params.study.seeds)
    assert len({e.name for e in grid}) == len(grid)
    by_name = {e.name: e for e in grid}
    base = by_name["base-t"]
    assert base.seed is None and base.chain == () and not any(".seed=" in o for o in base.overrides)
    text_rl = by_name["text-rl-s1-t"]
    assert text_rl.chain == ("coldstart_text", "rl")  # sft_mm is not trained for it
    assert {"coldstart_text.seed=1", "sft_mm.seed=1", "rl.seed=1"} <= set(text_rl.overrides)
    assert by_name["mm-from-base-s0-t"].chain == ("sft_mm",)
    sweep = [o for o in by_name["avar-s2-t"].overrides if o.startswith("study.intervene=")]
    # the list survives the -S syntax DVC and avar both parse
    assert load_params(ROOT / "params.yaml", sweep).study.intervene == params.study.sweep
    assert "study.intervene=[]" in by_name["text-rl-s1-t"].overrides
    lengths = [{len(e.chain) for e in batch} for batch in rounds(grid)]
    assert lengths == [{0}, {1}, {2}, {3}]  # what a round reuses, an earlier round trained
    quick = experiments(ROOT / "params.yaml", params, quick=True, stamp="t")
    assert len(quick) == 1 + 5 * 2
    assert all("base.max_steps=400" in e.overrides for e in quick)


def test_a_bad_variant_is_named_in_one_line():
    params = load_params(ROOT / "params.yaml", ["study.variants.avar.set=[rl.lambda_visul=0]"])
    with pytest.raises(ConfigError, match=r"study.variants.avar.*rl.lambda_visul"):
        experiments(ROOT / "params.yaml", params, quick=False, stamp="t")
    with pytest.raises(ConfigError, match="study.quick.variants"):
        load_params(ROOT / "params.yaml", ["study.quick.variants=[avar, nope]"])


def test_f1_reproduced_when_accuracy_rises_with_vas_and_refuted_when_it_does_not():
    rising = [
        finished("v", s, grades_at(0.1 + 0.1 * s, s), (0.5 + 0.2 * s, 0.2, 0.05)) for s in range(6)
    ]
    found = f1(rising, 500)
    assert found.verdict == REPRODUCED
    assert found.numbers["models"]["pearson_log10_vas"].value > 0.9
    assert "image mass alone" in found.why  # the reviewer's question, answered beside it
    falling = [
        finished("v", s, grades_at(0.6 - 0.1 * s, s), (0.5 + 0.2 * s, 0.2, 0.05)) for s in range(6)
    ]
    assert f1(falling, 500).verdict == NOT_REPRODUCED


def test_f2_sees_the_text_cold_start_raise_vas_through_system_mass_alone():
    items = [finished("base", None, grades_at(0.1, 0), model="base")]
    arms = (
        ("text_coldstart", "coldstart_text", 0.1, (0.9, 0.08, 0.02)),
        ("mm_from_base", "sft_mm", 0.2, (0.6, 0.29, 0.1)),
    )
    for seed in range(3):
        for variant, model, accuracy, (log10_vas, image, system) in arms:
            masses = (log10_vas + 0.01 * seed, image, system)  # a little spread over seeds
            items.append(finished(variant, seed, grades_at(accuracy, seed), masses, model=model))
    found = f2(by_variant(items))
    assert found.verdict == REPRODUCED
    assert "objection holds" in found.why  # image mass fell, system mass fell more
    rise = found.numbers["deltas"]["text_coldstart"]["log10_vas"]
    assert rise.value == pytest.approx(0.31)
    flat = [
        items[0],
        *(
            finished(
                "text_coldstart",
                s,
                grades_at(0.1, s),
                (0.6 - 0.05 * s, 0.29, 0.1),
                model="coldstart_text",
            )
            for s in range(3)
        ),
        *items[2::2],
    ]
    assert f2(by_variant(flat)).verdict in (NOT_REPRODUCED, INCONCLUSIVE)


def right_of_200(accuracy: float) -> list[int]:
    k = round(200 * accuracy)
    return [1] * k + [0] * (200 - k)


def test_f1_an_interval_under_strong_rules_the_claim_out_though_it_lies_above_0():
    rng = np.random.default_rng(1)
    vas = rng.normal(size=150)
    accuracy = 0.5 + 0.04 * (0.1 * vas + rng.normal(size=150))
    weak = [
        finished("v", s, right_of_200(a), (v, 0.2, 0.05))
        for s, (v, a) in enumerate(zip(vas, accuracy, strict=True))
    ]
    found = f1(weak, 500)
    r = found.numbers["models"]["pearson_log10_vas"]
    assert 0 < r.low and r.high < STRONG  # above 0, and wholly under the strong bar
    assert found.verdict == NOT_REPRODUCED


def test_f1_is_decided_without_flagged_models_and_reports_them_beside():
    rising = [
        finished("v", s, grades_at(0.1 + 0.1 * s, s), (0.5 + 0.2 * s, 0.2, 0.05)) for s in range(6)
    ]
    collapsed = [  # a system mass near 0: VAS huge, and these models answer badly
        finished("w", s, grades_at(0.05, s), (9.0, 0.2, 1e-9), flag="system mass < 1e-3")
        for s in range(3)
    ]
    found = f1(rising + collapsed, 500)
    assert found.verdict == REPRODUCED
    assert found.numbers["models"]["n"] == 6
    assert found.numbers["models_with_flagged"]["n"] == 9
    assert found.numbers["models_with_flagged"]["pearson_log10_vas"].value < 0.5
    assert "left out: 3 flagged models" in found.why


def test_f3_pairs_the_intervention_with_the_same_answers():
    plain = [grades_at(0.3, s) for s in range(3)]
    helped = [[max(g, int(i % 5 == 0)) for i, g in enumerate(row)] for row in plain]
    setting = "alpha=0.3,layers=0-3"
    items = [finished("avar", s, plain[s], intervened={setting: helped[s]}) for s in range(3)]
    found = f3(by_variant(items))
    assert found.verdict == REPRODUCED
    gain = found.numbers["avar"][setting]
    assert gain.value == pytest.approx(np.mean(helped) - np.mean(plain))
    same = [finished("avar", s, plain[s], intervened={setting: plain[s]}) for s in range(3)]
    assert f3(by_variant(same)).verdict == NOT_REPRODUCED


def test_f4_compares_avar_with_every_other_variant_on_paired_questions():
    items = [finished("base", None, grades_at(0.05, 9), model="base")]
    items += [finished("avar", s, grades_at(0.5, s)) for s in range(3)]
    items += [finished("text_rl", s, grades_at(0.2, s + 10)) for s in range(3)]
    found = f4(by_variant(items))
    assert found.verdict == REPRODUCED
    assert set(found.numbers["avar_minus"]) == {"base", "text_rl"}
    accuracy = found.numbers["accuracy"]["avar"]
    assert accuracy.value == pytest.approx(np.mean([grades_at(0.5, s) for s in range(3)]))
    items += [finished("avar_no_visual_reward", s, grades_at(0.8, s + 20)) for s in range(3)]
    worse = f4(by_variant(items))
    assert worse.verdict == NOT_REPRODUCED and "avar_no_visual_reward" in worse.why


def test_a_failed_queue_status_is_asked_again(monkeypatch, tmp_path):
    from avar.study import experiments as study_experiments
    from avar.study.experiments import ExperimentFailed, statuses

    answers = [
        ExperimentFailed("`dvc queue status` exited 255: Expecting value: line 1 column 1"),
        "Task     Name       Created    Status\nd597b75  avar-s1    07:40 PM   Success\n",
    ]

    def dvc(args, workspace, jobs=1):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(study_experiments, "dvc", dvc)
    assert statuses(tmp_path, pause=0) == {"avar-s1": "Success"}
    answers[:] = [ExperimentFailed("broken")] * 3
    with pytest.raises(ExperimentFailed, match="broken"):
        statuses(tmp_path, pause=0)
