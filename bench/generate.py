"""Generation: HF `generate` (avar's path today) and vLLM side by side, on the same prompts.

The tiny model (or --preset small, or --model) answers --prompts synthetic visual questions
in two rounds, each through both:

    greedy   eval's answers: greedy, batches of --batch-size for HF (as `avar eval`), all
             prompts at once for vLLM (its scheduler batches)
    groups   GRPO's rollouts: --group-size samples per prompt at temperature 1, top-k/top-p
             off, vision tokens suppressed (as `avar stage rl` samples)

vLLM runs as `generate.backend: vllm` runs it (avar.engine: its own environment, `make
vllm-env`, spoken to over pipes), on the same rendered prompts and images. Prints the tokens
per second of each (median of --repeats after the engine is loaded; its load time apart),
the ratio vLLM / HF, and how many greedy answers and prompts' token ids are identical.

    make vllm-env && .venv/bin/python bench/generate.py
    python bench/generate.py --preset small
    python bench/generate.py --device cuda --dtype bf16 --model Qwen/Qwen2.5-VL-7B-Instruct
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from avar.config.schema import GenerateConfig, ModelConfig
from avar.data.chats import load_records, prompts
from avar.data.synth import synthesize
from avar.engine.client import VllmEngine, engine_spec
from avar.generate import plain_generation, stop_token_ids, vision_token_ids
from avar.models.loader import load
from avar.models.tiny import init_tiny
from avar.segments import encode, encode_batch, model_inputs

ROOT = Path(__file__).resolve().parents[1]
DTYPES = ("bf16", "fp16", "fp32")


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


def vllm_round(engine, processor, chats, args, n: int, sample: bool, stops) -> tuple:
    """One pass of the engine over `chats` (`n` samples each): seconds, token ids and the
    prompts' token ids as vLLM built them."""
    tic = time.perf_counter()
    samples, prompt_ids = engine.sample(
        processor,
        chats,
        n,
        1.0 if sample else 0.0,
        args.max_new_tokens,
        stops,
        vision_token_ids(processor.tokenizer),
    )
    seconds = time.perf_counter() - tic
    return seconds, [until_stop(s.token_ids, stops) for each in samples for s in each], prompt_ids


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
    parser.add_argument("--dtype", default="fp32", choices=DTYPES)
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
        rounds = {"greedy": (1, False), "groups": (args.group_size, True)}
        hf = {}
        for name, (n, sample) in rounds.items():
            runs = [
                hf_round(model, processor, chats, args, n, sample, stops)
                for _ in range(args.repeats)
            ]
            hf[name] = (statistics.median(s for s, _ in runs), runs[-1][1])
        spec = engine_spec(GenerateConfig(backend="vllm"), section, args.seed)
        assert spec is not None
        tic = time.perf_counter()
        with VllmEngine(spec, folder) as engine:
            load_s = time.perf_counter() - tic
            vllm = {}
            for name, (n, sample) in rounds.items():
                runs = [
                    vllm_round(engine, processor, chats, args, n, sample, stops)
                    for _ in range(args.repeats)
                ]
                vllm[name] = (statistics.median(r[0] for r in runs), runs[-1][1], runs[-1][2])
        avar_ids = [encode(processor, c, add_generation_prompt=True).input_ids for c in chats]
    same_prompts = sum(a == v for a, v in zip(avar_ids, vllm["greedy"][2], strict=True))
    same = sum(a == b for a, b in zip(hf["greedy"][1], vllm["greedy"][1], strict=True))
    print(
        f"model {folder}, {args.prompts} prompts, max {args.max_new_tokens} new tokens, "
        f"median of {args.repeats}; vLLM engine load {load_s:.1f} s"
    )
    print(f"prompt token ids identical: {same_prompts} of {len(chats)}")
    print(f"greedy answers identical (token for token): {same} of {len(chats)}")
    print(f"{'round':<8} {'HF tok/s':>10} {'vLLM tok/s':>11} {'vLLM / HF':>10}")
    for name in rounds:
        hf_s, hf_ids = hf[name]
        v_s, v_ids, _ = vllm[name]
        hf_rate = sum(map(len, hf_ids)) / hf_s
        v_rate = sum(map(len, v_ids)) / v_s
        print(f"{name:<8} {hf_rate:>10.1f} {v_rate:>11.1f} {v_rate / hf_rate:>9.2f}x")


if __name__ == "__main__":
    main()
