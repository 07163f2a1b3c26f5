"""Records -> chat messages: the one path from a dataset record (or an in-memory sample)
to the messages the chat template renders. Training, checkpoint scoring, evaluation, VAS,
curation, base perception and RL all build their chats here.

A record's `images` are paths relative to `root` (the folder of its JSONL file) or images
already in memory (benchmark samples, perception scenes).
"""

from __future__ import annotations

from pathlib import Path

from avar.data.files import inside
from avar.data.synth import read_jsonl


def format_response(record: dict) -> str:
    """The record's own response, else its solution steps as a think/answer trace."""
    if record.get("response"):
        return record["response"]
    steps = "\n".join(record["solution"])
    return f"<think>\n{steps}\n</think>\n<answer>{record['answer']}</answer>"


def image_part(image, root: str | Path | None) -> dict:
    """An image content part: a path joined to `root`, or an in-memory image as it is."""
    if isinstance(image, str | Path) and root is not None:
        image = str(inside(root, image))
    return {"type": "image", "image": image}


def to_messages(
    record: dict,
    root: str | Path | None,
    system_prompt: str | None,
    with_response: bool = True,
) -> list[dict]:
    """Chat messages for a record: [system], user (images, then question), [assistant].

    The record's own `system` wins over `system_prompt`; `None` leaves the system turn to
    the chat template's default.
    """
    messages = []
    system = record.get("system", system_prompt)
    if system is not None:
        messages.append({"role": "system", "content": system})
    content = [image_part(image, root) for image in record["images"]]
    content.append({"type": "text", "text": record["question"]})
    messages.append({"role": "user", "content": content})
    if with_response:
        messages.append({"role": "assistant", "content": format_response(record)})
    return messages


def prompts(records, root, system_prompt) -> list[list[dict]]:
    """Chat messages per record, up to the user turn (for generation)."""
    return [to_messages(r, root, system_prompt, with_response=False) for r in records]


def conversations(records, root, system_prompt, responses=None) -> list[list[dict]]:
    """Chat messages per record, ending in the reference or the given response."""
    if responses is None:
        return [to_messages(r, root, system_prompt, with_response=True) for r in records]
    return [
        chat + [{"role": "assistant", "content": text}]
        for chat, text in zip(prompts(records, root, system_prompt), responses, strict=True)
    ]


def load_records(path: str | Path, limit: int = 0) -> tuple[list[dict], Path]:
    """Validated records of a JSONL file (first `limit`, 0 = all) and their image root."""
    from avar.data.validate import require_valid

    require_valid([path])
    records = read_jsonl(path)
    return (records[:limit] if limit else records), Path(path).parent
