"""force_wakeup from threads and signals; Ctrl-C; guest mode."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import outcome
import pytest
import trio
import trio.testing

import trio_uring


def test_wakeup_from_thread_run_sync_soon() -> None:
    async def main() -> list[int]:
        token = trio.lowlevel.current_trio_token()
        got: list[int] = []
        done = trio.Event()

        def from_thread() -> None:
            for i in range(100):
                token.run_sync_soon(got.append, i)
                time.sleep(0.001)
            token.run_sync_soon(done.set)

        threading.Thread(target=from_thread).start()
        with trio.fail_after(30):
            await done.wait()
        return got

    assert trio_uring.run(main) == list(range(100))


def test_to_thread_and_from_thread() -> None:
    async def main() -> int:
        def work() -> int:
            return int(trio.from_thread.run(trio.sleep, 0) is None) + 41

        return await trio.to_thread.run_sync(work)

    assert trio_uring.run(main) == 42


def test_force_wakeup_ends_a_long_wait() -> None:
    # get_events blocks for a long timeout; force_wakeup from a thread ends it
    manager = trio_uring.UringIOManager(guest=False)
    try:
        threading.Timer(0.05, manager.force_wakeup).start()
        t0 = time.monotonic()
        events = manager.get_events(30)
        assert events  # truthy: something happened, not a timeout
        assert time.monotonic() - t0 < 25
        manager.process_events(events)
        # and the wake-up is re-armed: a second one works too
        threading.Timer(0.05, manager.force_wakeup).start()
        assert manager.get_events(30)
    finally:
        manager.close()


def test_get_events_timeout_is_falsy() -> None:
    manager = trio_uring.UringIOManager(guest=False)
    try:
        assert not manager.get_events(0)
        assert not manager.get_events(0.01)
    finally:
        manager.close()


def test_force_wakeup_after_close_is_harmless() -> None:
    manager = trio_uring.UringIOManager(guest=False)
    manager.close()
    manager.force_wakeup()
    manager.close()  # idempotent


def test_signal_reaches_trio() -> None:
    async def main() -> int:
        with trio.open_signal_receiver(signal.SIGUSR1) as signals:
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
            with trio.fail_after(30):
                async for sig in signals:
                    return int(sig)
        raise AssertionError("unreachable")

    assert trio_uring.run(main) == signal.SIGUSR1


def test_signal_during_wait_does_not_end_timeout_early() -> None:
    # EINTR is retried for the rest of the timeout (PEP 475 style)
    old = signal.signal(signal.SIGUSR2, lambda *a: None)
    try:

        async def main() -> float:
            threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGUSR2)).start()
            t0 = trio.current_time()
            await trio.sleep(0.2)
            return trio.current_time() - t0

        assert trio_uring.run(main) >= 0.2
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_keyboard_interrupt_reaches_trio() -> None:
    code = textwrap.dedent(
        """
        import os, signal, threading, trio, trio_uring
        async def main():
            print("ready", flush=True)
            await trio.sleep(60)
        try:
            trio_uring.run(main)
        except KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        # not the repository root, where the uncompiled source tree would
        # shadow the installed trio_uring
        cwd=os.path.dirname(os.path.abspath(__file__)),
        # a shell without job control starts background jobs with SIGINT
        # ignored, and the child would inherit that: Python then installs
        # no KeyboardInterrupt handler at all
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert "KeyboardInterrupt" in out
    assert proc.returncode == 0


def test_guest_mode_under_asyncio() -> None:
    async def trio_main() -> tuple[str, tuple[str, ...], bytes]:
        stats = trio.lowlevel.current_statistics().io_statistics
        a, b = trio.socket.socketpair()
        with a, b:
            await trio.sleep(0.01)
            await b.send(b"guest")
            return stats.backend, stats.setup_flags, await a.recv(10)

    async def asyncio_main() -> object:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[outcome.Outcome[object]] = loop.create_future()
        trio_uring.start_guest_run(
            trio_main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=True,
        )
        return (await done).unwrap()

    backend, flags, data = asyncio.run(asyncio_main())  # type: ignore[misc]
    assert backend == "io_uring"
    assert data == b"guest"
    # guest mode waits in a worker thread: no single-issuer ring
    assert "SINGLE_ISSUER" not in flags
    assert "DEFER_TASKRUN" not in flags


def test_trio_guest_run_after_install_is_detected() -> None:
    async def trio_main() -> tuple[str, ...]:
        await trio.sleep(0)
        return trio.lowlevel.current_statistics().io_statistics.setup_flags

    async def asyncio_main() -> object:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[outcome.Outcome[object]] = loop.create_future()
        trio.lowlevel.start_guest_run(
            trio_main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=True,
        )
        return (await done).unwrap()

    with trio_uring.installed():
        flags = asyncio.run(asyncio_main())
    assert "SINGLE_ISSUER" not in flags  # type: ignore[operator]


@pytest.mark.parametrize("n", [1, 50])
def test_many_sleeps_and_timeouts(n: int) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(trio.sleep, 0.001 * (i % 7))

    trio_uring.run(main)


def test_timed_wait_after_a_submission_is_not_doubled() -> None:
    # io_uring_enter returns the number of SQEs it submitted even when its
    # wait then timed out; get_events must still honour the original timeout
    # (a regression once made the first trio.sleep of a run take twice as long).
    import socket

    manager = trio_uring.UringIOManager(guest=False)
    a, b = socket.socketpair()
    try:
        op = manager._new_op(trio_uring._ring.OP_POLL_ADD, a.fileno(), None)
        op.position = manager._ring.prep_poll(
            a.fileno(), trio_uring._ring.POLLIN, op.ud
        )
        t0 = time.monotonic()
        assert not manager.get_events(0.3)
        elapsed = time.monotonic() - t0
        assert 0.29 <= elapsed < 0.59, elapsed
    finally:
        manager.close()
        a.close()
        b.close()
