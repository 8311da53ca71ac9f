"""The sandbox's trusted bootstrap, run as ``python -I -S -B _sandbox_bootstrap.py SETTINGS``.

It runs after ``exec`` (no ``preexec_fn``, which is unsafe in threaded parents), so it imports
the standard library only. It reads its settings (JSON) from argv[1], applies the isolation
layers to itself, reports them on the status pipe, forks the program and reports how it ended.
`smcs_graph.grading.sandbox` describes the layers.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import resource
import signal
import sys
from typing import Any

_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_PR_SET_NO_NEW_PRIVS, _PR_SET_PDEATHSIG = 38, 1

# Landlock (Linux syscalls 444-446 on every architecture) and its filesystem access rights.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_RULE_PATH_BENEATH, _CREATE_RULESET_VERSION = 1, 1
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_REMOVE_AND_MAKE = sum(1 << bit for bit in range(4, 13))  # remove_*, make_*
_REFER, _TRUNCATE = 1 << 13, 1 << 14  # ABI 2, ABI 3
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE  # the rights a file rule takes

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock(cfg: dict[str, Any], layers: list[str]) -> None:
    """Writes only beneath the work directory; reads (and exec) only beneath the interpreter,
    its libraries and the work directory; from ABI 4 no TCP, from ABI 6 no signals or abstract
    sockets outside the sandbox. Appends the layers that applied; applies nothing on failure."""
    abi = _libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    if abi < 1:
        return
    writes = _WRITE_FILE | _REMOVE_AND_MAKE
    if abi >= 2:
        writes |= _REFER
    if abi >= 3:
        writes |= _TRUNCATE
    reads = _EXECUTE | _READ_FILE | _READ_DIR
    net = 0b11 if abi >= 4 else 0  # bind_tcp, connect_tcp: no rule allows any port
    scoped = 0b11 if abi >= 6 else 0  # abstract unix sockets, signals
    fields = [writes | reads, net, scoped][: 1 if abi < 4 else (2 if abi < 6 else 3)]
    attr = (ctypes.c_uint64 * len(fields))(*fields)
    ruleset = _libc.syscall(
        _CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), 0
    )
    if ruleset < 0:
        return

    def allow(path: str, access: int) -> bool:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return False
        if not os.path.isdir(path):
            access &= _FILE_RIGHTS
        rule = _PathBeneath(access, fd)
        failed = _libc.syscall(
            _ADD_RULE, ctypes.c_int(ruleset), _RULE_PATH_BENEATH, ctypes.byref(rule), 0
        )
        os.close(fd)
        return failed == 0

    try:
        if not allow(cfg["workdir"], writes | _READ_FILE | _READ_DIR):
            return
        allow("/dev/null", _READ_FILE | _WRITE_FILE | (writes & _TRUNCATE))
        for path in cfg["read_paths"]:
            allow(path, reads)  # a missing one only means less is readable
        if _libc.syscall(_RESTRICT_SELF, ctypes.c_int(ruleset), 0) != 0:
            return
    finally:
        os.close(ruleset)
    layers += ["landlock", "landlock-read"] + (["landlock-net"] if net else [])


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat("/proc/" + entry).st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def _set_limits(cfg: dict[str, Any], processes_running: int) -> None:
    mb = 1024 * 1024
    limits = [
        (resource.RLIMIT_CPU, cfg["cpu_s"], cfg["cpu_s"] + 1),
        (resource.RLIMIT_AS, cfg["memory_mb"] * mb, cfg["memory_mb"] * mb),
        (resource.RLIMIT_FSIZE, cfg["max_file_mb"] * mb, cfg["max_file_mb"] * mb),
        (resource.RLIMIT_NOFILE, 256, 256),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    # The process count is per user and system-wide: allow the program's user's current count
    # plus the budget (root is exempt: then the pids cgroup bounds the count).
    nproc = processes_running + cfg["max_processes"]
    limits.append((resource.RLIMIT_NPROC, nproc, nproc))
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))


def _hand_over_attest_fds(token_fd: int, report_fd: int) -> None:
    """Put the token pipe on fd 3 and the report pipe on fd 4, the only fds besides 0-2."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (token_fd, report_fd)]
    for fd in (token_fd, report_fd):
        os.close(fd)
    for target, fd in zip((3, 4), high, strict=True):
        os.dup2(fd, target, inheritable=True)
        os.close(fd)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    status = os.fdopen(cfg["status_fd"], "w")
    layers: list[str] = []

    if cfg["cgroup"]:
        with open(cfg["cgroup"] + "/cgroup.procs", "w") as procs:
            procs.write(str(os.getpid()))
        layers.append("pids-cgroup")

    flags = _CLONE_NEWPID | _CLONE_NEWNET
    # Root that stays root (nobody cannot run this interpreter) still enters a user namespace:
    # it keeps no capability over the host (no reboot, no module loading, no mounts there).
    if not cfg["as_nobody"]:
        flags |= _CLONE_NEWUSER
    if _libc.unshare(flags) == 0:
        layers.append("namespaces")
        if flags & _CLONE_NEWUSER:
            layers.append("user-namespace")

    # Counted before Landlock hides /proc.
    processes_running = _processes_of(cfg["nobody"] if cfg["as_nobody"] else os.getuid())
    _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # also lets Landlock apply without root
    _landlock(cfg, layers)

    if cfg["as_nobody"]:
        os.setgroups([])
        os.setgid(cfg["nobody"])
        os.setuid(cfg["nobody"])
        layers.append("unprivileged-user")

    _set_limits(cfg, processes_running)

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
        # Dies with the bootstrap: a killed bootstrap takes the program (PID 1 of its
        # namespace, and with it every process it started) down. Outside a PID namespace,
        # check that the bootstrap did not die before the signal was armed.
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if "namespaces" not in layers and os.getppid() != parent:
            os._exit(137)
        try:
            if cfg["attest_fds"]:
                _hand_over_attest_fds(*cfg["attest_fds"])
            os.execve(sys.executable, argv, cfg["env"])
        except OSError as exc:
            os.write(2, f"sandbox: cannot start the program: {exc}\n".encode())
        os._exit(127)
    for fd in cfg["attest_fds"] or ():
        os.close(fd)  # the parent sees the report pipe's end when the program's copy closes
    _, wait_status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(wait_status):
        status.write(json.dumps({"signal": os.WTERMSIG(wait_status)}) + "\n")
    else:
        status.write(json.dumps({"exit": os.WEXITSTATUS(wait_status)}) + "\n")
    status.close()


if __name__ == "__main__":
    main()
