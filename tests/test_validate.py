"""`avar data validate`: each problem named as file:line, exit codes, summary."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from avar.cli import app
from avar.data import InvalidDataError, read_jsonl, require_valid

runner = CliRunner()


@pytest.fixture()
def broken(tmp_path, visual_jsonl):
    """A copy of a clean file with one problem planted on each of lines 2-5."""
    shutil.copytree(visual_jsonl.parent, tmp_path / "v")
    path = tmp_path / "v" / "data.jsonl"
    records = read_jsonl(path)[:6]
    lines = [json.dumps(r) for r in records]
    lines[1] = lines[1][:-5]  # line 2: truncated JSON
    (tmp_path / "v" / records[2]["images"][0]).unlink()  # line 3: missing image
    records[3]["answer"] = "  "
    lines[3] = json.dumps(records[3])  # line 4: empty answer
    records[4]["id"] = records[0]["id"]
    lines[4] = json.dumps(records[4])  # line 5: duplicate of line 1
    path.write_text("\n".join(lines) + "\n")
    return path


def test_each_problem_named_with_file_and_line(broken):
    result = runner.invoke(app, ["data", "validate", str(broken)])
    assert result.exit_code == 1
    out = result.output
    assert f"{broken}:2: malformed JSON" in out
    assert f"{broken}:3: image 'images/visual-000002.png': not found" in out
    assert f"{broken}:4: empty answer" in out
    assert f"{broken}:5: duplicate id 'visual-000000' (first at {broken}:1)" in out
    assert f"{broken}:1:" not in out and f"{broken}:6:" not in out


def test_clean_files_exit_zero_with_a_summary(visual_jsonl, text_jsonl):
    result = runner.invoke(app, ["data", "validate", str(visual_jsonl), str(text_jsonl)])
    assert result.exit_code == 0, result.output
    assert "80 valid records, 40 images" in result.output


def test_undecodable_image_and_schema_problems(tmp_path, visual_jsonl):
    shutil.copytree(visual_jsonl.parent, tmp_path / "v")
    path = tmp_path / "v" / "data.jsonl"
    record = read_jsonl(path)[0]
    (tmp_path / "v" / record["images"][0]).write_bytes(b"not a png")
    wrong = dict(record, id="x", kind="audio", choices="A")
    del wrong["question"]
    path.write_text(json.dumps(record) + "\n" + json.dumps(wrong) + "\n[1, 2]\n")
    out = runner.invoke(app, ["data", "validate", str(path)]).output
    assert f"{path}:1: image 'images/visual-000000.png': does not decode" in out
    assert f"{path}:2: missing field 'question'" in out
    assert f"{path}:2: field 'choices' must be list" in out
    assert f"{path}:3: expected a JSON object, got list" in out


def test_only_the_first_twenty_problems_are_listed(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("{oops\n" * 25)
    result = runner.invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 1
    assert f"{path}:20: malformed JSON" in result.output
    assert f"{path}:21:" not in result.output
    assert "... and 5 more problems" in result.output


def test_missing_file_is_a_problem(tmp_path):
    result = runner.invoke(app, ["data", "validate", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 1 and "nope.jsonl:0: file not found" in result.output


def test_require_valid_raises_before_training(broken):
    with pytest.raises(InvalidDataError, match=r"4 problems in the input data"):
        require_valid([broken])


def test_inputs_stay_inside_their_data_folder(tmp_path, visual_jsonl, monkeypatch):
    """Image paths that leave the data file's folder, oversized images and text are named
    per line; none of them is read."""
    from PIL import Image

    import avar.data.files

    shutil.copytree(visual_jsonl.parent, tmp_path / "v")
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    path = tmp_path / "v" / "data.jsonl"
    records = read_jsonl(path)[:4]
    records[0]["images"] = ["../secret.png"]
    records[1]["images"] = [str(outside)]
    records[2]["question"] = "x" * 100_001
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    monkeypatch.setattr(avar.data.files, "MAX_IMAGE_PIXELS", 100)  # the 112x112 scenes exceed it
    out = runner.invoke(app, ["data", "validate", str(path)]).output
    assert (
        f"{path}:1: image '../secret.png': image path '../secret.png' leaves its data folder" in out
    )
    assert f"{path}:2: image '{outside}': image path '{outside}' leaves its data folder" in out
    assert f"{path}:3: field 'question' is longer than 100,000 characters" in out
    assert f"{path}:4: image '{records[3]['images'][0]}': does not decode" in out
    assert "image of 112x112 pixels is larger than avar's limit of 100 pixels" in out


def test_chats_and_benchmark_rows_refuse_paths_outside_the_folder(tmp_path):
    from avar.data.chats import to_messages
    from avar.data.files import BenchmarkDataError, decode_image

    record = {"question": "q", "images": ["../../etc/x.png"], "answer": "1", "solution": []}
    with pytest.raises(ValueError, match="leaves its data folder"):
        to_messages(record, tmp_path, None)
    with pytest.raises(
        BenchmarkDataError, match=r"rows.tsv: row 3: image path '/abs/x.png' leaves"
    ):
        decode_image("/abs/x.png", tmp_path, tmp_path / "rows.tsv", 3)
