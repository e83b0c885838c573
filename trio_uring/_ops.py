"""One kernel operation's lifecycle.

Every SQE we submit is described by one :class:`Op`, kept in the manager's
op table under its ``user_data`` (``ud``) until its final CQE::

    QUEUED --io_uring_enter--> IN_FLIGHT --final CQE--> DONE

* ``position`` is the op's place in the SQ while it is QUEUED (``>= 0``); the
  manager sets it to -1 once the op can no longer be un-queued.  Cancelling a
  QUEUED op turns its SQE into a NOP, so it never reaches the kernel.
* ``keep`` holds every object whose memory the kernel may touch (buffers,
  paths, sockaddrs, timespecs).  It is dropped only with the op, at its final
  CQE, whatever happened to the task that started it.
* ``callback(op, res, flags)`` runs for each CQE of the op; ``task`` is the
  task to wake, or None once nobody waits (cancelled, or woken already).
* ``cancel_sent`` records that an ASYNC_CANCEL for this op went out, so we
  never send two.
* Native operations (recv, read, openat...) also carry ``raise_cancel``
  (trio asked to cancel: a -ECANCELED result becomes Cancelled), ``closed``
  (notify_closing cancelled it: ClosedResourceError), ``parked`` (its linked
  timeout fired before trio's clock reached the deadline or exactly at it:
  the op is out of the kernel and either resubmitted or left for trio's
  deadline to abort), and ``args`` to resubmit it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trio.lowlevel import Task


def _no_callback(op: Op, res: int, flags: int) -> None:
    return None


class Op:
    """One SQE's state.  Rarely-set fields are class-level defaults, so the
    hot path only pays for the four it always needs."""

    # native (kernel-executed) operations only:
    args: tuple[int, ...] = ()  # SQE fields, kept for a resubmission
    raise_cancel: Callable[[], Any] | None = None  # trio cancelled it
    closed = False  # notify_closing cancelled it
    parked = False  # its linked timeout fired; not in the kernel now
    link_position = -1  # SQ position of its LINK_TIMEOUT, while queued
    deadline = float("inf")  # trio deadline its linked timeout enforces
    started = 0.0  # time.monotonic() at submission
    watched = -1  # the fd whose notify_closing cancels it
    watched2 = -1  # a second such fd (splice/tee source)
    position_in_chain = 0  # its index in a linked chain
    on_close: Callable[[], None] | None = None  # multishot owner hook
    # every op:
    position = -1
    cancel_sent = False
    reading = False
    keep: Any = None
    callback: Callable[[Op, int, int], None] = staticmethod(_no_callback)

    def __init__(self, ud: int, opcode: int, fd: int, task: Task | None) -> None:
        self.ud = ud
        self.opcode = opcode
        self.fd = fd
        self.task = task

    def __repr__(self) -> str:
        return f"<Op ud={self.ud} opcode={self.opcode} fd={self.fd} task={self.task!r}>"
