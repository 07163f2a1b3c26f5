"""Harness presets: the prompt, system prompt and image pixel bounds a benchmark is asked
with, following the harness whose published numbers a user compares with.

A preset gives every benchmark two prompt templates, `choice` (the sample lists options)
and `free` (everything else: numbers, text, yes/no, letters whose options are in the
question itself), a system prompt and pixel bounds. `eval.prompts.<bench>` in params.yaml
overrides any of them. Templates fill four fields:

- `{question}`: avar's own prompt (the options as `A. ...` lines, then "Answer with the
  option's letter.");
- `{stem}`: the question alone;
- `{options}`: the options as `A. ...` lines (empty when the sample has none);
- `{query}`: the release's own full prompt where it has one (MathVista's `query`, which
  lmms-eval's `format-prompt` rebuilds; MathVerse's `query_wo`), else `{question}`.

Where a harness's exact text for a benchmark is not known to avar, the preset keeps avar's
`{question}` and says so in `NOTES`: the system prompt and pixel bounds still follow it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from avar.config import Params
from avar.data.schema import OPTION_LETTERS

QWEN_SYSTEM = "You are a helpful assistant."
PIXELS_28 = 28 * 28

VLMEVAL_SELECT = "Please select the correct answer from the options above."
VLMEVAL_MCQ = "Question: {stem}\nOptions:\n{options}\n" + VLMEVAL_SELECT
VLMEVAL_VQA = "{query}\nPlease try to answer the question with short words or phrases if possible."
LMMS_LETTER = "Answer with the option's letter from the given choices directly."


@dataclass(frozen=True)
class Harness:
    """How one benchmark is asked: resolved from a preset and `eval.prompts`."""

    preset: str
    choice: str
    free: str
    system_prompt: str | None
    """None: no system turn of avar's (the chat template's default, Qwen's "You are a
    helpful assistant.")."""
    min_pixels: int = 0
    """0: the model section's bound (0 there: the checkpoint's own)."""
    max_pixels: int = 0

    def prompt(self, sample: dict) -> str:
        """The user-turn text of `sample` under this harness."""
        choices = sample.get("choices") or []
        options = "\n".join(f"{OPTION_LETTERS[i]}. {o}" for i, o in enumerate(choices))
        template = self.choice if choices else self.free
        return template.format(
            question=sample["question"],
            stem=sample.get("stem") or sample["question"],
            options=options,
            query=sample.get("query") or sample["question"],
        ).strip()

    def describe(self) -> dict:
        """What the results JSON records of it."""
        return {
            "preset": self.preset,
            "source": NOTES[self.preset],
            "system_prompt": self.system_prompt,
            "choice": self.choice,
            "free": self.free,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
        }


DEFAULTS = {
    "avar": Harness("avar", "{question}", "{question}", None),
    "lmms-eval": Harness(
        "lmms-eval", "{question}", "{question}", QWEN_SYSTEM, 256 * PIXELS_28, 1605632
    ),
    "vlmevalkit": Harness(
        "vlmevalkit", VLMEVAL_MCQ, VLMEVAL_VQA, None, 1280 * PIXELS_28, 16384 * PIXELS_28
    ),
}
"""Each preset's harness for a benchmark TEMPLATES does not name. The avar preset's system
prompt and pixel bounds are the model section's (`harness`)."""

TEMPLATES: dict[str, dict[str, tuple[str, str]]] = {
    "avar": {},
    "lmms-eval": {
        "mathvista": ("{query}", "{query}"),
        "mathverse": ("{query}", "{query}"),
        "mmmu": (
            "{stem}\n{options}\n" + LMMS_LETTER,
            "{stem}\nAnswer the question using a single word or phrase.",
        ),
        "mmmu_pro": (
            "{stem}\n{options}\nAnswer with the option letter from the given choices directly.",
            "{stem}",
        ),
        "mmstar": ("{stem}\n{options}\n" + LMMS_LETTER, "{stem}\n" + LMMS_LETTER),
        "hallusionbench": ("{stem}", "{stem}"),
    },
    "vlmevalkit": {
        "mmmu": (VLMEVAL_MCQ, "Question: {stem}"),
        "mmmu_pro": (VLMEVAL_MCQ, "Question: {stem}"),
        "mmstar": (VLMEVAL_MCQ, "Question: {stem}\n" + VLMEVAL_SELECT),
        "hallusionbench": ("{stem}", "{stem} Please answer yes or no."),
        "synthetic": ("{question}", "{question}"),
    },
}
"""Per preset and benchmark: the (choice, free) templates. Where they come from: NOTES."""

NOTES = {
    "avar": "avar's own prompts; params' model.system_prompt and model pixel bounds",
    "lmms-eval": (
        "lmms_eval/models/simple/qwen2_5_vl.py (system prompt 'You are a helpful assistant.', "
        "min_pixels 256*28*28, max_pixels 1605632); task yamls: mathvista_testmini "
        "(format-prompt: the release's query), mathverse_testmini_vision_only (query_wo), "
        "mmmu_val, mmmu_pro, mmstar (post_prompt), hallusion_bench_image (no post_prompt); "
        "mathvision and synthetic keep avar's question"
    ),
    "vlmevalkit": (
        "vlmeval/config.py Qwen2.5-VL (min_pixels 1280*28*28, max_pixels 16384*28*28, no "
        "system prompt: the chat template's default); vlmeval/vlm/qwen2_vl/prompt.py "
        "(MCQ, Y/N and VQA prompts; MMMU as MCQ)"
    ),
}


def preset_harness(preset: str, bench: str) -> Harness:
    """The preset's harness for `bench`, before params' overrides."""
    if preset not in DEFAULTS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(DEFAULTS)}")
    templates = TEMPLATES[preset].get(bench)
    if templates is None:
        return DEFAULTS[preset]
    return replace(DEFAULTS[preset], choice=templates[0], free=templates[1])


def harness(params: Params, bench: str) -> Harness:
    """How `bench` is asked under params: the preset, then `eval.prompts.<bench>`; the avar
    preset takes the model section's system prompt and pixel bounds."""
    found = preset_harness(params.eval.preset, bench)
    if found.preset == "avar":
        model = params.model
        found = replace(
            found,
            system_prompt=model.system_prompt or None,
            min_pixels=model.min_pixels,
            max_pixels=model.max_pixels,
        )
    override = params.eval.prompts.get(bench)
    if override is None:
        return found
    changes = {
        name: value
        for name in ("choice", "free", "min_pixels", "max_pixels")
        if (value := getattr(override, name)) is not None
    }
    if override.system_prompt is not None:
        changes["system_prompt"] = override.system_prompt or None
    return replace(found, **changes)
