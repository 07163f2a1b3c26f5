"""The harness presets' prompts and pixel bounds, and the LLM judge against a real HTTP
server on loopback: its extraction decides the judge score, answers are cached, 503 is
retried and 400 is not, and the API key appears in no output file and no log."""

from __future__ import annotations

import json

import pytest
from loopback import JsonHandler, serve
from typer.testing import CliRunner

from avar.cli import app
from avar.config import load_params
from avar.eval.judge import clean, extraction_chat
from avar.eval.presets import harness
from avar.stats import wilson

KEY = "sk-judge-test-4f1c9a2e7b"
MCQ = {"question": "Which?\nA. cat\nB. dog\nAnswer with the option's letter.", "stem": "Which?"}


def params_with(*overrides: str):
    return load_params("params.yaml", list(overrides))


def test_presets_render_each_harness_prompt():
    sample = {**MCQ, "choices": ["cat", "dog"], "query": ""}
    avar = harness(params_with(), "mmstar")
    assert avar.prompt(sample) == MCQ["question"]  # avar's own prompt, unchanged
    assert avar.system_prompt == "You are a helpful assistant." and avar.max_pixels == 0
    vlmeval = harness(params_with("eval.preset=vlmevalkit"), "mmmu")
    assert vlmeval.prompt(sample) == (
        "Question: Which?\nOptions:\nA. cat\nB. dog\n"
        "Please select the correct answer from the options above."
    )
    assert (vlmeval.min_pixels, vlmeval.max_pixels) == (1280 * 28 * 28, 16384 * 28 * 28)
    assert vlmeval.system_prompt is None  # the chat template's own default
    hallusion = {"question": "Is it red?", "stem": "Is it red?", "choices": [], "query": ""}
    assert harness(params_with("eval.preset=vlmevalkit"), "hallusionbench").prompt(hallusion) == (
        "Is it red? Please answer yes or no."
    )
    lmms = params_with("eval.preset=lmms-eval")
    vista = {"question": "avar's", "stem": "q", "choices": [], "query": "Hint: an integer.\nQ"}
    assert harness(lmms, "mathvista").prompt(vista) == "Hint: an integer.\nQ"
    assert harness(lmms, "mmstar").prompt(hallusion) == (
        "Is it red?\nAnswer with the option's letter from the given choices directly."
    )
    bounds = harness(lmms, "mmstar")
    assert (bounds.min_pixels, bounds.max_pixels, bounds.system_prompt) == (
        200704,
        1605632,
        "You are a helpful assistant.",
    )
    mine = params_with(
        "eval.preset=lmms-eval",
        'eval.prompts={mathvista: {free: "{stem} (short)", max_pixels: 50176, system_prompt: ""}}',
    )
    custom = harness(mine, "mathvista")
    assert custom.prompt(vista) == "q (short)" and custom.max_pixels == 50176
    assert custom.min_pixels == 200704 and custom.system_prompt is None


def test_the_judge_reply_is_read_as_one_answer():
    assert clean(" B\nbecause the dog is larger") == "B"
    assert clean("Extracted answer: 12") == "12"
    assert clean("NONE.") is None and clean("") is None
    chat = extraction_chat("Which?", "It is a dog, so B.")
    text = chat[-1]["content"][0]["text"]
    assert text.endswith("Question: Which?\nModel response: It is a dog, so B.\nExtracted answer:")


class Judge(JsonHandler):
    """Reads the question's first word: right/flaky (the gold answer; flaky after two 503s),
    refused (400), blank (NONE)."""

    calls: list[str] = []
    keys: set[str] = set()
    gold: dict[str, str] = {}
    flaky_left = 2

    def do_POST(self):
        text = self.body()["messages"][-1]["content"][-1]["text"]
        question = text.rsplit("Question: ", 1)[1].split("\nModel response:")[0]
        kind = question.split()[0]
        Judge.calls.append(kind)
        Judge.keys.add(self.headers.get("Authorization", ""))
        if kind == "flaky" and Judge.flaky_left > 0:
            Judge.flaky_left -= 1
            return self.reply(503, {"error": "busy"})
        if kind == "refused":
            return self.reply(400, {"error": "bad request"})
        answer = "NONE" if kind == "blank" else Judge.gold[question]
        self.reply(200, {"choices": [{"message": {"role": "assistant", "content": answer}}]})


@pytest.fixture()
def judge_url():
    Judge.calls, Judge.keys, Judge.flaky_left = [], set(), 2
    with serve(Judge) as url:
        yield f"{url}/v1"


def suite(tmp_path) -> list[dict]:
    """Four avar records whose questions tell the judge server how to answer."""
    from avar.data import synthesize

    path = synthesize("visual", 4, 5, tmp_path / "benchmarks/synthetic")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record, kind in zip(records, ["right", "flaky", "refused", "blank"], strict=True):
        record["question"] = f"{kind} {record['question']}"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


@pytest.mark.slow
def test_judge_extracts_caches_retries_and_never_writes_the_key(
    tiny_dir, tmp_path, judge_url, monkeypatch, caplog
):
    records = suite(tmp_path)
    Judge.gold = {r["question"]: r["answer"] for r in records}
    monkeypatch.setenv("AVAR_JUDGE_KEY", KEY)
    out = tmp_path / "results.json"
    args = ["eval", "--model", str(tiny_dir), "--bench", "synthetic", "--out", str(out)]
    args += ["--data-dir", str(tmp_path / "benchmarks"), "--limit", "4"]
    for setting in (
        "eval.max_new_tokens=8",
        "eval.judge.kind=http",
        "eval.judge.model=judge-7b",
        f"eval.judge.url={judge_url}",
        f"eval.judge.cache={tmp_path}/cache/judge.jsonl",
        "eval.judge.api_key_env=AVAR_JUDGE_KEY",
        "eval.judge.backoff=0.01",
    ):
        args += ["-S", setting]
    first = CliRunner(env={"COLUMNS": "250"}).invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert sorted(Judge.calls) == sorted(["right", "flaky", "flaky", "flaky", "refused", "blank"])
    assert Judge.keys == {f"Bearer {KEY}"}
    report = json.loads(out.read_text())
    assert report["judge"] == {"kind": "http", "model": "judge-7b", "url": judge_url}
    assert report["preset"] == "avar" and report["limit"] == 4
    bench = report["benchmarks"]["synthetic"]
    rows = bench["samples"]
    assert [r["judge_extracted"] for r in rows] == [records[0]["answer"], records[1]["answer"]] + [
        None,
        None,
    ]
    assert [r["judge_correct"] for r in rows] == [True, True, False, False]
    assert bench["judge"]["failed"] == 1 and bench["judge"]["n"] == 4
    assert bench["judge"]["accuracy"] == 0.5
    assert (bench["judge"]["accuracy_low"], bench["judge"]["accuracy_high"]) == wilson(2, 4)
    assert report["metrics"]["eval/synthetic/judge/accuracy"] == 0.5
    rules = sum(r["correct"] for r in rows) / 4  # the rule-based score, side by side
    assert bench["accuracy"] == rules and report["metrics"]["eval/synthetic/accuracy"] == rules
    assert "judge [95% CI]" in first.output

    Judge.calls = []
    again = CliRunner().invoke(app, args, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert Judge.calls == ["refused"]  # the three answers were cached; the failure is asked again
    assert json.loads(out.read_text())["benchmarks"]["synthetic"]["judge"] == bench["judge"]

    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl")]
    assert any(p.name == "judge.jsonl" for p in written)
    for path in written:
        assert KEY not in path.read_text(errors="replace"), path
    assert KEY not in first.output + again.output + caplog.text


def test_a_preset_s_pixel_bounds_reach_the_image_processor(tiny_dir, processor):
    from PIL import Image

    from avar.eval.run import processor_for

    image = [Image.new("RGB", (24, 16))]
    avar = params_with()
    same = processor_for(str(tiny_dir), harness(avar, "mathvista"), avar, processor)
    assert same is processor  # the model section's bounds: the loaded processor
    lmms = params_with("eval.preset=lmms-eval")
    bounded = processor_for(str(tiny_dir), harness(lmms, "mathvista"), lmms, processor)
    grid = bounded.image_processor(images=image, return_tensors="pt")["image_grid_thw"]
    height, width = grid[0, 1:].tolist()
    assert height * width * 14 * 14 >= 200704  # a 24x16 image resized up to min_pixels
    small = processor.image_processor(images=image, return_tensors="pt")["image_grid_thw"]
    assert small[0, 1:].prod().item() * 14 * 14 < 200704
