"""The curation teacher's prompt: visual-anchored, reflective traces for rows without a
scene. The teacher itself is a chat endpoint (avar.endpoints)."""

from __future__ import annotations

from PIL import Image

from avar.data.chats import to_messages

SYSTEM = (
    "You write step-by-step solutions to questions about images, in three parts inside "
    "<think></think>. Anchor: state the visual evidence the question needs, as you see it in "
    "the image. Reasoning: work from that evidence to the answer. Reflection: look at the "
    "image again, re-check each piece of evidence, and correct any mistake you find. Then "
    "give the final answer alone inside <answer></answer>."
)


def teacher_chat(question: str, images: list[Image.Image]) -> list[dict]:
    """The teacher's prompt: its own instructions as the system turn, the record's images
    and question as the user turn."""
    return to_messages({"question": question, "images": images}, None, SYSTEM, False)
