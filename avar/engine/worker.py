"""avar's vLLM engine process, run by the Python of the vLLM environment (never imported by
avar: vLLM pins transformers and fastapi versions that conflict with avar's).

    .avar/vllm-env/bin/python avar/engine/worker.py

One JSON object per line on stdin, one reply per line on the original stdout; everything
vLLM prints goes to stderr (avar.engine.client logs it). The first line is the engine's spec
({"model", "dtype", "seed", "device", "max_model_len", "max_images", "enforce_eager",
"gpu_memory_utilization", "kv_cache_gib"}), answered with {"ok", "load_s", "version"}; then
requests by "op":

    generate      {"prompts": [{"text", "images": [base64 PNG], "pixels"}], "n", "temperature",
                   "max_tokens", "stop_token_ids", "suppress_token_ids", "logprobs"} ->
                  {"outputs": [{"prompt_token_ids", "samples": [{"token_ids", "logprobs"}]}]}
    load_weights  {"folder"}: the safetensors files there replace the engine's weights
    close

A failed request answers {"ok": false, "error"}; end of stdin ends the process (so does
the parent's death: its pipe closes).
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def with_video_config(model: Path, scratch: Path) -> Path:
    """`model`, or a folder of links to its files plus the video_preprocessor_config.json
    vLLM's Qwen2-VL loader asks for (avar's folders have an image processor only; writing
    one into them would make avar's own transformers load a video processor)."""
    if (model / "video_preprocessor_config.json").is_file():
        return model
    for item in model.iterdir():
        (scratch / item.name).symlink_to(item.resolve())
    config = model / "preprocessor_config.json"
    if config.is_file():
        image = json.loads(config.read_text())
    else:
        image = json.loads((model / "processor_config.json").read_text())["image_processor"]
    video = {k: v for k, v in image.items() if k != "image_processor_type"}
    video["video_processor_type"] = "Qwen2VLVideoProcessor"
    (scratch / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    return scratch


def start(spec: dict, scratch: Path):
    """The engine of `spec` (vLLM imported here, after the environment is set)."""
    if spec["device"] == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(spec["kv_cache_gib"]))
        # vLLM's CPU backend packs each linear layer's weight into a oneDNN handle at load
        # and drops the weight; its in-place reload then leaves layers loaded in shards
        # (qkv, gate_up) on the old weights (measured: greedy answers after an update
        # matched neither the old nor the new model). Plain torch linears keep the weights
        # where the reload writes them; that needs the engine core in this process.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        import vllm._custom_ops as ops

        ops._supports_onednn = False
    from vllm import LLM

    return LLM(
        model=str(with_video_config(Path(spec["model"]), scratch)),
        dtype=spec["dtype"],
        seed=spec["seed"],
        max_model_len=spec["max_model_len"],
        enforce_eager=spec["enforce_eager"] or spec["device"] == "cpu",
        gpu_memory_utilization=spec["gpu_memory_utilization"],
        limit_mm_per_prompt={"image": spec["max_images"], "video": 0},
        logprobs_mode="processed_logprobs",  # after temperature: the distribution sampled
    )


def generate(llm, request: dict, scratch: Path) -> dict:
    from PIL import Image
    from vllm import SamplingParams

    stops = request["stop_token_ids"]
    params = SamplingParams(
        n=request["n"],
        temperature=request["temperature"],
        top_p=1.0,
        top_k=0,
        max_tokens=request["max_tokens"],
        stop_token_ids=stops,
        logit_bias={i: -100.0 for i in request["suppress_token_ids"]} or None,
        logprobs=0 if request["logprobs"] else None,
        detokenize=False,
    )  # no per-request seed: vLLM's CPU sampler fails with one; the engine is seeded
    prompts = []
    for p in request["prompts"]:
        images = [Image.open(io.BytesIO(base64.b64decode(i))) for i in p["images"]]
        data = {}
        if images:  # the image processor's pixel bounds, as avar's processor had them
            data = {"multi_modal_data": {"image": images}, "mm_processor_kwargs": p["pixels"]}
        prompts.append({"prompt": p["text"]} | data)
    outputs = []
    for out in llm.generate(prompts, params, use_tqdm=False):
        samples = []
        for c in out.outputs:
            ids = list(c.token_ids)
            logps = [next(iter(step.values())).logprob for step in c.logprobs or []]
            if c.finish_reason == "stop" and (not ids or ids[-1] not in stops):
                ids.append(c.stop_reason if isinstance(c.stop_reason, int) else stops[0])
            samples.append({"token_ids": ids, "logprobs": logps if request["logprobs"] else None})
        outputs.append({"prompt_token_ids": list(out.prompt_token_ids), "samples": samples})
    return {"outputs": outputs}


def load_weights(llm, request: dict, scratch: Path) -> dict:
    """The safetensors files of `folder` replace the weights; the caches keyed by the old
    weights (prefixes, encoder outputs) are dropped with them. (vLLM then reads its
    processors from `folder` too: it gets the video config `start` gave the first.)"""
    tic = time.perf_counter()
    folder = with_video_config(Path(request["folder"]), Path(tempfile.mkdtemp(dir=scratch)))
    llm.collective_rpc("reload_weights", kwargs={"weights_path": str(folder)})
    llm.reset_prefix_cache()
    llm.llm_engine.reset_encoder_cache()
    return {"seconds": time.perf_counter() - tic}


def main() -> None:
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # vLLM's prints (and its spawned engine core's) go to stderr

    def say(message: dict) -> None:
        reply.write(json.dumps(message) + "\n")

    spec = json.loads(sys.stdin.readline())
    with tempfile.TemporaryDirectory(prefix="avar-vllm-") as scratch:
        tic = time.perf_counter()
        try:
            llm = start(spec, Path(scratch))
        except Exception as error:  # noqa: BLE001 - the client prints it, with the log
            say({"ok": False, "error": f"{type(error).__name__}: {error}"})
            return
        import vllm

        say({"ok": True, "load_s": time.perf_counter() - tic, "version": vllm.__version__})
        ops = {"generate": generate, "load_weights": load_weights}
        for line in sys.stdin:
            request = json.loads(line)
            if request["op"] == "close":
                break
            try:
                say({"ok": True} | ops[request["op"]](llm, request, Path(scratch)))
            except Exception as error:  # noqa: BLE001
                say({"ok": False, "error": f"{type(error).__name__}: {error}"})


if __name__ == "__main__":  # vLLM starts its engine core with spawn
    main()
