"""Secrets stay out of everything avar writes: a teacher endpoint on loopback that echoes
the Authorization header into its 400 error body, driven through `avar stage curate`; the
key appears in no log line, report, cache or MLflow param. Also the scrubber by hand."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from loopback import JsonHandler, serve
from PIL import Image

from avar.scrub import MASK, ScrubFilter, scrub

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-avar-test-0123456789abcdef"


class Echo(JsonHandler):
    """Answers every request 400 with the headers it got (as careless endpoints do)."""

    seen: list[str] = []

    def do_POST(self):
        self.body()
        Echo.seen.append(self.headers.get("Authorization", ""))
        sent = self.headers.get("Authorization")
        self.reply(400, {"error": f"bad request; you sent Authorization: {sent}"})


@pytest.fixture()
def echo_url():
    with serve(Echo) as url:
        yield f"{url}/v1"


def test_a_key_echoed_by_the_teacher_is_nowhere(tmp_path, echo_url):
    from avar.models.tiny import init_tiny

    init_tiny(tmp_path / "models/init", "tiny", seed=0)
    buffer = io.BytesIO()
    Image.new("RGB", (56, 56), (200, 0, 0)).save(buffer, format="PNG")
    rows = [
        {"id": "r0", "question": "How many squares?", "answer": "1", "image": buffer.getvalue()}
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "real.parquet")
    sets = [
        "curate.sources=[{name: real, path: real.parquet, traces: teacher}]",
        "curate.teacher.kind=http",
        "curate.teacher.model=teacher-7b",
        f"curate.teacher.url={echo_url}",
        "curate.teacher.api_key_env=AVAR_TEACHER_KEY",
    ]
    args = [
        sys.executable,
        "-m",
        "avar.cli",
        "stage",
        "curate",
        "--params",
        str(ROOT / "params.yaml"),
    ]
    for override in sets:
        args += ["-S", override]
    env = {
        "PATH": str(Path(sys.executable).parent),
        "AVAR_TEACHER_KEY": SECRET,
        "HOME": str(tmp_path),
    }
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert Echo.seen == [f"Bearer {SECRET}"]  # the key was sent ...
    output = done.stdout + done.stderr
    assert "teacher" in output and "HTTP 400" in " ".join(output.split()), output[-2000:]
    assert SECRET not in output  # ... and is in no log line
    assert MASK in " ".join(output.split())
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl")]
    assert any(p.name == "curate.json" for p in written)
    for path in written:  # the report (with the error's text as an example), the cache
        assert SECRET not in path.read_text(errors="replace"), path


def test_scrub_by_hand(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-123456")
    monkeypatch.setenv("SHORT_KEY", "abc")  # too short to mask safely
    monkeypatch.setenv("EDITOR", "vim-secret-looking")  # not a secret's name
    text = "s3 key wJalrXUtnFEMI/K7MDENG, token tok-123456, abc, vim-secret-looking"
    assert scrub(text) == "s3 key ***, token ***, abc, vim-secret-looking"


def test_log_records_and_mlflow_params_are_scrubbed(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    record = logging.LogRecord(
        "avar", logging.INFO, "x", 1, "token %s here", ("hf_abcdefghijklmnop",), None
    )
    assert ScrubFilter().filter(record) and record.getMessage() == "token *** here"

    from avar.config import load_params
    from avar.tracking import runs

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params(ROOT / "params.yaml", [f"tracking.uri=sqlite:///{tmp_path}/mlruns.db"])
    mlflow_client = runs.client(params)
    run = mlflow_client.create_run(runs.experiment_id(mlflow_client, "secrets"))
    runs.log_params(
        mlflow_client, run.info.run_id, {"teacher.url": "https://x/?k=hf_abcdefghijklmnop"}
    )
    logged = mlflow_client.get_run(run.info.run_id).data.params
    assert logged == {"teacher.url": "https://x/?k=***"}
