"""The vLLM half of bench/generate.py, run by the Python of avar's vLLM environment
(`make vllm-env`; vLLM pins transformers and fastapi versions that conflict with avar's, so
it lives in a virtualenv of its own and is reached through this script, not imported).

    .avar/vllm-env/bin/python bench/vllm/run_vllm.py REQUEST.json RESULT.json

REQUEST: {"model": folder, "prompts": [{"text": rendered chat, "image": path}],
"rounds": [{"name", "n", "temperature", "max_tokens", "repeats"}], "stop_token_ids",
"suppress_token_ids", "seed", "dtype"}. RESULT: {"load_s", "rounds": {name: {"seconds": [...],
"token_ids": [[...] per prompt x n]}}}. The prompt is the chat avar rendered, as text with
one image placeholder per image: vLLM expands it, and the prompt's token ids then equal
avar's (checked in the result: "prompt_token_ids").
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path


def with_video_config(model: Path, scratch: Path) -> Path:
    """`model`, or a folder of links to its files plus the video_preprocessor_config.json
    vLLM's Qwen2-VL loader asks for (avar's folders have an image processor only)."""
    if (model / "video_preprocessor_config.json").is_file():
        return model
    for item in model.iterdir():
        (scratch / item.name).symlink_to(item.resolve())
    image = json.loads((model / "processor_config.json").read_text())["image_processor"]
    video = {k: v for k, v in image.items() if k != "image_processor_type"}
    video["video_processor_type"] = "Qwen2VLVideoProcessor"
    (scratch / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    return scratch


def main(request_path: str, result_path: str) -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU
    from PIL import Image
    from vllm import LLM, SamplingParams

    request = json.loads(Path(request_path).read_text())
    with tempfile.TemporaryDirectory(prefix="avar-vllm-") as scratch:
        started = time.perf_counter()
        llm = LLM(
            model=str(with_video_config(Path(request["model"]), Path(scratch))),
            dtype=request["dtype"],
            max_model_len=2048,
            enforce_eager=True,
            seed=request["seed"],
            limit_mm_per_prompt={"image": 1, "video": 0},
        )
        load_s = time.perf_counter() - started
        prompts = [
            {
                "prompt": p["text"],
                "multi_modal_data": {"image": Image.open(p["image"]).convert("RGB")},
            }
            for p in request["prompts"]
        ]
        rounds = {}
        for spec in request["rounds"]:
            params = SamplingParams(
                n=spec["n"],
                temperature=spec["temperature"],
                top_p=1.0,
                max_tokens=spec["max_tokens"],
                stop_token_ids=request["stop_token_ids"],
                logit_bias={i: -100.0 for i in request["suppress_token_ids"]},
            )  # no per-request seed: vLLM's CPU sampler fails with one ("CPU Generator does
            # not use offset"); the engine's seed (LLM(seed=...)) is set
            seconds, outputs = [], []
            for _ in range(spec["repeats"]):
                tic = time.perf_counter()
                outputs = llm.generate(prompts, params, use_tqdm=False)
                seconds.append(time.perf_counter() - tic)
            rounds[spec["name"]] = {
                "seconds": seconds,
                "token_ids": [list(c.token_ids) for o in outputs for c in o.outputs],
                "prompt_token_ids": [list(o.prompt_token_ids) for o in outputs],
            }
    Path(result_path).write_text(json.dumps({"load_s": load_s, "rounds": rounds}))


if __name__ == "__main__":  # vLLM starts its engine core with spawn
    main(*sys.argv[1:])
