"""Running untrusted (model-written) Python code in a contained subprocess.

Layers, each applied where the platform allows it (`SandboxResult.isolation` names the ones
that applied to a run; `python -m smcs_graph.grading.sandbox` prints what this machine offers):

- always: a new session / process group killed as a whole at the wall-clock limit; resource
  limits (CPU seconds, address space, file size, open files, no core dumps, process count); a
  fresh temporary working directory, removed afterwards; an environment built from a small
  allow-list (nothing inherited, so no keys or tokens); stdin closed; output captured to
  files capped by the file-size limit and truncated when read back;
- ``namespaces``: new network and PID namespaces (as root directly, otherwise inside a new user
  namespace): no network interface but a downed loopback, and every process the program starts
  dies with it;
- ``unprivileged-user``: when run as root, the program runs as ``nobody`` (root ignores the
  process-count limit and every file permission) where ``nobody`` can run this interpreter;
- otherwise, as root: ``user-namespace`` (the program keeps no capability over the host: no
  reboot, module loading or mounts) and ``pids-cgroup`` (a pids cgroup bounds its process
  count, since root's is not bounded by the rlimit);
- ``landlock``: a Landlock ruleset (Linux 5.13+) that allows writes only beneath the working
  directory and, from ABI 4, denies all TCP connect/bind (``landlock-net``), from ABI 6 signals
  and abstract sockets outside the sandbox;
- ``landlock-read``: the same ruleset lets the program read (and execute) only the interpreter
  (its prefixes and import path), the system's shared libraries, time zones, a few devices
  (`_SYSTEM_READ_PATHS`) and the working directory: no ``/etc``, no home directories, no
  ``/proc``. Without Landlock, reads are bounded only by file permissions:
  ``nobody``'s where that layer applies, else those of the user running the grader (as root:
  every file); `describe_protections` says which;
- ``socket-audit-hook``: only when neither namespaces nor Landlock's network rules applied, an
  audit hook in the child refuses socket creation (a weaker, in-process guard).

The set-up runs in a trusted bootstrap interpreter after ``exec`` (`_sandbox_bootstrap`), then
starts the program.

A run with ``attest=True`` gives the program a verdict channel it cannot fake by exiting: a
one-time random token to read on fd 3 and a pipe on fd 4 to write it back to; `attested` is
true only when exactly that token came back. A harness that reads (and closes) fd 3 before it
runs untrusted code and writes the token only after its checks makes any early exit, of any
kind, a failure. Code running in the same interpreter can still reach the harness's memory, so
this defeats accidents and exits, not a program written to attack this harness.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SandboxResult", "describe_protections", "run_python"]

OUTPUT_LIMIT_CHARS = 16_000
"""stdout and stderr are each truncated to this many characters in a result."""

_NOBODY = 65534
_PROGRAM = "main.py"
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_BOOTSTRAP = Path(__file__).with_name("_sandbox_bootstrap.py")
_REPORT_LIMIT_BYTES = 4096

# Readable (and executable) under Landlock besides the interpreter and the working directory:
# shared libraries and the loader's cache, time zones, harmless devices, the CPU count.
_SYSTEM_READ_PATHS = (
    "/lib",
    "/lib32",
    "/lib64",
    "/usr/lib",
    "/usr/lib32",
    "/usr/lib64",
    "/usr/local/lib",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
    "/sys/devices/system/cpu",
)

# Used only where no OS layer blocks the network: refuse sockets from inside the interpreter.
_SOCKET_GUARD = r"""
import runpy, sys

def _no_sockets(event, args):
    if event.startswith("socket.") and event != "socket.gethostname":
        raise PermissionError("network access is disabled in the sandbox")

sys.addaudithook(_no_sockets)
path = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(path, run_name="__main__")
"""


@dataclass(frozen=True)
class SandboxResult:
    """How one sandboxed run ended."""

    passed: bool
    """Exited with status 0 within every limit."""
    returncode: int | None
    """The program's exit status; negative for a signal; None when it never started."""
    stdout: str
    stderr: str
    timed_out: bool
    killed_by: str | None
    """The limit that stopped it: 'wall_clock', 'cpu', 'memory', 'file_size', 'processes', or
    'signal <NAME>'; None for a normal exit."""
    seconds: float
    isolation: tuple[str, ...] = ()
    """The optional layers that applied (see the module docstring)."""
    attested: bool = False
    """With ``attest=True``: the program wrote back on fd 4 exactly the token it got on fd 3."""


@functools.cache
def _nobody_can_run_python() -> bool:
    """Whether uid nobody can start this interpreter (not when it lives under /root)."""
    if os.geteuid() != 0:
        return False
    try:
        probe = subprocess.run(
            [sys.executable, "-I", "-S", "-c", ""],
            user=_NOBODY,
            group=_NOBODY,
            extra_groups=[],
            cwd="/",
            env={"PATH": _SAFE_PATH},
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


@functools.cache
def _interpreter_read_paths() -> tuple[str, ...]:
    """The directories the sandboxed interpreter reads: its prefixes, the directory of its
    executable and its import path, as `python -I` sees them here, plus `_SYSTEM_READ_PATHS`."""
    probe = (
        "import json, os, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, "
        "sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable)), *sys.path]))"
    )
    found = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        completed = subprocess.run(
            [sys.executable, "-I", "-c", probe],
            cwd="/",
            env={"PATH": _SAFE_PATH},
            capture_output=True,
            timeout=60,
            check=True,
        )
        found += json.loads(completed.stdout)
    paths = {os.path.realpath(path) for path in found if os.path.isdir(path)}
    paths |= {os.path.realpath(path) for path in _SYSTEM_READ_PATHS if os.path.exists(path)}
    paths.discard("/")  # an interpreter installed at the root still reads only the above
    return tuple(sorted(path for path in paths if not any(path.startswith(p + "/") for p in paths)))


@contextlib.contextmanager
def _pids_cgroup(max_tasks: int) -> Iterator[str | None]:
    """A fresh pids cgroup capped at `max_tasks` (root only, v1 or v2), removed afterwards."""
    group: Path | None = None
    if os.geteuid() == 0:
        for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
            candidate = base / f"smcs-sandbox-{uuid.uuid4().hex}"
            try:
                candidate.mkdir()
            except OSError:
                continue
            try:
                (candidate / "pids.max").write_text(str(max_tasks))
            except OSError:
                candidate.rmdir()
                continue
            group = candidate
            break
    try:
        yield None if group is None else str(group)
    finally:
        if group is not None:
            _remove_cgroup(group)


def _remove_cgroup(group: Path) -> None:
    # Killed tasks leave the group asynchronously: retry briefly, then give up quietly (an
    # empty leftover group holds no process and costs nothing).
    for _ in range(100):
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.01)


def _minimal_env(workdir: str) -> dict[str, str]:
    """The program's whole environment: an allow-list, nothing inherited from the host."""
    return {
        "PATH": _SAFE_PATH,
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _read_capped(path: Path, limit: int) -> str:
    with path.open("rb") as handle:
        data = handle.read(limit * 4 + 4)
    text = data.decode("utf-8", errors="replace")
    if len(text) > limit or path.stat().st_size > len(data):
        return text[:limit] + "\n[... output truncated]"
    return text


def _read_status(read_fd: int) -> tuple[tuple[str, ...], int | None]:
    """(layers, program returncode) reported by the bootstrap; returncode None if it died."""
    layers: tuple[str, ...] = ()
    returncode: int | None = None
    with os.fdopen(read_fd, "r") as status:
        for line in status.read(65536).splitlines():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "layers" in message:
                layers = tuple(message["layers"])
            elif "signal" in message:
                returncode = -int(message["signal"])
            elif "exit" in message:
                returncode = int(message["exit"])
    return layers, returncode


def _limit_hit(returncode: int | None, stderr: str, timed_out: bool) -> str | None:
    if timed_out:
        return "wall_clock"
    if returncode is None or returncode == 0:
        return None
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "cpu"  # RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one
    if returncode == -signal.SIGXFSZ:
        return "file_size"
    if returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    tail = stderr[-2000:]
    if "MemoryError" in tail:
        return "memory"
    if "File too large" in tail:
        return "file_size"
    if "Resource temporarily unavailable" in tail and "fork" in tail:
        return "processes"
    return None


def run_python(
    code: str,
    *,
    timeout_s: float = 10,
    memory_mb: int = 512,
    max_file_mb: int = 16,
    max_processes: int = 16,
    cpu_s: int | None = None,
    attest: bool = False,
) -> SandboxResult:
    """Run `code` as a Python program in the sandbox; `passed` means exit status 0 in time.

    `cpu_s` defaults to the wall-clock limit rounded up; `max_processes` is how many processes
    the program may run at once besides those its user already runs. `attest` opens the
    verdict channel (fd 3: a one-time token to read; fd 4: where to write it back; see the
    module docstring) and sets `attested`.
    """
    if timeout_s <= 0 or memory_mb <= 0 or max_file_mb <= 0 or max_processes <= 0:
        raise ValueError(
            "sandbox limits must be positive (got "
            f"timeout_s={timeout_s}, memory_mb={memory_mb}, max_file_mb={max_file_mb}, "
            f"max_processes={max_processes})"
        )
    cpu_limit = cpu_s if cpu_s is not None else max(1, int(timeout_s + 0.999))
    token = secrets.token_hex(16).encode() if attest else b""
    started = time.monotonic()
    fds = _Fds()
    with tempfile.TemporaryDirectory(prefix="smcs-sandbox-") as host_dir:
        workdir = Path(host_dir, "work")
        workdir.mkdir()
        (workdir / _PROGRAM).write_text(code, encoding="utf-8")
        as_nobody = _nobody_can_run_python()
        if as_nobody:
            os.chown(workdir, _NOBODY, _NOBODY)
            os.chown(workdir / _PROGRAM, _NOBODY, _NOBODY)
        out_path, err_path = Path(host_dir, "stdout"), Path(host_dir, "stderr")
        config = {
            "workdir": str(workdir),
            "read_paths": list(_interpreter_read_paths()),
            "program": _PROGRAM,
            "guard": _SOCKET_GUARD,
            "env": _minimal_env(str(workdir)),
            "nobody": _NOBODY,
            "as_nobody": as_nobody,
            "cpu_s": cpu_limit,
            "memory_mb": memory_mb,
            "max_file_mb": max_file_mb,
            "max_processes": max_processes,
        }
        timed_out = attested = False
        try:
            status_read, status_write = fds.pipe()
            attest_fds: list[int] = []
            report_read = -1
            if attest:
                token_read, token_write = fds.pipe()
                report_read, report_write = fds.pipe()
                os.write(token_write, token)  # 32 bytes into an empty pipe: never blocks
                fds.close(token_write)
                attest_fds = [token_read, report_write]
            config["status_fd"] = status_write
            config["attest_fds"] = attest_fds
            child_fds = [status_write, *attest_fds]
            # +1: the bootstrap itself lives in the group too.
            with (
                _pids_cgroup(max_processes + 1) as config["cgroup"],
                out_path.open("wb") as out,
                err_path.open("wb") as err,
            ):
                process = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-B", str(_BOOTSTRAP), json.dumps(config)],
                    cwd=workdir,
                    env=_minimal_env(str(workdir)),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    pass_fds=child_fds,
                    start_new_session=True,
                )
                for fd in child_fds:
                    fds.close(fd)
                try:
                    timed_out = not _finished_in_time(process, timeout_s)
                finally:
                    _kill_group(process)
            layers, returncode = _read_status(fds.release(status_read))
            attested = attest and not timed_out and _read_report(report_read) == token
        finally:
            fds.close_all()
        stdout = _read_capped(out_path, OUTPUT_LIMIT_CHARS)
        stderr = _read_capped(err_path, OUTPUT_LIMIT_CHARS)
        if returncode is None and not timed_out:
            returncode = process.returncode
    killed_by = _limit_hit(returncode, stderr, timed_out)
    return SandboxResult(
        passed=returncode == 0 and not timed_out,
        returncode=returncode,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
        killed_by=killed_by,
        seconds=time.monotonic() - started,
        isolation=layers,
        attested=attested,
    )


class _Fds:
    """The pipe ends one run owns: each closed once, by `close` or at the end of the run (never
    a number closed twice: another thread may have been given it since)."""

    def __init__(self) -> None:
        self._open: set[int] = set()

    def pipe(self) -> tuple[int, int]:
        read_fd, write_fd = os.pipe()
        self._open |= {read_fd, write_fd}
        return read_fd, write_fd

    def close(self, fd: int) -> None:
        if fd in self._open:
            self._open.remove(fd)
            os.close(fd)

    def release(self, fd: int) -> int:
        """Hand `fd` to a caller who closes it."""
        self._open.remove(fd)
        return fd

    def close_all(self) -> None:
        for fd in list(self._open):
            self.close(fd)


def _read_report(fd: int) -> bytes:
    """What the program wrote on the report pipe (without waiting: every writer is dead)."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, _REPORT_LIMIT_BYTES)
    except BlockingIOError:
        return b""


STARVED_WAIT_FACTOR = 10
"""At most this many times the time limit of wall clock, however starved the program was."""


def _finished_in_time(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait for `process` to exit within `timeout_s` seconds *of running time*: the seconds it
    spent waiting for a CPU (its run queue delay, `/proc/<pid>/schedstat`) do not count, so a
    correct program is not failed because the machine was busy (a sandboxed program runs in a
    session of its own, which the scheduler may starve beside a busy parent). Bounded by
    `STARVED_WAIT_FACTOR` times the limit; where schedstat is unreadable, plain wall time. A
    program that spins is stopped by its CPU-time limit either way."""
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        remaining = timeout_s - (elapsed - _run_delay_s(process.pid))
        remaining = min(remaining, timeout_s * STARVED_WAIT_FACTOR - elapsed)
        if remaining <= 0:
            return process.poll() is not None
        try:
            process.wait(timeout=remaining)
            return True
        except subprocess.TimeoutExpired:
            continue


def _run_delay_s(group: int) -> float:
    """Seconds the live processes of process group `group` (the bootstrap and the program it
    forks) have waited on a run queue for a CPU (0 when the kernel does not say)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ")"
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != group:
                continue
            total += int((stat.parent / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the bootstrap's whole process group (the program dies with it) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def describe_protections() -> str:
    """What the sandbox applies on this machine, in words (`python -m
    smcs_graph.grading.sandbox` prints it): its layers and what a program can read and write."""
    layers = run_python("pass", timeout_s=30).isolation
    lines = [f"isolation layers on this machine: {', '.join(layers) or 'none'}"]
    if "landlock-read" in layers:
        lines.append(
            "reads: only the interpreter, its libraries and the working directory (Landlock); "
            "readable: " + ", ".join(_interpreter_read_paths())
        )
    elif "unprivileged-user" in layers:
        lines.append(
            "reads: NOT restricted by Landlock (this kernel lacks it): the program runs as "
            "nobody and can read every world-readable file"
        )
    else:
        who = "root: every file" if os.geteuid() == 0 else f"uid {os.geteuid()} can read"
        lines.append(
            "reads: NOT restricted (this kernel lacks Landlock): the program can read what "
            f"the grader's user can ({who})"
        )
    if "landlock" in layers:
        lines.append("writes: only beneath the working directory (Landlock)")
    else:
        lines.append("writes: NOT restricted by Landlock: bounded by file permissions only")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe_protections())
