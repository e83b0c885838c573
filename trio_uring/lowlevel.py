"""Low-level io_uring operations and introspection for trio programs.

Everything here needs trio running on io_uring (``trio_uring.run`` or
``trio.run`` after ``trio_uring.install()``).
"""

from __future__ import annotations

from ._chain import read_file
from ._inspect import InflightOp, format_table, install_dump_signal
from ._multishot import MultishotAcceptor, MultishotReceiver
from ._native import current_manager
from ._ops_file import (
    close,
    fallocate,
    fdatasync,
    fsync,
    ftruncate,
    linkat,
    mkdirat,
    openat,
    openat2,
    read,
    readinto,
    readv,
    renameat,
    splice,
    statx,
    symlinkat,
    tee,
    unlinkat,
    write,
    writev,
)
from ._ops_socket import (
    accept,
    connect,
    nop,
    poll,
    recv,
    recv_into,
    recvfrom,
    recvmsg,
    send,
    sendmsg,
    sendto,
    shutdown,
    socket,
    timeout,
)

__all__ = [
    "InflightOp",
    "MultishotAcceptor",
    "MultishotReceiver",
    "accept",
    "close",
    "connect",
    "current_manager",
    "fallocate",
    "fdatasync",
    "format_table",
    "fsync",
    "ftruncate",
    "inflight",
    "install_dump_signal",
    "linkat",
    "mkdirat",
    "nop",
    "openat",
    "openat2",
    "poll",
    "read",
    "read_file",
    "readinto",
    "readv",
    "recv",
    "recv_into",
    "recvfrom",
    "recvmsg",
    "renameat",
    "send",
    "sendmsg",
    "sendto",
    "shutdown",
    "socket",
    "splice",
    "statx",
    "symlinkat",
    "tee",
    "timeout",
    "unlinkat",
    "write",
    "writev",
]


def inflight() -> list[InflightOp]:
    """Every kernel operation of the current run's ring that has not finished.

    Oldest first: opcode, fd and what it points to (a path, a socket's peer,
    a pipe), the task waiting for it, its age, its deadline and whether the
    kernel enforces that deadline with a linked timeout, and its state.
    """
    return current_manager().inflight()
