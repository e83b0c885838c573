"""Shared helpers for the native (kernel-executed) operation catalogue.

Each operation module (``_ops_file``, ``_ops_socket``...) turns Python
arguments into SQE fields and a result into a Python value; the lifecycle
(queueing, cancellation, linked timeouts, keeping buffers alive) is all in
:meth:`UringIOManager.submit`.  These helpers are what they share.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import trio
import trio._core._run as _trio_run

from ._manager import UringIOManager
from ._ring_ffi import ffi

AT_FDCWD = -100
#: offset meaning "the file's current position" for READ/WRITE (RW_CUR_POS)
CURRENT_POSITION = (1 << 64) - 1


def current_manager() -> UringIOManager:
    """The running trio's UringIOManager, or a clear RuntimeError."""
    try:
        manager = _trio_run.GLOBAL_RUN_CONTEXT.runner.io_manager
    except AttributeError:
        raise RuntimeError("must be called from async context") from None
    if not isinstance(manager, UringIOManager):
        raise RuntimeError(
            "trio_uring.lowlevel operations need trio running on io_uring "
            "(trio_uring.run(), or trio.run() after trio_uring.install())"
        )
    return manager


def check_fd(fd: Any) -> int:
    """An fd from an int or an object with fileno(), validated like os.* does."""
    if not isinstance(fd, int):
        fileno = getattr(fd, "fileno", None)
        if fileno is None:
            raise TypeError(
                f"expected a file descriptor (int) or an object with fileno(), "
                f"not {type(fd).__name__}"
            )
        fd = fileno()
        if not isinstance(fd, int):
            raise TypeError("fileno() returned a non-integer")
    if fd < 0:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    if fd > 0x7FFFFFFF:
        raise OverflowError("fd is greater than maximum")
    return fd


def check_size(n: int, what: str = "size") -> int:
    if not isinstance(n, int):
        raise TypeError(f"{what} must be an integer, not {type(n).__name__}")
    if n < 0:
        raise ValueError(f"negative {what}")
    if n > 0x7FFFFFFF:
        raise OverflowError(f"{what} too large (at most 2**31 - 1 per operation)")
    return n


def check_flags(value: int, what: str = "flags") -> int:
    """A flags or mode argument that must fit an SQE's 32-bit field."""
    if not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"negative {what}")
    if value > 0xFFFFFFFF:
        raise OverflowError(f"{what} does not fit in 32 bits")
    return value


def check_offset(offset: int | None) -> int:
    """None means: the file's current position (and advance it)."""
    if offset is None:
        return CURRENT_POSITION
    if not isinstance(offset, int):
        raise TypeError(
            f"offset must be an integer or None, not {type(offset).__name__}"
        )
    if offset < 0:
        raise ValueError("negative offset")
    if offset >= 1 << 63:
        raise OverflowError("offset too large")
    return offset


def writable_buffer(buf: Any) -> tuple[Any, int, int]:
    """(keep, address, length) of a writable buffer; TypeError otherwise."""
    try:
        cbuf = ffi.from_buffer(buf, require_writable=True)
    except (TypeError, BufferError):  # not a buffer / a read-only one
        raise TypeError(
            f"a writable bytes-like object is required, not {type(buf).__name__}"
        ) from None
    return cbuf, int(ffi.cast("uintptr_t", cbuf)), len(cbuf)


def readable_buffer(data: Any) -> tuple[Any, int, int]:
    """(keep, address, length) of any bytes-like object; TypeError otherwise."""
    try:
        cbuf = ffi.from_buffer(data)
    except TypeError:
        raise TypeError(
            f"a bytes-like object is required, not {type(data).__name__}"
        ) from None
    return cbuf, int(ffi.cast("uintptr_t", cbuf)), len(cbuf)


def c_path(path: Any) -> tuple[Any, int]:
    """(keep, address) of a NUL-terminated copy of an os.PathLike/str/bytes path."""
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise ValueError("embedded null byte")
    cpath = ffi.new("char[]", raw)
    return cpath, int(ffi.cast("uintptr_t", cpath))


async def checkpoint() -> None:
    await trio.lowlevel.checkpoint()
