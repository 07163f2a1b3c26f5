"""Attention mass: avar's efficient probe against a plain forward and the eager reference.

For each sequence length (about 3/4 image tokens, 1/6 response tokens) and each mode

    plain      the model's forward pass (SDPA)
    efficient  the same pass with avar's mass probe on every layer (response queries)
    eager      eager attention with output_attentions=True, masses read from the maps

it measures wall time (median of --repeats passes after one warm-up) and, in a fresh
process, the peak memory the first pass adds above the loaded model: on CUDA from torch's
allocator; on CPU from the process's peak RSS, with glibc returning large blocks to the
system on free and the peak reset just before the pass. Prints a table with the ratios
efficient/plain and eager/plain.

    python bench/attention_mass.py                      # CPU, fp32, small preset
    python bench/attention_mass.py --device cuda --dtype bf16 --lengths 4096,8192,16384
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

MODES = ("plain", "efficient", "eager")
WORDS = "three red circles sit left of two blue squares and one green triangle".split()


def conversation(processor, length: int) -> list[dict]:
    """A one-image chat of about `length` tokens: 3/4 image, 1/8 response, rest text."""
    merge_side = processor.image_processor.patch_size * processor.image_processor.merge_size
    side = merge_side * max(1, round(math.sqrt(0.75 * length)))
    image = Image.new("RGB", (side, side), (90, 140, 200))
    response_words = max(4, round(length / 8 / 1.25))  # about 1.25 tokens per word
    text_words = max(4, round(length / 16 / 1.25))
    words = WORDS * (length // len(WORDS) + 1)
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": " ".join(words[:text_words])},
            ],
        },
        {"role": "assistant", "content": " ".join(words[:response_words])},
    ]


def memory_kb() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in KiB."""
    status = Path("/proc/self/status").read_text()
    return tuple(int(re.search(rf"{k}:\s+(\d+)", status).group(1)) for k in ("VmRSS", "VmHWM"))


def reset_peak(device) -> int:
    """Reset the peak-memory counter; returns the current usage in bytes."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")
    return memory_kb()[0] * 1024


def peak(device) -> int:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return memory_kb()[1] * 1024


def measure_run(run, device, what: str, repeats: int) -> dict:
    """`{"peak_mb"}`: the memory one cold `run()` adds; or `{"time_s"}`: the median of
    `repeats` warm runs after one warm-up (CUDA synchronised around each)."""
    import torch

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    if what == "memory":
        base = reset_peak(device)
        run()
        return {"peak_mb": (peak(device) - base) / 2**20}
    run()  # warm-up
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        run()
        synchronize()
        times.append(time.perf_counter() - start)
    return {"time_s": statistics.median(times)}


def worker(args) -> dict:
    """One mode at one length, in this process; prints a JSON line."""
    import torch

    from avar.attention.probe import eager_masses, mass_probe
    from avar.models.loader import load_model, load_processor
    from avar.segments import encode_batch, model_inputs

    attention = "eager" if args.mode == "eager" else "sdpa"
    model = load_model(args.model, args.device, args.dtype, attn_implementation=attention)
    processor = load_processor(args.model, max_pixels=64 * 28 * 28 * 64)
    batch = encode_batch(processor, [conversation(processor, args.length)])
    batch = {k: v.to(model.device) for k, v in batch.items()}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    segments = batch["segment_ids"]

    def run():
        with torch.no_grad():
            if args.mode == "plain":
                return model(**model_inputs(batch)).logits[0, -1, 0].item()
            if args.mode == "eager":
                return eager_masses(model, model_inputs(batch), segments).sum().item()
            with mass_probe(model, segments) as probe:
                model(**model_inputs(batch))
            return probe.masses().sum().item()

    measured = measure_run(run, model.device, args.what, args.repeats)
    if args.what == "memory":
        return measured
    counts = {
        name: int((segments == value).sum()) for name, value in (("image", 4), ("response", 5))
    }
    return {"length": segments.shape[1], **measured, **counts}


def run_worker(args, mode: str, length: int, what: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--mode",
        mode,
        "--length",
        str(length),
        "--model",
        args.model,
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--repeats",
        str(args.repeats),
        "--what",
        what,
    ]
    env = dict(os.environ)
    if what == "memory":
        # Large blocks straight from mmap and back on free: the peak RSS then tracks the
        # peak of live tensors instead of what glibc's heap happens to keep.
        env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args, mode: str, length: int) -> dict:
    """Time (warm, median) and added peak memory (cold, its own process) of one mode."""
    timing = run_worker(args, mode, length, "time")
    if "error" in timing:
        return {"mode": mode, **timing}
    return {"mode": mode, **timing, **run_worker(args, mode, length, "memory")}


def table(rows: list[dict]) -> str:
    """Markdown table: times, added peak memory, and ratios to the plain pass."""
    by_key = {(r["target"], r["mode"]): r for r in rows}
    header = (
        "tokens",
        "image",
        "response",
        "plain s",
        "efficient s",
        "eager s",
        "time eff/plain",
        "time eager/plain",
        "plain MB",
        "efficient MB",
        "eager MB",
        "mem eff/plain",
        "mem eager/plain",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for target in sorted({r["target"] for r in rows}):
        plain, eff, eager = (by_key.get((target, m), {"error": "not run"}) for m in MODES)
        if "error" in plain:
            lines.append(f"| {target} | plain pass failed: {plain['error']} |")
            continue

        def value(row, key, digits):
            return "n/a" if "error" in row else f"{row[key]:.{digits}f}"

        def ratio(row, key, plain=plain):
            return "n/a" if "error" in row else f"{row[key] / plain[key]:.2f}"

        cells = [
            plain["length"],
            plain["image"],
            plain["response"],
            value(plain, "time_s", 3),
            value(eff, "time_s", 3),
            value(eager, "time_s", 3),
            ratio(eff, "time_s"),
            ratio(eager, "time_s"),
            value(plain, "peak_mb", 0),
            value(eff, "peak_mb", 0),
            value(eager, "peak_mb", 0),
            ratio(eff, "peak_mb"),
            ratio(eager, "peak_mb"),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/bench-small")
    parser.add_argument("--lengths", default="512,1024,2048,4096")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--what", choices=("time", "memory"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if not Path(args.model).exists():
        from avar.models.tiny import init_tiny

        print(f"building the small preset in {args.model}", file=sys.stderr)
        init_tiny(args.model, "small", seed=0)
    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        for mode in args.modes.split(","):
            row = measure(args, mode, length) | {"target": length}
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    print(f"\nattention mass, {args.device} {args.dtype}, {args.model}, median of {args.repeats}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
