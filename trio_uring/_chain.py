"""Linked chains and direct descriptors: a whole file in one submission.

``read_file(path)`` submits ``OPENAT -> READ -> CLOSE`` as one linked chain
(IOSQE_IO_LINK, then IO_HARDLINK so the close runs even if the read fails)
on a *direct descriptor*: the file is opened into a slot of the ring's
registered file table rather than the process's fd table, read through that
slot (IOSQE_FIXED_FILE) and closed there, all without a round trip to Python
between the steps.

Cancellation follows :meth:`UringIOManager.submit_chain`: a chain cancelled
before submission never runs; one cancelled in flight either ran no step
(Cancelled) or ran some, in which case the results decide.  Whatever
happened, a slot whose close did not run is closed afterwards (shielded),
and the slot is only reused after that.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import trio

from . import _native, _ring
from ._manager import UringIOManager
from ._ring_ffi import ffi, lib

_OPENAT = _ring.OP["OPENAT"]
_READ = _ring.OP["READ"]
_CLOSE = _ring.OP["CLOSE"]
_FIXED_FILE = 1 << 0
_HARDLINK = _ring.IOSQE_IO_HARDLINK  # close even if the read failed
DIRECT_SLOTS = 256


class DirectSlots:
    """The run's registered file table: sparse slots handed out one by one."""

    def __init__(self, manager: UringIOManager) -> None:
        ret = lib.tu_register_sparse_files(manager._ring.ptr, DIRECT_SLOTS)
        if ret < 0:
            raise OSError(-ret, os.strerror(-ret))
        self._free = list(range(DIRECT_SLOTS - 1, -1, -1))

    def take(self) -> int:
        if not self._free:
            raise OSError(errno.ENFILE, "all direct descriptor slots are in use")
        return self._free.pop()

    def give_back(self, slot: int) -> None:
        self._free.append(slot)


def direct_slots(manager: UringIOManager) -> DirectSlots:
    slots: DirectSlots | None = getattr(manager, "_direct_slots", None)
    if slots is None:
        slots = DirectSlots(manager)
        manager._direct_slots = slots
    return slots


_alloc_uninit = ffi.new_allocator(should_clear_after_alloc=False)


def _supported(manager: UringIOManager) -> bool:
    return all(manager.supports(op) for op in (_OPENAT, _READ, _CLOSE))


async def read_file(path: Any, max_bytes: int = 1 << 20) -> bytes:
    """The contents of the file at ``path`` (at most ``max_bytes``).

    One linked chain: openat into a direct descriptor, read, close.  Raises
    what ``open``/``read`` would (``FileNotFoundError`` with the filename,
    ``IsADirectoryError``...).  ``max_bytes`` bounds the single read: a
    longer file is truncated to it.  Falls back to a worker thread where the
    kernel lacks direct descriptors.
    """
    _native.check_size(max_bytes, "max_bytes")
    cpath, path_addr = _native.c_path(path)
    manager = _native.current_manager()
    try:
        slots = direct_slots(manager) if _supported(manager) else None
    except OSError:
        slots = None
    if slots is None:
        return await _read_file_thread(path, max_bytes)
    slot = slots.take()
    # not zero-filled: the kernel overwrites it and only what it read is
    # copied out (clearing the default 1 MiB cost 3x the whole operation)
    buf = _alloc_uninit("char[]", max(1, max_bytes))
    buf_addr = int(ffi.cast("uintptr_t", buf))
    flags = os.O_RDONLY  # no O_CLOEXEC: a direct descriptor is not in the fd table
    steps: list[tuple[int, ...]] = [
        (_OPENAT, _native.AT_FDCWD, path_addr, 0, 0, flags, 0, slot + 1),
        (_READ, slot, buf_addr, max_bytes, 0, 0, _FIXED_FILE | _HARDLINK, 0),
        (_CLOSE, 0, 0, 0, 0, 0, 0, slot + 1),
    ]
    opened = False
    try:
        results = await manager.submit_chain(steps, keep=(cpath, buf))
        opened = results[0] >= 0
        closed = results[2] >= 0
        if results[0] < 0:
            raise OSError(-results[0], os.strerror(-results[0]), os.fsdecode(path))
        if results[1] < 0:
            raise OSError(-results[1], os.strerror(-results[1]), os.fsdecode(path))
        data: bytes = ffi.unpack(buf, results[1])
        return data
    except trio.Cancelled:
        closed = True  # the chain ran no step: nothing is open
        raise
    finally:
        if opened and not closed:
            with trio.CancelScope(shield=True):
                await manager.submit(_CLOSE, 0, file_index=slot + 1, closing_fd=-1)
        slots.give_back(slot)


async def _read_file_thread(path: Any, max_bytes: int) -> bytes:
    def work() -> bytes:
        with open(path, "rb") as f:
            return f.read(max_bytes)

    return await trio.to_thread.run_sync(work)
