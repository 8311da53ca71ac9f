"""Running untrusted (model-written) Python code in a contained subprocess.

Layers, each applied where the platform allows it (`SandboxResult.isolation` names the ones
that applied to a run; `python -m smcs_graph.sandbox` prints what this machine offers):

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
  directory and, from ABI 4, denies all TCP connect/bind, from ABI 6 signals and abstract
  sockets outside the sandbox;
- ``socket-audit-hook``: only when neither namespaces nor Landlock's network rules applied, an
  audit hook in the child refuses socket creation (a weaker, in-process guard).

The set-up runs in a trusted bootstrap interpreter after ``exec`` (no ``preexec_fn``, which is
unsafe in threaded parents such as the graders' worker pools), then starts the program.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SandboxResult", "run_python"]

OUTPUT_LIMIT_CHARS = 16_000
"""stdout and stderr are each truncated to this many characters in a result."""

_NOBODY = 65534
_PROGRAM = "main.py"
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

# The bootstrap runs in `python -I -S -B -c`, reads its settings from argv[1], applies the
# layers, reports them on the status pipe, forks the program and reports how it ended.
_BOOTSTRAP = r"""
import ctypes, json, os, resource, signal, sys

cfg = json.loads(sys.argv[1])
status = os.fdopen(cfg["status_fd"], "w")
layers = []
libc = ctypes.CDLL(None, use_errno=True)

if cfg["cgroup"]:
    with open(cfg["cgroup"] + "/cgroup.procs", "w") as procs:
        procs.write(str(os.getpid()))
    layers.append("pids-cgroup")

CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
flags = CLONE_NEWPID | CLONE_NEWNET
# Root that stays root (nobody cannot run this interpreter) still enters a user namespace:
# it keeps no capability over the host (no reboot, no module loading, no mounts there).
if not cfg["as_nobody"]:
    flags |= CLONE_NEWUSER
if libc.unshare(flags) == 0:
    layers.append("namespaces")
    if flags & CLONE_NEWUSER:
        layers.append("user-namespace")

PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG = 38, 1
libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def landlock(workdir):
    # Linux syscall numbers 444-446 are shared by all architectures.
    create, add_rule, restrict = 444, 445, 446
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return False
    writes = (1 << 1) | sum(1 << bit for bit in range(4, 13))  # write, remove, make_*
    if abi >= 2:
        writes |= 1 << 13  # refer
    if abi >= 3:
        writes |= 1 << 14  # truncate
    net = 0b11 if abi >= 4 else 0  # bind_tcp, connect_tcp: no rule allows any port
    scoped = 0b11 if abi >= 6 else 0  # abstract unix sockets, signals
    fields = [writes, net, scoped][: 1 if abi < 4 else (2 if abi < 6 else 3)]
    attr = (ctypes.c_uint64 * len(fields))(*fields)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        return False

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    for path, allowed in ((workdir, writes), ("/dev/null", (1 << 1) | (writes & (1 << 14)))):
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = PathBeneath(allowed, fd)
        failed = libc.syscall(add_rule, ctypes.c_int(ruleset), ctypes.c_int(1),
                              ctypes.byref(rule), ctypes.c_uint32(0))
        os.close(fd)
        if failed:
            return False
    ok = libc.syscall(restrict, ctypes.c_int(ruleset), ctypes.c_uint32(0)) == 0
    os.close(ruleset)
    if ok and net:
        layers.append("landlock-net")
    return ok


if landlock(cfg["workdir"]):
    layers.append("landlock")

if cfg["as_nobody"]:
    os.setgroups([])
    os.setgid(cfg["nobody"])
    os.setuid(cfg["nobody"])
    layers.append("unprivileged-user")


def processes_of(uid):
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat("/proc/" + entry).st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


mb = 1024 * 1024
limits = [
    (resource.RLIMIT_CPU, cfg["cpu_s"], cfg["cpu_s"] + 1),
    (resource.RLIMIT_AS, cfg["memory_mb"] * mb, cfg["memory_mb"] * mb),
    (resource.RLIMIT_FSIZE, cfg["max_file_mb"] * mb, cfg["max_file_mb"] * mb),
    (resource.RLIMIT_NOFILE, 256, 256),
    (resource.RLIMIT_CORE, 0, 0),
]
# The process count is per user and system-wide: allow this user's current count plus the
# budget (root is exempt: then the pids cgroup above bounds the count).
nproc = processes_of(os.getuid()) + cfg["max_processes"]
limits.append((resource.RLIMIT_NPROC, nproc, nproc))
for which, soft, hard in limits:
    resource.setrlimit(which, (soft, hard))

argv = [sys.executable, "-I", "-B", cfg["program"]]
if "namespaces" not in layers and "landlock-net" not in layers:
    layers.append("socket-audit-hook")
    argv = [sys.executable, "-I", "-B", "-c", cfg["guard"], cfg["program"]]
status.write(json.dumps({"layers": layers}) + "\n")
status.flush()

parent = os.getpid()
pid = os.fork()
if pid == 0:
    status.close()
    # Dies with the bootstrap: a killed bootstrap takes the program (PID 1 of its namespace,
    # and with it every process it started) down. Outside a PID namespace, check that the
    # bootstrap did not die before the signal was armed.
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if "namespaces" not in layers and os.getppid() != parent:
        os._exit(137)
    try:
        os.execve(sys.executable, argv, cfg["env"])
    except OSError as exc:
        os.write(2, f"sandbox: cannot start the program: {exc}\n".encode())
    os._exit(127)
_, wait_status = os.waitpid(pid, 0)
if os.WIFSIGNALED(wait_status):
    status.write(json.dumps({"signal": os.WTERMSIG(wait_status)}) + "\n")
else:
    status.write(json.dumps({"exit": os.WEXITSTATUS(wait_status)}) + "\n")
status.close()
"""

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
) -> SandboxResult:
    """Run `code` as a Python program in the sandbox; `passed` means exit status 0 in time.

    `cpu_s` defaults to the wall-clock limit rounded up; `max_processes` is how many processes
    the program may run at once besides those its user already runs.
    """
    if timeout_s <= 0 or memory_mb <= 0 or max_file_mb <= 0 or max_processes <= 0:
        raise ValueError(
            "sandbox limits must be positive (got "
            f"timeout_s={timeout_s}, memory_mb={memory_mb}, max_file_mb={max_file_mb}, "
            f"max_processes={max_processes})"
        )
    cpu_limit = cpu_s if cpu_s is not None else max(1, int(timeout_s + 0.999))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="smcs-sandbox-") as host_dir:
        workdir = Path(host_dir, "work")
        workdir.mkdir()
        (workdir / _PROGRAM).write_text(code, encoding="utf-8")
        as_nobody = _nobody_can_run_python()
        if as_nobody:
            os.chown(workdir, _NOBODY, _NOBODY)
            os.chown(workdir / _PROGRAM, _NOBODY, _NOBODY)
        out_path, err_path = Path(host_dir, "stdout"), Path(host_dir, "stderr")
        read_fd, write_fd = os.pipe()
        config = {
            "status_fd": write_fd,
            "workdir": str(workdir),
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
        timed_out = False
        cgroup = contextlib.ExitStack()
        try:
            # +1: the bootstrap itself lives in the group too.
            config["cgroup"] = cgroup.enter_context(_pids_cgroup(max_processes + 1))
            with out_path.open("wb") as out, err_path.open("wb") as err:
                process = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-B", "-c", _BOOTSTRAP, json.dumps(config)],
                    cwd=workdir,
                    env=_minimal_env(str(workdir)),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    pass_fds=(write_fd,),
                    start_new_session=True,
                )
                os.close(write_fd)
                write_fd = -1
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                finally:
                    _kill_group(process)
            layers, returncode = _read_status(read_fd)
            read_fd = -1
        finally:
            cgroup.close()
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
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
    )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the bootstrap's whole process group (the program dies with it) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _describe() -> str:
    result = run_python("print('ok')", timeout_s=10)
    return f"isolation layers on this machine: {', '.join(result.isolation) or 'none'}"


if __name__ == "__main__":
    print(_describe())
