"""Batched greedy generation for chat conversations, optionally with the intervention.

Generation runs under `plain_generation(model, tokenizer)`: the checkpoint's own
generation_config.json (repetition_penalty, top_k, top_p, ...) is set aside for one that
holds only its stop and pad ids, so greedy answers are the argmax and GRPO's samples are
drawn from softmax(logits / temperature), the distribution its log-probs are taken from.

Given an engine (`generate.backend: vllm`, avar.engine), the answers come from it instead,
with the same prompts, images, stop tokens and suppressed vision tokens, decoded by avar's
tokenizer; answers under an intervention always come from `model` (the steering is a hook
on its forward).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from avar.attention.steering import steer
from avar.config.specs import InterventionSpec
from avar.engine.client import VllmEngine, prompt_mismatches
from avar.segments import encode, encode_batch, model_inputs

ENGINE_CHUNK = 256  # questions per request to an engine (its scheduler batches them)
VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def vision_token_ids(tokenizer) -> list[int]:
    """Ids of the vision placeholders: a sampled one would break the next forward pass."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def stop_token_ids(generation_config, tokenizer) -> list[int]:
    """The ids that end a completion: the generation config's eos_token_id (an int, a list
    or None: a checkpoint without generation_config.json), else the tokenizer's eos."""
    eos = getattr(generation_config, "eos_token_id", None)
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if not ids and tokenizer.eos_token_id is not None:
        ids = [tokenizer.eos_token_id]
    return ids


@contextmanager
def plain_generation(model, tokenizer):
    """`model.generation_config` replaced, inside, by one with the stop and pad ids only."""
    saved = model.generation_config
    model.generation_config = GenerationConfig(
        bos_token_id=getattr(saved, "bos_token_id", None),
        eos_token_id=stop_token_ids(saved, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    try:
        yield model.generation_config
    finally:
        model.generation_config = saved


def generate(
    model,
    processor,
    conversations: list[list[dict]],
    max_new_tokens: int = 128,
    batch_size: int = 8,
    intervention: InterventionSpec | None = None,
    progress: bool = True,
    engine: VllmEngine | None = None,
) -> list[str]:
    """Greedy completions (special tokens stripped), one per conversation, in order."""
    if engine is not None and intervention is None:
        return engine_generate(engine, model, processor, conversations, max_new_tokens, progress)
    tokenizer = processor.tokenizer
    texts: list[str] = []
    starts = range(0, len(conversations), batch_size)
    for start in tqdm(starts, desc="generate", unit="batch", disable=not progress):
        chunk = conversations[start : start + batch_size]
        batch = encode_batch(processor, chunk, padding_side="left", add_generation_prompt=True)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        with (
            torch.no_grad(),
            steer(model, intervention, batch["segment_ids"]),
            plain_generation(model, tokenizer),
        ):
            output = model.generate(
                **model_inputs(batch),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                suppress_tokens=vision_token_ids(tokenizer),
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        texts += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return texts


def engine_generate(
    engine: VllmEngine, model, processor, conversations, max_new_tokens: int, progress: bool
) -> list[str]:
    """`generate`'s greedy answers, through `engine` (its prompt ids checked against avar's)."""
    tokenizer = processor.tokenizer
    stops = stop_token_ids(model.generation_config, tokenizer)
    texts: list[str] = []
    starts = range(0, len(conversations), ENGINE_CHUNK)
    for start in tqdm(starts, desc="generate (vllm)", unit="chunk", disable=not progress):
        chunk = conversations[start : start + ENGINE_CHUNK]
        samples, prompt_ids = engine.sample(
            processor, chunk, 1, 0.0, max_new_tokens, stops, vision_token_ids(tokenizer)
        )
        ours = [encode(processor, c, add_generation_prompt=True).input_ids for c in chunk]
        prompt_mismatches(ours, prompt_ids, "generate")
        ids = [s[0].token_ids for s in samples]
        texts += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return texts
