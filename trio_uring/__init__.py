"""trio-uring: run trio (and anyio on trio) on Linux io_uring.

``trio_uring.run(main)`` is ``trio.run(main)`` on io_uring;
``trio_uring.install()`` makes every later ``trio.run`` use io_uring, so
pytest-trio, anyio's trio backend and libraries built on them need no change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import trio

from . import _install, _socket, lowlevel
from ._anyio import register as _register_anyio_backend
from ._install import UringFallbackWarning
from ._manager import UringIOManager, UringStatistics
from ._ring import UringUnavailableError

__all__ = [
    "UringFallbackWarning",
    "UringIOManager",
    "UringStatistics",
    "UringUnavailableError",
    "install",
    "installed",
    "is_available",
    "lowlevel",
    "run",
    "start_guest_run",
    "unavailable_reason",
    "uninstall",
]

__version__ = "0.1.0.dev0"

T = TypeVar("T")


def is_available() -> bool:
    """True if this process can create io_uring instances trio-uring accepts."""
    return _install.probe() is None


def unavailable_reason() -> str | None:
    """Why io_uring cannot be used here (the error message), or None if it can."""
    err = _install.probe()
    return None if err is None else str(err)


def run(
    async_fn: Callable[..., Awaitable[T]],
    *args: object,
    fallback: str | None = None,
    **kwargs: Any,
) -> T:
    """Like :func:`trio.run`, on io_uring.

    Keyword arguments other than ``fallback`` go to :func:`trio.run`.

    :param fallback: None (default) raises :class:`UringUnavailableError`
        before running anything when io_uring cannot be used; ``"epoll"``
        warns once per process (:class:`UringFallbackWarning`) and runs on
        trio's epoll manager instead.
    """
    if not _install.check_fallback(fallback):
        return trio.run(async_fn, *args, **kwargs)
    _socket.hook()
    _install.request(guest=False)
    try:
        return trio.run(async_fn, *args, **kwargs)
    finally:
        _install.withdraw()


def start_guest_run(
    async_fn: Callable[..., Awaitable[T]],
    *args: object,
    fallback: str | None = None,
    **kwargs: Any,
) -> None:
    """Like :func:`trio.lowlevel.start_guest_run`, on io_uring.

    The ring is created without ``SINGLE_ISSUER``/``DEFER_TASKRUN`` because
    guest mode waits for events in a worker thread.  ``fallback`` as for
    :func:`run`.
    """
    if not _install.check_fallback(fallback):
        trio.lowlevel.start_guest_run(async_fn, *args, **kwargs)
        return
    _socket.hook()
    _install.request(guest=True)
    try:
        trio.lowlevel.start_guest_run(async_fn, *args, **kwargs)
    finally:
        _install.withdraw()


def install(*, fallback: str | None = None) -> None:
    """Make every later :func:`trio.run` (in any thread) use io_uring.

    Also covers ``anyio.run(..., backend="trio")``, pytest-trio and anyio's
    pytest plugin.  Runs already going keep their IO manager.  Idempotent.
    ``fallback`` as for :func:`run`: with ``"epoll"`` on a machine without
    io_uring, this warns and leaves trio on epoll.
    """
    if _install.check_fallback(fallback):
        _socket.hook()
        _install.set_installed(True)


def uninstall() -> None:
    """Undo :func:`install`: later :func:`trio.run` calls use epoll again."""
    _install.set_installed(False)


@contextlib.contextmanager
def installed(*, fallback: str | None = None) -> Iterator[None]:
    """``with trio_uring.installed(): ...`` -- :func:`install` for a block.

    Restores the previous state (installed or not) on exit.
    """
    before = _install.is_installed()
    install(fallback=fallback)
    try:
        yield
    finally:
        _install.set_installed(before)


_register_anyio_backend()  # anyio backend "trio_uring" (see _anyio.py)
