"""Ranks: `avar stage sft_mm` on 1 rank and on N ranks of this host, side by side.

Builds a throwaway project (synthetic visual questions, the embedded model of --preset),
then runs the same stage, as users run it, alternately on one process and on --ranks
processes (torchrun, started by `avar stage` itself from `launch.nproc_per_node`), with the
same global batch (per-rank batch = --batch / ranks) so both do the same work per step.
Prints, per setting, the median wall time of the whole command, the trainer's time and
training samples per second, and the ratio of N ranks to one.

    python bench/ranks.py                                  # CPU, small preset, 1 vs 2
    python bench/ranks.py --preset tiny --steps 20 --repeats 3
    python bench/ranks.py --ranks 8 --preset small         # a GPU host: 1 vs 8 GPUs

On a CPU host each rank runs with one thread (torchrun's default), one process with all.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def project(root: Path, preset: str) -> None:
    from avar.data.synth import synthesize
    from avar.models.tiny import init_tiny

    synthesize("visual", 64, 0, root / "data/visual")
    synthesize("visual", 4, 2, root / "data/heldout", prefix="heldout")
    init_tiny(root / "models/base", preset, seed=0)


def run(root: Path, ranks: int, args, tag: str) -> tuple[float, float]:
    """(wall seconds of `avar stage sft_mm`, the trainer's seconds)."""
    sets = {
        "sft_mm.init_from": "base",
        "base.out_dir": f"{root}/models/base",
        "sft_mm.data": f"{root}/data/visual/data.jsonl",
        "sft_mm.out_dir": f"{root}/models/{tag}",
        "sft_mm.checkpoint_dir": f"{root}/checkpoints/{tag}",
        "sft_mm.metrics": f"{root}/metrics/{tag}.json",
        "sft_mm.max_steps": args.steps,
        "sft_mm.save_steps": args.steps,
        "sft_mm.log_steps": args.steps,
        "sft_mm.batch_size": args.batch // ranks,
        "sft_mm.resume": "never",
        "checkpoint_eval.data": f"{root}/data/heldout/data.jsonl",
        "checkpoint_eval.limit": 2,
        "checkpoint_eval.max_new_tokens": 8,
        "launch.nproc_per_node": ranks,
        "model.device": args.device,
    }
    command = [sys.executable, "-m", "avar.cli", "stage", "sft_mm", "--params", str(PARAMS)]
    for key, value in sets.items():
        command += ["-S", f"{key}={value}"]
    start = time.monotonic()
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"{tag} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    report = json.loads((root / f"metrics/{tag}.json").read_text())
    assert report["launch"]["world_size"] == ranks
    return wall, report["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8, help="global batch per step")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.batch % args.ranks:
        sys.exit(f"--batch {args.batch} must divide by --ranks {args.ranks}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        project(root, args.preset)
        times: dict[int, list[tuple[float, float]]] = {1: [], args.ranks: []}
        for repeat in range(args.repeats):
            for ranks in (1, args.ranks) if repeat % 2 == 0 else (args.ranks, 1):
                times[ranks].append(run(root, ranks, args, f"r{ranks}-{repeat}"))
    samples = args.steps * args.batch
    print(
        f"sft_mm, {args.preset} preset, {args.steps} steps x global batch {args.batch}, "
        f"{args.device}, median of {args.repeats}"
    )
    print(f"{'ranks':>5} {'wall s':>8} {'train s':>8} {'samples/s':>10}")
    rates = {}
    for ranks, runs in times.items():
        wall = statistics.median(w for w, _ in runs)
        train = statistics.median(t for _, t in runs)
        rates[ranks] = samples / train
        print(f"{ranks:>5} {wall:>8.1f} {train:>8.1f} {rates[ranks]:>10.2f}")
    print(f"{args.ranks} ranks / 1 rank, training throughput: {rates[args.ranks] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
