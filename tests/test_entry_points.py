"""run / install / uninstall / installed, and the hook into trio."""

from __future__ import annotations

import threading

import pytest
import trio
import trio._core._run as trio_run

import trio_uring
from trio_uring import UringIOManager


async def backend() -> str:
    return str(trio.lowlevel.current_statistics().io_statistics.backend)


def test_run_uses_io_uring() -> None:
    assert trio_uring.run(backend) == "io_uring"


def test_plain_trio_run_stays_on_epoll() -> None:
    assert trio.run(backend) == "epoll"
    trio_uring.run(backend)
    assert trio.run(backend) == "epoll"
    # and the hook is back to trio's own class
    assert trio_run.TheIOManager is not UringIOManager


def test_run_passes_arguments_and_kwargs() -> None:
    async def main(a: int, b: int) -> tuple[int, str]:
        return a + b, await backend()

    clock = trio.testing.MockClock()
    assert trio_uring.run(main, 1, 2, clock=clock) == (3, "io_uring")


def test_run_propagates_exceptions() -> None:
    async def main() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        trio_uring.run(main)
    assert trio.run(backend) == "epoll"


def test_run_inside_run_is_refused_and_leaves_no_request() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="inside a run"):
            trio_uring.run(backend)

    trio.run(main)
    # the refused request must not leak into the next plain trio.run
    assert trio.run(backend) == "epoll"


def test_install_uninstall() -> None:
    trio_uring.install()
    try:
        assert trio_run.TheIOManager is UringIOManager
        assert trio.run(backend) == "io_uring"
        trio_uring.install()  # idempotent
        assert trio.run(backend) == "io_uring"
    finally:
        trio_uring.uninstall()
    assert trio.run(backend) == "epoll"
    assert trio_run.TheIOManager is not UringIOManager


def test_installed_context_manager_restores_state() -> None:
    with trio_uring.installed():
        assert trio.run(backend) == "io_uring"
        with trio_uring.installed():
            assert trio.run(backend) == "io_uring"
        assert trio.run(backend) == "io_uring"  # outer block still active
    assert trio.run(backend) == "epoll"


def test_install_reaches_anyio() -> None:
    anyio = pytest.importorskip("anyio")
    with trio_uring.installed():
        assert anyio.run(backend, backend="trio") == "io_uring"


def test_bad_fallback_value() -> None:
    with pytest.raises(ValueError, match="fallback"):
        trio_uring.run(backend, fallback="select")
    with pytest.raises(ValueError, match="fallback"):
        trio_uring.install(fallback="kqueue")


def test_is_available() -> None:
    assert trio_uring.is_available()
    assert trio_uring.unavailable_reason() is None


def test_two_runs_in_two_threads_each_get_a_ring() -> None:
    results: dict[str, object] = {}
    barrier = threading.Barrier(2)

    async def main(name: str) -> None:
        barrier.wait()  # both runs are alive at once
        stats = trio.lowlevel.current_statistics().io_statistics
        a, b = trio.socket.socketpair()
        with a, b:
            await b.send(name.encode())
            await trio.lowlevel.wait_readable(a)
            results[name] = (stats.backend, await a.recv(10))

    threads = [
        threading.Thread(target=trio_uring.run, args=(main, n)) for n in ("x", "y")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {"x": ("io_uring", b"x"), "y": ("io_uring", b"y")}


def test_request_is_per_thread() -> None:
    # While one thread's trio_uring.run is setting up, a plain trio.run in
    # another thread must still get epoll.
    from trio_uring import _install

    _install.request(guest=False)
    try:
        seen: list[str] = []
        t = threading.Thread(target=lambda: seen.append(trio.run(backend)))
        t.start()
        t.join(30)
        assert seen == ["epoll"]
    finally:
        _install.withdraw()
    assert trio_run.TheIOManager is not UringIOManager


def test_trio_hook_is_where_we_expect() -> None:
    # Pins the private hook: if trio stops building its IO manager through
    # trio._core._run.TheIOManager, this (and the import-time check) fail.
    assert "TheIOManager" in trio_run.setup_runner.__code__.co_names
