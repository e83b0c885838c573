"""Parking a task until its operation completes, in one frame.

Every native operation and every readiness wait parks its task exactly once
(``wait_task_rescheduled``) and is woken by a completion callback.  trio's
``wait_task_rescheduled`` is an ``async def`` that awaits a generator-based
coroutine yielding ``WaitTaskRescheduled(abort_func)`` to trio's scheduler:
two frames to create on the way in and to resume on the way out.  :func:`park`
yields the very same message from a single generator frame, so it keeps the
contract exactly (trio's run loop recognises the message by its type, records
the abort function, counts the cancel point) at a frame less per wait.

If a future trio moves the message class, :func:`park` is trio's own
function: slower by a frame, never wrong.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Generator
from typing import Any

import trio

try:
    from trio._core._traps import WaitTaskRescheduled
except ImportError:  # pragma: no cover - a trio that reorganised its traps
    WaitTaskRescheduled = None  # type: ignore[assignment,misc]

__all__ = ["park"]

AbortFn = Callable[[Callable[[], Any]], trio.lowlevel.Abort]


@types.coroutine
def _park(abort_func: AbortFn) -> Generator[Any, Any, Any]:
    """``await trio.lowlevel.wait_task_rescheduled(abort_func)``, one frame."""
    return (yield WaitTaskRescheduled(abort_func)).unwrap()


park: Callable[[AbortFn], Any] = (
    _park if WaitTaskRescheduled is not None else trio.lowlevel.wait_task_rescheduled
)
