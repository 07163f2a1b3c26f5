"""Encode conversations into model inputs with an exact segment id per token.

The conversation is rendered with the model's own chat template, then split along the
template's ChatML structure (`<|im_start|>role\\n body <|im_end|>`): role headers, turn ends
and vision delimiters are `TEMPLATE`; a system turn's body is `SYSTEM` (also the default
system prompt a template inserts by itself); a user turn's body is `USER_TEXT` except its
`<|image_pad|>` slots, which become `IMAGE` tokens, one per merged patch; an assistant
turn's body is `RESPONSE`. Each piece is tokenised on its own, so no token straddles two
segments. Labels cover the response tokens plus the `<|im_end|>` that closes each
assistant turn (the model must learn to stop); everything else is -100.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum

import torch
from PIL import Image

from avar.data.files import open_image

IGNORE_INDEX = -100
IM_START = "<|im_start|>"
VISION_START, VISION_END, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"
TURN = re.compile(r"<\|im_start\|>([^\n]*)\n(.*?)(<\|im_end\|>|\Z)", re.DOTALL)
VISION = re.compile(r"(<\|vision_start\|>|<\|vision_end\|>|<\|image_pad\|>)")


class Segment(IntEnum):
    PAD = 0
    TEMPLATE = 1
    SYSTEM = 2
    USER_TEXT = 3
    IMAGE = 4
    RESPONSE = 5


ROLE_SEGMENT = {"system": Segment.SYSTEM, "user": Segment.USER_TEXT, "assistant": Segment.RESPONSE}


@dataclass
class Piece:
    """A run of rendered text in one segment (IMAGE pieces are one `<|image_pad|>`)."""

    text: str
    segment: Segment
    trained: bool = False


@dataclass
class Encoded:
    """One unpadded sequence."""

    input_ids: list[int] = field(default_factory=list)
    segment_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    pixel_values: torch.Tensor | None = None  # [patches, C*t*p*p]
    image_grid_thw: torch.Tensor | None = None  # [images, 3]


def split_rendered(text: str) -> list[Piece]:
    """Split a rendered ChatML conversation into segment pieces."""
    pieces: list[Piece] = []
    position = 0
    turns = list(TURN.finditer(text))
    if not turns:
        raise ValueError("chat template output has no ChatML turns (<|im_start|>role ...)")
    for turn in turns:
        role, body, end = turn.group(1), turn.group(2), turn.group(3)
        if role not in ROLE_SEGMENT:
            raise ValueError(f"chat template produced an unsupported role '{role}'")
        if turn.start() > position:
            pieces.append(Piece(text[position : turn.start()], Segment.TEMPLATE))
        pieces.append(Piece(f"{IM_START}{role}\n", Segment.TEMPLATE))
        pieces += _split_body(body, ROLE_SEGMENT[role])
        if end:
            pieces.append(Piece(end, Segment.TEMPLATE, trained=role == "assistant"))
        position = turn.end()
    if position < len(text):
        pieces.append(Piece(text[position:], Segment.TEMPLATE))
    return [p for p in pieces if p.text]


def _split_body(body: str, segment: Segment) -> list[Piece]:
    pieces = []
    for part in VISION.split(body):
        if part == IMAGE_PAD:
            pieces.append(Piece(part, Segment.IMAGE))
        elif part in (VISION_START, VISION_END):
            pieces.append(Piece(part, Segment.TEMPLATE))
        elif part:
            pieces.append(Piece(part, segment, trained=segment == Segment.RESPONSE))
    return pieces


def conversation_images(messages: list[dict]) -> list[Image.Image]:
    """Images of the conversation in order (PIL images or paths), as RGB."""
    images = []
    for message in messages:
        if isinstance(message["content"], str):
            continue
        for part in message["content"]:
            if part.get("type") == "image" or "image" in part:
                image = part["image"]
                images.append(image if isinstance(image, Image.Image) else open_image(image))
    return [image.convert("RGB") for image in images]


def check_messages(messages: list[dict], special_tokens: list[str]) -> None:
    """Reject roles avar cannot segment and text that would forge template structure."""
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLE_SEGMENT:
            raise ValueError(
                f"message {index}: role must be system, user or assistant, got {role!r}"
            )
        content = message.get("content")
        parts = content if isinstance(content, list) else []
        texts = [content] if isinstance(content, str) else [p.get("text", "") for p in parts]
        for text in texts:
            for token in special_tokens:
                if token in text:
                    raise ValueError(
                        f"message {index} ({role}): text contains the special token {token}"
                    )


def render(processor, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The conversation as the processor's chat template writes it: text with one
    `<|image_pad|>` per image (what `encode` tokenizes, and what vLLM is given)."""
    return processor.tokenizer.apply_chat_template(
        messages,
        chat_template=processor.chat_template,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )


def encode(processor, messages: list[dict], add_generation_prompt: bool = False) -> Encoded:
    """Render with the processor's chat template and encode with exact segments."""
    tokenizer = processor.tokenizer
    check_messages(messages, list(tokenizer.all_special_tokens))
    images = conversation_images(messages)
    pieces = split_rendered(render(processor, messages, add_generation_prompt))
    slots = sum(p.segment == Segment.IMAGE for p in pieces)
    if slots != len(images):
        raise ValueError(f"template rendered {slots} image slots for {len(images)} images")
    out = Encoded()
    tokens_per_image = []
    if images:
        vision = processor.image_processor(images=images, return_tensors="pt")
        out.pixel_values, out.image_grid_thw = vision["pixel_values"], vision["image_grid_thw"]
        merge = processor.image_processor.merge_size
        tokens_per_image = [int(g.prod()) // merge**2 for g in out.image_grid_thw]
    pad_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    image_index = 0
    for piece in pieces:
        if piece.segment == Segment.IMAGE:
            ids = [pad_id] * tokens_per_image[image_index]
            image_index += 1
        else:
            ids = tokenizer(piece.text, add_special_tokens=False)["input_ids"]
        out.input_ids += ids
        out.segment_ids += [int(piece.segment)] * len(ids)
        out.labels += ids if piece.trained else [IGNORE_INDEX] * len(ids)
    return out


def collate(processor, encoded: list[Encoded], padding_side: str = "right") -> dict:
    """Pad a batch; returns model inputs plus `segment_ids` and `labels`.

    input_ids, attention_mask, segment_ids, labels, mm_token_type_ids: [B, T];
    pixel_values: [sum of patches, C*t*p*p]; image_grid_thw: [n_images, 3].
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    pad_id = processor.tokenizer.pad_token_id
    length = max(len(e.input_ids) for e in encoded)
    columns: dict[str, list[list[int]]] = {
        "input_ids": [],
        "attention_mask": [],
        "segment_ids": [],
        "labels": [],
    }
    for e in encoded:
        n = length - len(e.input_ids)
        rows = {
            "input_ids": (e.input_ids, pad_id),
            "attention_mask": ([1] * len(e.input_ids), 0),
            "segment_ids": (e.segment_ids, int(Segment.PAD)),
            "labels": (e.labels, IGNORE_INDEX),
        }
        for name, (values, fill) in rows.items():
            padded = [fill] * n + values if padding_side == "left" else values + [fill] * n
            columns[name].append(padded)
    batch = {name: torch.tensor(rows, dtype=torch.long) for name, rows in columns.items()}
    batch["mm_token_type_ids"] = (batch["segment_ids"] == Segment.IMAGE).long()
    pixels = [e.pixel_values for e in encoded if e.pixel_values is not None]
    grids = [e.image_grid_thw for e in encoded if e.image_grid_thw is not None]
    if pixels:
        batch["pixel_values"] = torch.cat(pixels)
        batch["image_grid_thw"] = torch.cat(grids)
    return batch


def encode_batch(processor, conversations, padding_side="right", add_generation_prompt=False):
    """`encode` each conversation, then `collate`."""
    encoded = [encode(processor, c, add_generation_prompt) for c in conversations]
    return collate(processor, encoded, padding_side)


def model_inputs(batch: dict) -> dict:
    """The keys of a collated batch that the model's forward takes."""
    return {k: v for k, v in batch.items() if k not in ("segment_ids", "labels")}
