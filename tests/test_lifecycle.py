"""The native op lifecycle (UringIOManager.submit), driven with raw READs on pipes.

Every op family builds on these guarantees: cancel before submit never reaches
the kernel; cancel in flight lets the op's own CQE decide; deadlines become
linked timeouts on the real clock only; notify_closing cancels pending ops.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing

import trio_uring
from trio_uring import _native, _ring
from trio_uring._ring_ffi import ffi

READ = _ring.OP["READ"]
# Children run here, not in the repository root, where the source tree
# (without the compiled _ring_ffi) would shadow the installed trio_uring.
HERE = os.path.dirname(os.path.abspath(__file__))
WRITE = _ring.OP["WRITE"]


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def run(fn: Callable[[], Awaitable[object]]) -> object:
    return trio_uring.run(fn)


async def read(fd: int, n: int = 100) -> bytes:
    buf = ffi.new("char[]", n)
    addr = int(ffi.cast("uintptr_t", buf))
    got = await _native.current_manager().submit(
        READ, fd, addr, n, _native.CURRENT_POSITION, keep=buf
    )
    return ffi.buffer(buf, got)[:]


def stats() -> trio_uring.UringStatistics:
    s = trio.lowlevel.current_statistics().io_statistics
    assert isinstance(s, trio_uring.UringStatistics)
    return s


def test_result_delivered(pipe: tuple[int, int]) -> None:
    r, w = pipe

    async def main() -> None:
        os.write(w, b"hello")
        assert await read(r) == b"hello"

    run(main)


def test_error_is_oserror() -> None:
    async def main() -> None:
        with pytest.raises(OSError, match="Bad file descriptor") as info:
            await read(4321)
        assert info.value.errno == errno.EBADF
        # the ring is healthy afterwards
        r, w = os.pipe()
        os.write(w, b"ok")
        assert await read(r) == b"ok"
        os.close(r)
        os.close(w)

    run(main)


def test_cancel_before_submit_never_reaches_kernel(pipe: tuple[int, int]) -> None:
    r, w = pipe

    async def main() -> None:
        os.write(w, b"data")
        with trio.CancelScope() as cs:
            cs.cancel()
            await read(r)  # raises Cancelled at once: nothing submitted
        assert cs.cancelled_caught
        assert stats().submitted.get("READ", 0) == 1  # trio-uring's wake-up read
        assert await read(r) == b"data"  # nothing consumed

    run(main)


def test_cancel_while_queued_unqueues(pipe: tuple[int, int]) -> None:
    # The SQE is prepared but io_uring_enter has not run yet when the cancel
    # arrives (another task, later in the same batch): it becomes a NOP and
    # the read never happens.  trio orders a batch randomly, so try until the
    # canceller ran after the reader (each attempt has even odds).
    r, w = pipe

    async def main() -> None:
        os.write(w, b"data")
        for _ in range(40):
            async with trio.open_nursery() as n:

                async def canceller(scope: trio.CancelScope = n.cancel_scope) -> None:
                    scope.cancel()

                # both start in the next batch, in either order
                n.start_soon(read, r)
                n.start_soon(canceller)
            if stats().submitted.get("NOP", 0):
                break
        assert stats().submitted.get("NOP", 0) >= 1
        assert await read(r) == b"data"

    run(main)


def test_cancel_in_flight_loses_nothing(pipe: tuple[int, int]) -> None:
    r, w = pipe

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(read, r)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(0.01)  # surely in the kernel now
            n.cancel_scope.cancel()
        assert stats().submitted["ASYNC_CANCEL"] >= 1
        os.write(w, b"every byte")
        assert await read(r) == b"every byte"

    run(main)


def test_cancel_after_completion_delivers_result(pipe: tuple[int, int]) -> None:
    # The read completes in the kernel in the same batch in which trio cancels
    # its scope: the data is delivered (it happened), Cancelled comes at the
    # next checkpoint.
    r, w = pipe

    async def main() -> None:
        got: list[bytes] = []

        async def reader(scope_box: list[trio.CancelScope]) -> None:
            with trio.CancelScope() as cs:
                scope_box.append(cs)
                got.append(await read(r))
                await trio.lowlevel.checkpoint()
                got.append(b"not reached")

        box: list[trio.CancelScope] = []
        async with trio.open_nursery() as n:
            n.start_soon(reader, box)
            await trio.sleep(0.01)
            os.write(w, b"late")
            # Let the kernel complete the read, then cancel before the
            # reader runs again: abort sends ASYNC_CANCEL, the CQE says 4.
            manager = _native.current_manager()
            manager._ring.wait(10**9)  # completion harvested, not processed
            box[0].cancel()
            await trio.testing.wait_all_tasks_blocked()
        assert got == [b"late"]

    run(main)


def test_deadline_uses_linked_timeout(pipe: tuple[int, int]) -> None:
    r, w = pipe

    async def main() -> None:
        with trio.move_on_after(0.05) as cs:
            await read(r)
        assert cs.cancelled_caught
        assert stats().submitted["LINK_TIMEOUT"] == 1
        os.write(w, b"after")
        assert await read(r) == b"after"  # nothing was consumed

    run(main)


def test_linked_timeout_cqes_stay_in_c(pipe: tuple[int, int]) -> None:
    # Linked timeouts carry user_data 1 and their CQEs (-ETIME when they
    # fire, -ECANCELED when their op finished first) are dropped by the C
    # harvest, like cancel requests' (user_data 0): Python only ever sees
    # the operation's own CQE, which says what happened.
    r, w = pipe

    async def main() -> None:
        manager = _native.current_manager()
        seen: list[int] = []
        ring, core = manager._ring, manager._core
        harvest = ring.harvest

        def spy_harvest() -> list[int]:
            cqes = harvest()
            seen.extend(cqes[0::3])
            return cqes

        class SpyCore:  # what the C dispatch gets from the harvest buffer
            def dispatch(self, n: int, reschedule: Any) -> None:
                seen.extend(ffi.unpack(ring._cqe_buf, 3 * n)[0::3])
                core.dispatch(n, reschedule)

            def __getattr__(self, name: str) -> Any:
                return getattr(core, name)

        ring.harvest = spy_harvest  # type: ignore[method-assign]
        manager._core = SpyCore()  # type: ignore[assignment]
        for _ in range(5):
            with trio.move_on_after(0.01) as cs:
                await read(r)  # times out: the LINK_TIMEOUT's CQE is -ETIME
            assert cs.cancelled_caught
        os.write(w, b"after")
        with trio.move_on_after(5):
            assert await read(r) == b"after"  # its LINK_TIMEOUT: -ECANCELED
        assert stats().submitted["LINK_TIMEOUT"] == 6
        assert seen
        assert min(seen) >= 2

    run(main)


@pytest.mark.parametrize(
    "shape", ["none", "inner", "outer", "shielded", "cancelled", "moved"]
)
def test_kernel_deadline_matches_trio(shape: str) -> None:
    # The manager walks the cancel scopes itself (trio's effective_deadline
    # is recursive and slow); pin it to trio's own answer.
    async def main() -> None:
        manager = _native.current_manager()
        task = trio.lowlevel.current_task()
        now = trio.current_time()

        def check() -> None:
            status = task._cancel_status
            assert status is not None
            got = manager._kernel_deadline(task)
            expected = status.effective_deadline()
            if expected == -math.inf and not manager._trio_deadlines._active:
                # No deadline anywhere in the run: the manager answers inf
                # without looking at the task; the pending cancel is
                # delivered at the wait, which un-queues the SQE.
                expected = math.inf
            assert got == expected

        with contextlib.ExitStack() as stack:
            if shape in ("outer", "shielded", "moved"):
                stack.enter_context(trio.CancelScope(deadline=now + 5))
            inner = stack.enter_context(
                trio.CancelScope(
                    deadline=now + (9 if shape != "inner" else 3),
                    shield=shape == "shielded",
                )
            )
            stack.enter_context(trio.CancelScope())  # no deadline of its own
            if shape == "cancelled":
                inner.cancel()
            if shape == "moved":
                inner.deadline = now + 1
            check()
        check()

    run(main)


def test_early_kernel_timeout_resubmits(pipe: tuple[int, int]) -> None:
    # If the kernel's linked timeout fires before trio's deadline (here: the
    # deadline is pushed back after submission), the op is resubmitted for
    # the rest and completes normally.
    r, w = pipe

    async def main() -> None:
        async def writer() -> None:
            await trio.sleep(0.15)
            os.write(w, b"in time")

        async with trio.open_nursery() as n:
            n.start_soon(writer)
            with trio.CancelScope(deadline=trio.current_time() + 0.05) as cs:

                async def push_back() -> None:
                    await trio.sleep(0.01)
                    cs.deadline = trio.current_time() + 5

                n.start_soon(push_back)
                assert await read(r) == b"in time"
            assert not cs.cancelled_caught
        assert stats().submitted["LINK_TIMEOUT"] >= 2  # first one fired early

    run(main)


@pytest.mark.parametrize("how", ["submit", "trio-socket"])
def test_late_loop_finds_the_kernel_timeout_fired(
    pipe: tuple[int, int], how: str
) -> None:
    # When trio's loop is late past the linked timeout's grace (here: a task
    # blocks it), the kernel has stopped the op by itself; the loop's next
    # look at the ring sees that (the linked timeout's CQE and then, one
    # more batch of deferred work later, the op's own), so trio's deadline
    # finds the op parked: Cancelled, and no ASYNC_CANCEL.
    r, _w = pipe

    async def blocker() -> None:
        await trio.testing.wait_all_tasks_blocked()  # the op is in the kernel
        time.sleep(0.3)  # the loop, blocked past deadline + grace (50 ms)

    async def main() -> None:
        a, b = trio.socket.socketpair()
        with a, b:
            before = stats().submitted.get("ASYNC_CANCEL", 0)
            async with trio.open_nursery() as n:
                n.start_soon(blocker)
                with trio.move_on_after(0.05) as cs:
                    if how == "submit":
                        await read(r)
                    else:
                        await a.recv(10)
            assert cs.cancelled_caught
            assert stats().submitted["LINK_TIMEOUT"] == 1
            assert stats().submitted.get("ASYNC_CANCEL", 0) == before

    run(main)


def test_mock_clock_uses_no_linked_timeout(pipe: tuple[int, int]) -> None:
    r, _w = pipe

    async def main() -> None:
        t0 = trio.current_time()
        with trio.move_on_after(100) as cs:  # virtual seconds
            await read(r)
        assert cs.cancelled_caught
        assert trio.current_time() - t0 == pytest.approx(100)
        assert "LINK_TIMEOUT" not in stats().submitted

    trio_uring.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_notify_closing_cancels_pending_op(pipe: tuple[int, int]) -> None:
    r, _w = pipe

    async def main() -> None:
        errors: list[BaseException] = []

        async def reader() -> None:
            try:
                await read(r)
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(0.01)
            trio.lowlevel.notify_closing(r)
        assert len(errors) == 1
        # the ring no longer references the pipe: closing both ends works and
        # nothing is left in flight but trio's own wake-up poll
        assert stats().ops_in_flight == 1

    run(main)


def test_notify_closing_finds_every_op_of_the_fd(pipe: tuple[int, int]) -> None:
    # The per-fd index keeps its (emptied) set between operations; ops that
    # came and went must not hide the ones still waiting, and an fd's entry
    # goes with notify_closing.
    r, w = pipe

    async def main() -> None:
        manager = _native.current_manager()
        for _ in range(3):  # ops that finish leave the fd's index empty
            os.write(w, b"x")
            assert await read(r, 1) == b"x"
        assert not manager._fd_ops[r]
        closed: list[int] = []
        got: list[bytes] = []

        async def reader(i: int) -> None:
            try:
                got.append(await read(r, 1))
            except trio.ClosedResourceError:
                closed.append(i)

        async with trio.open_nursery() as n:
            for i in range(3):
                n.start_soon(reader, i)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(0.01)
            os.write(w, b"y")  # exactly one of the three reads gets it
            while not got:
                await trio.sleep(0.001)
            assert len(manager._fd_ops[r]) == 2
            trio.lowlevel.notify_closing(r)
        assert got == [b"y"]
        assert len(closed) == 2
        assert r not in manager._fd_ops
        assert stats().ops_in_flight == 1  # trio's own wake-up poll

    run(main)


def test_notify_closing_of_queued_op(pipe: tuple[int, int]) -> None:
    # notify_closing from a task that runs after the reader in the same batch
    # finds the read still queued: it is un-queued and the reader gets
    # ClosedResourceError.  (trio orders a batch randomly: try until the
    # closer ran second.)
    r, _w = pipe

    async def main() -> None:
        outcomes: list[str] = []
        for _ in range(40):
            async with trio.open_nursery() as n:

                async def reader() -> None:
                    with trio.move_on_after(0.05):
                        try:
                            await read(r)
                        except trio.ClosedResourceError:
                            outcomes.append("closed")

                async def closer() -> None:
                    trio.lowlevel.notify_closing(r)

                n.start_soon(reader)
                n.start_soon(closer)
            if outcomes:
                break
        assert outcomes == ["closed"]
        assert stats().submitted.get("NOP", 0) >= 1  # it never reached the kernel

    run(main)


def test_buffer_stays_referenced_until_final_cqe(pipe: tuple[int, int]) -> None:
    r, _w = pipe

    async def main() -> None:
        manager = _native.current_manager()
        async with trio.open_nursery() as n:
            n.start_soon(read, r)
            await trio.sleep(0.01)
            n.cancel_scope.cancel()
        # the cancelled op's buffer is owned by its Op until the CQE arrives;
        # by now it has arrived and everything is released
        assert all(op.keep is None for op in manager._ops.values())

    run(main)


def test_inflight_lists_the_stuck_read(pipe: tuple[int, int]) -> None:
    r, _w = pipe

    async def main() -> None:
        manager = _native.current_manager()
        async with trio.open_nursery() as n:

            async def stuck_reader() -> None:
                with trio.move_on_after(30):
                    await read(r)

            n.start_soon(stuck_reader, name="stuck-reader")
            await trio.sleep(0.02)
            table = manager.inflight()
            mine = [op for op in table if op.opcode == "READ"]
            assert len(mine) == 1
            op = mine[0]
            assert op.fd == r
            assert op.task == "stuck-reader"
            assert op.target is not None
            assert op.target.startswith("pipe:")
            assert op.age > 0
            assert op.linked_timeout
            assert op.deadline is not None
            assert op.state == "in flight"
            polls = [o for o in table if o.opcode == "POLL_ADD"]
            assert polls  # trio's own wake-up socket reader
            n.cancel_scope.cancel()

    run(main)


def test_dump_from_outside(tmp_path: object) -> None:
    code = textwrap.dedent(
        """
        import os, sys, trio, trio_uring
        from trio_uring import _native, _ring
        from trio_uring._ring_ffi import ffi
        trio_uring.lowlevel.install_dump_signal()
        async def main():
            r, w = os.pipe()
            buf = ffi.new("char[]", 10)
            print("ready", flush=True)
            await _native.current_manager().submit(
                _ring.OP["READ"], r, int(ffi.cast("uintptr_t", buf)), 10,
                _native.CURRENT_POSITION, keep=buf)
        trio_uring.run(main)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=HERE
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        out = subprocess.run(
            [sys.executable, "-m", "trio_uring.inflight", str(proc.pid)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=HERE,
        )
        assert out.returncode == 0, out.stderr
        assert "READ" in out.stdout
        assert "pipe:" in out.stdout
        assert "in flight" in out.stdout
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()


def test_inflight_command_without_handler_says_so() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGUSR1, "
         "signal.SIG_IGN); print('ready', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "trio_uring.inflight",
                str(proc.pid),
                "--timeout",
                "0.5",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=HERE,
        )
        assert out.returncode == 1
        assert "install_dump_signal" in out.stderr
    finally:
        proc.kill()
        proc.communicate()
