"""`avar stage curate`: the four sets from the synthetic sources, AVAR traces, and every
filter acting on data built to trip it (a real HTTP teacher on loopback included)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from loopback import JsonHandler, serve
from PIL import Image

from avar.config import ConfigError, load_params
from avar.curate import curate
from avar.data import synthesize
from avar.grading import grade
from avar.rewards import format_reward

ROOT = Path(__file__).resolve().parents[1]


def params_for(tmp: Path, *sets: str):
    where = [f"curate.out_dir={tmp}/curated", f"curate.metrics={tmp}/report.json"]
    return load_params(ROOT / "params.yaml", [*where, *sets])


def sources(*entries: tuple) -> str:
    items = ", ".join(
        "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in entry) + "}" for entry in entries
    )
    return f"curate.sources=[{items}]"


def synthetic_sources(tmp: Path) -> str:
    synthesize("visual", 40, 0, tmp / "raw/visual")
    synthesize("text", 12, 1, tmp / "raw/text")
    synthesize("visual", 8, 2, tmp / "raw/heldout", prefix="heldout")
    return sources(
        (("name", "visual"), ("path", f"{tmp}/raw/visual/data.jsonl")),
        (("name", "text"), ("path", f"{tmp}/raw/text/data.jsonl")),
        (("name", "heldout"), ("path", f"{tmp}/raw/heldout/data.jsonl"), ("split", "eval")),
    )


def read_set(tmp: Path, name: str) -> list[dict]:
    path = tmp / "curated" / name / "data.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def image_hashes(tmp: Path, name: str) -> set[str]:
    folder = tmp / "curated" / name
    return {
        hashlib.sha256((folder / p).read_bytes()).hexdigest()
        for r in read_set(tmp, name)
        for p in r["images"]
    }


def test_synthetic_sources_make_four_valid_sets(tmp_path, processor):
    params = params_for(tmp_path, synthetic_sources(tmp_path), "curate.reflection_rate=1.0")
    report = curate(params, processor.tokenizer)
    sets = {name: read_set(tmp_path, name) for name in ("text", "visual", "rl", "eval")}
    assert {k: len(v) for k, v in sets.items()} == report["sets"]
    # 40 visual rows: 4 held out (eval_fraction 0.1), then 25% of 36 to RL
    assert report["sets"] == {"text": 12, "visual": 27, "rl": 9, "eval": 12}
    assert {r["id"] for r in sets["eval"]} >= {f"heldout-{i:06d}" for i in range(8)}
    for name in ("visual", "rl"):  # no eval image reaches a training set
        assert not image_hashes(tmp_path, name) & image_hashes(tmp_path, "eval")
    for record in sets["visual"]:
        response = record["response"]
        assert format_reward([response]) == [1.0]
        assert grade(response, record["answer"], record["answer_type"], record["choices"])
        think = response.split("</think>")[0]
        assert [line.split(":")[0] for line in think.splitlines()[1:]] == [
            "Anchor",
            "Reasoning",
            "Reflection",
        ]
        can_misread = record["answer_type"] in ("number", "choice") or record["category"] == "color"
        assert ("I misread it at first" in response) == can_misread, response
    for source in ("text", "visual", "heldout"):
        counts = report["sources"][source]
        assert counts["read"] == sum(counts["kept"].values()) + sum(counts["dropped"].values())
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert (tmp_path / "curated/report.json").is_file()


class Teacher(JsonHandler):
    """An OpenAI-compatible endpoint whose replies depend on the question."""

    calls: list[str] = []
    flaky_left = 2

    def do_POST(self):
        question = self.body()["messages"][-1]["content"][-1]["text"]
        Teacher.calls.append(question)
        if question.startswith("flaky") and Teacher.flaky_left > 0:
            Teacher.flaky_left -= 1
            return self.reply(503, {"error": "busy"})
        if question.startswith("refused"):
            return self.reply(400, {"error": "bad request"})
        text = {
            "right": "<think>Anchor: a red square.\nReasoning: one.\nReflection: yes.</think>"
            "<answer>1</answer>",
            "wrong": "<think>Anchor: two squares.</think><answer>2</answer>",
            "sloppy": "It is 1.",
            "flaky": "<think>Anchor: one square.</think><answer>1</answer>",
        }[question.split()[0]]
        self.reply(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})


@pytest.fixture()
def teacher_url():
    Teacher.calls, Teacher.flaky_left = [], 2
    with serve(Teacher) as url:
        yield f"{url}/v1"


def png(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (56, 56), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_filter_acts_on_data_built_to_trip_it(tmp_path, processor, teacher_url):
    real = tmp_path / "real.parquet"  # a real-data source: no scenes, teacher traces
    rows = [
        {
            "id": f"r{i}",
            "question": f"{word} how many squares?",
            "answer": "1",
            "image": {"bytes": png((40 * i, 0, 0)), "path": None},
        }
        for i, word in enumerate(["right", "wrong", "sloppy", "flaky", "refused", "right"])
    ]
    rows.append(dict(rows[0]))  # the same question and image again
    rows.append(
        {
            "id": "r9",
            "question": "right leaked?",
            "answer": "1",
            "image": {"bytes": png((1, 2, 3)), "path": None},
        }
    )
    pq.write_table(pa.Table.from_pylist(rows), real)
    held = tmp_path / "held/data.jsonl"  # eval rows: the leaked image and a text question
    held.parent.mkdir()
    (held.parent / "images").mkdir()
    (held.parent / "images/x.png").write_bytes(png((1, 2, 3)))
    base = {
        "kind": "visual",
        "source": "held",
        "answer": "1",
        "answer_type": "number",
        "choices": [],
        "category": "count",
        "difficulty": "easy",
        "solution": [],
    }
    held_rows = [
        {**base, "id": "h1", "question": "How many?", "images": ["images/x.png"]},
        {
            **base,
            "id": "h2",
            "kind": "text",
            "question": "What is 2 + 3?",
            "answer": "5",
            "images": [],
        },
    ]
    held.write_text("".join(json.dumps(r) + "\n" for r in held_rows))
    text = tmp_path / "text.jsonl"
    text_base = {**base, "kind": "text", "images": [], "source": "t"}
    text_rows = [
        {**text_base, "id": "t1", "question": "what is 2 + 3", "answer": "5"},  # leaks h2
        {**text_base, "id": "t2", "question": "Spell it out.", "solution": ["word " * 600]},
        {
            **text_base,
            "id": "t3",
            "question": "What is 1 + 1?",
            "answer": "2",
            "solution": ["1 + 1 = 2."],
        },
        {"id": "t4", "question": "no answer"},
    ]
    text.write_text("".join(json.dumps(r) + "\n" for r in text_rows))
    params = params_for(
        tmp_path,
        sources(
            (("name", "real"), ("path", str(real)), ("traces", "teacher")),
            (("name", "text"), ("path", str(text))),
            (("name", "held"), ("path", str(held)), ("split", "eval")),
        ),
        "curate.teacher.kind=http",
        "curate.teacher.model=teacher-7b",
        f"curate.teacher.url={teacher_url}",
        f"curate.teacher.cache={tmp_path}/cache.jsonl",
        "curate.teacher.backoff=0.01",
        "curate.eval_fraction=0.01",
        "curate.rl_fraction=0.01",
        "curate.max_response_tokens=200",
    )
    report = curate(params, processor.tokenizer)
    assert report["sources"]["real"]["dropped"] == {
        "duplicate": 1,
        "leak": 1,
        "wrong_answer": 1,
        "bad_format": 1,
        "teacher_error": 1,
    }
    assert report["sources"]["text"]["dropped"] == {"leak": 1, "too_long": 1, "invalid": 1}
    assert report["sources"]["real"]["kept"] == {"visual": 3}
    assert report["examples"]["wrong_answer"][0]["where"] == f"{real}:2"
    assert report["examples"]["invalid"][0]["where"] == f"{text}:4"
    assert "empty answer" in report["examples"]["invalid"][0]["detail"]
    assert Teacher.calls.count("flaky how many squares?") == 3  # two 503s, then an answer
    assert Teacher.calls.count("refused how many squares?") == 1  # 400: not retried
    assert {r["id"] for r in read_set(tmp_path, "visual")} == {"r0", "r3", "r5"}
    assert {r["id"] for r in read_set(tmp_path, "text")} == {"t3"}
    # the second run asks only what failed before: the cache answers the rest
    asked = len(Teacher.calls)
    again = curate(params, processor.tokenizer)
    assert again["sets"] == report["sets"]
    assert Teacher.calls[asked:] == ["refused how many squares?"]


def test_bad_settings_and_missing_sources_are_named(tmp_path, processor):
    with pytest.raises(ConfigError, match="curate.eval_fraction"):
        params_for(tmp_path, "curate.eval_fraction=1.5")
    with pytest.raises(ConfigError, match=r"curate.sources\[0\].path"):
        params_for(tmp_path, sources((("name", "x"), ("path", "data.csv"))))
    with pytest.raises(ConfigError, match="curate.teacher.url"):
        params_for(tmp_path, "curate.teacher.kind=http", "curate.teacher.model=m")
    params = params_for(tmp_path, sources((("name", "gone"), ("path", f"{tmp_path}/no.jsonl"))))
    with pytest.raises(FileNotFoundError, match=r"source 'gone'.*no\.jsonl not found"):
        curate(params, processor.tokenizer)
    assert not (tmp_path / "curated").exists()


def test_a_local_hf_teacher_is_asked_once_per_row(tmp_path, processor, tiny_dir):
    real = tmp_path / "real.jsonl"
    (tmp_path / "a.png").write_bytes(png((200, 0, 0)))
    (tmp_path / "b.png").write_bytes(png((0, 0, 200)))
    rows = [
        {"id": "a", "question": "What color?", "answer": "red", "images": ["a.png"]},
        {"id": "b", "question": "What color?", "answer": "blue", "images": ["b.png"]},
    ]
    real.write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = params_for(
        tmp_path,
        sources((("name", "real"), ("path", str(real)))),
        "curate.teacher.kind=local",
        f"curate.teacher.model={tiny_dir}",
        "curate.teacher.max_new_tokens=6",
        f"curate.teacher.cache={tmp_path}/cache.jsonl",
        "curate.eval_fraction=0.01",
        "curate.rl_fraction=0.01",
    )
    report = curate(params, processor.tokenizer)
    # an untrained teacher writes no <think>/<answer> trace: both rows fail the format check
    assert report["teacher"] == {"cached": 0, "asked": 2}
    assert report["sources"]["real"]["dropped"] == {"bad_format": 2}
    assert len((tmp_path / "cache.jsonl").read_text().splitlines()) == 2
    assert curate(params, processor.tokenizer)["teacher"] == {"cached": 2, "asked": 0}


def test_a_real_source_maps_its_own_column_names(tmp_path, processor):
    real = tmp_path / "real.jsonl"
    for name, color in (("a.png", (200, 0, 0)), ("b.png", (0, 0, 200))):
        (tmp_path / name).write_bytes(png(color))
    rows = [
        {"uid": "a", "problem": "What color?", "final": "red", "img": ["a.png"]},
        {"uid": "b", "problem": "What color?", "final": "blue", "img": ["b.png"]},
        {"uid": "c", "problem": "No answer column here.", "img": ["a.png"]},
    ]
    real.write_text("".join(json.dumps(r) + "\n" for r in rows))
    columns = {"id": "uid", "question": "problem", "answer": "final", "images": "img"}
    params = params_for(
        tmp_path,
        sources((("name", "real"), ("path", str(real)), ("columns", columns))),
        "curate.eval_fraction=0.01",
        "curate.rl_fraction=0.01",
    )
    report = curate(params, processor.tokenizer)
    records = read_set(tmp_path, "visual")
    assert [(r["id"], r["question"], r["answer"]) for r in records] == [
        ("a", "What color?", "red"),
        ("b", "What color?", "blue"),
    ]
    assert all(len(r["images"]) == 1 for r in records)
    assert report["sources"]["real"]["dropped"] == {"invalid": 1}
    assert "missing column 'final'" in report["examples"]["invalid"][0]["detail"]
    with pytest.raises(ConfigError, match=r"curate.sources\[0\].columns.*\['question_text'\]"):
        params_for(
            tmp_path,
            sources((("name", "r"), ("path", str(real)), ("columns", {"question_text": "q"}))),
        )
