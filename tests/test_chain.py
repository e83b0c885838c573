"""Linked chains: open -> read -> close of a whole file on a direct descriptor."""

from __future__ import annotations

import errno
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

import trio_uring
from trio_uring import _chain, _native, _ring
from trio_uring._ring_ffi import ffi


def run(fn: Callable[[], Awaitable[object]]) -> object:
    return trio_uring.run(fn)


def submitted() -> dict[str, int]:
    return dict(trio.lowlevel.current_statistics().io_statistics.submitted)


def free_slots() -> int:
    return len(_chain.direct_slots(_native.current_manager())._free)


def test_read_file_in_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"chain " * 1000)

    async def main() -> None:
        before = submitted()
        assert await _chain.read_file(path) == b"chain " * 1000
        after = submitted()
        for op in ("OPENAT", "READ", "CLOSE"):
            assert after.get(op, 0) - before.get(op, 0) == 1
        assert free_slots() == _chain.DIRECT_SLOTS  # the slot came back
        fds = len(os.listdir("/proc/self/fd"))
        for _ in range(300):  # more than the slots: they are reused
            await _chain.read_file(path, 10)
        assert len(os.listdir("/proc/self/fd")) == fds  # no fd table use

    run(main)


def test_max_bytes_truncates_and_empty_file(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 5000)
    (tmp_path / "empty").write_bytes(b"")

    async def main() -> None:
        assert await _chain.read_file(tmp_path / "big", 100) == b"x" * 100
        assert await _chain.read_file(tmp_path / "empty") == b""

    run(main)


def test_errors_name_the_file(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(FileNotFoundError) as info:
            await _chain.read_file(tmp_path / "missing")
        assert info.value.filename == str(tmp_path / "missing")
        # a directory opens, its read fails: the hard-linked close still ran
        before = submitted()
        with pytest.raises(IsADirectoryError):
            await _chain.read_file(tmp_path)
        assert submitted()["CLOSE"] - before.get("CLOSE", 0) == 1
        assert free_slots() == _chain.DIRECT_SLOTS
        with pytest.raises(ValueError, match="null"):
            await _chain.read_file("a\0b")
        with pytest.raises(ValueError, match="negative"):
            await _chain.read_file(tmp_path / "missing", -1)

    run(main)


def test_chain_cancelled_before_submit_runs_nothing(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")

    async def main() -> None:
        before = submitted()
        with trio.CancelScope() as cs:
            cs.cancel()
            await _chain.read_file(tmp_path / "f")
        assert cs.cancelled_caught
        assert submitted().get("OPENAT", 0) == before.get("OPENAT", 0)
        assert free_slots() == _chain.DIRECT_SLOTS

    run(main)


def test_chain_cancelled_while_queued_is_unqueued(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")

    async def main() -> None:
        for _ in range(40):  # until the canceller runs after the reader
            async with trio.open_nursery() as n:

                async def canceller(scope: trio.CancelScope = n.cancel_scope) -> None:
                    scope.cancel()

                n.start_soon(_chain.read_file, tmp_path / "f")
                n.start_soon(canceller)
            if submitted().get("NOP", 0) >= 3:
                break
        assert submitted().get("NOP", 0) >= 3  # the three steps became NOPs
        assert free_slots() == _chain.DIRECT_SLOTS
        assert await _chain.read_file(tmp_path / "f") == b"data"

    run(main)


def test_raw_chain_cancelled_in_flight_and_results_per_step() -> None:
    # A pipe read that blocks, linked to a NOP: cancel in flight -> the read
    # and the NOP both end with -ECANCELED -> Cancelled; nothing was read.
    async def main() -> None:
        manager = _native.current_manager()
        r, w = os.pipe()
        buf = ffi.new("char[]", 10)
        addr = int(ffi.cast("uintptr_t", buf))
        steps = [
            (_ring.OP["READ"], r, addr, 10, _native.CURRENT_POSITION, 0, 0, 0),
            (_ring.OP["NOP"], -1, 0, 0, 0, 0, 0, 0),
        ]
        with trio.move_on_after(0.05) as cs:
            await manager.submit_chain(steps, keep=buf)
        assert cs.cancelled_caught
        os.write(w, b"kept")
        exact = [
            (_ring.OP["READ"], r, addr, 4, _native.CURRENT_POSITION, 0, 0, 0),
            steps[1],
        ]
        results = await manager.submit_chain(exact, keep=buf)
        assert results == [4, 0]  # per-step results
        assert ffi.buffer(buf, 4)[:] == b"kept"
        # io_uring counts a short read as a failure for IO_LINK: the rest of
        # the chain is cancelled (read_file hard-links its close for this)
        os.write(w, b"ab")
        results = await manager.submit_chain(steps, keep=buf)
        assert results == [2, -errno.ECANCELED]
        # a failing first step cancels the rest (IO_LINK)
        bad = [(_ring.OP["READ"], 4321, addr, 10, 0, 0, 0, 0), steps[1]]
        results = await manager.submit_chain(bad, keep=buf)
        assert results[0] < 0
        assert results[1] == -errno.ECANCELED
        os.close(r)
        os.close(w)

    run(main)
