"""TRIO_URING_NATIVE_SOCKETS=0 / TRIO_URING_NATIVE_FILES=0: trio's own code.

The escape hatches keep trio's readiness path for sockets and its worker
threads for files, for one run, while everything else stays on io_uring
(read by the manager when the run starts).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import trio_uring


def submitted() -> dict[str, int]:
    return dict(trio.lowlevel.current_statistics().io_statistics.submitted)


async def recv_after_wait() -> dict[str, int]:
    a, b = trio.socket.socketpair()
    with a, b:

        async def later() -> None:
            await trio.sleep(0.01)
            await b.send(b"x")

        async with trio.open_nursery() as n:
            n.start_soon(later)
            assert await a.recv(10) == b"x"  # had to wait: EAGAIN first
    return submitted()


@pytest.mark.parametrize("native", [True, False])
def test_native_sockets_switch(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    if not native:
        monkeypatch.setenv("TRIO_URING_NATIVE_SOCKETS", "0")
    counts = trio_uring.run(recv_after_wait)
    # one POLL_ADD is trio's own: its entry-queue task waits on a wake-up fd
    if native:
        assert counts.get("RECV", 0) == 1
        assert counts.get("POLL_ADD", 0) <= 1
    else:
        assert "RECV" not in counts
        assert counts.get("POLL_ADD", 0) >= 2  # + the recv's wait_readable


@pytest.mark.parametrize("native", [True, False])
def test_native_files_switch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, native: bool
) -> None:
    if not native:
        monkeypatch.setenv("TRIO_URING_NATIVE_FILES", "0")
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    threads: list[object] = []
    original = trio.to_thread.run_sync

    async def counting(*args: object, **kwargs: object) -> object:
        threads.append(args[0])
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trio.to_thread, "run_sync", counting)

    async def main() -> dict[str, int]:
        async with await trio.open_file(path, "rb") as f:
            assert await f.read() == b"hello"
        return submitted()

    counts = trio_uring.run(main)
    if native:
        assert counts.get("OPENAT", 0) == 1
        assert not threads
    else:
        assert "OPENAT" not in counts
        assert threads  # open, read, close in worker threads
