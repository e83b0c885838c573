"""Subprocesses and pipes on io_uring: trio's and anyio's process APIs.

trio waits for a child through a pidfd and talks to it through pipes
(``trio.lowlevel.FdStream``), all of it through the IO manager's
``wait_readable``/``wait_writable``/``notify_closing``.  These tests run
every process API on io_uring: large outputs and inputs (many pipe-buffer
refills), both pipes busy at once, cancellation and deadlines (the child is
killed, the wait ends), closing a pipe under a pending read, and anyio's
wrappers on the ``"trio_uring"`` backend.  Every test ends by checking that
no operation is left in flight.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import trio

import trio_uring
from trio_uring.lowlevel import inflight

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="io_uring is Linux-only"
)

T = TypeVar("T")
PY = sys.executable
TRIO_ENTRY_QUEUE_TASK = "<TrioToken.run_sync_soon task>"
BIG = 8 * 1024 * 1024  # 128 refills of a default 64 KiB pipe buffer


def _pattern(n: int) -> bytes:
    block = bytes(range(256)) * 256
    return (block * (n // len(block) + 1))[:n]


def _writer_code(n: int) -> str:
    return (
        "import sys\n"
        "block = bytes(range(256)) * 256\n"
        f"n = {n}\n"
        "data = (block * (n // len(block) + 1))[:n]\n"
        "sys.stdout.buffer.write(data)\n"
    )


CAT = [PY, "-c", "import shutil, sys; shutil.copyfileobj(sys.stdin.buffer, "
       "sys.stdout.buffer)"]  # fmt: skip
SLEEP = [PY, "-c", "import time; time.sleep(3600)"]


async def _settle_and_count() -> int:
    """Ops in flight that are not trio's own wake-up wait."""
    for _ in range(5):
        await trio.lowlevel.checkpoint()
    assert trio.lowlevel.current_statistics().io_statistics.backend == "io_uring"
    ops = [op for op in inflight() if op.task != TRIO_ENTRY_QUEUE_TASK]
    return len(ops)


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` on io_uring and check that it leaves nothing in flight."""

    async def main() -> T:
        result = await fn()
        assert await _settle_and_count() == 0, inflight()
        return result

    return trio_uring.run(main)


# ---------------------------------------------------------------------------
# trio.run_process


def test_run_process_captures_output() -> None:
    async def main() -> subprocess.CompletedProcess[bytes]:
        return await trio.run_process(
            [PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)"],
            capture_stdout=True,
            capture_stderr=True,
        )

    result = run(main)
    assert result.returncode == 0
    assert result.stdout.strip() == b"out"
    assert result.stderr.strip() == b"err"


def test_run_process_large_output() -> None:
    async def main() -> bytes:
        result = await trio.run_process(
            [PY, "-c", _writer_code(BIG)], capture_stdout=True
        )
        return result.stdout

    out = run(main)
    assert len(out) == BIG
    assert out == _pattern(BIG)


def test_run_process_large_input_and_output_at_once() -> None:
    # the child echoes while we still write: both pipes fill and drain
    # concurrently, or this deadlocks
    data = _pattern(BIG)

    async def main() -> bytes:
        result = await trio.run_process(CAT, stdin=data, capture_stdout=True)
        return result.stdout

    assert run(main) == data


def test_run_process_check_raises() -> None:
    async def main() -> None:
        await trio.run_process([PY, "-c", "raise SystemExit(3)"])

    with pytest.raises(subprocess.CalledProcessError) as info:
        run(main)
    assert info.value.returncode == 3


def test_run_process_deadline_kills_the_child() -> None:
    procs: list[trio.Process] = []

    async def main() -> bool:
        with trio.move_on_after(0.2) as scope:
            async with trio.open_nursery() as nursery:
                procs.append(await nursery.start(trio.run_process, SLEEP))
        return scope.cancelled_caught

    assert run(main) is True
    (proc,) = procs
    assert proc.returncode == -signal.SIGTERM


def test_run_process_cancelled_from_outside() -> None:
    procs: list[trio.Process] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            procs.append(await nursery.start(trio.run_process, SLEEP))
            nursery.cancel_scope.cancel()

    run(main)
    assert procs[0].returncode == -signal.SIGTERM


def test_run_process_cancel_escalates_to_kill() -> None:
    # a child that ignores SIGTERM: deliver_cancel kills it
    ignore_term = [
        PY,
        "-c",
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(3600)\n",
    ]
    procs: list[trio.Process] = []

    async def deliver_cancel(proc: trio.Process) -> None:
        proc.terminate()
        await trio.sleep(0.05)
        proc.kill()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(
                lambda task_status: trio.run_process(
                    ignore_term,
                    stdout=subprocess.PIPE,
                    deliver_cancel=deliver_cancel,
                    check=False,
                    task_status=task_status,
                )
            )
            procs.append(proc)
            assert proc.stdout is not None
            got = b""
            while b"ready" not in got:
                got += await proc.stdout.receive_some()
            nursery.cancel_scope.cancel()

    run(main)
    assert procs[0].returncode == -signal.SIGKILL


def test_many_processes_concurrently() -> None:
    n = 16

    async def main() -> list[bytes]:
        results: list[bytes] = [b""] * n

        async def one(i: int) -> None:
            payload = _pattern(256 * 1024 + i)
            r = await trio.run_process(CAT, stdin=payload, capture_stdout=True)
            results[i] = r.stdout

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
        return results

    for i, out in enumerate(run(main)):
        assert out == _pattern(256 * 1024 + i)


# ---------------------------------------------------------------------------
# trio.lowlevel.open_process with pipes


def test_open_process_pipes_used_concurrently() -> None:
    data = _pattern(BIG)

    async def main() -> tuple[bytes, int]:
        proc = await trio.lowlevel.open_process(
            CAT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        stdin, stdout = proc.stdin, proc.stdout
        received = bytearray()

        async def feed() -> None:
            view = memoryview(data)
            for start in range(0, len(data), 100_000):  # many small sends
                await stdin.send_all(view[start : start + 100_000])
            await stdin.aclose()

        async def drain() -> None:
            while chunk := await stdout.receive_some(65536):
                received.extend(chunk)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            nursery.start_soon(drain)
        await stdout.aclose()
        return bytes(received), await proc.wait()

    out, rc = run(main)
    assert rc == 0
    assert out == data


def test_open_process_kill_and_wait() -> None:
    async def main() -> int:
        proc = await trio.lowlevel.open_process(SLEEP)
        async with trio.open_nursery() as nursery:

            async def waiter() -> None:
                assert await proc.wait() == -signal.SIGKILL

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            proc.kill()
        return await proc.wait()

    assert run(main) == -signal.SIGKILL


def test_open_process_wait_cancelled_then_waited_again() -> None:
    async def main() -> int:
        proc = await trio.lowlevel.open_process(SLEEP)
        with trio.move_on_after(0.05):
            await proc.wait()
        assert proc.returncode is None  # still running: the wait was cancelled
        proc.kill()
        return await proc.wait()

    assert run(main) == -signal.SIGKILL


def test_closing_stdout_under_a_pending_read() -> None:
    async def main() -> None:
        proc = await trio.lowlevel.open_process(SLEEP, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        stdout = proc.stdout
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await stdout.receive_some()

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            await stdout.aclose()  # notify_closing wakes the reader
        proc.kill()
        await proc.wait()

    run(main)


def test_stdin_broken_pipe_when_child_exits() -> None:
    async def main() -> None:
        proc = await trio.lowlevel.open_process(
            [PY, "-c", "pass"], stdin=subprocess.PIPE
        )
        assert proc.stdin is not None
        await proc.wait()
        # more than a pipe buffer: the reader is gone, so this breaks
        with pytest.raises(trio.BrokenResourceError):
            await proc.stdin.send_all(b"x" * (4 * 1024 * 1024))
        await proc.stdin.aclose()

    run(main)


def test_deadline_on_a_pipe_read() -> None:
    async def main() -> None:
        proc = await trio.lowlevel.open_process(SLEEP, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(0.05):
                await proc.stdout.receive_some()
        proc.kill()
        await proc.wait()
        await proc.stdout.aclose()

    run(main)


# ---------------------------------------------------------------------------
# anyio's process API on the "trio_uring" backend

anyio = pytest.importorskip("anyio")


def anyio_run(fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        result = await fn()
        assert await _settle_and_count() == 0, inflight()
        return result

    return anyio.run(main, backend="trio_uring")  # type: ignore[no-any-return]


def test_anyio_run_process_large_output_and_input() -> None:
    data = _pattern(BIG)

    async def main() -> tuple[bytes, bytes]:
        big = await anyio.run_process([PY, "-c", _writer_code(BIG)])
        echoed = await anyio.run_process(CAT, input=data)
        return big.stdout, echoed.stdout

    big, echoed = anyio_run(main)
    assert big == data
    assert echoed == data


def test_anyio_run_process_check() -> None:
    async def main() -> Any:
        return await anyio.run_process([PY, "-c", "raise SystemExit(5)"])

    with pytest.raises(subprocess.CalledProcessError) as info:
        anyio_run(main)
    assert info.value.returncode == 5


def test_anyio_open_process_streams_concurrently() -> None:
    data = _pattern(2 * 1024 * 1024)

    async def main() -> bytes:
        received = bytearray()
        async with await anyio.open_process(CAT) as proc:
            assert proc.stdin is not None
            assert proc.stdout is not None
            stdin, stdout = proc.stdin, proc.stdout

            async def feed() -> None:
                async with stdin:
                    for start in range(0, len(data), 50_000):
                        await stdin.send(data[start : start + 50_000])

            async def drain() -> None:
                async for chunk in stdout:
                    received.extend(chunk)

            async with anyio.create_task_group() as tg:
                tg.start_soon(feed)
                tg.start_soon(drain)
            assert await proc.wait() == 0
        return bytes(received)

    assert anyio_run(main) == data


def test_anyio_process_cancelled_by_deadline() -> None:
    async def main() -> int | None:
        async with await anyio.open_process(SLEEP) as proc:
            with anyio.move_on_after(0.05):
                await proc.wait()
            assert proc.returncode is None
            proc.terminate()
            return await proc.wait()

    assert anyio_run(main) == -signal.SIGTERM


def _anyio_version() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(x) for x in version("anyio").split(".")[:2] if x.isdigit())


@pytest.mark.skipif(
    _anyio_version() < (4, 3),
    reason="anyio < 4.3 leaves a cancelled run_process child unreaped "
    "(ResourceWarning), on epoll too",
)
def test_anyio_run_process_cancelled_kills_child() -> None:
    async def main() -> None:
        with anyio.move_on_after(0.1):
            await anyio.run_process(SLEEP)

    anyio_run(main)  # returns: the child was killed and reaped


def test_pid_and_environment_pass_through() -> None:
    async def main() -> tuple[bytes, int]:
        proc = await trio.lowlevel.open_process(
            [PY, "-c", "import os; print(os.environ['TRIO_URING_X'], os.getppid())"],
            stdout=subprocess.PIPE,
            env={**os.environ, "TRIO_URING_X": "yes"},
        )
        assert proc.stdout is not None
        out = b""
        async with proc.stdout:
            while chunk := await proc.stdout.receive_some():
                out += chunk
        await proc.wait()
        return out, os.getpid()

    out, pid = run(main)
    assert out.split() == [b"yes", str(pid).encode()]
