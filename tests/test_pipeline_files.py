"""dvc.yaml and prefect.yaml against the code: every params key dvc.yaml names exists,
every stage is `avar stage NAME` in pipeline order, every code dependency exists, every
deployment's entrypoint is a flow of that name with a valid schedule."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from avar.config import load_params, to_dict
from avar.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PREFECT = yaml.safe_load((ROOT / "prefect.yaml").read_text())


def lookup(tree: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            raise KeyError(dotted)
        tree = tree[part]
    return tree


def declared(entries: list) -> list[str]:
    """dvc.yaml lists entries as plain strings or {path: options} maps."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def names(entries: list) -> list[str]:
    """The entries as DVC resolves them: `${key}` is that key's value in params.yaml."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    value = lambda m: str(lookup(raw, m.group(1)))  # noqa: E731
    return [re.sub(r"\$\{([\w.]+)\}", value, e) for e in declared(entries)]


def test_stages_run_avar_stage_in_pipeline_order():
    assert list(DVC["stages"]) == list(STAGES)
    for name, stage in DVC["stages"].items():
        assert stage["cmd"] == f"avar stage {name}"


@pytest.mark.parametrize("name", list(STAGES))
def test_params_keys_exist_in_params_yaml(name):
    params = to_dict(load_params(ROOT / "params.yaml"))
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key in DVC["stages"][name].get("params", []):
        lookup(params, key)  # a typed key ...
        lookup(raw, key.split(".")[0])  # ... whose section params.yaml spells out


@pytest.mark.parametrize("name", list(STAGES))
def test_code_deps_exist_and_outputs_match_params(name):
    stage = DVC["stages"][name]
    for dep in names(stage.get("deps", [])):
        if dep.startswith("avar/"):
            assert (ROOT / dep).exists(), f"{name}: missing dependency {dep}"
    params = load_params(ROOT / "params.yaml")
    section = getattr(params, STAGES[name].section)
    declared = names(stage.get("outs", []) + stage.get("metrics", []))
    for field in ("out_dir", "metrics"):  # the two names of an output location
        value = getattr(section, field, None)
        if value:
            assert value in declared, f"{name}.{field}={value} is not an output of the stage"
    metrics = STAGES[name].metrics_file(params)
    assert not metrics or metrics in names(stage.get("metrics", [])), (name, metrics)


@pytest.mark.parametrize("name", list(STAGES))
def test_every_declared_stage_has_a_run_function(name):
    module = importlib.import_module(f"avar.stages.{name}")
    assert callable(module.run), name


def test_every_upstream_output_a_stage_reads_is_declared():
    produced = {o for s in DVC["stages"].values() for o in names(s.get("outs", []))}
    produced |= {m for s in DVC["stages"].values() for m in names(s.get("metrics", []))}
    for name, stage in DVC["stages"].items():
        for dep in names(stage.get("deps", [])):
            if dep.startswith(("models/", "data/", "metrics/")):
                assert any(dep == p or dep.startswith(p + "/") for p in produced), (name, dep)


def test_plots_read_files_the_vas_stage_writes():
    written = names(DVC["stages"]["vas"]["plots"])
    for plot in DVC["plots"]:
        (spec,) = plot.values()
        assert set(spec["y"]) <= set(written)


@pytest.mark.parametrize("deployment", PREFECT["deployments"], ids=lambda d: d["name"])
def test_deployment_entrypoints_are_flows(deployment):
    path, function = deployment["entrypoint"].split(":")
    spec = importlib.util.spec_from_file_location(f"flow_{function}", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    flow = getattr(module, function)
    assert flow.name in ("avar", "avar-reevaluate", "avar-study")
    for schedule in deployment.get("schedules", []):
        from prefect.client.schemas.schedules import CronSchedule

        CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # validates


def test_templated_deps_follow_the_params_that_choose_the_starting_model():
    """sft_mm and rl depend on the model their init_from names (a study variant changes
    it with `dvc exp run -S`), the study stage on the model study.model names."""
    stages = DVC["stages"]
    assert "models/${sft_mm.init_from}" in declared(stages["sft_mm"]["deps"])
    assert "models/${rl.init_from}" in declared(stages["rl"]["deps"])
    assert "models/${study.model}" in declared(stages["study"]["deps"])
    assert "models/coldstart_text" in names(stages["sft_mm"]["deps"])
    assert "models/rl" in names(stages["study"]["deps"])


def test_full_and_reevaluation_deployments_exist():
    by_name = {d["name"]: d for d in PREFECT["deployments"]}
    assert by_name["full"]["entrypoint"] == "flows/full.py:avar"
    assert by_name["champion"]["schedules"][0]["cron"] == "0 3 * * 1"
    gpu = by_name["full-gpu"]["work_pool"]["job_variables"]["container_create_kwargs"]
    assert gpu["device_requests"][0]["capabilities"] == [["gpu"]]
    assert gpu["shm_size"]
