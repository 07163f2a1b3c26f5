"""An image-only processor for the Qwen-VL families.

The families' own processors also build a video processor, which needs torchvision; where
that cannot be built, this one (image processor + tokenizer) expands each `<|image_pad|>`
to grid_t * grid_h * grid_w / merge_size**2 copies exactly as they do, and returns
`mm_token_type_ids` so the model computes M-RoPE positions.
"""

from __future__ import annotations

from transformers import ProcessorMixin
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor


class ImageTextProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor without the video half (works with Qwen2-VL and Qwen3-VL too)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
