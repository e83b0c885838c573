"""trio_uring._park.park: trio's wait_task_rescheduled in one frame."""

from __future__ import annotations

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
