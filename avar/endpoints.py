"""The chat endpoints avar asks: the curation teacher (traces for rows without a scene) and
the evaluation judge (final answers read out of long responses).

`HttpTeacher` calls an OpenAI-compatible chat completions endpoint (vLLM, SGLang, TGI, a
hosted API), `LocalTeacher` an HF checkpoint through avar's generation. Both answer a
batch of chats and go through `CachedTeacher`: a request answered once (same model,
messages and settings) is read from the JSONL cache, never sent again. The API key is read
from the environment at each request and never written anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from avar.config.schema import TeacherConfig
from avar.scrub import scrub

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class TeacherError(RuntimeError):
    """A request that failed for good (after retries, or a non-retryable error)."""


def _data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def openai_messages(chat: list[dict]) -> list[dict]:
    """avar chat messages -> OpenAI messages (images as PNG data URLs)."""
    messages = []
    for message in chat:
        content = message["content"]
        if not isinstance(content, str):
            content = [
                {"type": "image_url", "image_url": {"url": _data_url(part["image"])}}
                if part["type"] == "image"
                else {"type": "text", "text": part["text"]}
                for part in content
            ]
        messages.append({"role": message["role"], "content": content})
    return messages


class HttpTeacher:
    """POST `<url>/chat/completions`, retrying timeouts, connection errors, 429 and 5xx
    with exponential backoff (`backoff`, doubled each time, with jitter)."""

    def __init__(self, cfg: TeacherConfig, sleep=time.sleep, label: str = "teacher"):
        self.cfg, self.sleep, self.label = cfg, sleep, label
        self.endpoint = cfg.url.rstrip("/") + "/chat/completions"

    def payload(self, chat: list[dict]) -> dict:
        cfg = self.cfg
        return {
            "model": cfg.model,
            "messages": openai_messages(chat),
            "max_tokens": cfg.max_new_tokens,
            "temperature": cfg.temperature,
        }

    def complete(self, chats: list[list[dict]]) -> list[str]:
        return [self._post(self.payload(chat)) for chat in chats]

    def _post(self, payload: dict) -> str:
        headers = {"Content-Type": "application/json"}
        if os.environ.get(self.cfg.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[self.cfg.api_key_env]}"
        body = json.dumps(payload).encode()
        for attempt in range(self.cfg.retries + 1):
            request = urllib.request.Request(self.endpoint, body, headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.cfg.timeout) as response:
                    return _message_text(json.loads(response.read()), self.endpoint)
            except urllib.error.HTTPError as err:
                if err.code not in RETRY_STATUS:
                    detail = scrub(err.read().decode(errors="replace"))[:200]
                    raise TeacherError(f"{self.endpoint}: HTTP {err.code}: {detail}") from None
                reason = f"HTTP {err.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                reason = str(getattr(err, "reason", err))
            if attempt == self.cfg.retries:
                raise TeacherError(
                    f"{self.endpoint}: {reason} after {attempt + 1} attempts"
                ) from None
            delay = self.cfg.backoff * 2**attempt * (1 + 0.1 * random.random())
            log.warning(
                "%s: %s; retry %d/%d in %.1f s",
                self.label,
                reason,
                attempt + 1,
                self.cfg.retries,
                delay,
            )
            self.sleep(delay)
        raise AssertionError("unreachable")


def _message_text(reply: dict, endpoint: str) -> str:
    try:
        return reply["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise TeacherError(f"{endpoint}: unexpected reply {str(reply)[:200]}") from None


class LocalTeacher:
    """An HF checkpoint, greedy, through avar's batched generation."""

    def __init__(self, cfg: TeacherConfig, device: str = "auto", dtype: str = "auto"):
        from avar.models.loader import load_model, load_processor

        self.cfg = cfg
        self.model = load_model(cfg.model, device, dtype)
        self.processor = load_processor(cfg.model)

    def payload(self, chat: list[dict]) -> dict:
        messages = openai_messages(chat)  # images as data URLs: a stable cache key
        return {
            "model": self.cfg.model,
            "messages": messages,
            "max_tokens": self.cfg.max_new_tokens,
            "local": True,
        }

    def complete(self, chats: list[list[dict]]) -> list[str]:
        from avar.generate import generate

        return generate(self.model, self.processor, chats, self.cfg.max_new_tokens)


class CachedTeacher:
    """A teacher behind a JSONL response cache, keyed by the hash of the request payload."""

    def __init__(self, teacher, cache: str | Path, workers: int = 1, label: str = "teacher"):
        self.teacher, self.path, self.workers, self.label = teacher, Path(cache), workers, label
        self.cache: dict[str, str] = {}
        self.hits = self.misses = 0
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.cache[entry["key"]] = entry["response"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by a crash: that request is asked again

    def key(self, chat: list[dict]) -> str:
        payload = json.dumps(self.teacher.payload(chat), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def complete(self, chats: list[list[dict]]) -> list[str | None]:
        """One response per chat; None where the teacher failed for good (logged)."""
        keys = [self.key(chat) for chat in chats]
        todo = [i for i, key in enumerate(keys) if key not in self.cache]
        self.hits += len(chats) - len(todo)
        self.misses += len(todo)
        failed = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (
            self.path.open("a", encoding="utf-8") as handle,
            ThreadPoolExecutor(self.workers) as pool,
        ):
            asked = {pool.submit(self.teacher.complete, [chats[i]]): i for i in todo}
            for future in tqdm(
                as_completed(asked),
                total=len(asked),
                desc=self.label,
                unit="request",
                disable=not asked,
            ):
                index = asked[future]
                try:
                    (response,) = future.result()
                except TeacherError as err:
                    log.warning("%s: %s", self.label, err)
                    failed.add(index)
                    continue
                self.cache[keys[index]] = response  # written as answers arrive: a crash
                handle.write(json.dumps({"key": keys[index], "response": response}) + "\n")
                handle.flush()  # keeps every answer received so far
        return [None if i in failed else self.cache[k] for i, k in enumerate(keys)]


def build_teacher(
    cfg: TeacherConfig, device: str = "auto", dtype: str = "auto", label: str = "teacher"
):
    """The configured teacher (or judge: `label`) behind its cache, or None for `kind: none`."""
    if cfg.kind == "none":
        return None
    if cfg.kind == "http":
        return CachedTeacher(HttpTeacher(cfg, label=label), cfg.cache, cfg.workers, label)
    return CachedTeacher(LocalTeacher(cfg, device, dtype), cfg.cache, label=label)
