"""Training data: chat conversations encoded with exact segments, and their collator."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from avar.data.chats import conversations, load_records
from avar.segments import collate, encode


def load_training_records(path: str | Path, key: str) -> tuple[list[dict], Path]:
    """Validated records of the JSONL file a stage trains on, and their image root."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{key}: training data {path} not found (run `avar prepare` to write the "
            "synthetic sources, or point the key at a JSONL file in avar's record schema)"
        )
    return load_records(path)


class ChatDataset(Dataset):
    """Conversations ending in the assistant's reference response, encoded on access.

    Items are `avar.segments.Encoded`: input ids, segment ids and labels (the response
    tokens only), plus the images' pixel values.
    """

    def __init__(self, chats: list[list[dict]], processor):
        self.chats, self.processor = chats, processor

    @classmethod
    def from_records(cls, records, root, processor, system_prompt) -> ChatDataset:
        return cls(conversations(records, root, system_prompt), processor)

    def __len__(self) -> int:
        return len(self.chats)

    def __getitem__(self, index: int):
        return encode(self.processor, self.chats[index])


class ChatCollator:
    """Right-padded batches with `segment_ids` (see `avar.segments.collate`)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, encoded) -> dict:
        return collate(self.processor, encoded, padding_side="right")
