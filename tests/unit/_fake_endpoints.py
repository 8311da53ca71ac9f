"""Fake OpenAI-compatible endpoints on 127.0.0.1 for fault tests: healthy, hung, broken.

One threaded HTTP server speaks the chat-completions shape. The request's `model` field picks
the behaviour, as `behaviour:name`:

- `ok:<name>`: answers at once, with token logprobs; `slow<seconds>:<name>` after a delay;
- `hang:<name>`: never answers (until the client hangs up, which the server records);
- `garbage:<name>`: a 200 response whose body is not JSON, nor UTF-8;
- `error:<name>`: HTTP 500 at once;
- `nofuse:<name>`: answers as a referencer, HTTP 500 to an aggregation prompt.

`requests[name]` counts the requests per name; `hangups[name]` holds, for each hung request,
the seconds until the client closed its connection.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

AGGREGATION_MARKER = "candidate responses"
"""Words of the aggregation prompt (`prompts.AGGREGATION_INSTRUCTIONS`) that tell a fusion."""


def _peer_closed(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeEndpoints

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        behaviour, _, name = str(body.get("model", "")).partition(":")
        prompt = json.dumps(body.get("messages", []))
        with self.server.lock:
            self.server.requests[name] += 1
        if behaviour == "hang":
            self._hang(name)
        elif behaviour == "garbage":
            self._send(200, b"\xff\xfe\x00 not json \x80\x81")
        elif behaviour == "error" or (behaviour == "nofuse" and AGGREGATION_MARKER in prompt):
            self._send(500, json.dumps({"error": {"message": "boom"}}).encode())
        else:
            if behaviour.startswith("slow"):
                time.sleep(float(behaviour[4:]))
            self._send(200, json.dumps(_completion(name)).encode())

    def _hang(self, name: str) -> None:
        started = time.monotonic()
        while not self.server.release.wait(0.02):
            if _peer_closed(self.connection):
                with self.server.lock:
                    self.server.hangups[name].append(time.monotonic() - started)
                return
        self.close_connection = True

    def _send(self, status: int, payload: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client left
            self.close_connection = True


def _completion(name: str) -> dict[str, Any]:
    text = f"The answer from {name} is 42."
    tokens = text.split()
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": {
                    "content": [
                        {"token": t, "logprob": -0.2, "bytes": None, "top_logprobs": []}
                        for t in tokens
                    ]
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": len(tokens), "total_tokens": 17},
    }


class FakeEndpoints(ThreadingHTTPServer):
    """The fake server; a context manager that serves on a daemon thread."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.requests: defaultdict[str, int] = defaultdict(int)
        self.hangups: defaultdict[str, list[float]] = defaultdict(list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/v1"

    def entry(self, name: str, behaviour: str = "ok", **extra: Any) -> dict[str, Any]:
        """A pool-file model entry for `name` served with `behaviour`."""
        return {"name": name, "base_url": self.url, "model": f"{behaviour}:{name}", **extra}

    def wait_for_hangup(self, name: str, within: float) -> list[float]:
        """The hung requests of `name` the client closed, waiting up to `within` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and not self.hangups[name]:
            time.sleep(0.05)
        return list(self.hangups[name])

    def __enter__(self) -> FakeEndpoints:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()
