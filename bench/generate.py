"""Generation: HF `generate` (avar's path today) and vLLM side by side, on the same prompts.

The tiny model (or --preset small, or --model) answers --prompts synthetic visual questions
in two rounds, each through both:

    greedy   eval's answers: greedy, batches of --batch-size for HF (as `avar eval`), all
             prompts at once for vLLM (its scheduler batches)
    groups   GRPO's rollouts: --group-size samples per prompt at temperature 1, top-k/top-p
             off, vision tokens suppressed (as `avar stage rl` samples)

vLLM runs in its own environment (`make vllm-env`: .avar/vllm-env), through
bench/vllm/run_vllm.py, on the same rendered prompts and images. Prints the tokens per
second of each (median of --repeats after the engine is loaded; vLLM's load time apart),
the ratio vLLM / HF, and how many greedy answers and prompts' token ids are identical.

    make vllm-env && .venv/bin/python bench/generate.py
    python bench/generate.py --preset small
    python bench/generate.py --device cuda --dtype bf16 --model Qwen/Qwen2.5-VL-7B-Instruct
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

import torch

from avar.config.schema import ModelConfig
from avar.data.chats import load_records, prompts
from avar.data.synth import synthesize
from avar.generate import plain_generation, stop_token_ids, vision_token_ids
from avar.models.loader import load
from avar.models.tiny import init_tiny
from avar.segments import encode, encode_batch, model_inputs

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".avar" / "vllm-env" / "bin" / "python"
VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def until_stop(ids: list[int], stops: list[int]) -> list[int]:
    """The tokens before the first stop token."""
    for i, token in enumerate(ids):
        if token in stops:
            return ids[:i]
    return ids


def hf_round(model, processor, chats, args, n: int, sample: bool, stops) -> tuple[float, list]:
    """One pass of HF generate over `chats` (each `n` times): seconds and token ids."""
    tokenizer = processor.tokenizer
    rows = [c for c in chats for _ in range(n)]
    step = args.batch_size * n
    tic, out = time.perf_counter(), []
    for start in range(0, len(rows), step):
        batch = encode_batch(processor, rows[start : start + step], "left", True)
        with torch.no_grad(), plain_generation(model, tokenizer):
            sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
            ids = model.generate(
                **model_inputs(batch),
                max_new_tokens=args.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                suppress_tokens=vision_token_ids(tokenizer),
                **(sampling if sample else {"do_sample": False}),
            )
        out += [until_stop(r, stops) for r in ids[:, batch["input_ids"].shape[1] :].tolist()]
    return time.perf_counter() - tic, out


def vllm_rounds(request: dict, work: Path) -> dict:
    if not VLLM_PYTHON.is_file():
        sys.exit(f"no vLLM environment at {VLLM_PYTHON.parent.parent}: run `make vllm-env`")
    (work / "request.json").write_text(json.dumps(request))
    done = subprocess.run(
        [str(VLLM_PYTHON), str(ROOT / "bench/vllm/run_vllm.py")]
        + [str(work / "request.json"), str(work / "result.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if done.returncode != 0:
        said = [line for line in done.stdout.splitlines() if "WARNING" not in line]
        sys.exit(f"vLLM exited {done.returncode}:\n" + "\n".join(said[-60:]))
    return json.loads((work / "result.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="a model folder or hub id (default: --preset)"
    )
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="fp32", choices=sorted(VLLM_DTYPES))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="avar-bench-generate-") as tmp:
        work = Path(tmp)
        folder = args.model or str(init_tiny(work / "model", args.preset, seed=args.seed))
        synthesize("visual", args.prompts, args.seed, work / "data")
        records, root = load_records(work / "data" / "data.jsonl")
        section = ModelConfig(name_or_path=folder, dtype=args.dtype, device=args.device)
        model, processor = load(folder, section)
        model.eval()
        tokenizer = processor.tokenizer
        chats = prompts(records, root, None)
        stops = stop_token_ids(model.generation_config, tokenizer)
        texts = [
            tokenizer.apply_chat_template(
                c, chat_template=processor.chat_template, tokenize=False, add_generation_prompt=True
            )
            for c in chats
        ]
        images = [str(root / r["images"][0]) for r in records]
        rounds = {"greedy": (1, False), "groups": (args.group_size, True)}
        hf = {}
        for name, (n, sample) in rounds.items():
            runs = [
                hf_round(model, processor, chats, args, n, sample, stops)
                for _ in range(args.repeats)
            ]
            hf[name] = (statistics.median(s for s, _ in runs), runs[-1][1])
        request = {
            "model": folder,
            "prompts": [{"text": t, "image": i} for t, i in zip(texts, images, strict=True)],
            "rounds": [
                {"name": name, "n": n, "temperature": 1.0 if sample else 0.0}
                | {"max_tokens": args.max_new_tokens, "repeats": args.repeats}
                for name, (n, sample) in rounds.items()
            ],
            "stop_token_ids": stops,
            "suppress_token_ids": vision_token_ids(tokenizer),
            "seed": args.seed,
            "dtype": VLLM_DTYPES[args.dtype],
        }
        vllm = vllm_rounds(request, work)
        avar_ids = [encode(processor, c, add_generation_prompt=True).input_ids for c in chats]
    same_prompts = sum(
        a == v for a, v in zip(avar_ids, vllm["rounds"]["greedy"]["prompt_token_ids"], strict=True)
    )
    greedy_v = [until_stop(ids, stops) for ids in vllm["rounds"]["greedy"]["token_ids"]]
    same = sum(a == b for a, b in zip(hf["greedy"][1], greedy_v, strict=True))
    print(
        f"model {folder}, {args.prompts} prompts, max {args.max_new_tokens} new tokens, "
        f"median of {args.repeats}; vLLM engine load {vllm['load_s']:.1f} s"
    )
    print(f"prompt token ids identical: {same_prompts} of {len(chats)}")
    print(f"greedy answers identical (token for token): {same} of {len(chats)}")
    print(f"{'round':<8} {'HF tok/s':>10} {'vLLM tok/s':>11} {'vLLM / HF':>10}")
    for name in rounds:
        hf_s, hf_ids = hf[name]
        v = vllm["rounds"][name]
        v_ids = [until_stop(ids, stops) for ids in v["token_ids"]]
        hf_rate = sum(map(len, hf_ids)) / hf_s
        v_rate = sum(map(len, v_ids)) / statistics.median(v["seconds"])
        print(f"{name:<8} {hf_rate:>10.1f} {v_rate:>11.1f} {v_rate / hf_rate:>9.2f}x")


if __name__ == "__main__":
    main()
