"""The sandbox against hostile programs: each is contained, fails, and leaves the host unharmed."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from smcs_graph.grading.sandbox import OUTPUT_LIMIT_CHARS, describe_protections, run_python

pytestmark = pytest.mark.timeout(120)


def _processes_with(marker: str) -> list[int]:
    """Live processes whose command line contains `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path("/proc", entry, "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry))
    return found


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP listener on 127.0.0.1 that the test owns."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def test_a_correct_program_passes_and_its_output_comes_back() -> None:
    result = run_python("import sys\nprint('hello')\nprint('oops', file=sys.stderr)")
    assert result.passed and result.returncode == 0
    assert result.stdout == "hello\n"
    assert "oops" in result.stderr
    assert not result.timed_out and result.killed_by is None


def test_a_failing_program_fails_with_its_exit_status() -> None:
    result = run_python("raise SystemExit(3)")
    assert not result.passed
    assert result.returncode == 3


def test_infinite_loop_is_stopped_at_its_limit() -> None:
    result = run_python("while True:\n    pass", timeout_s=1.5, cpu_s=1)
    assert not result.passed
    assert result.timed_out or result.killed_by == "cpu"


def test_sleeping_program_is_killed_at_the_wall_clock_limit() -> None:
    result = run_python("import time\ntime.sleep(60)", timeout_s=1)
    assert not result.passed
    assert result.timed_out and result.killed_by == "wall_clock"


def test_fork_bomb_is_contained_and_leaves_no_process_behind() -> None:
    marker = f"9{uuid.uuid4().int % 10**9}.5"  # a unique argument to `sleep`
    program = f"""
import os
while True:
    try:
        if os.fork() == 0:
            os.setsid()  # try to escape the process group, too
            os.execv("/bin/sleep", ["sleep", "{marker}"])
    except OSError:
        pass
"""
    result = run_python(program, timeout_s=2, cpu_s=2, max_processes=8)
    assert not result.passed
    assert _processes_with(marker) == []


def test_memory_bomb_is_stopped_by_the_memory_limit() -> None:
    program = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))"
    result = run_python(program, timeout_s=10, memory_mb=128)
    assert not result.passed
    assert result.killed_by == "memory"


def test_writing_outside_the_working_directory_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    in_tmp = Path("/tmp") / f"smcs-sandbox-escape-{uuid.uuid4().hex}"
    program = f"""
import os
print(os.getcwd())
open("inside.txt", "w").write("allowed")  # its own directory works
for path in ({str(outside)!r}, {str(in_tmp)!r}):
    with open(path, "w") as handle:
        handle.write("escaped")
"""
    result = run_python(program)
    assert not result.passed
    assert "Error" in result.stderr
    assert not outside.exists()
    assert not in_tmp.exists()
    workdir = Path(result.stdout.splitlines()[0])
    assert not workdir.exists(), "the working directory is removed after the run"


def test_big_files_are_stopped_by_the_file_size_limit() -> None:
    result = run_python("open('big', 'wb').write(b'x' * 4 * 1024 * 1024)", max_file_mb=1)
    assert not result.passed
    assert result.killed_by == "file_size"


def test_secrets_in_the_environment_do_not_reach_the_program(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("SMCS_TEST_TOKEN", secret)
    program = f"""
import os
print(sorted(os.environ))
print(os.environ.get("OPENAI_API_KEY"))
for pid in ("self", "{os.getpid()}", str(os.getppid())):
    try:
        print(open(f"/proc/{{pid}}/environ", "rb").read())
    except OSError as exc:
        print("refused", exc)
raise SystemExit(0 if "OPENAI_API_KEY" not in os.environ else 1)
"""
    result = run_python(program)
    assert secret not in result.stdout and secret not in result.stderr
    assert "OPENAI_API_KEY" not in result.stdout.splitlines()[0]
    assert result.passed  # the program ran, it just found nothing


def test_network_is_unreachable_even_on_loopback(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    program = f"""
import socket
connection = socket.create_connection(("127.0.0.1", {port}), timeout=2)
connection.sendall(b"leak")
print("connected")
"""
    result = run_python(program, timeout_s=5)
    assert not result.passed
    assert "connected" not in result.stdout
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody knocked
    assert {"namespaces", "landlock-net", "socket-audit-hook"} & set(result.isolation)


def test_output_is_truncated() -> None:
    result = run_python("print('x' * 1_000_000)")
    assert result.passed
    assert len(result.stdout) < OUTPUT_LIMIT_CHARS + 100
    assert result.stdout.endswith("[... output truncated]")


def test_runs_from_worker_threads_do_not_interfere() -> None:
    programs = [f"print({n} * {n})" for n in range(6)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(run_python, programs))
    assert [r.stdout.strip() for r in results] == [str(n * n) for n in range(6)]


def test_bad_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        run_python("pass", timeout_s=0)


def _kernel_has_landlock() -> bool:
    """Whether this kernel offers Landlock (asked directly, not through the sandbox)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) returns the ABI.
    return libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1)) >= 1


@pytest.fixture
def home_cache_secret() -> Iterator[tuple[Path, str]]:
    """A secret file under $HOME/.cache, removed afterwards."""
    secret = f"cache-secret-{uuid.uuid4().hex}"
    folder = Path.home() / ".cache" / f"smcs-sandbox-test-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    path = folder / "token.txt"
    path.write_text(secret)
    yield path, secret
    path.unlink()
    folder.rmdir()


def test_host_files_are_unreadable(home_cache_secret: tuple[Path, str]) -> None:
    path, secret = home_cache_secret
    targets = [str(path), "/etc/shadow", "/etc/passwd", str(Path.home())]
    program = f"""
import os
for path in {targets!r}:
    try:
        if os.path.isdir(path):
            print("LISTED", path, os.listdir(path))
        else:
            with open(path) as handle:
                print("READ", path, handle.read())
    except OSError as exc:
        print("refused", path, type(exc).__name__)
raise RuntimeError(open({str(path)!r}).read())
"""
    result = run_python(program)
    if not _kernel_has_landlock():
        assert "landlock-read" not in result.isolation
        assert "NOT" in describe_protections()
        pytest.skip("this kernel has no Landlock: the sandbox cannot hide host files here")
    assert "landlock-read" in result.isolation
    assert secret not in result.stdout + result.stderr
    assert "READ" not in result.stdout and "LISTED" not in result.stdout
    assert result.stdout.count("refused") == len(targets)
    assert not result.passed


def test_protections_report_names_the_read_restriction() -> None:
    report = describe_protections()
    if _kernel_has_landlock():
        assert "reads: only the interpreter, its libraries and the working directory" in report
    else:
        assert "reads: NOT restricted" in report


def test_stdlib_and_numpy_still_import_and_run() -> None:
    numpy = pytest.importorskip("numpy")
    program = """
import collections, datetime, decimal, fractions, hashlib, heapq, itertools, json, math
import random, re, statistics, string, time, typing, os, functools, bisect, sqlite3
import numpy as np

assert os.cpu_count() >= 1
time.localtime()
random.seed(0)
open("scratch.txt", "w").write("ok")
assert open("scratch.txt").read() == "ok"
matrix = np.arange(9.0).reshape(3, 3)
print(int(np.linalg.matrix_rank(matrix)), fractions.Fraction(1, 3) * 3, math.comb(5, 2))
"""
    result = run_python(program, timeout_s=30)
    assert result.passed, result.stderr
    assert result.stdout.split() == ["2", "1", "10"]
    assert numpy is not None


def test_attested_run_reports_only_through_its_token() -> None:
    honest = "import os\ntoken = os.read(3, 256)\nos.close(3)\nos.write(4, token)\n"
    assert run_python(honest, attest=True).attested
    for forged in (
        "import os\nos._exit(0)",  # exits 0 without reporting
        "import os\nos.write(4, b'all tests passed')",  # no token
        "import os\nos.write(4, os.read(3, 256) + b'!')",  # not exactly the token
        "print('ok')",
    ):
        result = run_python(forged, attest=True)
        assert result.passed and not result.attested, forged
    # without attest, nothing is handed over and nothing is attested
    plain = run_python("import os\nos.fstat(3)")
    assert not plain.passed and not plain.attested


# --------------------------------------------------------------------------- a busy machine


def test_time_waiting_for_a_cpu_does_not_count_against_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A program starved by a busy machine (here: told it waited for a CPU 90 % of the time)
    still finishes within its limit of running time; the same program over its limit of
    running time times out."""
    import smcs_graph.grading.sandbox as sandbox

    program = "import time\ntime.sleep(1.5)\n"
    assert run_python(program, timeout_s=1).timed_out  # 1.5 s of running time > 1 s

    started: list[float] = []

    def starved(group: int) -> float:
        started.append(started[0] if started else sandbox.time.monotonic())
        return 0.9 * (sandbox.time.monotonic() - started[0])

    monkeypatch.setattr(sandbox, "_run_delay_s", starved)
    result = run_python(program, timeout_s=1)
    assert result.passed and not result.timed_out
    assert result.seconds >= 1.5


def test_a_starved_program_is_still_stopped_at_the_wall_clock_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import smcs_graph.grading.sandbox as sandbox

    monkeypatch.setattr(sandbox, "STARVED_WAIT_FACTOR", 2)
    monkeypatch.setattr(sandbox, "_run_delay_s", lambda group: 1e9)  # never seems to run
    result = run_python("import time\ntime.sleep(30)\n", timeout_s=1)
    assert result.timed_out and result.seconds < 10
