"""Bad input gets one clear line: each kind in the README's table, through the CLI, with
the exit code and the words the user sees, and no traceback.

`python tests/test_bad_input.py` prints the table's rows from the same cases."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from ports import free_port
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
PARAMS = str(ROOT / "params.yaml")


@dataclass
class Case:
    name: str
    make: Callable[[Path], list[str]]  # builds the bad input under tmp; the CLI arguments
    exit_code: int
    says: str  # a part of the one line avar prints ({tmp} is the case's folder)


def params_file(tmp: Path, text: str | bytes) -> list[str]:
    path = tmp / "params.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return ["params", "show", "--params", str(path)]


def data_file(tmp: Path, change: Callable[[list[dict], Path], object]) -> list[str]:
    """A copy of a small synthetic set, changed by `change(records, folder)`."""
    from avar.data import read_jsonl, synthesize

    path = synthesize("visual", 3, 0, tmp / "v")
    records = read_jsonl(path)
    written = change(records, path.parent)
    if isinstance(written, bytes):
        path.write_bytes(written)
    else:
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return ["data", "validate", str(path)]


def tiny_model(tmp: Path, change: Callable[[Path], object] = lambda folder: None) -> Path:
    from avar.models.tiny import init_tiny

    folder = init_tiny(tmp / "model", "tiny", seed=0)
    change(Path(folder))
    return Path(folder)


def vas_on(tmp: Path, model: str) -> list[str]:
    from avar.data import synthesize

    data = synthesize("visual", 2, 0, tmp / "d")
    out = str(tmp / "vas.json")
    return ["vas", "--model", model, "--data", str(data), "--out", out, "--params", PARAMS]


def truncate_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def drop_a_weight(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    del weights["model.norm.weight"]
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})


def foreign_checkpoint_dir(tmp: Path) -> list[str]:
    notes = tmp / "notes"
    notes.mkdir()
    (notes / "important.txt").write_text("keep")
    data = data_file(tmp, lambda records, folder: None)[-1]
    tiny_model(tmp)
    return [
        "stage",
        "coldstart_text",
        "--params",
        PARAMS,
        "-S",
        f"coldstart_text.checkpoint_dir={notes}",
        "-S",
        f"coldstart_text.data={data}",
        "-S",
        f"checkpoint_eval.data={data}",
        "-S",
        f"base.out_dir={tmp / 'model'}",
    ]


def unreachable_mlflow(tmp: Path) -> list[str]:
    port = free_port()
    (tmp / "metrics").mkdir()
    (tmp / "models/rl").mkdir(parents=True)
    scores = {"models": {"rl": {"metrics": {"eval/synthetic/accuracy": 0.5}}}}
    (tmp / "metrics/eval.json").write_text(json.dumps(scores))
    uri = f"http://127.0.0.1:{port}"
    return ["stage", "register", "--params", PARAMS, "-S", f"tracking.uri={uri}"]


CASES = [
    Case(
        "params: unknown key",
        lambda t: params_file(t, "rl:\n  grup: 3\n"),
        2,
        "params.yaml:2: rl.grup: unknown key; expected one of:",
    ),
    Case(
        "params: wrong type",
        lambda t: params_file(t, "rl:\n  group_size: four\n"),
        2,
        "params.yaml:2: rl.group_size: expected int, got 'four'",
    ),
    Case(
        "params: value out of range",
        lambda t: params_file(t, "rl:\n  group_size: 1\n"),
        2,
        "params.yaml:2: rl.group_size: expected an int >= 2, got 1",
    ),
    Case(
        "params: key written twice",
        lambda t: params_file(t, "rl:\n  group_size: 4\n  group_size: 8\n"),
        2,
        "params.yaml:3: rl.group_size: written twice (first at line 2)",
    ),
    Case(
        "params: NaN or inf",
        lambda t: params_file(t, "sft_mm:\n  alpha: .nan\n"),
        2,
        "params.yaml:2: sft_mm.alpha: expected a finite float, got nan",
    ),
    Case(
        "params: not UTF-8",
        lambda t: params_file(t, b"rl:\n  # caf\xe9\n"),
        2,
        "params.yaml:2: <file>: not UTF-8 text",
    ),
    Case(
        "params: invalid YAML",
        lambda t: params_file(t, "rl: [1, 2\n"),
        2,
        "params.yaml:2: <yaml>: not valid YAML",
    ),
    Case(
        "params: file missing",
        lambda t: ["params", "show", "--params", str(t / "nope.yaml")],
        2,
        "nope.yaml: <file>: params file not found",
    ),
    Case(
        "override: intervention alpha=nan",
        lambda t: [
            "params",
            "show",
            "--params",
            PARAMS,
            "-S",
            "eval.intervene=alpha=nan,layers=0-1",
        ],
        2,
        "alpha and beta must be finite and >= 0",
    ),
    Case(
        "override: unknown benchmark",
        lambda t: ["params", "show", "--params", PARAMS, "-S", "eval.benches=[mathvista, foo]"],
        2,
        "eval.benches: expected names from",
    ),
    Case(
        "data: malformed JSON line",
        lambda t: data_file(
            t, lambda r, f: ("\n".join([json.dumps(r[0]), json.dumps(r[1])[:-3]]) + "\n").encode()
        ),
        1,
        "data.jsonl:2: malformed JSON",
    ),
    Case(
        "data: image missing",
        lambda t: data_file(t, lambda r, f: (f / r[0]["images"][0]).unlink()),
        1,
        "data.jsonl:1: image 'images/visual-000000.png': not found at",
    ),
    Case(
        "data: image path leaving the data folder",
        lambda t: data_file(t, lambda r, f: r[0].update(images=["../../etc/passwd.png"])),
        1,
        "image path '../../etc/passwd.png' leaves its data folder",
    ),
    Case(
        "data: image not an image",
        lambda t: data_file(t, lambda r, f: (f / r[0]["images"][0]).write_bytes(b"not a png")),
        1,
        "data.jsonl:1: image 'images/visual-000000.png': does not decode",
    ),
    Case(
        "data: question of 100,001 characters",
        lambda t: data_file(t, lambda r, f: r[0].update(question="x" * 100_001)),
        1,
        "data.jsonl:1: field 'question' is longer than 100,000 characters",
    ),
    Case(
        "data: a line that is not UTF-8",
        lambda t: data_file(t, lambda r, f: b"\xff\xfe{}\n"),
        1,
        "data.jsonl:1: not UTF-8 text",
    ),
    Case(
        "data: empty file",
        lambda t: data_file(t, lambda r, f: b""),
        1,
        "data.jsonl:0: no records (an empty file)",
    ),
    Case(
        "data: duplicate id",
        lambda t: data_file(t, lambda r, f: r[1].update(id=r[0]["id"])),
        1,
        "data.jsonl:2: duplicate id 'visual-000000' (first at",
    ),
    Case(
        "model: folder missing",
        lambda t: vas_on(t, "./models/nope"),
        1,
        "model ./models/nope: no such folder",
    ),
    Case(
        "model: folder without config.json",
        lambda t: vas_on(t, str(tiny_model(t, lambda f: (f / "config.json").unlink()))),
        1,
        "no config.json in the folder",
    ),
    Case(
        "model: truncated safetensors",
        lambda t: vas_on(t, str(tiny_model(t, truncate_weights))),
        1,
        "its weights do not load",
    ),
    Case(
        "model: a weight missing from the files",
        lambda t: vas_on(t, str(tiny_model(t, drop_a_weight))),
        1,
        "1 model weights not in the saved files: model.language_model.norm.weight",
    ),
    Case(
        "stage: unknown name",
        lambda t: ["stage", "sft", "--params", PARAMS],
        1,
        "unknown stage 'sft'; expected one of prepare, base,",
    ),
    Case(
        "stage: checkpoint_dir holding the user's files",
        foreign_checkpoint_dir,
        1,
        "notes holds files avar did not write (no avar_stage.json)",
    ),
    Case(
        "register: MLflow server down",
        unreachable_mlflow,
        1,
        "does not answer",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_gets_one_clear_line(case, tmp_path, monkeypatch):
    from avar.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("AVAR_DEBUG", raising=False)
    args = case.make(tmp_path)
    result = CliRunner().invoke(app, args)
    output = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == case.exit_code, result.output
    assert case.says in output, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    from avar.cli import app

    monkeypatch.setenv("AVAR_DEBUG", "")  # --debug sets it; monkeypatch restores it after
    args = vas_on(tmp_path, "./models/nope")
    result = CliRunner().invoke(app, ["--debug", *args])
    assert isinstance(result.exception, FileNotFoundError)


def test_a_full_disk_is_one_line(tmp_path):
    """`avar data synth` onto a 64 KiB tmpfs (mounted in a mount namespace of its own)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) here")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {disk} || exit 77; "
        f"{sys.executable} -m avar.cli data synth --kind visual --n 200 --seed 0 --out {disk}/v"
    )
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=300
    )
    if done.returncode == 77 or "Operation not permitted" in done.stderr:
        pytest.skip("mounting a tmpfs is not allowed here")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "no space left on the device" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


if __name__ == "__main__":
    for case in CASES:
        print(f"| {case.name} | {case.exit_code} | `{case.says}` |")
