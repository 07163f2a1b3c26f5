"""`avar study --quick` end to end on a project of seconds: DVC experiments queued and run
by DVC's workers, each one reproducing only what its model needs, read back from their
commits, logged to MLflow under one study run, and the report written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from workspace import copy_project

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
QUICK = {
    "seeds": [0, 1],
    "variants": ["base", "text_rl", "avar"],
    "sweep": ["alpha=0.5,layers=0-3"],
    "set": [],  # the project's own small params
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workspace = copy_project(tmp_path_factory.mktemp("study"), {"study": {"quick": QUICK}})
    uri = f"sqlite:///{workspace}/mlruns.db"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        [str(BIN / "avar"), "study", "--quick", "--jobs", "2"],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    mlflow.set_tracking_uri(uri)
    return workspace, done.stdout + done.stderr, env, mlflow.MlflowClient()


def dvc_experiments(workspace: Path, env: dict) -> dict[str, dict]:
    """name -> {rev, params, metrics of metrics/study.json}, from `dvc exp show --json`."""
    shown = subprocess.run(
        [str(BIN / "dvc"), "exp", "show", "--json"],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = {}
    for baseline in json.loads(shown.stdout):
        for experiment in baseline.get("experiments") or []:
            (run,) = experiment["revs"]
            data = run["data"]
            found[run["name"]] = {
                "rev": run["rev"],
                "params": data["params"]["params.yaml"]["data"],
                "study": data["metrics"]["metrics/study.json"]["data"],
            }
    return found


def git_show(workspace: Path, rev: str, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=workspace, capture_output=True, text=True, check=True
    ).stdout


def test_every_variant_and_seed_is_a_dvc_experiment_with_its_metrics(study):
    workspace, output, env, _ = study
    found = dvc_experiments(workspace, env)
    variants = {name.rsplit("-", 1)[0] for name in found}
    assert variants == {"base", "text-rl-s0", "text-rl-s1", "avar-s0", "avar-s1"}
    for name, experiment in found.items():
        study_params = experiment["params"]["study"]
        expected_model = {"base": "base", "text": "rl", "avar": "rl"}
        assert study_params["model"] == expected_model[name.split("-")[0]], name
        grades = json.loads(git_show(workspace, experiment["rev"], "metrics/study/grades.json"))
        # every model answers the same questions: the held-out set and curate's eval split
        assert experiment["study"]["n"] == len(grades["ids"]) == len(grades["correct"]) > 12
        assert experiment["study"]["accuracy"] == pytest.approx(
            sum(grades["correct"]) / len(grades["ids"])
        )
        if "-s1-" in name:
            assert experiment["params"]["rl"]["seed"] == 1
    sweep = [e for n, e in found.items() if n.startswith(("avar", "base"))]
    assert all(list(e["study"]["intervened"]) == QUICK["sweep"] for e in sweep)
    assert "[5/5]" in output and "F4 " in output


def test_dvc_reproduces_only_what_each_model_needs_and_shares_the_rest(study):
    workspace, _, env, _ = study
    found = dvc_experiments(workspace, env)
    locks = {
        n.rsplit("-", 1)[0]: yaml.safe_load(git_show(workspace, e["rev"], "dvc.lock"))["stages"]
        for n, e in found.items()
    }
    assert "sft_mm" not in locks["text-rl-s0"]  # rl started from the text cold-start
    assert "coldstart_text" not in locks["base"] and "rl" not in locks["base"]
    assert {"coldstart_text", "sft_mm", "rl", "study"} <= set(locks["avar-s1"])

    def model_md5(lock: dict, stage: str) -> str:
        (out,) = [o for o in lock[stage]["outs"] if o["path"] == f"models/{stage}"]
        return out["md5"]

    # avar's text cold-start is the one the text_rl experiment of its seed trained
    # (DVC's run cache), and another seed trains another model
    for seed in ("s0", "s1"):
        assert model_md5(locks[f"avar-{seed}"], "coldstart_text") == model_md5(
            locks[f"text-rl-{seed}"], "coldstart_text"
        )
    assert model_md5(locks["avar-s0"], "coldstart_text") != model_md5(
        locks["avar-s1"], "coldstart_text"
    )
    assert model_md5(locks["avar-s0"], "base") == model_md5(locks["text-rl-s1"], "base")


def test_mlflow_holds_the_study_run_a_child_per_experiment_and_its_checkpoints(study):
    workspace, _, env, mlflow_client = study
    found = dvc_experiments(workspace, env)
    experiment = mlflow_client.get_experiment_by_name("avar")
    (parent,) = mlflow_client.search_runs([experiment.experiment_id], "tags.`avar.kind` = 'study'")
    assert parent.info.status == "FINISHED"
    for key in ("F1", "F2", "F3", "F4"):
        assert parent.data.tags[f"avar.{key}"] in ("reproduced", "not reproduced", "inconclusive")
    children = mlflow_client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert {c.info.run_name for c in children} == set(found)
    for child in children:
        measured = found[child.info.run_name]["study"]
        assert child.data.metrics["study/accuracy"] == pytest.approx(measured["accuracy"])
        assert child.data.tags["avar.dvc_rev"] == found[child.info.run_name]["rev"]
    avar = next(c for c in children if c.info.run_name.startswith("avar-s0"))
    stages = mlflow_client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{avar.info.run_id}'"
    )
    assert {s.info.run_name for s in stages} == {"coldstart_text", "sft_mm", "rl"}
    rl = next(s for s in stages if s.info.run_name == "rl")
    models = mlflow_client.search_logged_models(
        [experiment.experiment_id], filter_string=f"source_run_id = '{rl.info.run_id}'"
    )
    steps = sorted(int(m.tags["avar.step"]) for m in models)
    rl_report = json.loads(git_show(workspace, found[avar.info.run_name]["rev"], "metrics/rl.json"))
    assert steps == [row["step"] for row in rl_report["checkpoints"]]


def test_the_report_and_its_plots_are_written_and_logged(study):
    workspace, _, env, mlflow_client = study
    report = (workspace / "reports/study.md").read_text()
    for key in ("F1", "F2", "F3", "F4"):
        assert f"| {key} |" in report
    numbers = json.loads((workspace / "reports/study.json").read_text())
    found = dvc_experiments(workspace, env)
    f4 = next(f for f in numbers["findings"] if f["key"] == "F4")
    avar = [e["study"]["accuracy"] for n, e in found.items() if n.startswith("avar-")]
    # equal seeds' question counts: the variant's accuracy is the mean of its experiments'
    assert f4["numbers"]["accuracy"]["avar"]["value"] == pytest.approx(sum(avar) / len(avar))
    for picture in ("vas_accuracy", "variants", "intervention"):
        assert (workspace / f"reports/study/{picture}.png").read_bytes()[:4] == b"\x89PNG"
    experiment = mlflow_client.get_experiment_by_name("avar")
    (parent,) = mlflow_client.search_runs([experiment.experiment_id], "tags.`avar.kind` = 'study'")
    logged = {a.path for a in mlflow_client.list_artifacts(parent.info.run_id, "report")}
    assert "report/study.md" in logged
