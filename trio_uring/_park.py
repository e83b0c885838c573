"""Parking a task until its operation completes, in one frame.

Every native operation and every readiness wait parks its task exactly once
(``wait_task_rescheduled``) and is woken by a completion callback.  trio's
``wait_task_rescheduled`` is an ``async def`` that awaits a generator-based
coroutine yielding ``WaitTaskRescheduled(abort_func)`` to trio's scheduler:
two frames to create on the way in and to resume on the way out.  :func:`park`
yields the very same message from a single generator frame, so it keeps the
contract exactly (trio's run loop recognises the message by its type, records
the abort function, counts the cancel point) at a frame less per wait.

The value a task is woken with passes through trio untouched: trio stores
``reschedule``'s second argument and sends it into the parked coroutine.
trio itself always wakes a task with an ``outcome`` (``Value(None)`` by
default, ``Error(Cancelled)`` after an abort), which :func:`park` unwraps as
trio's function does.  The IO manager's completion callbacks, the hot path
of every operation, wake the task with the plain result instead -- an
``int`` (a CQE's result) or ``None`` (a readiness wait) -- and :func:`park`
returns it as it is: no ``outcome.Value`` to build and unwrap per
operation.  :data:`RAW` says whether they may.

If a future trio moves the message class, :func:`park` is trio's own
function: slower by a frame, never wrong (and :data:`RAW` is False, so every
task is woken with an outcome, as that function needs).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Generator
from typing import Any, Final

import outcome
import trio

from . import _speedups

try:
    from trio._core._traps import WaitTaskRescheduled
except ImportError:  # pragma: no cover - a trio that reorganised its traps
    WaitTaskRescheduled = None  # type: ignore[assignment,misc]

__all__ = ["RAW", "park"]

AbortFn = Callable[[Callable[[], Any]], trio.lowlevel.Abort]


@types.coroutine
def _park(abort_func: AbortFn) -> Generator[Any, Any, Any]:
    """``await trio.lowlevel.wait_task_rescheduled(abort_func)``, one frame;
    a plain ``int`` or ``None`` it is woken with is the result itself."""
    woken = yield WaitTaskRescheduled(abort_func)
    if woken is None or type(woken) is int:
        return woken
    try:
        return woken.unwrap()
    finally:
        # An error's traceback holds this frame: without the outcome in it,
        # no reference cycle (exception -> traceback -> frame -> outcome ->
        # exception) is left per cancellation for the cyclic GC to find.
        del woken


#: Whether a task parked by :func:`park` may be woken with a plain result.
RAW: Final = WaitTaskRescheduled is not None

park: Callable[[AbortFn], Any] = _park if RAW else trio.lowlevel.wait_task_rescheduled

# The C native ops (trio_uring._speedups.OpCore) park the same way.
_speedups.configure(
    WaitTaskRescheduled if RAW else None,
    trio.lowlevel.wait_task_rescheduled,
    outcome.Value,
)
