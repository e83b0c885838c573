"""Choosing the IO manager: the hook into trio and the install state.

trio builds its IO manager in ``trio._core._run.setup_runner`` by calling the
module global ``TheIOManager()``.  That global is private, so this module is
the only place that touches it, checks at import that trio still uses it (and
fails loudly if not), and keeps it pointing at the stock epoll manager
whenever trio-uring is not in use:

* ``install()`` points it at :class:`UringIOManager` until ``uninstall()``.
* ``run()``/``start_guest_run()`` without ``install()`` point it at
  :class:`UringIOManager` for just the one ``setup_runner`` call, through a
  per-thread request, so a plain ``trio.run`` in another thread at the same
  moment still gets epoll (``UringIOManager.__new__`` hands that thread an
  epoll manager).  The global goes back as soon as the request is claimed.
"""

from __future__ import annotations

import sys
import threading
import warnings
from typing import Any

import trio._core._run as _trio_run

from ._ring import UringUnavailableError, probe_available

if (
    not hasattr(_trio_run, "TheIOManager")
    or "TheIOManager"
    not in getattr(
        getattr(_trio_run, "setup_runner", None), "__code__", compile("", "", "exec")
    ).co_names
):  # pragma: no cover - depends on the trio version
    raise ImportError(
        "trio-uring cannot hook this trio version: trio._core._run.setup_runner "
        "no longer builds its IO manager from TheIOManager. Please report this "
        "with your trio version."
    )

ORIGINAL: Any = _trio_run.TheIOManager


class UringFallbackWarning(RuntimeWarning):
    """io_uring is unavailable and ``fallback="epoll"`` was given: running on epoll."""


_lock = threading.Lock()
_local = threading.local()
_installed = False
_pending_requests = 0
_probe_done = False
_probe_error: UringUnavailableError | None = None
_warned = False


def probe() -> UringUnavailableError | None:
    """Whether this process can create rings (checked once, then cached)."""
    global _probe_done, _probe_error
    if not _probe_done:
        _probe_error = probe_available()
        _probe_done = True
    return _probe_error


def check_fallback(fallback: str | None) -> bool:
    """True if io_uring can be used; False if we fall back to epoll (warned).

    Raises UringUnavailableError when io_uring is unavailable and
    ``fallback`` is None.
    """
    if fallback not in (None, "epoll"):
        raise ValueError(f'fallback must be None or "epoll", not {fallback!r}')
    err = probe()
    if err is None:
        return True
    if fallback is None:
        raise err
    global _warned
    with _lock:
        warn = not _warned
        _warned = True
    if warn:
        warnings.warn(
            UringFallbackWarning(f"{err} Running on epoll instead."), stacklevel=3
        )
    return False


def _manager_class() -> Any:
    from ._manager import UringIOManager

    return UringIOManager


def _repoint() -> None:
    # Called with _lock held.
    target = _manager_class() if (_installed or _pending_requests) else ORIGINAL
    setattr(_trio_run, "TheIOManager", target)  # noqa: B010 - private hook


def set_installed(value: bool) -> None:
    global _installed
    with _lock:
        _installed = value
        _repoint()


def is_installed() -> bool:
    return _installed


def request(guest: bool) -> None:
    """Ask for io_uring in this thread's next setup_runner."""
    global _pending_requests
    with _lock:
        if getattr(_local, "request", None) is None:
            _pending_requests += 1
        _local.request = "guest" if guest else "run"
        _repoint()


def claim() -> str | None:
    """Called by the manager's constructor: "run", "guest" or None (not ours).

    Clears this thread's request, if any.
    """
    global _pending_requests
    req: str | None = getattr(_local, "request", None)
    if req is not None:
        with _lock:
            _local.request = None
            _pending_requests -= 1
            _repoint()
        return req
    return "installed" if _installed else None


def withdraw() -> None:
    """Drop this thread's request if setup_runner never claimed it."""
    if getattr(_local, "request", None) is not None:
        claim()


_GUEST_CODE = getattr(_trio_run, "start_guest_run", None)


def called_from_start_guest_run() -> bool:
    """True when trio's start_guest_run is on the stack (it built this manager)."""
    code = getattr(_GUEST_CODE, "__code__", None)
    frame = sys._getframe(1)
    for _ in range(8):
        if frame is None:
            return False
        if frame.f_code is code:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False
