"""Train step: what the attention-guided objective and activation checkpointing cost.

One sft_mm training step (forward, loss, backward) on one chat of about --length tokens
(3/4 image), side by side in four modes:

    plain         L_LM only (alpha = beta = 0: no probe runs)
    guided        L_LM + 0.15 L_enhance_img + 0.15 L_suppress_sys (the mass probe rides on
                  the training forward, its masses carry gradients)
    plain+ckpt    plain with activation checkpointing (non-reentrant)
    guided+ckpt   guided with activation checkpointing (the probe reruns in backward)

Each mode runs in its own process: the median step time of --repeats steps after one
warm-up, and the peak memory the first step adds above the loaded model (CUDA: torch's
allocator; CPU: peak RSS with the peak reset just before the step, as
bench/attention_mass.py measures it). Prints a table with the ratios to `plain`.

    python bench/train_step.py                           # CPU, fp32, small preset, ~2k tokens
    python bench/train_step.py --device cuda --dtype bf16 --length 4096 \
        --model Qwen/Qwen2.5-VL-7B-Instruct
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from attention_mass import conversation, measure_run

MODES = ("plain", "guided", "plain+ckpt", "guided+ckpt")


def worker(args) -> dict:
    """One mode in this process; the numbers as a dict."""
    import torch

    from avar.attention.losses import AttentionGuidedLoss
    from avar.attention.probe import mass_probe
    from avar.models.loader import load_model, load_processor
    from avar.segments import Segment, encode_batch, model_inputs

    model = load_model(args.model, args.device, args.dtype)
    processor = load_processor(args.model, max_pixels=64 * 28 * 28 * 64)
    if args.mode.endswith("+ckpt"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    batch = encode_batch(processor, [conversation(processor, args.length)])
    batch = {k: v.to(model.device) for k, v in batch.items()}
    segments = batch["segment_ids"]
    inputs = model_inputs(batch)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    inputs["labels"] = torch.where(segments == Segment.RESPONSE, batch["input_ids"], -100)
    weight = 0.15 if args.mode.startswith("guided") else 0.0
    objective = AttentionGuidedLoss(alpha=weight, beta=weight)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        if not objective.probes:
            model(**inputs).loss.backward()
            return
        with mass_probe(model, segments, "response", objective.layers) as probe:
            outputs = model(**inputs)
            loss, _ = objective(outputs.loss, probe.masses(), segments)
            loss.backward()  # inside: with checkpointing the probe reruns in backward

    measured = measure_run(step, model.device, args.what, args.repeats)
    if args.what == "memory":
        return measured
    return {"length": segments.shape[1], **measured}


def run_worker(args, mode: str, what: str) -> dict:
    command = [sys.executable, __file__, "--worker", "--mode", mode, "--what", what]
    for key in ("model", "device", "dtype", "length", "repeats"):
        command += [f"--{key}", str(getattr(args, key))]
    env = dict(os.environ)
    if what == "memory":
        env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="a model folder or hub id (default: small)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--what", choices=("time", "memory"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    with tempfile.TemporaryDirectory() as folder:
        if not args.model:
            from avar.models.tiny import init_tiny

            args.model = str(Path(folder) / "small")
            init_tiny(args.model, "small", seed=0)
        rows = {m: {**run_worker(args, m, "time"), **run_worker(args, m, "memory")} for m in MODES}
    plain = rows["plain"]
    print(f"one sft_mm step, {plain.get('length')} tokens, {args.device} {args.dtype}")
    print("| mode | step s | x plain | peak MB | x plain |\n| --- | --- | --- | --- | --- |")
    for mode, row in rows.items():
        if "error" in row:
            print(f"| {mode} | failed: {row['error']} | | | |")
            continue
        cells = (
            f"{row['time_s']:.3f}",
            f"{row['time_s'] / plain['time_s']:.2f}",
            f"{row['peak_mb']:.0f}",
            f"{row['peak_mb'] / plain['peak_mb']:.2f}",
        )
        print(f"| {mode} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
