"""Visual reward: what r_visual adds to a GRPO training step, measured two ways side by side.

One GRPO update on a batch of prompt + completion rows (synthetic visual questions, each
answered by a fixed completion of about --completion-tokens tokens), timed three ways:

    no_reward  forward, token log-probs, backward: the step without r_visual
    fused      the same step with avar's mass probe riding on the training forward
               (how `avar stage rl` reads r_visual: no extra pass)
    separate   a no-grad teacher-forced pass through `VisualReward` for r_visual, then
               the plain step (how a TRL reward function has to do it)

Prints the median step time of each (after one warm-up), the overhead of r_visual over
no_reward for both ways, and the largest difference between the VAS the two ways measure
(they read the same attention, so it should be at float rounding).

    python bench/visual_reward.py                        # CPU, fp32, the tiny preset
    python bench/visual_reward.py --preset small --rows 8
    python bench/visual_reward.py --device cuda --dtype bf16 --model Qwen/Qwen2.5-VL-7B-Instruct
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from avar.attention.probe import mass_probe
from avar.data import read_jsonl
from avar.data.chats import conversations
from avar.data.synth import synthesize
from avar.models.loader import load_model, load_processor
from avar.models.tiny import init_tiny
from avar.rewards import VisualReward, visual_score
from avar.segments import Segment, encode_batch, model_inputs
from avar.train.logps import token_logps

WORDS = "the image shows three red circles left of two blue squares so the count is".split()
MODES = ("no_reward", "fused", "separate")


def completion(tokens: int) -> str:
    """A well-formed completion of about `tokens` tokens (about 1.25 tokens per word)."""
    words = (WORDS * (tokens // len(WORDS) + 1))[: max(4, round(tokens / 1.25))]
    return f"<think>{' '.join(words)}</think><answer>5</answer>"


def rollout_chats(work: Path, rows: int, tokens: int, system_prompt: str) -> list[list[dict]]:
    """`rows` synthetic visual questions, each ending in a completion of about `tokens`."""
    data = synthesize("visual", rows, seed=0, out=work / "visual")
    records = read_jsonl(data)
    return conversations(records, data.parent, system_prompt, [completion(tokens)] * rows)


def step(model, batch: dict, mode: str, reward: VisualReward, chats) -> torch.Tensor | None:
    """One GRPO-shaped update (advantage 1 everywhere); returns its r_visual."""
    segments = batch["segment_ids"]
    vas = None
    if mode == "separate":
        vas = torch.tensor(reward.scores(chats))
    if mode == "fused":
        with mass_probe(model, segments, "response", reward.layers) as probe:
            logits = model(**model_inputs(batch)).logits
        vas = visual_score(probe.masses().detach(), reward.transform)
    else:
        logits = model(**model_inputs(batch)).logits
    logps = token_logps(logits, batch["input_ids"])
    mask = (segments[:, 1:] == Segment.RESPONSE).to(logps.dtype)
    loss = -((logps * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
    loss.backward()
    model.zero_grad(set_to_none=True)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return vas


def run(args) -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = args.model or str(init_tiny(work / "model", preset=args.preset))
        model = load_model(model_dir, device=args.device, dtype=args.dtype).train()
        processor = load_processor(model_dir)
        chats = rollout_chats(work, args.rows, args.completion_tokens, args.system_prompt)
        batch = encode_batch(processor, chats)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
        reward = VisualReward(model, processor, layers="all", batch_size=args.rows)
        segments = batch["segment_ids"]
        counts = {s.name.lower(): int((segments == s).sum()) // args.rows for s in Segment}
        print(
            f"model {model_dir} on {model.device} ({model.dtype}); {args.rows} rows of "
            f"{segments.shape[1]} tokens: image {counts['image']}, response "
            f"{counts['response']} per row; median of {args.repeats} steps"
        )
        times, vas = {mode: [] for mode in MODES}, {}
        for mode in MODES:
            vas[mode] = step(model, batch, mode, reward, chats)  # warm-up
        for _ in range(args.repeats):
            for mode in MODES:  # interleaved: drift in machine load hits all three alike
                start = time.perf_counter()
                step(model, batch, mode, reward, chats)
                times[mode].append(time.perf_counter() - start)
    median = {mode: statistics.median(values) for mode, values in times.items()}
    base = median["no_reward"]
    print("| mode | step s | vs no_reward | r_visual overhead |")
    print("| --- | --- | --- | --- |")
    for mode in MODES:
        overhead = "" if mode == "no_reward" else f"{(median[mode] - base) / base:+.1%}"
        print(f"| {mode} | {median[mode]:.4f} | {median[mode] / base:.3f}x | {overhead} |")
    diff = (vas["fused"] - vas["separate"]).abs().max().item()
    print(
        f"separate/fused step time: {median['separate'] / median['fused']:.3f}x; "
        f"largest r_visual difference between the two ways: {diff:.2e} "
        f"(r_visual values {vas['fused'].min():.3g}..{vas['fused'].max():.3g})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="", help="checkpoint dir or hub id (default: a fresh --preset model)"
    )
    parser.add_argument("--preset", default="tiny", choices=("tiny", "small"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "auto"))
    parser.add_argument("--rows", type=int, default=16, help="prompts x group size")
    parser.add_argument("--completion-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--system-prompt", default="You are a helpful assistant.")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
