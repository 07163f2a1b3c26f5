"""A Hugging Face hub on loopback for `avar benchmarks fetch`: the three endpoints
huggingface_hub's snapshot_download uses (repo info, the file tree, resolve), serving
dataset repositories held in memory. Point HF_ENDPOINT at `FakeHub.url`."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

COMMIT = "a" * 40


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.requested: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hub.answer(self, head=False)

            def do_HEAD(self):
                hub.answer(self, head=True)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()

    def answer(self, handler, head: bool):
        path = unquote(urlparse(handler.path).path)
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "datasets"] and len(parts) >= 5:
            repo = "/".join(parts[2:4])
            files = self.repos.get(repo)
            if files is None:
                return send(handler, 404, b'{"error": "Repository not found"}', head)
            if parts[4] == "tree":
                tree = [
                    {"type": "file", "path": p, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                    for p, d in files.items()
                ]
                return send(handler, 200, json.dumps(tree).encode(), head)
            info = {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": p} for p in files]}
            return send(handler, 200, json.dumps(info).encode(), head)
        if parts[:1] == ["datasets"] and len(parts) >= 6 and parts[3] == "resolve":
            name = "/".join(parts[5:])
            data = self.repos.get("/".join(parts[1:3]), {}).get(name)
            if data is None:
                return send(handler, 404, b"", head)
            self.requested.append(name)
            etag = hashlib.sha256(data).hexdigest()
            return send(handler, 200, data, head, {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"'})
        return send(handler, 404, b"", head)


def send(handler, status: int, body: bytes, head: bool, headers: dict | None = None):
    handler.send_response(status)
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if not head:
        handler.wfile.write(body)
