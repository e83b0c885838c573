"""Multishot operations: one SQE, many completions, nothing dropped.

A multishot accept or recv stays armed in the kernel and posts a CQE per
connection or per chunk of data (``IORING_CQE_F_MORE`` says more will come).
Completions arrive whether or not a task is waiting, so every result is
buffered here until it is taken; the op's ``user_data`` stays reserved until
its final CQE.  Closing the receiver (or ``notify_closing`` of its fd) cancels
the kernel op; results that were already posted stay available (data) or are
closed (accepted fds nobody will take) -- never silently lost in between.

Multishot recv takes its memory from a *provided buffer ring* shared by every
receiver of the run (``IORING_REGISTER_PBUF_RING``): an idle connection holds
no buffer at all, which is what makes many mostly-idle connections cheap.  A
chunk is copied out of its buffer as soon as its CQE is processed and the
buffer goes straight back to the kernel.  If the kernel runs out of buffers
(``ENOBUFS``) it ends the multishot; the receiver re-arms it.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from typing import Any

import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from . import _native, _ring
from ._manager import UringIOManager
from ._ops import Op
from ._ring_ffi import ffi, lib

_ACCEPT = _ring.OP["ACCEPT"]
_RECV = _ring.OP["RECV"]
_F_MORE = _ring.CQE_F_MORE
_F_BUFFER = _ring.CQE_F_BUFFER

BUFFER_GROUP = 0x7475  # "tu": our buffer group id
BUFFER_COUNT = 256  # a power of two
BUFFER_SIZE = 4096


class BufferRing:
    """A provided buffer ring: BUFFER_COUNT buffers of BUFFER_SIZE bytes."""

    def __init__(self, manager: UringIOManager) -> None:
        self._manager = manager
        self._ring_mem = lib.tu_pbuf_ring_alloc(BUFFER_COUNT)
        if self._ring_mem == ffi.NULL:
            raise MemoryError("cannot allocate the provided buffer ring")
        self._buffers = ffi.new("char[]", BUFFER_COUNT * BUFFER_SIZE)
        self._base = int(ffi.cast("uintptr_t", self._buffers))
        ret = lib.tu_pbuf_ring_register(
            manager._ring.ptr, self._ring_mem, BUFFER_COUNT, BUFFER_GROUP
        )
        if ret < 0:
            lib.tu_pbuf_ring_free(self._ring_mem, BUFFER_COUNT)
            self._ring_mem = ffi.NULL
            raise OSError(-ret, os.strerror(-ret))
        for bid in range(BUFFER_COUNT):
            self.give_back(bid)
        # The kernel references this memory until the ring is gone: keep it
        # alive with the manager, freed only after the ring is closed.
        manager._keep_until_closed.append(self)

    def give_back(self, bid: int) -> None:
        lib.tu_pbuf_ring_push(
            self._ring_mem,
            BUFFER_COUNT,
            self._base + bid * BUFFER_SIZE,
            BUFFER_SIZE,
            bid,
        )

    def take(self, bid: int, length: int) -> bytes:
        """Copy a filled buffer out and hand it back to the kernel."""
        start = bid * BUFFER_SIZE
        data = ffi.buffer(self._buffers)[start : start + length]
        self.give_back(bid)
        return bytes(data)

    def free(self) -> None:
        """Called after the ring is closed: no kernel reference remains."""
        if self._ring_mem != ffi.NULL:
            lib.tu_pbuf_ring_free(self._ring_mem, BUFFER_COUNT)
            self._ring_mem = ffi.NULL


def buffer_ring(manager: UringIOManager) -> BufferRing:
    ring = getattr(manager, "_buffer_ring", None)
    if ring is None:
        ring = manager._buffer_ring = BufferRing(manager)
    return ring


class _Multishot:
    """Shared machinery: the armed op, the buffered results, one waiter."""

    def __init__(self, manager: UringIOManager, fd: int) -> None:
        self._manager = manager
        self._fd = fd
        self._op: Op | None = None
        self._waiter: Task | None = None
        self._error: BaseException | None = None
        self._closed = False  # by us (aclose) or by notify_closing
        self._eof = False

    # subclasses: _arm() queues the op, _on_result(res, flags) buffers a result
    def _arm(self) -> None:
        raise NotImplementedError

    def _on_result(self, res: int, flags: int) -> None:
        raise NotImplementedError

    def _has_results(self) -> bool:
        raise NotImplementedError

    def _on_cqe(self, op: Op, res: int, flags: int) -> None:
        if res >= 0 or (res == -errno.ENOBUFS and not flags & _F_MORE):
            if res >= 0:
                self._on_result(res, flags)
        elif res == -errno.ECANCELED and (self._closed or op.closed):
            pass
        else:
            self._error = OSError(-res, os.strerror(-res))
        if not flags & _F_MORE:
            self._manager.finish_op(op)
            self._op = None
            if op.closed and not self._closed:
                self._closed = True
                self._error = trio.ClosedResourceError("another task closed this fd")
            if (
                not self._closed
                and self._error is None
                and not self._eof
                and not self._manager._closed
            ):
                self._arm()  # the kernel ended it (ENOBUFS, CQ overflow): go on
        self._wake()

    def _on_notify_closing(self) -> None:
        self._closed = True
        self._error = trio.ClosedResourceError("another task closed this fd")
        self._wake()

    def _wake(self) -> None:
        task = self._waiter
        if task is not None:
            self._waiter = None
            reschedule(task)

    async def _wait(self) -> None:
        """Until a result is buffered or the stream ended; a checkpoint."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._has_results() or self._error is not None or self._eof:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if self._closed:
            raise trio.ClosedResourceError("this receiver was closed")
        if self._waiter is not None:
            raise trio.BusyResourceError("another task is already waiting here")
        self._waiter = current_task()

        def abort(_: Any) -> Abort:
            self._waiter = None
            return Abort.SUCCEEDED  # nothing is lost: results stay buffered

        await wait_task_rescheduled(abort)

    def _stop(self) -> None:
        self._closed = True
        if self._op is not None:
            self._manager.cancel_op(self._op)

    async def _wait_final(self) -> None:
        """After _stop(): until the kernel's final CQE for the op arrived."""
        while self._op is not None:
            with trio.CancelScope(shield=True):
                self._waiter = current_task()

                def abort(_: Any) -> Abort:
                    self._waiter = None
                    return Abort.SUCCEEDED

                await wait_task_rescheduled(abort)


class MultishotAcceptor(_Multishot):
    """Accept connections with one multishot ``IORING_OP_ACCEPT``.

    ``async with MultishotAcceptor(listener) as acceptor: fd = await
    acceptor.accept()``, or ``async for fd in acceptor``.  Connections the
    kernel accepts before anyone asks are kept; :meth:`aclose` cancels the
    multishot and closes the ones never taken (their peers see the
    connection close).
    """

    def __init__(self, listener: Any, flags: int = os.O_CLOEXEC) -> None:
        fd = _native.check_fd(listener)
        manager = _native.current_manager()
        super().__init__(manager, fd)
        self._flags = flags
        self._fds: deque[int] = deque()
        self._arm()

    def _arm(self) -> None:
        self._op = self._manager.submit_multishot(
            _ACCEPT,
            self._fd,
            op_flags=self._flags,
            ioprio=_ring.ACCEPT_MULTISHOT,
            callback=self._on_cqe,
            on_close=self._on_notify_closing,
        )

    def _on_result(self, res: int, flags: int) -> None:
        if self._closed:
            os.close(res)  # accepted after aclose(): nobody will take it
        else:
            self._fds.append(res)

    def _has_results(self) -> bool:
        return bool(self._fds)

    async def accept(self) -> int:
        """The next accepted connection's fd (yours to close)."""
        await self._wait()
        if self._fds:
            return self._fds.popleft()
        if self._error is not None:
            raise self._error
        raise trio.ClosedResourceError("this acceptor was closed")

    def __aiter__(self) -> MultishotAcceptor:
        return self

    async def __anext__(self) -> int:
        try:
            return await self.accept()
        except trio.ClosedResourceError:
            if self._closed and self._error is None:
                raise StopAsyncIteration from None
            raise

    async def aclose(self) -> None:
        """Stop accepting; close connections accepted but never taken.

        Waits for the kernel to confirm the multishot ended, so no connection
        is accepted by it after this returns.
        """
        self._stop()
        await self._wait_final()
        while self._fds:
            os.close(self._fds.popleft())
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> MultishotAcceptor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class MultishotReceiver(_Multishot):
    """Receive from a stream socket with one multishot ``IORING_OP_RECV``.

    Data lands in the run's shared provided buffer ring, so a connection
    waiting for data holds no buffer of its own.  ``receive(max_bytes)``
    returns what has arrived (b"" at end of stream); data beyond
    ``max_bytes`` stays for the next call.  :meth:`aclose` stops the
    multishot and returns any bytes received but not yet taken.
    """

    def __init__(self, sock: Any) -> None:
        fd = _native.check_fd(sock)
        manager = _native.current_manager()
        super().__init__(manager, fd)
        self._buffers = buffer_ring(manager)
        self._chunks: deque[bytes] = deque()
        self._arm()

    def _arm(self) -> None:
        self._op = self._manager.submit_multishot(
            _RECV,
            self._fd,
            buf_index=BUFFER_GROUP,
            ioprio=_ring.RECV_MULTISHOT,
            sqe_flags=_ring.IOSQE_BUFFER_SELECT,
            callback=self._on_cqe,
            on_close=self._on_notify_closing,
            keep=self._buffers,
        )

    def _on_result(self, res: int, flags: int) -> None:
        if flags & _F_BUFFER:
            self._chunks.append(
                self._buffers.take(flags >> _ring.CQE_BUFFER_SHIFT, res)
            )
        if res == 0:
            self._eof = True

    def _has_results(self) -> bool:
        return bool(self._chunks)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` of received data; b"" once the peer closed."""
        _native.check_size(max_bytes, "max_bytes")
        if max_bytes == 0:
            raise ValueError("max_bytes must be at least 1")
        await self._wait()
        if self._chunks:
            out = []
            n = 0
            while self._chunks and n < max_bytes:
                chunk = self._chunks.popleft()
                if n + len(chunk) > max_bytes:
                    cut = max_bytes - n
                    self._chunks.appendleft(chunk[cut:])
                    chunk = chunk[:cut]
                out.append(chunk)
                n += len(chunk)
            return b"".join(out)
        if self._error is not None:
            raise self._error
        if self._eof:
            return b""
        raise trio.ClosedResourceError("this receiver was closed")

    async def aclose(self) -> bytes:
        """Stop receiving; return the bytes received but not yet taken.

        Waits for the kernel to confirm the multishot ended, so no byte can
        be taken from the socket after this returns.
        """
        self._stop()
        await self._wait_final()
        rest = b"".join(self._chunks)
        self._chunks.clear()
        return rest

    async def __aenter__(self) -> MultishotReceiver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
