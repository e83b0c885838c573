"""httpx on io_uring: many requests against a local server, many timeouts.

httpx (through httpcore) picks its trio network backend because
``sniffio.current_async_library()`` says ``"trio"``; these tests run it on
``trio_uring.run`` and on ``anyio.run(backend="trio_uring")``.  The server is
a small HTTP/1.1 server written here on trio's streams.  Timeouts fire
deterministically (no timing assertions): ``/hang`` never answers until the
test releases it, so a short read timeout on it must fire, and a pool whose
only connection is held by ``/hang`` must time out a second request.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

import trio_uring
from trio_uring.lowlevel import inflight

httpx = pytest.importorskip("httpx")
anyio = pytest.importorskip("anyio")

TRIO_ENTRY_QUEUE_TASK = "<TrioToken.run_sync_soon task>"
N_FAST = 40
N_HANG = 40


class Server:
    """HTTP/1.1 with keep-alive: ``/fast`` answers at once, ``/hang`` waits."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.port = 0
        self.requests = 0
        self.connections = 0

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self.handle, listeners)
            task_status.started()

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buf = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        data = await stream.receive_some(65536)
                    except trio.BrokenResourceError:
                        return
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                self.requests += 1
                if path == b"/hang":
                    await self.release.wait()
                body = b"ok " + path
                try:
                    await stream.send_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return


async def _exercise(server: Server) -> dict[str, int]:
    """Fast requests succeed, hanging ones time out, all concurrently."""
    base = f"http://127.0.0.1:{server.port}"
    counts = {"ok": 0, "read_timeout": 0, "pool_timeout": 0}
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=10)
    async with httpx.AsyncClient(base_url=base, limits=limits) as client:

        async def fast(i: int) -> None:
            r = await client.get(f"/fast?{i}", timeout=60)
            assert r.status_code == 200
            assert r.text == f"ok /fast?{i}"
            counts["ok"] += 1

        async def hang() -> None:
            # read timeout only; the pool never limits these (pool=None)
            t = httpx.Timeout(60, read=0.05, pool=None)
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/hang", timeout=t)
            counts["read_timeout"] += 1

        async with trio.open_nursery() as nursery:
            for i in range(N_FAST):
                nursery.start_soon(fast, i)
                if i < N_HANG:
                    nursery.start_soon(hang)

    # A pool of one connection, held by a hanging request: the others wait
    # for the pool and time out there.
    single = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=base, limits=single) as client:
        holding = trio.Event()

        async def hold(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            r = await client.get("/hang", timeout=60)
            assert r.status_code == 200
            holding.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(hold)
            # wait until the request holds the only connection
            while server.requests < N_FAST + N_HANG + 1:
                await trio.sleep(0.001)
            for _ in range(10):
                with pytest.raises(httpx.PoolTimeout):
                    await client.get("/fast", timeout=httpx.Timeout(60, pool=0.01))
                counts["pool_timeout"] += 1
            server.release.set()
        assert holding.is_set()
        r = await client.get("/fast", timeout=60)  # the pool works again
        assert r.status_code == 200
    return counts


async def _main() -> tuple[dict[str, int], str, int, int]:
    server = Server()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        counts = await _exercise(server)
        nursery.cancel_scope.cancel()
    # every connection task is gone now; let the kernel's last CQEs land
    for _ in range(10):
        await trio.lowlevel.checkpoint()
    stats = trio.lowlevel.current_statistics().io_statistics
    # Once anything used a worker thread (getaddrinfo does), trio's own
    # system task "<TrioToken.run_sync_soon task>" waits on trio's wake-up
    # socket until the run ends: that one wait is not the test's.
    trio_own = [op for op in inflight() if op.task == TRIO_ENTRY_QUEUE_TASK]
    assert len(trio_own) <= 1
    in_flight = stats.ops_in_flight - len(trio_own)
    return counts, stats.backend, in_flight, server.connections


EXPECTED = {"ok": N_FAST, "read_timeout": N_HANG, "pool_timeout": 10}


def _check(result: tuple[dict[str, int], str, int, int]) -> None:
    counts, backend, in_flight, connections = result
    assert backend == "io_uring"
    assert counts == EXPECTED
    assert in_flight == 0
    assert connections >= 2
    gc.collect()  # an unclosed socket would warn now (warnings are errors)


def test_httpx_many_timeouts_trio_uring_run() -> None:
    _check(trio_uring.run(_main))


def test_httpx_many_timeouts_anyio_backend() -> None:
    _check(anyio.run(_main, backend="trio_uring"))


def test_httpx_after_install_with_anyio_trio() -> None:
    run: Callable[[], Awaitable[Any]] = _main
    with trio_uring.installed():
        _check(anyio.run(run, backend="trio"))


@pytest.mark.parametrize("rounds", [3])
def test_httpx_repeated_runs_no_leak(rounds: int) -> None:
    # fresh rings each time; nothing from one run leaks into the next
    for _ in range(rounds):
        _check(trio_uring.run(_main))
