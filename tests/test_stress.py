"""Scale and resource tests: many waiters, many waits, closing with ops in flight."""

from __future__ import annotations

import gc
import os
import resource
import socket as stdlib_socket
import tracemalloc

import pytest
import trio
import trio.testing

import trio_uring
from trio_uring import _ring


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_ten_thousand_concurrent_waiters() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 10_000 + 500
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    try:

        async def main() -> None:
            pairs = [stdlib_socket.socketpair() for _ in range(5_000)]
            try:
                for a, b in pairs:
                    a.setblocking(False)
                    b.setblocking(False)
                woken = 0

                async def wait(sock: stdlib_socket.socket) -> None:
                    nonlocal woken
                    await trio.lowlevel.wait_readable(sock)
                    woken += 1

                async with trio.open_nursery() as n:
                    for a, b in pairs:  # 10,000 waiters: both ends of each pair
                        n.start_soon(wait, a)
                        n.start_soon(wait, b)
                    await trio.testing.wait_all_tasks_blocked()
                    stats = trio.lowlevel.current_statistics().io_statistics
                    assert stats.tasks_waiting_read == 10_000 + 1
                    # wake them all at once: far more CQEs than the CQ holds
                    for a, b in pairs:
                        a.send(b"x")
                        b.send(b"y")
                assert woken == 10_000
            finally:
                for a, b in pairs:
                    a.close()
                    b.close()

        trio_uring.run(main)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_no_fd_or_memory_growth_over_100k_waits() -> None:
    async def main() -> tuple[int, int, int]:
        a, b = stdlib_socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        with a, b:
            b.send(b"x")  # a stays readable and writable

            async def batch(k: int) -> None:
                for _ in range(k):
                    await trio.lowlevel.wait_readable(a)
                    await trio.lowlevel.wait_writable(a)
                    with trio.CancelScope() as cs:  # and cancellations too
                        cs.cancel()
                        await trio.lowlevel.wait_readable(a)

            await batch(2_000)  # warm up caches
            gc.collect()
            fds = _open_fds()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            await batch(34_000)  # ~100,000 waits in all
            gc.collect()
            growth = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            stats = trio.lowlevel.current_statistics().io_statistics
            return _open_fds() - fds, growth, stats.ops_in_flight

    fd_growth, mem_growth, in_flight = trio_uring.run(main)
    assert fd_growth == 0
    assert mem_growth < 256 * 1024, mem_growth
    assert in_flight <= 2  # trio's wake-up poll; maybe one cancelled poll draining


def test_runs_do_not_leak_fds() -> None:
    async def main() -> None:
        await trio.sleep(0)

    trio_uring.run(main)
    before = _open_fds()
    for _ in range(50):
        trio_uring.run(main)
    assert _open_fds() == before


def test_close_with_ops_in_flight_releases_files() -> None:
    # A poll sits in the kernel on a socket.  close() must cancel it and wait
    # for its CQE; afterwards the ring holds no reference to the socket, so
    # closing our fd really closes it and the peer sees EOF.
    manager = trio_uring.UringIOManager(guest=False)
    a, b = stdlib_socket.socketpair()
    try:
        op = manager._new_op(_ring.OP_POLL_ADD, a.fileno(), None)
        op.position = manager._ring.prep(
            _ring.OP_POLL_ADD, a.fileno(), op_flags=_ring.POLLIN, user_data=op.ud
        )
        assert not manager.get_events(0.01)  # submitted, nothing ready
        assert manager.statistics().ops_in_flight == 1
        manager.close()
        a.close()
        b.settimeout(10)
        assert b.recv(10) == b""
    finally:
        a.close()
        b.close()


def test_close_with_queued_ops() -> None:
    manager = trio_uring.UringIOManager(guest=False)
    a, b = stdlib_socket.socketpair()
    with a, b:
        for _ in range(3000):  # more than the SQ holds: some get flushed
            op = manager._new_op(_ring.OP_POLL_ADD, a.fileno(), None)
            op.position = manager._ring.prep(
                _ring.OP_POLL_ADD, a.fileno(), op_flags=_ring.POLLIN, user_data=op.ud
            )
        manager.close()
        assert manager._ops == {}
