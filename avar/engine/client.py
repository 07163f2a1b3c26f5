"""vLLM as avar's sampler: an engine in a process of its own (avar.engine.worker, run by the
vLLM environment's Python), spoken to over pipes, one JSON line a request.

avar gives it the chat as avar renders it (text with one `<|image_pad|>` per image) and the
images as avar opens them; vLLM expands the placeholders, and its prompt token ids then
equal avar's `encode` (callers that hold both compare them: `prompt_mismatches`). Only
token ids come back: avar decodes them with its own tokenizer, so answers are grouped,
stripped and graded exactly as HF `generate`'s are.
"""

from __future__ import annotations

import base64
import collections
import io
import json
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from avar.config.schema import GenerateConfig, ModelConfig, VllmConfig
from avar.errors import UserError
from avar.models.loader import resolve_device, resolve_dtype
from avar.segments import conversation_images, render

log = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("worker.py")
VLLM_ENV_PYTHON = Path(".avar/vllm-env/bin/python")  # what `make vllm-env` builds
CHECKOUT = Path(__file__).resolve().parents[2]  # avar's own folder (an editable install)
VLLM_DTYPES = {"torch.float32": "float32", "torch.bfloat16": "bfloat16", "torch.float16": "float16"}


class EngineError(UserError):
    """vLLM is missing, broken, or its engine failed: one line (the engine's last log lines
    go to the log just before it)."""


@dataclass(frozen=True)
class EngineSpec:
    """Where and how a stage's engine runs: the stage's device and weights dtype."""

    vllm: VllmConfig
    dtype: str  # vLLM's name: float32 | bfloat16 | float16
    seed: int
    device: str  # cpu | cuda | cuda:N

    def pythons(self) -> list[Path]:
        """Where the vLLM environment's Python may be, in order: the setting, else
        $AVAR_VLLM_PYTHON, else `make vllm-env`'s in this folder or in avar's checkout."""
        chosen = self.vllm.python or os.environ.get("AVAR_VLLM_PYTHON")
        if chosen:
            return [Path(chosen)]
        return list(dict.fromkeys([VLLM_ENV_PYTHON.absolute(), CHECKOUT / VLLM_ENV_PYTHON]))

    def python(self) -> Path | None:
        """The first of `pythons` that exists."""
        return next((p for p in self.pythons() if p.is_file()), None)


def engine_spec(generate: GenerateConfig, model: ModelConfig, seed: int = 0) -> EngineSpec | None:
    """The stage's engine under `generate.backend: vllm`; None for `hf`."""
    if generate.backend != "vllm":
        return None
    device = resolve_device(model.device)
    dtype = VLLM_DTYPES[str(resolve_dtype(model.dtype, device))]
    return EngineSpec(generate.vllm, dtype, seed, str(device))


@contextmanager
def answering_engine(
    generate: GenerateConfig, model: ModelConfig, folder: str, steered: bool = False
) -> Iterator[VllmEngine | None]:
    """The engine that writes greedy answers of the model in `folder` under
    `generate.backend: vllm` (closed on exit); None for `hf`, and for answers under an
    intervention (the steering is a hook on avar's forward: `model` answers those)."""
    spec = engine_spec(generate, model, model.seed)
    if spec is None or steered:
        yield None
        return
    with VllmEngine(spec, folder) as engine:
        yield engine


@dataclass
class Sample:
    """One sampled completion: its token ids (up to and with the stop token, when it
    stopped) and, when asked, the log-prob of each under the sampling distribution."""

    token_ids: list[int]
    logprobs: list[float] | None = None


def png(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # lossless: the engine sees avar's pixels
    return base64.b64encode(buffer.getvalue()).decode()


class VllmEngine:
    """A vLLM engine serving the model in `folder` (a context manager: closed on exit)."""

    def __init__(self, spec: EngineSpec, folder: str | Path):
        python = spec.python()
        if python is None:
            tried = " or ".join(map(str, spec.pythons()))
            raise EngineError(
                f"generate.backend: vllm: no vLLM environment at {tried} (run `make vllm-env`,"
                " or set generate.vllm.python or AVAR_VLLM_PYTHON)"
            )
        env = dict(os.environ, VLLM_LOGGING_LEVEL=os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"))
        if spec.device.startswith("cuda:"):  # this rank's GPU, shared with its training
            env["CUDA_VISIBLE_DEVICES"] = spec.device.split(":")[1]
        env.pop("PYTHONPATH", None)  # avar's environment stays out of vLLM's
        self.python = python
        self.lines: collections.deque[str] = collections.deque(maxlen=40)
        self.process = subprocess.Popen(
            [str(python), str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        threading.Thread(target=self._log, daemon=True).start()
        device = "cpu" if spec.device == "cpu" else "cuda"
        fields = asdict(spec.vllm)
        fields.pop("python")
        started = self._ask(
            fields | {"model": str(folder), "dtype": spec.dtype, "seed": spec.seed},
            device=device,
        )
        self.version = started["version"]
        log.info("vLLM %s engine for %s loaded in %.1f s", self.version, folder, started["load_s"])

    def _log(self) -> None:
        """The engine's stderr: logged, its last lines kept for a failure's log."""
        assert self.process.stderr is not None
        for line in self.process.stderr:
            line = line.rstrip()
            self.lines.append(line)
            log.log(logging.WARNING if "ERROR" in line else logging.DEBUG, "vllm: %s", line)

    def _ask(self, request: dict, **more) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(request | more) + "\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
        except BrokenPipeError:
            answer = ""
        if not answer:
            code = self.process.wait(timeout=30)
            self._log_tail()
            raise EngineError(f"vLLM engine ({self.python}) exited {code}")
        reply = json.loads(answer)
        if not reply.pop("ok"):
            self._log_tail()
            raise EngineError(f"vLLM engine ({self.python}): {reply['error']}".splitlines()[0])
        return reply

    def _log_tail(self) -> None:
        """The engine's last lines, where a failure's cause usually is."""
        said = [line for line in self.lines if line.strip()][-12:]
        if said:
            log.error("the vLLM engine's last lines:\n%s", "\n".join(said))

    def sample(
        self,
        processor,
        chats: list[list[dict]],
        n: int,
        temperature: float,
        max_tokens: int,
        stop_token_ids: list[int],
        suppress_token_ids: list[int],
        logprobs: bool = False,
    ) -> tuple[list[list[Sample]], list[list[int]]]:
        """`n` completions per chat (temperature 0: greedy) and each chat's prompt token ids
        as vLLM built them."""
        size = getattr(processor.image_processor, "size", None) or {}
        pixels = {  # the image processor's bounds, as avar's processor has them
            "min_pixels": size.get("shortest_edge"),
            "max_pixels": size.get("longest_edge"),
        }
        prompts = [
            {
                "text": render(processor, chat, add_generation_prompt=True),
                "images": [png(image) for image in conversation_images(chat)],
                "pixels": {k: v for k, v in pixels.items() if v},
            }
            for chat in chats
        ]
        reply = self._ask(
            {"op": "generate", "prompts": prompts, "n": n, "temperature": temperature},
            max_tokens=max_tokens,
            stop_token_ids=stop_token_ids,
            suppress_token_ids=suppress_token_ids,
            logprobs=logprobs,
        )
        outputs = reply["outputs"]
        samples = [[Sample(**s) for s in out["samples"]] for out in outputs]
        return samples, [out["prompt_token_ids"] for out in outputs]

    def load_weights(self, folder: str | Path) -> float:
        """The safetensors files in `folder` become the engine's weights; seconds taken."""
        return self._ask({"op": "load_weights", "folder": str(folder)})["seconds"]

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps({"op": "close"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> VllmEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prompt_mismatches(ours: list[list[int]], theirs: list[list[int]], where: str) -> int:
    """How many prompts vLLM tokenized differently from avar (logged: its completions were
    then conditioned on another prompt than the one avar trains and grades on)."""
    differ = sum(a != b for a, b in zip(ours, theirs, strict=True))
    if differ:
        said = "%s: vLLM built %d of %d prompts' token ids unlike avar"
        log.warning(said, where, differ, len(ours))
    return differ
