"""anyio backend ``"trio_uring"``: anyio's trio backend, run on io_uring.

What users get
--------------

* ``anyio.run(main, backend="trio_uring")`` is ``anyio.run(main,
  backend="trio")`` on :func:`trio_uring.run`.  ``backend_options`` go to
  :func:`trio_uring.run`, so trio's own options (``clock``, ``instruments``,
  ``strict_exception_groups``, ...) pass through, and so does trio-uring's
  ``fallback="epoll"``.
* anyio's pytest plugin accepts ``anyio_backend = "trio_uring"`` and
  ``("trio_uring", {options})``; its test runner is anyio's trio test runner
  with its guest run started on io_uring.
* Inside such a run everything is trio: ``sniffio.current_async_library()``
  says ``"trio"`` (httpx, httpcore and anything else that dispatches on
  sniffio must take their trio path), ``anyio.get_cancelled_exc_class()`` is
  ``trio.Cancelled``, ``anyio.lowlevel.current_token()`` carries anyio's trio
  backend class.  What tells io_uring apart is
  ``trio.lowlevel.current_statistics().io_statistics.backend == "io_uring"``.
* ``anyio.get_all_backends()``/``get_available_backends()`` list anyio's
  built-in backends only, so anyio's ``@pytest.mark.anyio`` default
  parametrization is unchanged; ``"trio_uring"`` is opt-in by name.

Why this shape
--------------

anyio finds a backend by name: ``get_async_backend(name)`` imports the
module ``anyio._backends._<name>`` and takes its ``backend_class`` (the same
in anyio 4.0 through 4.16; 4.0 looks in ``sys.modules`` first, later
versions keep their own cache in front of ``import_module``).  A backend
therefore has to *be* a module of that name.  We do not put a file in
anyio's package, and ``import trio_uring`` must not import anyio (an
optional dependency, and a cost for trio-only programs), so
:func:`register` appends a meta-path finder that answers for exactly that
one name.  The import system only consults it when anyio asks for
``"trio_uring"``, after anyio's own package path found nothing; only then
is anyio imported (it already is) and the backend class built.

The backend reuses anyio's trio backend class and test runner by
subclassing: everything but *starting* trio is anyio's own code, so the
backend follows anyio's releases instead of forking them.  Starting trio
differs in two places:

* ``run`` calls :func:`trio_uring.run` (anyio's own ``run`` up to 4.13
  dropped ``backend_options`` for trio; ours always passes them).
* the test runner starts its guest run through trio-uring's per-thread
  request (``_install.request(guest=True)``), the mechanism
  :func:`trio_uring.start_guest_run` uses.  The request is made only when no
  trio run is alive in the calling thread, so it is claimed by the one
  ``setup_runner`` that follows, never left pending while a test runs.

``anyio.run`` and the pytest plugin set sniffio's context variable to the
backend *name* (``"trio_uring"``) for the duration of the run.  Inside trio
tasks sniffio's thread-local (``"trio"``, set by trio) wins, but the context
variable is what a thread or callback started with a copy of the context
would see; we set it to ``"trio"`` for the run so that no code ever sees a
library name nothing dispatches on.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator
from typing import Any

MODULE_NAME = "anyio._backends._trio_uring"
BACKEND_NAME = "trio_uring"


class _BackendFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads ``anyio._backends._trio_uring``, and nothing else."""

    def find_spec(
        self,
        fullname: str,
        path: Any = None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != MODULE_NAME:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=__name__)

    def create_module(
        self, spec: importlib.machinery.ModuleSpec
    ) -> types.ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        backend, runner = _build_backend()
        module.__doc__ = "anyio backend 'trio_uring' (defined in trio_uring._anyio)"
        module.backend_class = backend  # type: ignore[attr-defined]
        module.TrioUringBackend = backend  # type: ignore[attr-defined]
        module.TestRunner = runner  # type: ignore[attr-defined]


_finder = _BackendFinder()


def register() -> None:
    """Make ``"trio_uring"`` an anyio backend name (idempotent, imports nothing)."""
    if not any(isinstance(f, _BackendFinder) for f in sys.meta_path):
        sys.meta_path.append(_finder)


@contextlib.contextmanager
def _library_is_trio() -> Iterator[None]:
    """sniffio's context variable says "trio" inside (see the module docstring)."""
    try:
        import sniffio
    except ImportError:  # anyio >= 4.12 runs without sniffio
        yield
        return
    token = sniffio.current_async_library_cvar.set("trio")
    try:
        yield
    finally:
        sniffio.current_async_library_cvar.reset(token)


def _run_alive_in_this_thread() -> bool:
    """trio.lowlevel.in_trio_run(), which trio < 0.26 lacks."""
    import trio

    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def _build_backend() -> tuple[type[Any], type[Any]]:
    """anyio's trio backend and test runner, subclassed to start on io_uring.

    Built on first use, so that importing trio_uring never imports anyio.
    """
    from anyio._backends import _trio as anyio_trio

    from . import _install
    from . import run as uring_run

    # The one private name we override: where anyio's trio runner starts its
    # guest run (anyio 4.0-4.16).  If it goes away, our override would never
    # be called and the tests would silently run on epoll: refuse instead.
    if not callable(getattr(anyio_trio.TestRunner, "_call_in_runner_task", None)):
        raise ImportError(
            "trio-uring cannot adapt this anyio version's trio test runner "
            "(no TestRunner._call_in_runner_task); please report this with "
            "your anyio version"
        )

    class TrioUringTestRunner(anyio_trio.TestRunner):
        """anyio's trio test runner; its guest run is on io_uring."""

        def __init__(self, **options: Any) -> None:
            fallback = options.pop("fallback", None)
            self._uring = _install.check_fallback(fallback)
            super().__init__(**options)

        def _call_in_runner_task(self, *args: Any, **kwargs: Any) -> Any:
            # A run already alive in this thread (the runner's guest run,
            # started by an earlier call) must not leave a request pending.
            start = self._uring and not _run_alive_in_this_thread()
            if start:
                _install.request(guest=True)
            try:
                with _library_is_trio():
                    return super()._call_in_runner_task(*args, **kwargs)
            finally:
                if start:
                    _install.withdraw()

    class TrioUringBackend(anyio_trio.TrioBackend):
        """anyio's trio backend, running on :func:`trio_uring.run`."""

        @classmethod
        def run(
            cls,
            func: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            options: dict[str, Any],
        ) -> Any:
            assert not kwargs, "anyio never passes keyword arguments to run()"
            with _library_is_trio():
                return uring_run(func, *args, **options)

        @classmethod
        def create_test_runner(cls, options: dict[str, Any]) -> Any:
            return TrioUringTestRunner(**options)

    TrioUringBackend.__module__ = TrioUringTestRunner.__module__ = MODULE_NAME
    return TrioUringBackend, TrioUringTestRunner
