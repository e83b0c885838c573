"""wait_readable / wait_writable / notify_closing: epoll's semantics exactly."""

from __future__ import annotations

import errno
import os
import socket as stdlib_socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

import trio_uring

WaitFn = Callable[[object], Awaitable[None]]
WAITS = [trio.lowlevel.wait_readable, trio.lowlevel.wait_writable]
RUNNERS = {"epoll": trio.run, "io_uring": trio_uring.run}


def fill(sock: stdlib_socket.socket) -> None:
    try:
        while True:
            sock.send(b"x" * 65536)
    except BlockingIOError:
        pass


def pair() -> tuple[stdlib_socket.socket, stdlib_socket.socket]:
    a, b = stdlib_socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def on_uring(fn: Callable[[], Awaitable[object]]) -> object:
    return trio_uring.run(fn)


def test_readable_and_writable_wake() -> None:
    async def main() -> None:
        a, b = pair()
        with a, b:
            await trio.lowlevel.wait_writable(a)
            async with trio.open_nursery() as n:
                n.start_soon(trio.lowlevel.wait_readable, b)
                await trio.testing.wait_all_tasks_blocked()
                a.send(b"hello")
            assert b.recv(10) == b"hello"

    on_uring(main)


def test_accepts_objects_with_fileno() -> None:
    class HasFileno:
        def __init__(self, sock: stdlib_socket.socket) -> None:
            self.sock = sock

        def fileno(self) -> int:
            return self.sock.fileno()

    async def main() -> None:
        a, b = pair()
        with a, b:
            b.send(b"x")
            await trio.lowlevel.wait_readable(HasFileno(a))
            await trio.lowlevel.wait_writable(HasFileno(a))

    on_uring(main)


@pytest.mark.parametrize("wait", WAITS)
def test_second_waiter_is_busy(wait: WaitFn) -> None:
    async def main() -> None:
        a, b = pair()
        with a, b:
            fill(a)
            async with trio.open_nursery() as n:
                n.start_soon(wait, a)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await wait(a)
                n.cancel_scope.cancel()

    on_uring(main)


@pytest.mark.parametrize("wait", WAITS)
def test_notify_closing_wakes_waiter(wait: WaitFn) -> None:
    async def main() -> None:
        a, b = pair()
        with b:
            fill(a)
            got: list[BaseException] = []

            async def waiter() -> None:
                try:
                    await wait(a)
                except trio.ClosedResourceError as exc:
                    got.append(exc)

            async with trio.open_nursery() as n:
                n.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                trio.lowlevel.notify_closing(a)
                a.close()
            assert len(got) == 1
            # the kernel op is cancelled: nothing keeps the socket open, the
            # peer sees EOF
            with trio.fail_after(10):
                await trio.lowlevel.wait_readable(b)
            data = b.recv(1 << 20)
            while data:
                await trio.lowlevel.wait_readable(b)
                data = b.recv(1 << 20)

    on_uring(main)


def test_notify_closing_without_waiters_and_reuse() -> None:
    async def main() -> None:
        a, b = pair()
        with a, b:
            trio.lowlevel.notify_closing(a)  # nobody waiting: a no-op
            b.send(b"x")
            await trio.lowlevel.wait_readable(a)  # still usable afterwards

    on_uring(main)


def test_notify_closing_from_waiting_task_scope_raises_in_self() -> None:
    # epoll's wake_all raises in the calling task if it is itself a waiter;
    # that cannot happen through the public API, but a reader and a writer
    # on one fd must both be woken.
    async def main() -> None:
        a, b = pair()
        with b:
            fill(a)
            results: list[str] = []

            async def w(fn: WaitFn, name: str) -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await fn(a)
                results.append(name)

            async with trio.open_nursery() as n:
                n.start_soon(w, trio.lowlevel.wait_readable, "r")
                n.start_soon(w, trio.lowlevel.wait_writable, "w")
                await trio.testing.wait_all_tasks_blocked()
                stats = trio.lowlevel.current_statistics().io_statistics
                assert (stats.tasks_waiting_read, stats.tasks_waiting_write) == (2, 1)
                trio.lowlevel.notify_closing(a)
                a.close()
            assert sorted(results) == ["r", "w"]

    on_uring(main)


def test_cancel_in_flight_and_before_submit() -> None:
    async def main() -> None:
        a, b = pair()
        with a, b:
            # cancelled before the SQE ever reached the kernel
            with trio.CancelScope() as cs:
                cs.cancel()
                await trio.lowlevel.wait_readable(a)
            # cancelled while the poll is in the kernel
            with trio.move_on_after(0.01):
                await trio.lowlevel.wait_readable(a)
            # the fd is free for a new waiter and works
            b.send(b"x")
            await trio.lowlevel.wait_readable(a)
            stats = trio.lowlevel.current_statistics().io_statistics
            assert stats.submitted["ASYNC_CANCEL"] >= 1

    on_uring(main)


def test_cancel_after_completion_delivers() -> None:
    # The poll completes and the task is rescheduled in the same batch where
    # its scope is cancelled: trio delivers the wake-up (readiness happened);
    # the cancellation surfaces at the next checkpoint.
    async def main() -> None:
        a, b = pair()
        with a, b:
            b.send(b"x")
            with trio.CancelScope() as cs:
                await trio.lowlevel.wait_readable(a)
                cs.cancel()
                with pytest.raises(trio.Cancelled):
                    await trio.lowlevel.checkpoint()

    on_uring(main)


def _outcome(
    runner: Callable[..., object], target: object, wait: WaitFn
) -> tuple[str, int | None, str]:
    async def main() -> None:
        await wait(target)

    try:
        runner(main)
    except BaseException as exc:
        return type(exc).__name__, getattr(exc, "errno", None), str(exc)
    return "no error", None, ""


@pytest.mark.parametrize("wait", WAITS)
@pytest.mark.parametrize("kind", ["negative", "closed", "regular-file", "no-fileno"])
def test_bad_input_matches_epoll(wait: WaitFn, kind: str, tmp_path: Path) -> None:
    def target() -> object:
        if kind == "negative":
            return -1
        if kind == "closed":
            # a high number, so the run's own new fds cannot take it over
            fd = os.open(os.devnull, os.O_RDONLY)
            high = os.dup2(fd, 4321)
            os.close(fd)
            os.close(high)
            return high
        if kind == "regular-file":
            return os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
        return object()

    results = {}
    for name, runner in RUNNERS.items():
        t = target()
        results[name] = _outcome(runner, t, wait)
        if isinstance(t, int) and kind == "regular-file":
            os.close(t)
    assert results["io_uring"] == results["epoll"]
    assert results["io_uring"][0] != "no error"
    if kind == "closed":
        assert results["io_uring"][1] == errno.EBADF
    if kind == "regular-file":
        assert results["io_uring"][1] == errno.EPERM


def test_fd_closed_behind_our_back_gives_ebadf() -> None:
    # The fd was checked once, then closed without notify_closing: the
    # kernel's EBADF reaches the task as OSError, like epoll's.
    async def main() -> None:
        a, b = pair()
        b.send(b"x")
        await trio.lowlevel.wait_readable(a)
        fd = a.detach()
        os.close(fd)
        with pytest.raises(OSError, match="Bad file descriptor") as info:
            await trio.lowlevel.wait_readable(fd)
        assert info.value.errno == errno.EBADF
        b.close()

    on_uring(main)


def test_peer_half_close_does_not_wake_writer() -> None:
    # io_uring always reports POLLRDHUP; epoll does not wake a writer for it.
    async def main() -> None:
        a, b = pair()
        with a, b:
            fill(a)
            b.shutdown(stdlib_socket.SHUT_WR)
            with trio.move_on_after(0.2) as cs:
                await trio.lowlevel.wait_writable(a)
            assert cs.cancelled_caught
            stats = trio.lowlevel.current_statistics().io_statistics
            # not a busy loop: a handful of polls, not thousands
            assert stats.submitted["POLL_ADD"] < 20
            # once the peer reads, the writer wakes
            async with trio.open_nursery() as n:
                n.start_soon(trio.lowlevel.wait_writable, a)
                await trio.testing.wait_all_tasks_blocked()
                while True:
                    try:
                        b.recv(1 << 20)
                    except BlockingIOError:
                        break

    on_uring(main)


def test_statistics_fields() -> None:
    async def main() -> None:
        await trio.testing.wait_all_tasks_blocked()  # trio's system task settles
        stats = trio.lowlevel.current_statistics().io_statistics
        assert stats.backend == "io_uring"
        assert isinstance(stats.submitted, dict)
        # trio's own wake-up socket has a reader: one poll in flight
        assert stats.ops_in_flight == stats.tasks_waiting_read == 1
        a, b = pair()
        with a, b:
            fill(a)
            async with trio.open_nursery() as n:
                n.start_soon(trio.lowlevel.wait_writable, a)
                n.start_soon(trio.lowlevel.wait_readable, a)
                await trio.testing.wait_all_tasks_blocked()
                stats = trio.lowlevel.current_statistics().io_statistics
                # +1 reader: trio's own wake-up socket
                assert stats.tasks_waiting_read == 2
                assert stats.tasks_waiting_write == 1
                assert stats.ops_in_flight >= 3
                assert stats.submitted["POLL_ADD"] >= 3
                n.cancel_scope.cancel()
        assert "DEFER_TASKRUN" in stats.setup_flags or "SUBMIT_ALL" in stats.setup_flags

    on_uring(main)


@pytest.mark.parametrize("runner", [trio.run, trio_uring.run])
def test_closed_fds_leave_no_reference_cycle(
    runner: Callable[..., None], cycles_after: Callable[..., Awaitable[int]]
) -> None:
    # notify_closing drops the fd's waiter entry; the abort functions kept in
    # it (which refer back to it) must not be left as a cycle for the GC.
    async def wait_then_close() -> None:
        a, b = trio.socket.socketpair()
        async with trio.open_nursery() as n:
            n.start_soon(trio.lowlevel.wait_readable, a)
            await trio.testing.wait_all_tasks_blocked()
            await b.send(b"x")
        a.close()  # notify_closing, then close
        b.close()

    async def main() -> None:
        assert await cycles_after(20, wait_then_close) == 0

    runner(main)
