"""Seeing what the ring is doing: every in-flight kernel operation.

"What is my stuck program waiting on?"  :func:`inflight` answers from inside
(a list of :class:`InflightOp`: opcode, fd and what it points to, owning task,
age, deadline, linked timeout, state); :func:`install_dump_signal` answers
from outside: on the chosen signal every live ring in the process (one per
``trio_uring.run``, in any thread) is written to a file, and
``python -m trio_uring.inflight PID`` sends the signal and prints that file.

Reading another thread's op table from a signal handler is racy by nature;
the dump copies each table first and retries if it changed underneath.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from ._ring import OP_LINK_TIMEOUT, OPCODE_NAMES

if TYPE_CHECKING:
    from ._manager import UringIOManager
    from ._ops import Op

LIVE_MANAGERS: weakref.WeakSet[UringIOManager] = weakref.WeakSet()


@attrs.frozen
class InflightOp:
    """One kernel operation that has not delivered its final completion."""

    user_data: int
    #: opcode name as in ``statistics().submitted`` ("RECV", "POLL_ADD"...)
    opcode: str
    fd: int
    #: what the fd points to: a path, ``peer 1.2.3.4:80``, ``pipe:[123]``...
    target: str | None
    #: name of the task waiting for it (None: nobody waits any more)
    task: str | None
    #: seconds since it was submitted (counted from the start of the loop
    #: iteration that submitted it: the manager reads the clock once per
    #: iteration, not once per operation)
    age: float
    #: the waiting task's trio deadline (``trio.current_time()`` scale), or None
    deadline: float | None
    linked_timeout: bool
    #: "queued", "in flight", "cancelling", "closing", "timed out" (its linked
    #: timeout fired; trio is about to raise Cancelled) or "abandoned"
    state: str


def describe_fd(fd: int) -> str | None:
    """What ``fd`` points to, for humans: a path, a socket's peer, a pipe..."""
    if fd < 0:
        return None
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "(closed)"
    if not link.startswith("socket:"):
        return link
    try:
        dup = os.dup(fd)
    except OSError:
        return link
    try:
        with socket.socket(fileno=dup) as sock:
            try:
                peer = sock.getpeername()
            except OSError:
                peer = None
            try:
                local = sock.getsockname()
            except OSError:
                local = None
    except OSError:
        return link
    if peer:
        return f"peer {_fmt_addr(peer)}"
    if local:
        return f"local {_fmt_addr(local)}"
    return link


def _fmt_addr(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(addr, bytes):
        return addr.decode(errors="replace") or "(unnamed)"
    return str(addr) or "(unnamed)"


def _deadline(op: Op) -> float | None:
    """The task's current effective deadline (trio time), or None."""
    deadline = op.deadline
    task = op.task
    status = getattr(task, "_cancel_status", None)
    if status is not None:
        # best effort: the task may be changing scopes in another thread
        with contextlib.suppress(Exception):
            deadline = status.effective_deadline()
    return None if deadline == float("inf") else deadline


def _state(manager: UringIOManager, op: Op) -> str:
    if manager._ring.is_queued(op.position, op.ud):
        return "queued"
    if op.parked:
        return "timed out"
    if op.closed:
        return "closing"
    if op.task is None:
        return "abandoned" if not op.cancel_sent else "cancelling"
    if op.cancel_sent:
        return "cancelling"
    return "in flight"


def snapshot(manager: UringIOManager) -> list[InflightOp]:
    """The in-flight operations of one manager (any thread; best effort)."""
    for _ in range(10):
        try:
            ops = list(manager._ops.values())
            break
        except RuntimeError:  # changed size during iteration (other thread)
            continue
    else:  # pragma: no cover
        return []
    internal = manager._internal_ops()
    now = time.monotonic()
    out = []
    for op in ops:
        # linked timeouts show as their operation's linked_timeout column
        if op in internal or op.opcode == OP_LINK_TIMEOUT:
            continue
        name = (
            OPCODE_NAMES[op.opcode] if op.opcode < len(OPCODE_NAMES) else str(op.opcode)
        )
        task = op.task
        out.append(
            InflightOp(
                user_data=op.ud,
                opcode=name,
                fd=op.fd,
                target=describe_fd(op.fd),
                task=task.name if task is not None else None,
                age=now - op.started if op.started else 0.0,
                deadline=_deadline(op),
                linked_timeout=op.deadline != float("inf") and not op.parked,
                state=_state(manager, op),
            )
        )
    out.sort(key=lambda o: -o.age)
    return out


def format_table(ops: Iterable[InflightOp], now: float | None = None) -> str:
    """A text table; deadlines relative to ``now`` (trio time) when given."""
    rows = [("UD", "OPCODE", "FD", "TARGET", "TASK", "AGE", "DEADLINE", "STATE")]
    for op in ops:
        if op.deadline is None:
            deadline = "-"
        elif now is None:
            deadline = f"at {op.deadline:.3f}"
        elif op.deadline > now:
            deadline = f"in {op.deadline - now:.3f}s"
        else:
            deadline = f"passed {now - op.deadline:.3f}s ago"
        if op.linked_timeout:
            deadline += " (linked timeout)"
        rows.append(
            (
                str(op.user_data),
                op.opcode,
                str(op.fd),
                op.target or "-",
                op.task or "-",
                f"{op.age:.3f}s",
                deadline,
                op.state,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def dump_all(file: TextIO) -> None:
    """Write every live ring's in-flight table to ``file``."""
    managers = list(LIVE_MANAGERS)
    print(
        f"trio-uring: {len(managers)} live ring(s) in pid {os.getpid()} "
        f"at {time.strftime('%Y-%m-%d %H:%M:%S')}",
        file=file,
    )
    for i, manager in enumerate(managers):
        ops = snapshot(manager)
        stats = manager.statistics()
        print(
            f"\nring {i} (fd {manager._ring.fd}, thread {manager._thread_name}): "
            f"{len(ops)} operation(s) in flight, {stats.tasks_waiting_read} "
            f"reader(s), {stats.tasks_waiting_write} writer(s)",
            file=file,
        )
        if ops:
            clock = manager._clock
            now = clock.current_time() if clock is not None else None
            print(format_table(ops, now), file=file)
    file.flush()


def dump_path(pid: int | None = None) -> str:
    """Where the signal handler writes the dump for process ``pid``."""
    return os.path.join(
        tempfile.gettempdir(), f"trio-uring-inflight-{pid or os.getpid()}.txt"
    )


def install_dump_signal(signum: int = signal.SIGUSR1, path: str | None = None) -> None:
    """On ``signum``, write every live ring's in-flight table to ``path``.

    ``path`` defaults to :func:`dump_path` (``$TMPDIR/trio-uring-inflight-PID.txt``),
    the file ``python -m trio_uring.inflight PID`` reads.  Call it from the
    main thread (Python only installs signal handlers there).  The previous
    handler for ``signum`` is replaced.
    """
    target = path or dump_path()

    def handler(signo: int, frame: object) -> None:
        tmp = f"{target}.tmp"
        with contextlib.suppress(OSError), open(tmp, "w") as f:
            dump_all(f)
        with contextlib.suppress(OSError):
            os.replace(tmp, target)

    signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    """``python -m trio_uring.inflight PID [--signal NAME] [--timeout S]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m trio_uring.inflight",
        description="Print the in-flight io_uring operations of a trio-uring "
        "process that called trio_uring.lowlevel.install_dump_signal().",
    )
    parser.add_argument("pid", type=int)
    parser.add_argument("--signal", default="SIGUSR1")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    name = args.signal if args.signal.startswith("SIG") else f"SIG{args.signal}"
    signum = getattr(signal, name, None)
    if not isinstance(signum, int):
        parser.error(f"unknown signal {args.signal}")
    path = dump_path(args.pid)
    before = os.stat(path).st_mtime_ns if os.path.exists(path) else None
    try:
        os.kill(args.pid, signum)
    except ProcessLookupError:
        print(f"no process {args.pid}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and os.stat(path).st_mtime_ns != before:
            with open(path) as f:
                sys.stdout.write(f.read())
            return 0
        time.sleep(0.02)
    print(
        f"no dump from {args.pid} within {args.timeout} s: did it call "
        "trio_uring.lowlevel.install_dump_signal()?",
        file=sys.stderr,
    )
    return 1
