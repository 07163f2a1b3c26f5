"""Objectives: sft_mm under the paper's attention objective, the bounded one and none.

In a workspace where the chain has run up to coldstart_text (`make run` or `dvc repro
coldstart_text`), trains sft_mm from the same coldstart_text model once per objective and
seed, as users run it (`avar stage sft_mm -S ...`, into a scratch folder; the workspace's
own models and metrics are not touched), and scores the final model on the held-out
questions. Prints one Markdown row per objective: accuracy (mean and standard deviation
over seeds, and the pooled count with its 95% Wilson interval), image mass, system mass,
VAS and log10 VAS (mean, sd), and writes every run's row to --out.

    python bench/objectives.py --workspace .                        # 3 objectives x 3 seeds
    python bench/objectives.py --workspace . --seeds 0,1 --limit 100

The seeds are sft_mm's (its data order); base and coldstart_text are the workspace's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

OBJECTIVES = {
    "paper": {"sft_mm.objective": "paper"},
    "bounded": {"sft_mm.objective": "bounded"},
    "none (alpha = beta = 0)": {"sft_mm.alpha": 0, "sft_mm.beta": 0},
}
KEYS = ("accuracy", "n", "image_mass", "system_mass", "vas", "log10_vas", "vas_flag")


def train(workspace: Path, scratch: Path, objective: str, seed: int, args) -> dict:
    """The final held-out row of one sft_mm run."""
    tag = f"{objective.split()[0]}-{seed}"
    sets = {
        **OBJECTIVES[objective],
        "sft_mm.seed": seed,
        "sft_mm.out_dir": f"{scratch}/models/{tag}",
        "sft_mm.checkpoint_dir": f"{scratch}/checkpoints/{tag}",
        "sft_mm.metrics": f"{scratch}/metrics/{tag}.json",
        "sft_mm.resume": "never",
        "sft_mm.save_steps": args.steps or 10**6,  # score the last step only
        "checkpoint_eval.limit": args.limit,
        "launch.nproc_per_node": 1,
        "tracking.uri": f"sqlite:///{scratch}/mlruns.db",
    }
    if args.steps:
        sets["sft_mm.max_steps"] = args.steps
    command = [sys.executable, "-m", "avar.cli", "stage", "sft_mm"]
    for key, value in sets.items():
        command += ["-S", f"{key}={value}"]
    done = subprocess.run(command, cwd=workspace, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tag} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    final = json.loads(Path(sets["sft_mm.metrics"]).read_text())["checkpoints"][-1]
    row = {"objective": objective, "seed": seed, "step": final["step"]}
    row.update({k: final.get(f"heldout/{k}") for k in KEYS})
    print(json.dumps(row), flush=True)
    return row


def spread(values: list[float | None], digits: str = ".3f") -> str:
    """mean ± sd over seeds (sd needs two values)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:{digits}}"
    return f"{mean:{digits}} ± {statistics.stdev(values):{digits}}"


def table(rows: list[dict]) -> str:
    from avar.stats import wilson

    lines = [
        "| objective | seeds | accuracy (mean ± sd) | pooled accuracy [95% CI] | image mass "
        "| system mass | VAS | log10 VAS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for objective in OBJECTIVES:
        runs = [r for r in rows if r["objective"] == objective]
        if not runs:
            continue
        right = sum(round(r["accuracy"] * r["n"]) for r in runs)
        n = sum(r["n"] for r in runs)
        low, high = wilson(right, n)
        flagged = sum(bool(r["vas_flag"]) for r in runs)
        vas = spread([r["vas"] for r in runs if not r["vas_flag"]], ".3g")
        if flagged:  # a ratio over a collapsed system mass is not shown (see avar/summary.py)
            vas = f"flagged in {flagged} of {len(runs)}" + ("" if vas == "-" else f"; {vas}")
        cells = [
            objective,
            str(len(runs)),
            spread([r["accuracy"] for r in runs]),
            f"{right}/{n} = {right / n:.3f} [{low:.3f}, {high:.3f}]",
            spread([r["image_mass"] for r in runs]),
            spread([r["system_mass"] for r in runs], ".2g"),
            vas,
            spread([r["log10_vas"] for r in runs], ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, default=Path("."))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--objectives", default=",".join(o.split()[0] for o in OBJECTIVES))
    parser.add_argument("--limit", type=int, default=0, help="held-out questions; 0: params'")
    parser.add_argument("--steps", type=int, default=0, help="sft_mm steps; 0: params'")
    parser.add_argument("--out", type=Path, default=Path("bench-objectives.json"))
    args = parser.parse_args()
    if not (args.workspace / "models/coldstart_text/config.json").is_file():
        raise SystemExit(f"{args.workspace}/models/coldstart_text: run the chain up to it first")
    if not args.limit:
        from avar.config import load_params

        args.limit = load_params(args.workspace / "params.yaml").checkpoint_eval.limit
    wanted = args.objectives.split(",")
    chosen = [o for o in OBJECTIVES if o.split()[0] in wanted]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            for objective in chosen:
                rows.append(train(args.workspace.resolve(), Path(tmp), objective, seed, args))
    args.out.write_text(json.dumps(rows, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
