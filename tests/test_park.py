"""trio_uring._park.park: trio's wait_task_rescheduled in one frame."""

from __future__ import annotations

import os
from typing import Any

import outcome
import pytest
import trio
import trio.testing

import trio_uring
from trio_uring._park import park


def test_fast_path_active_on_supported_trio() -> None:
    # On every trio we support, park yields trio's own message itself.
    assert park is not trio.lowlevel.wait_task_rescheduled


@pytest.mark.parametrize("runner", [trio.run, trio_uring.run])
def test_value_error_and_cancel(runner: Any) -> None:
    async def main() -> None:
        task = trio.lowlevel.current_task()
        aborts: list[str] = []

        def abort(raise_cancel: Any) -> trio.lowlevel.Abort:
            aborts.append("called")
            return trio.lowlevel.Abort.SUCCEEDED

        async def wake(result: outcome.Outcome[Any]) -> None:
            await trio.testing.wait_all_tasks_blocked()
            trio.lowlevel.reschedule(task, result)

        async with trio.open_nursery() as n:
            n.start_soon(wake, outcome.Value(42))
            assert await park(abort) == 42
        async with trio.open_nursery() as n:
            n.start_soon(wake, outcome.Error(KeyError("k")))
            with pytest.raises(KeyError):
                await park(abort)
        assert aborts == []
        with trio.move_on_after(0.01) as cs:
            await park(abort)
        assert cs.cancelled_caught
        assert aborts == ["called"]
        # a cancel pending before the park is delivered at the park
        with trio.CancelScope() as cs:
            cs.cancel()
            await park(abort)
        assert cs.cancelled_caught
        assert aborts == ["called", "called"]

    runner(main)


@pytest.mark.parametrize("runner", [trio.run, trio_uring.run])
def test_woken_with_a_plain_result(runner: Any) -> None:
    # The IO manager's completions wake a parked task with the result itself
    # (an int, or None for a readiness wait); park returns it as it is.
    async def main() -> None:
        task = trio.lowlevel.current_task()

        def abort(raise_cancel: Any) -> trio.lowlevel.Abort:
            return trio.lowlevel.Abort.SUCCEEDED  # pragma: no cover

        async def wake(result: Any) -> None:
            await trio.testing.wait_all_tasks_blocked()
            trio.lowlevel.reschedule(task, result)

        for plain in (7, 0, -1, None):
            async with trio.open_nursery() as n:
                n.start_soon(wake, plain)
                assert await park(abort) == plain
        # an outcome holding an int is still unwrapped
        async with trio.open_nursery() as n:
            n.start_soon(wake, outcome.Value(5))
            assert await park(abort) == 5

    runner(main)


def test_completions_build_no_outcome(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hot paths (a native read, a trio socket recv/send, a readiness
    # wait) wake their task without an outcome.Value per operation.
    from trio_uring import _manager, _ops_file

    made: list[object] = []

    class CountingValue(outcome.Value):  # type: ignore[type-arg]
        def __init__(self, value: object) -> None:
            made.append(value)
            super().__init__(value)

    monkeypatch.setattr(_manager.outcome, "Value", CountingValue)
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)

    async def main() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            assert await _ops_file.read(fd, 10, 0) == b"x" * 10
        finally:
            os.close(fd)
        a, b = trio.socket.socketpair()
        with a, b:
            async with trio.open_nursery() as n:
                n.start_soon(a.recv, 10)  # waits in the kernel
                await trio.testing.wait_all_tasks_blocked()
                await b.send(b"hi")
            # the readiness path: a POLL_ADD, woken by the send
            async with trio.open_nursery() as n:
                n.start_soon(trio.lowlevel.wait_readable, a)
                await trio.testing.wait_all_tasks_blocked()
                await b.send(b"!")
        submitted = trio.lowlevel.current_statistics().io_statistics.submitted
        assert submitted["READ"] >= 2  # the file read (and the wakeup fd's)
        assert submitted["RECV"] == 1
        assert submitted["POLL_ADD"] >= 2  # (and trio's own wakeup socket's)

    trio_uring.run(main)
    assert made == []


@pytest.mark.parametrize("runner", [trio.run, trio_uring.run])
def test_cancelled_park_leaves_no_reference_cycle(
    runner: Any, cycles_after: Any
) -> None:
    # A cancellation must not leave exception -> traceback -> park's frame
    # -> outcome -> exception behind: with one cycle per timeout the cyclic
    # GC ran all the time and timeouts cost 1.5x (measured, bench/timeouts.py).
    def abort(raise_cancel: Any) -> trio.lowlevel.Abort:
        return trio.lowlevel.Abort.SUCCEEDED

    async def cancelled_park() -> None:
        with trio.CancelScope() as cs:
            cs.cancel()
            await park(abort)

    async def main() -> None:
        assert await cycles_after(100, cancelled_park) == 0

    runner(main)


def test_timed_out_waits_leave_no_reference_cycle(cycles_after: Any) -> None:
    # The same for what a timeout loop does on io_uring: a readiness wait, a
    # trio socket recv and a native recv, each timed out in the kernel.
    from trio_uring import lowlevel

    async def main() -> None:
        a, b = trio.socket.socketpair()
        with a, b:
            for wait in (
                lambda: trio.lowlevel.wait_readable(a),
                lambda: a.recv(10),
                lambda: lowlevel.recv(a, 10),
            ):

                async def timed_out(wait: Any = wait) -> None:
                    with trio.move_on_after(0.0005):
                        await wait()

                assert await cycles_after(50, timed_out) == 0

    trio_uring.run(main)
