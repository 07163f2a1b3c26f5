"""Records -> chat messages, and avar's reasoning-trace format for responses."""

from __future__ import annotations

from pathlib import Path


def format_response(record: dict) -> str:
    """The record's own response, else its solution steps as a think/answer trace."""
    if record.get("response"):
        return record["response"]
    steps = "\n".join(record["solution"])
    return f"<think>\n{steps}\n</think>\n<answer>{record['answer']}</answer>"


def to_messages(
    record: dict,
    root: str | Path,
    system_prompt: str | None,
    with_response: bool = True,
) -> list[dict]:
    """Chat messages for a record: [system], user (images, then question), [assistant].

    `root` is the folder of the record's JSONL file (image paths are relative to it).
    `system_prompt=None` leaves the system turn to the chat template's default.
    """
    messages = []
    system = record.get("system", system_prompt)
    if system is not None:
        messages.append({"role": "system", "content": system})
    content = [{"type": "image", "image": str(Path(root) / image)} for image in record["images"]]
    content.append({"type": "text", "text": record["question"]})
    messages.append({"role": "user", "content": content})
    if with_response:
        messages.append({"role": "assistant", "content": format_response(record)})
    return messages
