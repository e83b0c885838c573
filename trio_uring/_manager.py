"""UringIOManager: trio's IO-manager contract on io_uring.

trio keeps all of its blocking I/O in one object, ``runner.io_manager``
(``trio/_core/_io_epoll.py`` is the Linux default).  The run loop calls
``get_events(timeout)`` to block until something happens, then
``process_events(events)`` to wake the tasks that were waiting; tasks block
through ``wait_readable``/``wait_writable``; ``notify_closing`` wakes them
when their fd is about to be closed; ``force_wakeup`` makes a blocked
``get_events`` return from any thread or signal handler.

How we map that onto io_uring:

* Every kernel operation is an :class:`~trio_uring._ops.Op` in ``self._ops``,
  keyed by a ``user_data`` that is never reused (a 64-bit counter), so a late
  CQE can never be mistaken for a newer operation.  An op leaves the table
  only on its final CQE (no ``IORING_CQE_F_MORE``), which is also when the
  buffers it references are released.

* ``wait_readable``/``wait_writable`` submit a one-shot ``POLL_ADD`` per
  waiter.  io_uring always reports POLLERR/POLLHUP, so a reader or writer is
  woken by exactly the events that wake it under epoll.  Cancelling a wait is
  instant (``Abort.SUCCEEDED``; readiness has no side effect): a poll still in
  our SQ is turned into a NOP before the kernel ever sees it, one already in
  the kernel gets an ``ASYNC_CANCEL`` and its CQE is dropped on arrival.

* Bad fds raise what epoll raises.  The first wait on an fd number checks it
  with a private epoll instance (register + unregister), so a negative fd
  gives ValueError, a closed one EBADF and a regular file EPERM, exactly as
  under epoll.  The result is cached until ``notify_closing`` (or an EBADF
  from the kernel) forgets it, so a busy socket pays for the check once.

* ``get_events`` is one ``io_uring_enter``: it submits everything queued and
  waits with an EXT_ARG timeout.  EINTR returns to Python so that signal
  handlers run (that is how Ctrl-C reaches trio), then waits again for what
  is left of the timeout, like PEP 475.  ``process_events`` harvests CQEs in
  batches (arrays filled by C) and wakes tasks.

* ``force_wakeup`` writes an eventfd that has an ``IORING_OP_READ`` pending in
  the ring; the read's CQE ends the wait and the read is re-armed.  Writing an
  eventfd is thread- and signal-safe.

* ``notify_closing(fd)`` wakes that fd's waiters with ClosedResourceError
  and cancels their kernel ops by ``user_data`` (cancelling by fd would miss
  them once the fd is closed, and the ring's own file reference would keep a
  socket open).

* ``close()`` cancels every op still in the kernel and waits for all their
  CQEs before the ring is unmapped, so the kernel never writes into memory
  we no longer own.
"""

from __future__ import annotations

import contextlib
import copy
import errno as _errno
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import outcome
import trio
import trio._core._run as _trio_run
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from . import _inspect, _install, _ring, _speedups
from ._ops import Op
from ._park import RAW as _RAW
from ._park import park
from ._ring import Ring
from ._ring_ffi import ffi, lib


class _HasFileNo(Protocol):
    def fileno(self) -> int: ...


FdLike = int | _HasFileNo

_WAKE_NS_LIMIT = 86400 * 10**9
_CLOSE_DRAIN_SECONDS = 10.0
_LEAKED: list[object] = []
_CQE_F_MORE = _ring.CQE_F_MORE
_CQE_F_BUFFER = _ring.CQE_F_BUFFER
_CQE_BUFFER_SHIFT = _ring.CQE_BUFFER_SHIFT
_POLLIN = _ring.POLLIN
_POLLOUT = _ring.POLLOUT
_prep_poll = lib.tu_prep_poll
_tu_prep = lib.tu_prep
_tu_unprep = lib.tu_unprep
_tu_wait = lib.tu_wait
_HARVEST_BATCH = _ring.HARVEST_BATCH
_OP_ASYNC_CANCEL = _ring.OP_ASYNC_CANCEL
_OP_POLL_ADD = _ring.OP_POLL_ADD
_UD_LINK = _ring.UD_LINK_TIMEOUT
#: how long after trio's deadline the kernel's linked timeout fires (s); see
#: _prep_native for the measurement behind it
_LINK_TIMEOUT_GRACE = 0.05
_current_task = current_task
_INF = float("inf")
_IOSQE_FIXED_FILE = 1 << 0
_ANY_LINK = _ring.IOSQE_IO_LINK | _ring.IOSQE_IO_HARDLINK
# -EINTR and the kernel-internal restart codes (ERESTARTSYS, ERESTARTNOINTR,
# ERESTARTNOHAND, ERESTART_RESTARTBLOCK) a cancelled io-wq operation reports
_INTERRUPTED = frozenset({-_errno.EINTR, -512, -513, -514, -516})
_monotonic = time.monotonic
_SystemClock = _trio_run.SystemClock


def _addr(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


def _closed_error() -> trio.ClosedResourceError:
    return trio.ClosedResourceError("another task closed this fd")


# Events that wake a waiter, as under epoll: the requested direction, or an
# error/hang-up (which wakes both directions).
_POLL_ERR_HUP = 0x008 | 0x010  # POLLERR | POLLHUP
_POLL_WAKES_READER = _ring.POLLIN | _POLL_ERR_HUP
_POLL_WAKES_WRITER = _ring.POLLOUT | _POLL_ERR_HUP


@attrs.frozen
class UringStatistics:
    """``trio.lowlevel.current_statistics().io_statistics`` under io_uring."""

    tasks_waiting_read: int
    tasks_waiting_write: int
    #: operations submitted (or queued) for tasks whose final CQE has not
    #: come yet; trio-uring's own (the wake-up read, the epoll-assist poll)
    #: and linked timeouts (part of their operation) are not counted
    ops_in_flight: int
    #: SQEs handed to the kernel in this run, by opcode name
    submitted: dict[str, int]
    #: io_uring_enter calls made in this run
    enters: int
    setup_flags: tuple[str, ...]
    sq_entries: int
    cq_entries: int
    backend: str = attrs.field(init=False, default="io_uring")


@attrs.define(slots=True, eq=False)
class _FdWaiters:
    read: Op | None = None
    write: Op | None = None
    # the abort functions of this fd's waits, made once per fd, not per wait
    abort_read: Callable[[Any], Abort] | None = None
    abort_write: Callable[[Any], Abort] | None = None


class _NativeOp(_speedups.OpCore, Op):
    """A ``submit``/``submit_rw``/``Core.start_read`` op.  Its hot fields and
    ``__init__(ud, opcode, fd, task, manager, keep, started, watched)`` are
    C (:class:`trio_uring._speedups.OpCore`), and ``await op`` parks the
    task on it; like :class:`_SocketOp` it is its own abort function (no
    closure per wait), and its completion callback is one function for all
    ops (no bound method stored per op).  The common completion is handled
    by ``Core.dispatch`` in C, every other one by :meth:`_native_done`."""

    def __call__(self, raise_cancel: Any) -> Abort:
        abort: Abort = self.manager._abort_native(self, raise_cancel)
        return abort

    @staticmethod
    def callback(op: Op, res: int, flags: int) -> None:
        op.manager._native_done(op, res, flags)  # type: ignore[attr-defined]


class _NoDeadlines:
    """Stands in for trio's deadline heap under a clock that is not trio's
    real one: the kernel enforces no deadline there."""

    _active = 0


class _SocketOp(Op):
    """A ``submit_socket`` op: ``data`` is what a buffer-select recv got."""

    select: Callable[[int, int], bytes] | None = None
    data = b""
    busy: dict[int, Op] | None = None
    manager: UringIOManager

    def __call__(self, raise_cancel: Any) -> Abort:
        """The op is its own abort function (one object less per wait)."""
        return self.manager._socket_abort(self, raise_cancel)


class UringIOManager:
    """trio's IO manager on io_uring.  Built by trio's ``setup_runner``.

    Constructed with no arguments (as trio does), it serves the thread's
    ``trio_uring.run``/``start_guest_run`` request or a global ``install()``;
    when neither applies (a plain ``trio.run`` in another thread while this
    class is briefly hooked in), it hands back trio's stock epoll manager.
    ``guest`` says whether ``get_events`` may run in another thread (trio's
    guest mode); None means: work it out.
    """

    _claimed: str | None

    def __new__(cls, *, guest: bool | None = None) -> Any:
        claimed = _install.claim() if guest is None else "explicit"
        if claimed is None:
            return _install.ORIGINAL()
        self = super().__new__(cls)
        self._claimed = claimed
        return self

    def __init__(self, *, guest: bool | None = None) -> None:
        if guest is None:
            guest = self._claimed == "guest" or _install.called_from_start_guest_run()
        from . import _file_hooks  # trio/anyio file APIs go native on this ring

        _file_hooks.install()
        self._ring = Ring(guest=guest)
        #: trio's sockets / files use native ops in this run (the escape
        #: hatches: TRIO_URING_NATIVE_SOCKETS=0 / TRIO_URING_NATIVE_FILES=0
        #: keep trio's own readiness / worker-thread code)
        self.native_sockets = os.environ.get("TRIO_URING_NATIVE_SOCKETS") != "0"
        self.native_files = os.environ.get("TRIO_URING_NATIVE_FILES") != "0"
        self._ringp = self._ring.ptr
        #: the opcodes this kernel implements (IORING_REGISTER_PROBE)
        self.supported: frozenset[int] = self._ring._supported
        self._cancel_sqe_flags = (
            _ring.IOSQE_CQE_SKIP_SUCCESS
            if self._ring.features & _ring.FEAT_CQE_SKIP
            else 0
        )
        self._ops: dict[int, Op] = {}
        # the CQE callbacks of the hot paths, bound once
        self._poll_done_cb = self._poll_done
        self._waiters: dict[int, _FdWaiters] = {}
        self._checked_fds: set[int] = set()
        # A private epoll instance: checks fds the way epoll would, and hosts
        # the rare waiter io_uring's poll cannot express (see _assist).
        self._epoll: select.epoll | None = select.epoll()
        self._assisted: dict[int, Op] = {}
        # native ops per fd, for notify_closing
        # (a set stays when it empties, until notify_closing: no set made
        # and dropped per op; at most one per fd number ever used)
        self._fd_ops: dict[int, set[Op]] = {}
        # the native-op hot path in C, on this ring and these two tables
        self._core = _speedups.Core(
            ring=_addr(self._ringp),
            prep_rw=_addr(ffi.addressof(lib, "tu_prep_rw")),
            cqe_buf=_addr(self._ring._cqe_buf),
            batch=_HARVEST_BATCH,
            ops=self._ops,
            fd_ops=self._fd_ops,
            op_type=_NativeOp,
            manager=self,
            run_ctx=_trio_run.GLOBAL_RUN_CONTEXT,
            next_ud=2,  # 0: CQEs we ignore (cancel requests); 1: spare
        )
        #: user_data for a new op: a 64-bit counter, never reused
        self._new_ud = self._core.new_ud
        # submit_socket ops waiting, by fd and direction (BusyResourceError)
        self._socket_readers: dict[int, Op] = {}
        self._socket_writers: dict[int, Op] = {}
        self._trio_deadlines: Any = None  # the runner's Deadlines (heap, count)
        self._socket_done_cb = self._socket_done  # one bound method for all
        # The runner's own reschedule, bound once the run loop first hands us
        # completions (process_events): trio's module-level reschedule looks
        # the runner up on every call.  The completions of park()-ed waits
        # wake their task with the plain result (_park.RAW).
        self._reschedule: Callable[[Task, Any], None] = reschedule
        self._assist_op: Op | None = None
        self._closed = False
        self._guest = guest
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._wake_buf = ffi.new("uint64_t *")
        self._wake_addr = int(ffi.cast("uintptr_t", self._wake_buf))
        self._arm_wakeup()
        self._thread_name = threading.current_thread().name
        # memory registered with the ring (provided buffers): freed after it
        self._keep_until_closed: list[Any] = []
        self._buffer_ring: Any = None  # _multishot.BufferRing, made on first use
        self._socket_take: Any = None  # _socket's copy-out for _buffer_ring
        self._direct_slots: Any = None  # _chain.DirectSlots, made on first use
        self._clock: trio.abc.Clock | None = None
        # the run's clock if it is trio's real one, False if not, None: unknown
        self._real_clock: Any = None
        # time.monotonic() when the loop's last wait returned: the start
        # time the in-flight table shows for native ops begun since
        self._core.now = _monotonic()
        self._clock_offset = 0.0  # the real clock's offset from CLOCK_MONOTONIC
        _inspect.LIVE_MANAGERS.add(self)

    # ------------------------------------------------------------------ ops
    def _new_op(self, opcode: int, fd: int, task: Task | None) -> Op:
        ud = self._new_ud()
        op = Op(ud, opcode, fd, task)
        self._ops[ud] = op
        return op

    def _cancel_in_kernel(self, op: Op) -> None:
        """Make sure ``op`` stops: un-queue it, or ask the kernel to cancel it."""
        if self._assisted and self._assisted.get(op.fd) is op:
            self._unassist(op.fd)
        ud = op.ud
        if ud not in self._ops:
            return  # no kernel operation left for it
        if op.position >= 0 and _tu_unprep(self._ringp, op.position, ud) == 0:
            op.position = -1
            op.keep = None  # a NOP touches no memory
            return
        op.position = -1
        if not op.cancel_sent:
            op.cancel_sent = True
            # user_data 0: its own CQE is ignored -- and skipped altogether
            # when it succeeds, where the kernel can (IOSQE_CQE_SKIP_SUCCESS)
            flags = self._cancel_sqe_flags
            if _tu_prep(self._ringp, _OP_ASYNC_CANCEL, flags, -1, ud, 0, 0, 0,
                        0, 0, 0, 0) < 0:  # fmt: skip
                self._ring.prep(_OP_ASYNC_CANCEL, -1, addr=ud, sqe_flags=flags)

    # --------------------------------------------------------------- wakeup
    def _arm_wakeup(self) -> None:
        op = self._new_op(_ring.OP_READ, self._wake_fd, None)
        op.callback = self._wakeup_done
        op.position = self._ring.prep(
            _ring.OP_READ,
            self._wake_fd,
            addr=self._wake_addr,
            length=8,
            user_data=op.ud,
        )
        self._wake_op = op

    def _wakeup_done(self, op: Op, res: int, flags: int) -> None:
        if not self._closed:
            self._arm_wakeup()

    def _remember_clock(self) -> None:
        # For the in-flight table: deadlines shown relative to the run's clock.
        with contextlib.suppress(RuntimeError):
            self._clock = trio.lowlevel.current_clock()

    def force_wakeup(self) -> None:
        if self._closed:
            return
        with contextlib.suppress(BlockingIOError):
            os.eventfd_write(self._wake_fd, 1)

    # ----------------------------------------------------------- event loop
    def get_events(self, timeout: float) -> int:
        if self._clock is None:
            self._remember_clock()
        if timeout > 0:
            start = _monotonic()
            ns = min(int(timeout * 1e9), _WAKE_NS_LIMIT)
        else:
            start = ns = 0
        ring = self._ring
        if ring._harvested or ring._backlog:
            ret = ring.wait(ns)  # completions already out: hand those over
        else:
            # Ring.wait inlined: this is once per trio loop iteration
            ret = _tu_wait(self._ringp, ns, ring._cqe_buf, _HARVEST_BATCH)
            if ret > 0:
                ring._harvested = ret
        self._core.now = _monotonic()
        if ret >= 0:
            return ret
        # io_uring_enter returns the number of SQEs it consumed even when
        # its wait then timed out, so the loop below decides by the clock.
        deadline = start + timeout
        while True:
            if ret in (-_errno.EBUSY, -_errno.EAGAIN):
                # The kernel wants completions reaped before it takes more
                # submissions; process_events does that.
                return 1
            if ret not in (-_errno.EINTR, -_errno.ENODATA):
                raise OSError(-ret, os.strerror(-ret))
            # EINTR: a signal.  Its Python handler runs right here, between
            # bytecodes (that is how Ctrl-C reaches trio); then we wait for
            # what is left of the timeout, like PEP 475.  ENODATA: woken
            # without a CQE, same thing.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._ring.cq_ready()
            ret = self._ring.wait(int(remaining * 1e9))
            if ret >= 0:
                return ret

    def process_events(self, events: int) -> None:
        if not events:
            return
        if self._reschedule is reschedule:
            runner = getattr(_trio_run.GLOBAL_RUN_CONTEXT, "runner", None)
            if runner is not None:
                self._reschedule = runner.reschedule
        ring = self._ring
        n = ring._harvested
        if n:  # what get_events' wait left in the harvest buffer: C
            ring._harvested = 0
            self._core.dispatch(n, self._reschedule)
            if n < _HARVEST_BATCH:
                return
        ops = self._ops
        cqes = ring.harvest()
        while True:
            if len(cqes) == 3:  # the common single completion, without zip
                ud, res, fl = cqes
                op = ops.get(ud) if fl & _CQE_F_MORE else ops.pop(ud, None)
                if op is not None:
                    op.callback(op, res, fl)
                return
            it = iter(cqes)
            for ud, res, fl in zip(it, it, it, strict=True):
                op = ops.get(ud) if fl & _CQE_F_MORE else ops.pop(ud, None)
                if op is not None:
                    op.callback(op, res, fl)
            if len(cqes) < 3 * _ring.HARVEST_BATCH:
                return
            cqes = ring.harvest()

    # ------------------------------------------------------- native ops
    def supports(self, opcode: int) -> bool:
        """Whether this kernel implements ``opcode`` (IORING_REGISTER_PROBE)."""
        return opcode in self.supported

    async def submit(
        self,
        opcode: int,
        fd: int,
        addr: int = 0,
        length: int = 0,
        offset: int = 0,
        op_flags: int = 0,
        *,
        keep: object = None,
        buf_index: int = 0,
        file_index: int = 0,
        closing_fd: int | None = None,
        fd2: int = -1,
        ioprio: int = 0,
        sqe_flags: int = 0,
    ) -> int:
        """Run one kernel operation to completion; return its CQE result.

        The cancellation contract (see _ops.py): a cancel that arrives while
        the SQE is still queued un-queues it and raises Cancelled (nothing
        happened; a cancel already pending when we get here is delivered
        the same way, at the wait, so it never reaches the kernel either);
        one that arrives later sends ASYNC_CANCEL and waits for the op's own
        CQE: -ECANCELED raises Cancelled, any other result is delivered (it
        happened) and Cancelled surfaces at the next checkpoint.  A negative
        result other than that raises OSError.  ``fd2`` names a second file
        whose ``notify_closing`` cancels the op too.  ``keep`` is referenced
        until the final CQE, whatever happens to the task.  Under a finite
        deadline on trio's real clock the SQE is linked to a LINK_TIMEOUT so
        the kernel enforces it too.  ``notify_closing`` of ``closing_fd``
        (default: ``fd``, when it is a real fd) cancels the op with
        ClosedResourceError; pass -1 for ops whose fd field is not a file
        (IORING_OP_SOCKET puts the address family there).
        """
        watched = fd if closing_fd is None else closing_fd
        op = self._new_native(opcode, fd, keep, watched)
        if fd2 >= 0 and fd2 != op.watched:  # a second file (splice/tee source)
            self._track(fd2, op)
            op.watched2 = fd2
        deadline = self._kernel_deadline(op.task)
        if deadline == _INF:  # the common case: one SQE, no linked timeout
            pos = _tu_prep(
                self._ringp, opcode, sqe_flags, fd, addr, length, offset,
                op_flags, op.ud, buf_index, file_index, ioprio,
            )  # fmt: skip
            op.position = pos if pos >= 0 else self._ring.prep(
                opcode, fd, addr, length, offset, op_flags, op.ud, sqe_flags,
                buf_index, file_index, ioprio,
            )  # fmt: skip
        else:
            op.args = (addr, length, offset, op_flags, buf_index, file_index, ioprio,
                       sqe_flags)  # fmt: skip
            self._prep_native(op, deadline)
        result: int = await park(op)
        return result

    async def submit_rw(
        self,
        opcode: int,
        fd: int,
        buf: Any,
        length: int,
        offset: int,
        op_flags: int = 0,
    ) -> int:
        """:meth:`submit` for the common buffer operation, made lean.

        READ, WRITE, RECV, SEND...: ``buf`` is a cffi ``char[]`` or
        ``ffi.from_buffer`` view (kept alive until the final CQE) holding
        at least ``length`` bytes; no SQE flags, buffer group, file index or
        ioprio.  Same contract as :meth:`submit`.  The op is made, queued
        and parked on in C (``trio_uring._speedups.Core.start_rw``).
        """
        result: int = await self._core.start_rw(
            opcode, fd, buf, _addr(buf), length, offset, op_flags
        )
        return result

    def _new_native(
        self, opcode: int, fd: int, keep: object, watched: int
    ) -> _NativeOp:
        """A native op for the current task, in the table and tracked by fd."""
        ud = self._new_ud()
        # ``started`` (the in-flight table's age) is when this loop
        # iteration's wait returned: no clock read per op
        op = self._ops[ud] = _NativeOp(
            ud, opcode, fd, _current_task(), self, keep, self._core.now, watched
        )
        if watched >= 0:
            self._track(watched, op)
        return op

    def _track(self, fd: int, op: Op) -> None:
        """Index ``op`` under ``fd`` for notify_closing."""
        ops_of_fd = self._fd_ops.get(fd)
        if ops_of_fd is None:
            ops_of_fd = self._fd_ops[fd] = set()
        ops_of_fd.add(op)

    def _abort_native(self, op: Op, raise_cancel: Any) -> Abort:
        if op.parked or self._unqueue(op):
            self._finish(op)
            op.task = None
            return Abort.SUCCEEDED
        op.raise_cancel = raise_cancel
        self._cancel_in_kernel(op)
        return Abort.FAILED

    # -- lean path for trio's own sockets (trio_uring._socket) -----------------
    # ``submit`` is general (closing_fd, fd2, file_index, ioprio...); a busy
    # socket runs one recv and one send per message, so trio's sockets take
    # this trimmed copy of it: no keyword parsing, the fd is always the one
    # notify_closing watches, and with ``select`` the data is copied out of
    # the provided buffer ring by the completion callback itself, so the
    # buffer is back in the ring before any task runs (a waiting recv holds
    # no buffer; a finished one holds it for no longer than the CQE batch).
    async def submit_socket(
        self,
        opcode: int,
        fd: int,
        addr: int,
        length: int,
        offset: int,
        op_flags: int,
        keep: object,
        reading: bool,
        select: Callable[[int, int], bytes] | None = None,
        group: int = 0,
    ) -> Any:
        """One socket op with ``submit``'s exact contract; returns the CQE
        result, or with ``select`` (IOSQE_BUFFER_SELECT from buffer group
        ``group``) the bytes ``select(buffer_id, result)`` copied out.

        Like ``wait_readable``/``wait_writable``, one task at a time may
        wait in each direction of a socket (``reading``): a second one gets
        BusyResourceError (trio's SocketStream relies on that).
        """
        busy = self._socket_readers if reading else self._socket_writers
        waiters = self._waiters.get(fd)
        if fd in busy or (
            waiters is not None
            and (waiters.read if reading else waiters.write) is not None
        ):
            raise trio.BusyResourceError(
                "another task is already reading / writing this fd"
            )
        task = current_task()
        ud = self._new_ud()
        op = self._ops[ud] = _SocketOp(ud, opcode, fd, task)
        # Every object made here lives as long as the op: with 10,000 idle
        # connections each waiting in recv that is 10,000 of each, so the
        # op gets only what it needs (no args tuple unless a linked timeout
        # may need a resubmission, one shared callback, and the op itself
        # is the abort function rather than a closure).
        if keep is not None:
            op.keep = keep
        # op.started (the in-flight table's age): when the loop's last wait
        # returned, one float shared by every op begun since
        op.started = self._core.now
        # Not in _fd_ops: the busy table (one op per fd and direction) is
        # where notify_closing finds it, which saves a set per operation.
        op.callback = self._socket_done_cb
        op.busy = busy
        op.manager = self
        if select is None:
            sqe_flags = 0
        else:
            op.select = select
            addr = offset = 0
            sqe_flags = _ring.IOSQE_BUFFER_SELECT
        deadline = self._kernel_deadline(task)
        if deadline != _INF:
            op.args = (addr, length, offset, op_flags, group, 0, 0, sqe_flags)
            self._prep_native(op, deadline)
        else:
            pos = _tu_prep(
                self._ringp, opcode, sqe_flags, fd, addr, length, offset,
                op_flags, ud, group, 0, 0,
            )  # fmt: skip
            op.position = pos if pos >= 0 else self._ring.prep(
                opcode, fd, addr, length, offset, op_flags, ud, sqe_flags, group,
                0, 0,
            )  # fmt: skip
        busy[fd] = op
        try:
            res: int = await park(op)
        finally:
            if busy.get(fd) is op:
                del busy[fd]
        return res if select is None else op.data

    def _socket_abort(self, op: Any, raise_cancel: Any) -> Abort:
        if op.parked or self._unqueue(op):
            op.task = None
            busy = op.busy
            if busy.get(op.fd) is op:
                del busy[op.fd]
            return Abort.SUCCEEDED
        op.raise_cancel = raise_cancel
        self._cancel_in_kernel(op)
        return Abort.FAILED

    def _socket_done(self, op: Any, res: int, flags: int) -> None:
        if flags & _CQE_F_BUFFER:
            # The buffer goes back to the ring whatever became of the task.
            op.data = op.select(flags >> _CQE_BUFFER_SHIFT, res)
        task = op.task
        if res >= 0 and task is not None:
            # _native_done's common case: it happened, deliver it
            op.position = -1
            op.link_position = -1
            op.task = None
            busy = op.busy
            if busy.get(op.fd) is op:
                del busy[op.fd]
            self._reschedule(task, res if _RAW else outcome.Value(res))
            return
        self._native_done(op, res, flags)
        if op.task is None:
            # Woken (or abandoned): the socket is free for the next waiter
            # now, before this task runs again -- as under epoll, where a
            # woken reader only holds the fd until its wait returns.
            busy = op.busy
            if busy.get(op.fd) is op:
                del busy[op.fd]

    def submit_multishot(
        self,
        opcode: int,
        fd: int,
        addr: int = 0,
        length: int = 0,
        offset: int = 0,
        op_flags: int = 0,
        *,
        callback: Callable[[Op, int, int], None],
        on_close: Callable[[], None] | None = None,
        keep: object = None,
        buf_index: int = 0,
        ioprio: int = 0,
        sqe_flags: int = 0,
    ) -> Op:
        """Queue a multishot operation; ``callback`` gets every CQE.

        The op stays in the table (its ``user_data`` reserved) until a CQE
        without IORING_CQE_F_MORE; ``keep`` lives as long.  No task waits on
        it and no deadline applies (waiting for its results is the caller's
        business).  ``notify_closing(fd)`` marks it ``closed``, calls
        ``on_close`` and cancels it.  Cancel it with :meth:`cancel_op`.
        """
        ud = self._new_ud()
        op = self._ops[ud] = Op(ud, opcode, fd, None)
        op.callback = callback
        op.on_close = on_close
        op.keep = keep
        op.started = time.monotonic()
        if fd >= 0:
            self._track(fd, op)
            op.watched = fd
        # no deadline: the caller's wait has it
        op.position = self._ring.prep(
            opcode, fd, addr, length, offset, op_flags, ud, sqe_flags, buf_index,
            0, ioprio,
        )  # fmt: skip
        return op

    async def submit_chain(
        self, steps: list[tuple[int, ...]], keep: object = None, *, hard: bool = False
    ) -> list[int]:
        """Submit linked SQEs in one go; return every step's CQE result.

        Each step is ``(opcode, fd, addr, length, offset, op_flags,
        sqe_flags, file_index)``.  Steps are linked with IOSQE_IO_LINK (or
        IO_HARDLINK with ``hard``: later steps run even if one fails; a step
        whose sqe_flags already carry a link flag keeps its own): the
        kernel starts step n+1 only after step n completed; with IO_LINK a
        failed step makes every later one complete with -ECANCELED.

        Cancellation, as for one op: before submission the whole chain is
        un-queued (Cancelled, nothing happened); in flight every unfinished
        step gets ASYNC_CANCEL and the CQEs decide -- if every step says
        -ECANCELED, Cancelled is raised; if any step happened, the results
        are returned (Cancelled comes at the next checkpoint).  No linked
        timeout: a deadline cancels the chain like a cancel scope does.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not steps:
            return []
        task = current_task()
        ring = self._ring
        if ring.sq_free() < len(steps):
            ring.flush()  # the chain must sit in one submission
        link = _ring.IOSQE_IO_HARDLINK if hard else _ring.IOSQE_IO_LINK
        results: list[int | None] = [None] * len(steps)
        ops: list[Op] = []
        state: dict[str, Any] = {"left": len(steps), "raise_cancel": None}

        def done(op: Op, res: int, flags: int) -> None:
            results[op.position_in_chain] = res
            self._finish(op)
            state["left"] -= 1
            if state["left"] or op.task is None:
                return
            owner = op.task
            for o in ops:
                o.task = None
            raise_cancel = state["raise_cancel"]
            final = [r if r is not None else -_errno.ECANCELED for r in results]
            if raise_cancel is not None and all(r == -_errno.ECANCELED for r in final):
                reschedule(owner, outcome.capture(raise_cancel))
            else:
                reschedule(owner, outcome.Value(final))

        for i, (
            opcode,
            fd,
            addr,
            length,
            offset,
            op_flags,
            sqe_flags,
            file_index,
        ) in enumerate(steps):
            ud = self._new_ud()
            op = self._ops[ud] = Op(ud, opcode, fd, task)
            op.callback = done
            op.keep = keep
            op.started = time.monotonic()
            op.position_in_chain = i
            if fd >= 0 and not sqe_flags & _IOSQE_FIXED_FILE:
                self._track(fd, op)
                op.watched = fd
            if i < len(steps) - 1 and not sqe_flags & _ANY_LINK:
                sqe_flags |= link  # a step may choose its own link kind
            flags = sqe_flags if i < len(steps) - 1 else sqe_flags & ~_ANY_LINK
            op.position = ring.prep(
                opcode, fd, addr, length, offset, op_flags, ud, flags, 0, file_index
            )
            ops.append(op)

        def abort(raise_cancel: Any) -> Abort:
            if ring.is_queued(ops[0].position, ops[0].ud):
                for o in ops:  # the whole chain is still ours: un-queue it
                    ring.unprep(o.position, o.ud)
                    o.position = -1
                    o.task = None
                    self._finish(o)
                return Abort.SUCCEEDED
            state["raise_cancel"] = raise_cancel
            for o in ops:
                if results[o.position_in_chain] is None:
                    o.position = -1
                    self._cancel_in_kernel(o)
            return Abort.FAILED

        final: list[int] = await wait_task_rescheduled(abort)
        return final

    def cancel_op(self, op: Op) -> None:
        """Stop a (multishot) op: un-queue it or ASYNC_CANCEL it."""
        self._cancel_in_kernel(op)

    def finish_op(self, op: Op) -> None:
        """Forget a finished op's fd registration (its final CQE came)."""
        self._finish(op)

    def _kernel_deadline(self, task: Task) -> float:
        """The trio deadline a linked timeout should enforce, or inf.

        inf when none applies: no finite deadline, or a clock that is not
        trio's real one (virtual time: trio alone keeps the deadlines).
        What ``task._cancel_status.effective_deadline()`` computes, without
        its recursion: each active, uncancelled scope's deadline is its
        ``_registered_deadline`` (trio keeps that in its deadline heap), up
        to the first shield.  Pinned by tests against trio's own answer.
        """
        clock = self._real_clock
        if clock is None:
            clock = trio.lowlevel.current_clock()
            if type(clock) is not _SystemClock:
                clock = False
            self._real_clock = clock
            self._clock_offset = clock.offset if clock is not False else 0.0
            self._trio_deadlines = self._core.deadlines = (
                _trio_run.GLOBAL_RUN_CONTEXT.runner.deadlines
                if clock is not False
                else _NoDeadlines()
            )
        if not self._trio_deadlines._active:
            # No deadline anywhere in the run (trio counts them).  A cancel
            # already pending is delivered at the wait, which un-queues the
            # SQE: it never reaches the kernel either way.
            return _INF
        status: Any = task._cancel_status
        if status is None:
            return _INF
        if status.effectively_cancelled:
            return -_INF
        deadline = _INF
        while status is not None:
            scope = status._scope
            if scope._registered_deadline < deadline:
                deadline = scope._registered_deadline
            if scope._shield:
                break
            status = status._parent
        return deadline

    def _prep_native(self, op: Op, deadline: float) -> None:
        """Queue ``op`` from ``op.args``, linked to a LINK_TIMEOUT that the
        kernel fires ``_LINK_TIMEOUT_GRACE`` after trio deadline ``deadline``.

        The timeout is absolute on CLOCK_MONOTONIC, the clock under trio's
        SystemClock (``perf_counter() + offset``).  While trio's loop keeps
        up, trio's own deadline cancels the op (ASYNC_CANCEL) and the
        kernel's timer goes with it, unfired.  A kernel timer that does fire
        is expensive here (a timer interrupt and a wake-up of the loop; in a
        VM a VM exit): one at the deadline itself, racing trio's cancel,
        made each timeout cost 1.7x (measured, bench/timeouts.py), and so
        did a 1 or 10 ms grace once 1,000 tasks put trio's deadline handling
        that far behind.  With the grace, the kernel stops the op by itself
        only when the loop is late by more than that (busy or blocked), and
        trio then finds it ``parked``: no ASYNC_CANCEL.
        """
        addr, length, offset, op_flags, buf_index, file_index, ioprio, flags = op.args
        op.deadline = deadline
        ring = self._ring
        try:
            if ring.sq_free() < 2:
                ring.flush()  # the pair must sit in one submission
            op.position = ring.prep(
                op.opcode, op.fd, addr, length, offset, op_flags, op.ud,
                flags | _ring.IOSQE_IO_LINK, buf_index, file_index, ioprio,
            )  # fmt: skip
            # CLOCK_MONOTONIC ns, rounded up, plus the grace (-inf: already
            # cancelled, the abort un-queues it)
            at = deadline - self._clock_offset + _LINK_TIMEOUT_GRACE
            at_ns = -int(-at * 1e9) if at > 0 else 0
            op.link_position = ring.prep_timeout(
                _ring.OP_LINK_TIMEOUT, at_ns, _UD_LINK,
                timeout_flags=_ring.TIMEOUT_ABS,
            )  # fmt: skip
        except BaseException:
            # whoever started it gets this error: nothing may wake it later,
            # nor run its SQE on memory it no longer holds
            self._abandon(op)
            raise

    def _abandon(self, op: Op) -> None:
        """A native op whose start failed part-way: nobody waits for it.
        An SQE already queued becomes a NOP (or, if the kernel has it, is
        cancelled) and the op stays in the table, holding its memory, until
        its final CQE; with none queued it leaves the table now."""
        op.task = None
        if op.position < 0:
            if self._ops.get(op.ud) is op:
                del self._ops[op.ud]
            self._finish(op)
        elif not self._unqueue(op):
            self._cancel_in_kernel(op)

    def _unqueue(self, op: Op) -> bool:
        """Un-queue a native op (and its linked timeout) not yet submitted."""
        if op.position < 0 or not self._ring.unprep(op.position, op.ud):
            return False
        op.position = -1
        op.keep = None  # a NOP touches no memory
        if op.link_position >= 0:
            self._ring.unprep(op.link_position, _UD_LINK)
            op.link_position = -1
        return True

    def _finish(self, op: Op) -> None:
        """Forget ``op`` in the per-fd index (for notify_closing)."""
        ops_of_fd = self._fd_ops.get(op.watched)
        if ops_of_fd is not None:
            ops_of_fd.discard(op)
        if op.watched2 >= 0:
            ops_of_fd = self._fd_ops.get(op.watched2)
            if ops_of_fd is not None:
                ops_of_fd.discard(op)

    def _native_done(self, op: Op, res: int, flags: int) -> None:
        op.position = -1
        task = op.task
        if res >= 0 and task is not None and op.raise_cancel is None:
            # the common case: it happened, somebody waits for it
            op.link_position = -1
            op.task = None
            self._finish(op)
            self._reschedule(task, res if _RAW else outcome.Value(res))
            return
        op.link_position = -1
        if res in _INTERRUPTED and (op.cancel_sent or op.closed or op.deadline != _INF):
            # Work the kernel ran in an io-wq worker is stopped by a signal
            # when cancelled: it reports a restart code, not -ECANCELED.
            res = -_errno.ECANCELED
        if task is None:  # un-queued or abandoned: nobody waits
            self._finish(op)
            return
        if res == -_errno.EBADF and op.closed:
            # an op the kernel had not started yet (io-wq looks the fd up
            # when it starts) found its fd already closed
            res = -_errno.ECANCELED
        if res == -_errno.ECANCELED:
            if op.closed:
                self._finish(op)
                op.task = None
                reschedule(task, outcome.Error(_closed_error()))
                return
            raise_cancel = op.raise_cancel
            if raise_cancel is not None:
                self._finish(op)
                op.task = None
                reschedule(task, outcome.capture(raise_cancel))
                return
            if not op.cancel_sent and op.deadline != _INF:
                # The kernel's linked timeout fired.  If trio's clock agrees
                # the deadline passed, trio aborts the task in this very loop
                # iteration (Abort.SUCCEEDED: nothing happened); otherwise
                # (the deadline moved) go again.
                deadline = self._kernel_deadline(task)
                if deadline <= trio.current_time():
                    op.parked = True
                    return
                ud = self._new_ud()
                op.ud = ud
                self._ops[ud] = op
                if deadline == _INF:
                    op.deadline = _INF
                    a = op.args
                    op.position = self._ring.prep(
                        op.opcode, op.fd, a[0], a[1], a[2], a[3], ud, a[7], a[4],
                        a[5], a[6],
                    )  # fmt: skip
                else:
                    self._prep_native(op, deadline)
                return
        self._finish(op)
        op.task = None
        if res >= 0:
            self._reschedule(task, res if _RAW else outcome.Value(res))
        else:
            reschedule(task, outcome.Error(OSError(-res, os.strerror(-res))))

    # -------------------------------------------------------- readiness API
    def _check_fd(self, fd: int) -> None:
        # Raise exactly what epoll would for this fd (ValueError for negative
        # fds, EBADF for closed ones, EPERM for regular files...).
        ep = self._private_epoll()
        if fd in self._assisted:
            return
        ep.register(fd, 0)
        ep.unregister(fd)
        self._checked_fds.add(fd)

    def _arm_wait(self, fd: FdLike, reading: bool) -> Callable[[Any], Abort]:
        """Start waiting for ``fd``: queue the POLL_ADD, return the abort fn.

        A plain function, so wait_readable/wait_writable each add only the
        one await of wait_task_rescheduled to the hot path.
        """
        if type(fd) is not int:
            fd = fd.fileno()  # type: ignore[union-attr]
        waiters = self._waiters.get(fd)
        if waiters is None:
            if fd not in self._checked_fds:
                self._check_fd(fd)
            waiters = self._waiters[fd] = _FdWaiters()
        if (waiters.read if reading else waiters.write) is not None or fd in (
            self._socket_readers if reading else self._socket_writers
        ):
            # (a native recv/send on a trio socket counts as a wait too, as
            # its readiness wait would on epoll)
            raise trio.BusyResourceError(
                "another task is already reading / writing this fd"
            )
        ud = self._new_ud()
        op = self._ops[ud] = Op(ud, _OP_POLL_ADD, fd, current_task())
        op.callback = self._poll_done_cb
        op.started = self._core.now
        if reading:
            op.reading = True
            waiters.read = op
            pos = _prep_poll(self._ringp, fd, _POLLIN, ud)
        else:
            waiters.write = op
            pos = _prep_poll(self._ringp, fd, _POLLOUT, ud)
        op.position = pos if pos >= 0 else self._ring.prep_poll(
            fd, _POLLIN if reading else _POLLOUT, ud
        )  # fmt: skip
        abort = waiters.abort_read if reading else waiters.abort_write
        if abort is None:
            abort = self._make_wait_abort(waiters, reading)
        return abort

    def _make_wait_abort(
        self, waiters: _FdWaiters, reading: bool
    ) -> Callable[[Any], Abort]:
        """The abort function of every ``reading`` wait on one fd."""

        def abort(_: Any) -> Abort:
            op = waiters.read if reading else waiters.write
            if op is not None:
                self._detach(op)
                self._cancel_in_kernel(op)
            return Abort.SUCCEEDED

        if reading:
            waiters.abort_read = abort
        else:
            waiters.abort_write = abort
        return abort

    def _detach(self, op: Op) -> None:
        """Forget ``op`` as its fd's waiter; it no longer wakes anybody.

        The fd's _FdWaiters entry stays (it is reused by the next wait and
        dropped by notify_closing), which saves an allocation per wait.
        """
        op.task = None
        waiters = self._waiters.get(op.fd)
        if waiters is not None:
            if waiters.read is op:
                waiters.read = None
            elif waiters.write is op:
                waiters.write = None

    def _private_epoll(self) -> select.epoll:
        if self._epoll is None:
            self._epoll = select.epoll()
        return self._epoll

    def _assist(self, op: Op) -> None:
        ep = self._private_epoll()
        mask = (select.EPOLLIN if op.reading else select.EPOLLOUT) | select.EPOLLONESHOT
        try:
            ep.register(op.fd, mask)
        except FileExistsError:
            ep.modify(op.fd, mask)
        self._assisted[op.fd] = op
        if self._assist_op is None:
            self._arm_assist(ep.fileno())

    def _arm_assist(self, epfd: int) -> None:
        # One POLL_ADD on the private epoll fd stands for all assisted waiters.
        aop = self._assist_op = self._new_op(_ring.OP_POLL_ADD, epfd, None)
        aop.callback = self._assist_done
        aop.position = self._ring.prep(
            _ring.OP_POLL_ADD, epfd, op_flags=_ring.POLLIN, user_data=aop.ud
        )

    def _unassist(self, fd: int) -> None:
        del self._assisted[fd]
        if self._epoll is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)

    def _assist_done(self, aop: Op, res: int, flags: int) -> None:
        self._assist_op = None
        if self._epoll is None or self._closed:
            return
        for fd, _ in self._epoll.poll(0):
            op = self._assisted.get(fd)
            if op is None:
                continue
            self._unassist(fd)
            task = op.task
            if task is not None:
                self._detach(op)
                reschedule(task)
        if self._assisted:
            self._arm_assist(self._epoll.fileno())

    def _poll_done(self, op: Op, res: int, flags: int) -> None:
        task = op.task
        if task is None:  # cancelled or woken by notify_closing already
            return
        if res >= 0:
            if not res & (_POLL_WAKES_READER if op.reading else _POLL_WAKES_WRITER):
                # Only POLLRDHUP: io_uring always reports it, epoll would not
                # wake this waiter for it.  Re-arming would report it again at
                # once (a busy loop while the peer has half-closed), so this
                # waiter waits in our private epoll instead.
                self._assist(op)
                return
            op.task = None  # _detach, inlined on the hot path
            waiters = self._waiters.get(op.fd)
            if waiters is not None:
                if waiters.read is op:
                    waiters.read = None
                elif waiters.write is op:
                    waiters.write = None
            self._reschedule(task, None if _RAW else outcome.Value(None))
            return
        self._detach(op)
        if res == -_errno.EBADF:
            self._checked_fds.discard(op.fd)
        reschedule(task, outcome.Error(OSError(-res, os.strerror(-res))))

    async def wait_readable(self, fd: FdLike) -> None:
        """Block until the kernel reports that ``fd`` is readable.

        Same contract as :func:`trio.lowlevel.wait_readable`.
        """
        await park(self._arm_wait(fd, True))

    async def wait_writable(self, fd: FdLike) -> None:
        """Block until the kernel reports that ``fd`` is writable.

        Same contract as :func:`trio.lowlevel.wait_writable`.
        """
        await park(self._arm_wait(fd, False))

    def notify_closing(self, fd: FdLike) -> None:
        """Wake ``fd``'s waiters with ClosedResourceError; cancel their kernel ops."""
        if not isinstance(fd, int):
            fd = fd.fileno()
        self._checked_fds.discard(fd)
        for native in self._fd_ops.pop(fd, ()):
            if native.on_close is not None:  # multishot: its owner is told
                native.closed = True
                native.on_close()
                self._cancel_in_kernel(native)
                continue
            self._close_native(native)
        for busy in (self._socket_readers, self._socket_writers):
            # submit_socket ops are found here, not in _fd_ops
            waiting = busy.pop(fd, None)
            if waiting is not None:
                self._close_native(waiting)
        waiters = self._waiters.pop(fd, None)
        if waiters is None:
            return
        # its abort functions close over it: break that cycle now, rather
        # than leave it to the cyclic GC once per closed fd
        waiters.abort_read = waiters.abort_write = None
        exc = _closed_error()
        try:
            me: Task | None = current_task()
        except RuntimeError:
            me = None
        raise_at_end = False
        for op in (waiters.read, waiters.write):
            if op is None:
                continue
            task = op.task
            op.task = None
            self._cancel_in_kernel(op)
            if task is me:
                raise_at_end = True
            elif task is not None:
                reschedule(task, outcome.Error(copy.copy(exc)))
        if raise_at_end:
            raise exc

    def _close_native(self, op: Op) -> None:
        """notify_closing for one native op a task waits on: never submitted
        (or parked by its linked timeout): ClosedResourceError now; in the
        kernel: cancel it, and its CQE decides (see _native_done)."""
        owner = op.task
        if owner is None:
            return
        if op.parked or self._unqueue(op):
            op.task = None
            reschedule(owner, outcome.Error(_closed_error()))
        else:
            op.closed = True
            self._cancel_in_kernel(op)

    def _count_in_flight(self) -> int:
        internal = self._internal_ops()
        return sum(
            1
            for op in list(self._ops.values())
            if op.opcode != _ring.OP_LINK_TIMEOUT and op not in internal
        )

    def _internal_ops(self) -> set[Op]:
        """Ops the manager runs for itself (wake-up read, epoll assist)."""
        ops = {self._wake_op}
        if self._assist_op is not None:
            ops.add(self._assist_op)
        return ops

    def inflight(self) -> list[_inspect.InflightOp]:
        """Every kernel operation of this ring that has not finished."""
        return _inspect.snapshot(self)

    # ------------------------------------------------------------ lifecycle
    def statistics(self) -> UringStatistics:
        reading = writing = 0
        for w in self._waiters.values():
            reading += w.read is not None
            writing += w.write is not None
        ring = self._ring
        return UringStatistics(
            tasks_waiting_read=reading,
            tasks_waiting_write=writing,
            ops_in_flight=self._count_in_flight(),
            submitted=ring.submitted_counts(),
            enters=ring.enters,
            setup_flags=tuple(ring.setup_flag_names),
            sq_entries=ring.sq_entries,
            cq_entries=ring.cq_entries,
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _inspect.LIVE_MANAGERS.discard(self)
        ring = self._ring
        try:
            for op in list(self._ops.values()):
                op.task = None
                self._cancel_in_kernel(op)
            deadline = time.monotonic() + _CLOSE_DRAIN_SECONDS
            while self._ops:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                ring.enter(1, int(min(remaining, 0.1) * 1e9))
                while True:
                    cqes = ring.harvest()
                    if not cqes:
                        break
                    for i in range(0, len(cqes), 3):
                        if not cqes[i + 2] & _CQE_F_MORE:
                            self._ops.pop(cqes[i], None)
        finally:
            if self._ops:
                # The kernel did not confirm every cancellation in time: keep
                # the memory those ops may still touch alive for good rather
                # than risk the kernel writing into freed memory.
                _LEAKED.append((self._wake_buf, list(self._ops.values())))
            self._core.close()  # before the ring's memory goes
            ring.close()
            for registered in self._keep_until_closed:
                registered.free()
            self._keep_until_closed.clear()
            os.close(self._wake_fd)
            if self._epoll is not None:
                self._epoll.close()
            self._assisted.clear()
            self._waiters.clear()
            self._ops.clear()
