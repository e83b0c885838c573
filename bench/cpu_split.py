"""Where an echo server's CPU goes, and the most any IO manager could win.

The echo benchmark (``bench/echo.py``) gives ratios; this script says what
bounds them.  It runs one echo server at a time under load from the C load
generator, samples the server with ``perf record --call-graph dwarf`` and
sorts every sample into one bucket by its innermost Python function (Python
3.12+'s ``-X perf`` names them in perf's stacks) and its kernel frames:

* ``kernel: TCP/IP``: the kernel's TCP/IP data path under a socket call
  (sending on loopback includes the peer's receive processing) -- any IO
  manager makes the kernel do it, whether by a system call or an io_uring
  op; a readiness check (``tcp_poll`` under epoll or a poll) is not in it;
* ``kernel: syscall entry/exit``: crossing into the kernel and the socket
  layer above TCP (what batching in io_uring can save);
* ``kernel: epoll / io_uring``: the IO manager's own kernel work;
* ``python: IO manager``: trio's ``_io_epoll.py`` or trio-uring's manager;
* ``python: socket layer``: trio's ``_socket.py`` or trio-uring's
  ``_socket.py`` / ``_ops_socket.py`` / ``_native.py`` (trio-uring
  replaces the former);
* ``python: outcome objects``: ``outcome``'s classes; trio builds one per
  wake-up, but an IO manager can avoid some, so they count as removable;
* ``python: trio above the socket``: everything else in Python -- trio's
  stream layer, its scheduler, the handler -- which runs unchanged on any
  IO manager.

``bound`` is ``1 / (python: trio above the socket + kernel: TCP/IP)``: the
speed-up over this very server that an IO manager and socket layer costing
nothing at all would give.  For the epoll server that bounds ``uring /
epoll`` in the echo benchmark.

    python bench/cpu_split.py --backends epoll-streams,uring-streams --conns 100

Needs ``perf`` (and perf_event_paranoid permitting it) and Python >= 3.12.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from _common import BenchError, error, machine_info, machine_line, pinned
from echo import BACKENDS, _read_port, _stop_server, build_loadgen

BUCKETS = (
    "python: trio above the socket",
    "kernel: TCP/IP",
    "python: socket layer",
    "python: outcome objects",
    "kernel: syscall entry/exit",
    "kernel: epoll / io_uring",
    "python: IO manager",
    "other",
)
INHERENT = ("python: trio above the socket", "kernel: TCP/IP")
_IO_MANAGER_PY = (
    "trio/_core/_io_epoll.py",
    "trio/_core/_generated_io_epoll.py",
    "trio/_core/_io_common.py",
    "trio_uring/_manager.py",
    "trio_uring/_ring.py",
    "trio_uring/_park.py",
    "trio_uring/_ops.py",
)
_SOCKET_PY = (
    "trio/_socket.py",
    "trio_uring/_socket.py",
    "trio_uring/_ops_socket.py",
    "trio_uring/_native.py",
)
# outcome objects: trio builds them for every wake-up, checkpoints included,
# but an IO manager can avoid some (trio-uring's completions do): counted
# as removable, which can only raise the bound
_OUTCOME_PY = ("outcome/_impl.py",)
# The kernel's TCP/IP data path (by symbol prefix), which any IO manager
# makes it run.  tcp_poll is not in it: that is a readiness check, the IO
# manager's own cost.
_TCP_IP = (
    "tcp_",
    "__tcp_",
    "ip_",
    "__ip_",
    "net_rx_action",
    "__napi_poll",
    "process_backlog",
    "__netif_receive",
    "__dev_queue_xmit",
    "dev_hard_start_xmit",
    "loopback_xmit",
    "sock_def_readable",
    "release_sock",
    "__release_sock",
    "skb_copy_datagram",
)
_ENTRY = (
    "entry_SYSCALL",
    "syscall_exit",
    "syscall_return",
    "do_syscall_64",
    "exit_to_user",
    "x64_sys",
    "__x64_sys",
    "__sys_",
    "sock_sendmsg",
    "sock_recvmsg",
    "__sock_sendmsg",
    "inet_sendmsg",
    "inet_recvmsg",
    "fdget",
    "sockfd_lookup",
    "import_ubuf",
    "security_socket",
)
_RING = ("io_", "__io_", "__do_sys_io_uring", "do_epoll", "ep_", "__ep_")


def _samples(script: str) -> Iterator[list[str]]:
    """Each sample's frames, innermost first, as ``symbol (dso)`` text."""
    frames: list[str] = []
    for line in script.splitlines():
        if not line.strip():
            if frames:
                yield frames
            frames = []
        elif line[:1] in ("\t", " "):
            parts = line.strip().split(" ", 1)
            frames.append(parts[1] if len(parts) > 1 else parts[0])
    if frames:
        yield frames


def bucket(frames: Sequence[str]) -> str:
    """The bucket of one sample (see the module docstring)."""
    kernel = [f.split(" ", 1)[0] for f in frames if "[kernel.kallsyms]" in f]
    if kernel:
        # innermost first.  Under the TCP/IP data path (even when an
        # io_uring op or an epoll wake-up of the peer got there) is the
        # kernel's own work; a readiness check (tcp_poll) is not.
        if kernel[0].startswith(_ENTRY):
            return "kernel: syscall entry/exit"
        if any(f.startswith(_TCP_IP) and not f.startswith("tcp_poll") for f in kernel):
            return "kernel: TCP/IP"
        if any(f.startswith(_RING) for f in kernel):
            return "kernel: epoll / io_uring"
        if any(f.startswith(_ENTRY) for f in kernel):
            return "kernel: syscall entry/exit"
        return "other"
    python = next((f for f in frames if f.startswith("py::")), "")
    if not python:
        return "other"
    if any(p in python for p in _IO_MANAGER_PY):
        return "python: IO manager"
    if any(p in python for p in _SOCKET_PY):
        return "python: socket layer"
    if any(p in python for p in _OUTCOME_PY):
        return "python: outcome objects"
    return "python: trio above the socket"


def profile(name: str, conns: int, seconds: float, tmp: Path) -> dict[str, float]:
    """Shares of the server's CPU samples per bucket, plus its rate."""
    backend = BACKENDS[name]
    argv = backend.command("127.0.0.1", 0)
    if argv[0] != sys.executable:
        raise BenchError(f"{name}: not a Python server")
    argv = [argv[0], "-X", "perf", *argv[1:]]
    err = tmp / f"{name}.err"
    with err.open("w") as stderr:
        server = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            preexec_fn=pinned({0}),
        )
    data = tmp / f"{name}.data"
    try:
        port = _read_port(server, err)
        perf = subprocess.Popen(
            ["perf", "record", "-q", "-F", "400", "--call-graph", "dwarf,32768",
             "-p", str(server.pid), "-o", str(data), "--", "sleep", f"{seconds:g}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(0.2)
        lg = subprocess.run(
            [str(build_loadgen()), "127.0.0.1", str(port), str(conns), "64",
             f"{seconds + 0.5:g}", "0.3"],
            capture_output=True, text=True, check=True, preexec_fn=pinned({1}),
        )  # fmt: skip
        _, perf_err = perf.communicate(timeout=seconds + 30)
        if perf.returncode:
            raise BenchError(f"perf record failed: {perf_err.strip()}")
    finally:
        _stop_server(server)
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "ip,sym,dso"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    counts = collections.Counter(bucket(s) for s in _samples(script))
    total = sum(counts.values())
    if not total:
        raise BenchError(f"{name}: perf recorded no samples")
    shares = {b: counts[b] / total for b in BUCKETS}
    shares["samples"] = total
    shares["msgs_per_s"] = float(json.loads(lg.stdout)["msgs_per_s"])
    return shares


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backends", default="epoll-streams,uring-streams")
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--runs", type=int, default=2, help="per backend, alternating")
    args = ap.parse_args(argv)
    if sys.version_info < (3, 12):
        return error("needs Python >= 3.12 (-X perf names Python frames for perf)")
    names = args.backends.split(",")
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        return error(f"unknown backends: {unknown}")
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for r in range(args.runs):
                for name in names:
                    shares = profile(name, args.conns, args.seconds, Path(tmp))
                    results[name].append(shares)
                    print(f"run {r + 1} {name}: {shares['msgs_per_s']:,.0f} msgs/s "
                          f"(under perf), {shares['samples']:.0f} samples",
                          file=sys.stderr)  # fmt: skip
        except (BenchError, subprocess.CalledProcessError, OSError) as exc:
            return error(exc)
    print(f"\n{machine_line(machine_info())}\n")
    print(f"`python bench/cpu_split.py --backends {args.backends} --conns "
          f"{args.conns} --seconds {args.seconds:g} --runs {args.runs}`: share "
          f"of the server's CPU samples (mean of {args.runs} runs)\n")  # fmt: skip
    print("| bucket | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for b in BUCKETS:
        cells = [sum(r[b] for r in results[n]) / len(results[n]) for n in names]
        print(f"| {b} | " + " | ".join(f"{100 * c:.1f} %" for c in cells) + " |")
    bounds = []
    for n in names:
        inherent = sum(sum(r[b] for b in INHERENT) for r in results[n]) / args.runs
        bounds.append(1 / inherent)
    print(
        "| **bound** (1 / inherent) | " + " | ".join(f"{b:.2f}x" for b in bounds) + " |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
