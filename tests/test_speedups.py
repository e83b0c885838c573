"""trio_uring._speedups: the C hot path of native ops (csrc/speedups.c).

The operations themselves are tested through the catalogue (test_ops_file,
test_lifecycle, test_torture...); these pin the C protocol: how an op
parks and what it returns for each way its task can be woken, the
fallback when trio moves its trap message, the SQ filling up, the ops left
behind by cancellations, and a closed manager.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import outcome
import pytest
import trio
import trio.testing
from trio._core._traps import WaitTaskRescheduled

import trio_uring
from trio_uring import _native, lowlevel
from trio_uring import _ops_file as uf
from trio_uring._ring import OP


@pytest.fixture
def data_fd(tmp_path: Path) -> Iterator[Callable[[bytes], int]]:
    """``data_fd(data)``: an fd open on a file holding ``data``."""
    fds: list[int] = []

    def make(data: bytes) -> int:
        path = tmp_path / f"f{len(fds)}"
        path.write_bytes(data)
        fds.append(os.open(path, os.O_RDONLY))
        return fds[-1]

    yield make
    for fd in fds:
        os.close(fd)


async def _completed_read(fd: int, nbytes: int) -> Any:
    """A start_read op driven by hand: parked (the message checked), its
    task forgotten (so the completion wakes nobody), then completed."""
    manager = _native.current_manager()
    op = manager._core.start_read(OP["READ"], fd, nbytes, 0, 0)
    msg = op.send(None)
    assert type(msg) is WaitTaskRescheduled
    assert msg.abort_func is op
    op.task = None  # the CQE now goes to _native_done: nobody waits
    while op.ud in manager._ops:
        await trio.sleep(0)
    return op


@pytest.mark.parametrize(
    ("woken_with", "expected"),
    [
        (10, b"0123456789"),  # the plain CQE result: the bytes themselves
        (4, b"0123"),  # a short read: a copy of the start
        (0, b""),
        (outcome.Value(3), b"012"),  # trio's own wake-up: unwrapped
    ],
)
def test_read_op_returns_its_bytes(
    data_fd: Callable[[bytes], int], woken_with: object, expected: bytes
) -> None:
    fd = data_fd(b"0123456789")

    async def main() -> None:
        op = await _completed_read(fd, 10)
        with pytest.raises(StopIteration) as info:
            op.send(woken_with)
        assert info.value.value == expected
        if woken_with == 10:
            assert info.value.value is op.keep  # no copy for a full read
        with pytest.raises(RuntimeError, match="already awaited"):
            op.send(None)

    trio_uring.run(main)


def test_read_op_raises_an_error_outcome(data_fd: Callable[[bytes], int]) -> None:
    fd = data_fd(b"data")

    async def main() -> None:
        op = await _completed_read(fd, 4)
        with pytest.raises(KeyError, match="k"):
            op.send(outcome.Error(KeyError("k")))

    trio_uring.run(main)


def test_op_protocol_errors(data_fd: Callable[[bytes], int]) -> None:
    fd = data_fd(b"data")

    async def main() -> None:
        manager = _native.current_manager()
        op = manager._core.start_read(OP["READ"], fd, 4, 0, 0)
        with pytest.raises(TypeError, match="non-None"):
            op.send(1)  # not yet parked
        assert await op == b"data"
        with pytest.raises(RuntimeError, match="already awaited"):
            await op

    trio_uring.run(main)


def test_full_submission_queue_is_flushed(data_fd: Callable[[bytes], int]) -> None:
    # More reads started in one loop step than the SQ holds: the C path
    # hands the queue to the kernel and goes on, every read gets its data.
    fd = data_fd(bytes(range(256)) * 16)

    async def main() -> None:
        stats = trio.lowlevel.current_statistics().io_statistics
        n = 2 * stats.sq_entries + 3
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            results[i] = await uf.read(fd, 16, (i % 256) * 16)

        enters = stats.enters
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
        assert trio.lowlevel.current_statistics().io_statistics.enters > enters
        expected = bytes(range(256)) * 16
        assert results == {
            i: expected[(i % 256) * 16 : (i % 256) * 16 + 16] for i in range(n)
        }
        ops = _native.current_manager()._ops.values()
        assert not [op for op in ops if op.fd == fd]

    trio_uring.run(main)


def test_cancelled_reads_leave_no_reference_cycle(cycles_after: Any) -> None:
    # Each timed out in the kernel (ASYNC_CANCEL) or before submission.
    async def main() -> None:
        r, w = os.pipe()
        try:

            async def timed_out() -> None:
                with trio.move_on_after(0.0005):
                    await uf.read(r, 10)

            async def cancelled_before() -> None:
                with trio.CancelScope() as cs:
                    cs.cancel()
                    await uf.read(r, 10)

            assert await cycles_after(50, timed_out) == 0
            assert await cycles_after(50, cancelled_before) == 0
        finally:
            os.close(r)
            os.close(w)

    trio_uring.run(main)


def test_closed_manager_refuses() -> None:
    cores: list[Any] = []

    async def main() -> None:
        cores.append(_native.current_manager()._core)

    trio_uring.run(main)
    with pytest.raises(RuntimeError, match="closed"):
        cores[0].start_read(OP["READ"], 0, 1, 0, 0)
    with pytest.raises(RuntimeError, match="closed"):
        cores[0].dispatch(0, print)


def test_fallback_when_trio_moves_its_trap_message(tmp_path: Path) -> None:
    # Without trio's WaitTaskRescheduled, ops park through trio's own
    # wait_task_rescheduled and are woken with outcomes: same results.
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    script = textwrap.dedent(
        f"""
        import os, sys, types
        import trio, trio._core._traps as traps
        # trio_uring imported under a trio that reorganised its traps
        moved = types.ModuleType(traps.__name__)
        moved.__dict__.update(traps.__dict__)
        del moved.WaitTaskRescheduled
        sys.modules[traps.__name__] = moved
        import trio_uring
        from trio_uring import _park, _ops_file as uf
        sys.modules[traps.__name__] = traps
        assert not _park.RAW

        async def main():
            fd = os.open({str(path)!r}, os.O_RDONLY)
            assert await uf.read(fd, 4, 2) == b"2345"
            assert await uf.read(fd, 100, 8) == b"89"
            r, w = os.pipe()
            with trio.move_on_after(0.01) as cs:
                await uf.read(r, 10)
            assert cs.cancelled_caught
            os.write(w, b"later")
            assert await uf.read(r, 10) == b"later"
            try:
                await uf.read(w, 10)
            except OSError as exc:
                assert exc.errno == 9, exc
            else:
                raise AssertionError("no EBADF")
            stats = trio.lowlevel.current_statistics().io_statistics
            assert stats.submitted["LINK_TIMEOUT"] == 1
            print("ok")

        trio_uring.run(main)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        # not the repository root, where the uncompiled source tree would
        # shadow the installed trio_uring
        cwd=os.path.dirname(os.path.abspath(__file__)),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("failing", ["prep_timeout", "prep"])
@pytest.mark.parametrize("op", ["read", "readinto", "readv"])
def test_failed_linked_timeout_leaves_nothing_in_the_kernel(
    op: str, failing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under a deadline, the op's SQE or its LINK_TIMEOUT cannot be queued:
    # the caller gets the error, the read never reaches the kernel (no data
    # taken) and nothing wakes the task later.  read: Core.start_read;
    # readinto: Core.start_rw; readv: the manager's submit().
    async def main() -> None:
        manager = _native.current_manager()
        r, w = os.pipe()
        calls = {
            "read": lambda: uf.read(r, 10),
            "readinto": lambda: uf.readinto(r, bytearray(10)),
            "readv": lambda: uf.readv(r, [bytearray(10)]),
        }

        def no_room(*args: object, **kwargs: object) -> int:
            raise OSError(errno.EBUSY, "no room")

        try:
            with monkeypatch.context() as patch:
                patch.setattr(manager._ring, failing, no_room)
                with trio.move_on_after(10), pytest.raises(OSError, match="no room"):
                    await calls[op]()
            os.write(w, b"data")
            with trio.fail_after(5):
                assert await uf.read(r, 10) == b"data"
            assert not [o for o in manager._ops.values() if o.fd == r]
        finally:
            os.close(r)
            os.close(w)

    trio_uring.run(main)


def test_truncated_datagram_gives_what_fitted() -> None:
    # With MSG_TRUNC the CQE reports the datagram's full length (100), more
    # than the 10-byte bytes object holds: the recv returns those 10 bytes.
    import socket

    async def main() -> None:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        ):
            rx.bind(("127.0.0.1", 0))
            tx.sendto(bytes(range(100)), rx.getsockname())
            got = await lowlevel.recv(rx, 10, socket.MSG_TRUNC)
            assert got == bytes(range(10))

    trio_uring.run(main)


def test_negative_fd_is_the_kernels_ebadf() -> None:
    async def main() -> None:
        core = _native.current_manager()._core
        with pytest.raises(OSError, match=r"\[Errno 9\]") as info:
            await core.start_read(OP["READ"], -5, 10, 0, 0)
        assert info.value.errno == errno.EBADF

    trio_uring.run(main)
