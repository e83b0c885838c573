"""trio's own sockets on native io_uring operations (trio_uring._socket).

Unchanged trio code -- trio.socket, SocketStream, serve_tcp, open_tcp_stream
-- runs on RECV/SEND/ACCEPT/CONNECT/RECVMSG/SENDMSG under trio_uring, with
trio's exceptions, checkpoints and cancellation semantics; under trio's
epoll manager trio's own code runs.  ``statistics().submitted`` proves which
path was taken.
"""

from __future__ import annotations

import array
import contextlib
import functools
import os
import random
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio._core._run as trio_run
import trio._socket as trio_socket
import trio.testing

import trio_uring
from trio_uring import _socket as hooks


def run(fn: Callable[[], Awaitable[object]]) -> Any:
    return trio_uring.run(fn)


def submitted() -> dict[str, int]:
    stats = trio.lowlevel.current_statistics().io_statistics
    assert isinstance(stats, trio_uring.UringStatistics)
    return dict(stats.submitted)


def count(name: str) -> int:
    return submitted().get(name, 0)


# --- the hook and the trio internals it rests on ----------------------------------
def test_trio_internals_we_rely_on() -> None:
    # Fails loudly if trio moves what the hook reads.
    for name in hooks.HOOKED:
        assert name in trio_socket._SocketType.__dict__ or hooks.hooked()
    assert hasattr(trio_run, "GLOBAL_RUN_CONTEXT")

    async def main() -> None:
        runner = trio_run.GLOBAL_RUN_CONTEXT.runner
        assert isinstance(runner.io_manager, trio_uring.UringIOManager)
        assert isinstance(runner.deadlines._active, int)
        assert hasattr(trio_socket._SocketType, "_resolve_address_nocp")
        assert hooks._manager() is runner.io_manager

    run(main)
    assert hooks.hooked()


def test_hook_is_idempotent_and_removable() -> None:
    hooks.hook()
    hooks.hook()
    assert hooks.hooked()
    try:
        hooks.unhook()
        assert not hooks.hooked()
        for name in hooks.HOOKED:
            assert trio_socket._SocketType.__dict__[name] is hooks._ORIGINAL[name]

        async def main() -> None:  # unhooked: trio's readiness path, still works
            hooks.unhook()  # (trio_uring.run hooked again)
            a, b = trio.socket.socketpair()
            with a, b:
                await a.send(b"x")
                assert await b.recv(1) == b"x"
                assert "RECV" not in submitted()

        run(main)
    finally:
        hooks.hook()
    assert hooks.hooked()


def test_epoll_run_uses_trio_code() -> None:
    hooks.hook()

    async def main() -> None:
        assert hooks._manager() is None
        a, b = trio.socket.socketpair()
        with a, b:
            await a.send(b"hi")
            assert await b.recv(10) == b"hi"
        backend = trio.lowlevel.current_statistics().io_statistics.backend
        assert backend == "epoll"

    trio.run(main)


def test_epoll_thread_beside_uring_run() -> None:
    errors: list[BaseException] = []

    def epoll_thread() -> None:
        async def main() -> None:
            assert hooks._manager() is None
            a, b = trio.socket.socketpair()
            with a, b:
                for _ in range(200):
                    await a.send(b"ab")
                    assert await b.recv(2) == b"ab"

        try:
            trio.run(main)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    async def main() -> None:
        thread = threading.Thread(target=epoll_thread)
        thread.start()
        a, b = trio.socket.socketpair()
        with a, b:
            for _ in range(200):
                async with trio.open_nursery() as nursery:

                    async def reader() -> None:
                        assert await b.recv(2) == b"cd"

                    nursery.start_soon(reader)
                    await trio.testing.wait_all_tasks_blocked()
                    await a.send(b"cd")
        await trio.to_thread.run_sync(thread.join)
        assert count("RECV") == 200

    run(main)
    assert not errors


# --- recv / recv_into ------------------------------------------------------------
def test_recv_waits_natively_without_a_buffer() -> None:
    async def main() -> None:
        a, b = trio.socket.socketpair()
        with a, b:
            before = count("RECV")
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    assert await b.recv(65536) == b"hello"

                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                manager = hooks._manager()
                assert manager is not None
                (op,) = manager._socket_readers.values()
                assert op.keep is None  # no 64 KiB buffer pinned while waiting
                await a.send(b"hello")
            assert count("RECV") == before + 1

    run(main)


def test_recv_eof_and_large_transfers() -> None:
    payload = os.urandom(300_000)

    async def main() -> None:
        a, b = trio.socket.socketpair()
        with b:
            async with trio.open_nursery() as nursery:

                async def writer() -> None:
                    with a:
                        view = memoryview(payload)
                        while view:
                            view = view[await a.send(view) :]

                nursery.start_soon(writer)
                got = bytearray()
                while True:
                    chunk = await b.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            assert bytes(got) == payload
            assert await b.recv(10) == b""  # EOF again

    run(main)


def test_recv_into_uses_the_callers_buffer() -> None:
    async def main() -> None:
        a, b = trio.socket.socketpair()
        with a, b:
            buf = bytearray(16)
            before = count("RECV")
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    assert await b.recv_into(buf, 4) == 4

                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                await a.send(b"abcdef")
            assert buf[:4] == b"abcd"
            assert count("RECV") == before + 1
            buf.append(0)  # not left exported to the kernel
            view = memoryview(bytearray(8))
            await a.send(b"xy")
            assert await b.recv_into(view[2:]) == 4  # "ef" left, then "xy"
            view.release()

    run(main)


def test_recv_flags_passthrough_and_bad_arguments() -> None:
    async def main() -> None:
        a, b = trio.socket.socketpair()
        with a, b:
            before = count("RECV")
            async with trio.open_nursery() as nursery:

                async def peek() -> None:
                    assert await b.recv(3, socket.MSG_PEEK) == b"abc"

                nursery.start_soon(peek)
                await trio.testing.wait_all_tasks_blocked()
                await a.send(b"abc")
            assert count("RECV") == before + 1  # MSG_PEEK went to the kernel
            assert await b.recv(3) == b"abc"  # the peek left it there
            with pytest.raises(ValueError, match="negative buffersize"):
                await b.recv(-1)
            with pytest.raises(TypeError):
                await b.recv("x")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await b.recv_into(b"read-only")
            with pytest.raises(ValueError, match="buffer too small"):
                await b.recv_into(bytearray(2), 5)
            assert await b.recv(0) == b""

    run(main)


def test_checkpoints_like_trio() -> None:
    async def main() -> None:
        a, b = trio.socket.socketpair()
        with a, b:
            await a.send(b"1")
            with trio.CancelScope() as scope:
                scope.cancel()
                with trio.testing.assert_checkpoints(), pytest.raises(trio.Cancelled):
                    await b.recv(10)
            with trio.testing.assert_checkpoints():
                assert await b.recv(10) == b"1"  # the cancelled call read nothing
            with trio.testing.assert_checkpoints():
                await a.send(b"2")
            with trio.testing.assert_checkpoints():
                assert await b.recv(10) == b"2"
            with trio.testing.assert_checkpoints(), pytest.raises(TypeError):
                await a.send("str")  # type: ignore[arg-type]

    run(main)


def test_two_receivers_busy() -> None:
    async def main() -> None:
        a, b = trio.socket.socketpair()
        with a, b:
            caught: BaseException | None = None
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(b.recv, 1)
                    nursery.start_soon(b.recv, 1)
            except BaseException as exc:  # a group on newer trio
                caught = exc
            while caught is not None and hasattr(caught, "exceptions"):
                (caught,) = caught.exceptions
            assert isinstance(caught, trio.BusyResourceError)

    run(main)


@pytest.mark.parametrize("first", ["recv", "wait_readable"])
def test_native_recv_and_wait_readable_exclude_each_other(first: str) -> None:
    # On epoll, a waiting recv is a wait_readable: a second reader of either
    # kind gets BusyResourceError.  The native recv in flight counts the same.
    async def main() -> None:
        a, b = trio.socket.socketpair()
        with a, b:

            async def reader(kind: str) -> None:
                if kind == "recv":
                    await b.recv(1)
                else:
                    await trio.lowlevel.wait_readable(b)

            second = "wait_readable" if first == "recv" else "recv"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader, first)
                await trio.testing.wait_all_tasks_blocked()
                with trio.fail_after(5), pytest.raises(trio.BusyResourceError):
                    await reader(second)  # (without the check: it would wait)
                nursery.cancel_scope.cancel()
            # and nothing is left behind: both work one after the other
            await a.send(b"x")
            await trio.lowlevel.wait_readable(b)
            assert await b.recv(1) == b"x"

    run(main)
    trio.run(main)  # the same on epoll


def test_econnreset() -> None:
    async def main() -> None:
        listener = trio.socket.socket()
        with listener:
            await listener.bind(("127.0.0.1", 0))
            listener.listen()
            client = trio.socket.socket()
            with client:
                await client.connect(listener.getsockname())
                server, _ = await listener.accept()
                with server:
                    async with trio.open_nursery() as nursery:

                        async def reader() -> None:
                            with pytest.raises(ConnectionResetError):
                                await server.recv(100)

                        nursery.start_soon(reader)
                        await trio.testing.wait_all_tasks_blocked()
                        client.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        client.close()

    run(main)


def test_send_to_closed_peer_is_epipe_not_sigpipe() -> None:
    async def main() -> None:
        a, b = trio.socket.socketpair()
        with a:
            b.close()
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                await a.send(b"x")

    run(main)


def fill(sock: trio.socket.SocketType) -> int:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    raw = socket.socket(fileno=os.dup(sock.fileno()))
    raw.setblocking(False)
    sent = 0
    with raw:
        try:
            while True:
                sent += raw.send(b"x" * 4096)
        except BlockingIOError:
            pass
    return sent


def test_send_waits_natively_when_the_buffer_is_full() -> None:
    async def main() -> None:
        a, b = trio.socket.socketpair()
        with a, b:
            filled = fill(a)
            before = count("SEND")
            got = 0
            async with trio.open_nursery() as nursery:

                async def writer() -> None:
                    assert await a.send(b"y" * 100) > 0

                nursery.start_soon(writer)
                await trio.testing.wait_all_tasks_blocked()
                assert count("SEND") == before + 1
                while got < filled:
                    got += len(await b.recv(65536))
            while True:
                try:
                    got += len(b._sock.recv(65536))  # type: ignore[attr-defined]
                except BlockingIOError:
                    break
            assert got > filled

    run(main)


# --- close / notify_closing while in flight ----------------------------------------
def test_close_while_recv_and_accept_in_flight() -> None:
    async def main() -> None:
        a, b = trio.socket.socketpair()
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        with a:
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await b.recv(10)

                async def acceptor() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await listener.accept()

                nursery.start_soon(reader)
                nursery.start_soon(acceptor)
                await trio.testing.wait_all_tasks_blocked()
                assert count("ACCEPT") >= 1
                b.close()
                listener.close()
        await trio.lowlevel.checkpoint()  # the ring is still healthy
        c, d = trio.socket.socketpair()
        with c, d:
            await c.send(b"ok")
            assert await d.recv(2) == b"ok"

    run(main)


# --- cancellation: nothing lost, nothing doubled ------------------------------------
def test_deadline_around_recv() -> None:
    async def main() -> None:
        a, b = trio.socket.socketpair()
        with a, b:
            with trio.move_on_after(0.05) as scope:
                await b.recv(10)
            assert scope.cancelled_caught
            await a.send(b"after")
            assert await b.recv(10) == b"after"

    run(main)


def test_byte_accounting_under_random_cancellation() -> None:
    total = 200_000

    async def main() -> None:
        rng = random.Random(1234)
        a, b = trio.socket.socketpair()
        data = bytes(rng.randrange(256) for _ in range(total))
        got = bytearray()
        with a, b:
            async with trio.open_nursery() as nursery:

                async def writer() -> None:
                    view = memoryview(data)
                    while view:
                        with trio.CancelScope() as scope:
                            if rng.random() < 0.3:
                                scope.cancel()
                            n = rng.randrange(1, 5000)
                            view = view[await a.send(view[:n]) :]
                        await trio.sleep(0)
                    a.shutdown(socket.SHUT_WR)

                nursery.start_soon(writer)
                while True:
                    with trio.move_on_after(rng.choice([0, 0, 0.0001, 0.001, 1])):
                        chunk = await b.recv(rng.choice([1, 100, 65536]))
                        if not chunk:
                            break
                        got += chunk
            assert bytes(got) == data

    run(main)


def test_accept_never_loses_a_connection() -> None:
    clients = 60

    async def main() -> None:
        rng = random.Random(99)
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen(clients)
        address = listener.getsockname()
        accepted: list[trio.socket.SocketType] = []
        connected: list[socket.socket] = []
        with listener:
            async with trio.open_nursery() as nursery:

                async def connector() -> None:
                    for _ in range(clients):
                        s = socket.socket()
                        s.setblocking(False)
                        with contextlib.suppress(BlockingIOError):
                            s.connect(address)
                        connected.append(s)
                        await trio.sleep(rng.choice([0, 0.0005]))

                nursery.start_soon(connector)
                while len(accepted) < clients:
                    with trio.move_on_after(rng.choice([0, 0.0002, 0.002, 5])):
                        accepted.append((await listener.accept())[0])
            for s in accepted:
                s.close()
            for c in connected:
                c.close()
        assert len(accepted) == clients

    run(main)


# --- connect ------------------------------------------------------------------------
def test_connect_refused_and_cancelled() -> None:
    async def main() -> None:
        probe = trio.socket.socket()
        await probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()
        probe.close()  # nothing listens there now
        before = count("CONNECT")
        with (
            trio.socket.socket() as sock,
            pytest.raises(OSError, match=r"Error connecting to .*refused"),
        ):
            await sock.connect(address)
        assert count("CONNECT") == before + 1
        with trio.socket.socket() as sock:
            with trio.CancelScope() as scope:
                scope.cancel()
                with pytest.raises(trio.Cancelled):
                    await sock.connect(address)
            assert sock.fileno() == -1  # trio closes a cancelled connect's socket
        with (
            trio.socket.socket(socket.AF_UNIX) as sock,
            pytest.raises(FileNotFoundError),
        ):
            await sock.connect("/nonexistent/trio-uring-test")

    run(main)


def test_streams_end_to_end_go_native() -> None:
    async def main() -> None:
        async def handler(stream: trio.SocketStream) -> None:
            async for data in stream:
                await stream.send_all(data)

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, host="127.0.0.1"), handler, 0
            )
            port = listeners[0].socket.getsockname()[1]
            before = submitted()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                for i in range(20):
                    await stream.send_all(b"m%d" % i)
                    assert await stream.receive_some() == b"m%d" % i
                await stream.send_eof()
            after = submitted()
            assert after.get("CONNECT", 0) > before.get("CONNECT", 0)
            assert after.get("ACCEPT", 0) > before.get("ACCEPT", 0)
            # recv is try-first: it goes to the kernel when no data is there
            # yet, which a ping-pong makes the common case (not every time)
            assert after.get("RECV", 0) > before.get("RECV", 0)
            nursery.cancel_scope.cancel()

    run(main)


def test_open_unix_socket(tmp_path: Any) -> None:
    path = str(tmp_path / "sock")

    async def main() -> None:
        listener = trio.socket.socket(socket.AF_UNIX)
        await listener.bind(path)
        listener.listen()
        with listener:
            stream = await trio.open_unix_socket(path)
            server, address = await listener.accept()
            with server:
                assert address == ""
                async with stream:
                    await stream.send_all(b"unix")
                    assert await server.recv(10) == b"unix"

    run(main)


# --- datagrams and msghdr ops ---------------------------------------------------
def udp_families() -> list[tuple[int, str]]:
    out = [(socket.AF_INET, "127.0.0.1")]
    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                s.bind(("::1", 0))
            out.append((socket.AF_INET6, "::1"))
        except OSError:  # pragma: no cover - no IPv6 loopback here
            pass
    return out


@pytest.mark.parametrize(("family", "host"), udp_families())
def test_udp_sendto_recvfrom(family: int, host: str) -> None:
    async def main() -> None:
        with (
            trio.socket.socket(family, socket.SOCK_DGRAM) as s1,
            trio.socket.socket(family, socket.SOCK_DGRAM) as s2,
        ):
            await s1.bind((host, 0))
            await s2.bind((host, 0))
            before = count("RECVMSG")
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    data, address = await s2.recvfrom(2048)
                    assert data == b"dgram"
                    assert address == s1.getsockname()
                    buf = bytearray(10)
                    n, address = await s2.recvfrom_into(buf)
                    assert (buf[:n], address) == (b"two", s1.getsockname())

                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                assert await s1.sendto(b"dgram", s2.getsockname()) == 5
                await trio.testing.wait_all_tasks_blocked()
                assert await s1.sendto(b"two", 0, s2.getsockname()) == 3
            assert count("RECVMSG") == before + 2

    run(main)


@pytest.mark.parametrize("abstract", [False, True])
def test_unix_datagram_addresses(tmp_path: Any, abstract: bool) -> None:
    def name(tag: str) -> Any:
        if abstract:
            return b"\0trio-uring-test-" + tag.encode() + str(os.getpid()).encode()
        return str(tmp_path / tag)

    async def main() -> None:
        with (
            trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s1,
            trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s2,
        ):
            await s1.bind(name("one"))
            await s2.bind(name("two"))
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    data, address = await s2.recvfrom(100)
                    assert data == b"hi"
                    assert address == s1.getsockname()

                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                await s1.sendto(b"hi", name("two"))

    run(main)


def test_recvmsg_scm_rights_and_recvmsg_into() -> None:
    async def main() -> None:
        a, b = trio.socket.socketpair()
        r, w = os.pipe()
        with a, b:
            before = count("RECVMSG")
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    data, anc, _flags, _ = await b.recvmsg(
                        10, socket.CMSG_SPACE(4 * array.array("i").itemsize)
                    )
                    assert data == b"fd"
                    ((level, kind, payload),) = anc
                    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
                    (fd,) = array.array("i", payload)
                    os.write(w, b"!")
                    assert os.read(fd, 1) == b"!"
                    os.close(fd)

                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                await a.sendmsg(
                    [b"fd"],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]))],
                )
            assert count("RECVMSG") == before + 1
            bufs = [bytearray(2), bytearray(3)]
            async with trio.open_nursery() as nursery:

                async def reader_into() -> None:
                    n, _, _, _ = await b.recvmsg_into(iter(bufs))
                    assert n == 4

                nursery.start_soon(reader_into)
                await trio.testing.wait_all_tasks_blocked()
                await a.send(b"abcd")
            assert bufs == [bytearray(b"ab"), bytearray(b"cd\0")]
        os.close(r)
        os.close(w)

    run(main)


def test_sendmsg_waits_natively_when_full() -> None:
    async def main() -> None:
        a, b = trio.socket.socketpair()
        with a, b:
            fill(a)
            before = count("SENDMSG")
            async with trio.open_nursery() as nursery:

                async def writer() -> None:
                    assert await a.sendmsg([b"x" * 10, b"y" * 10]) > 0

                nursery.start_soon(writer)
                await trio.testing.wait_all_tasks_blocked()
                assert count("SENDMSG") == before + 1
                while True:
                    try:
                        b._sock.recv(65536)  # type: ignore[attr-defined]
                    except BlockingIOError:
                        break

    run(main)


def test_more_completions_than_provided_buffers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 300 receivers complete in one submission batch; the ring has 256
    # buffers, so the kernel answers ENOBUFS to some: those read with the
    # syscall instead, and nothing is lost.
    fallbacks = 0
    original = hooks._readiness_loop_first

    async def counting(*args: Any) -> bytes:
        nonlocal fallbacks
        fallbacks += 1
        return await original(*args)

    monkeypatch.setattr(hooks, "_readiness_loop_first", counting)
    # submit-first, so that every recv takes a buffer at submission
    monkeypatch.setattr(hooks, "RECV_SUBMIT_FIRST", True)
    n = hooks.BUFFER_COUNT + 44

    async def main() -> None:
        pairs = [trio.socket.socketpair() for _ in range(n)]
        results: dict[int, bytes] = {}
        try:
            async with trio.open_nursery() as nursery:

                async def reader(i: int, sock: trio.socket.SocketType) -> None:
                    results[i] = await sock.recv(100)

                for i, (a, _) in enumerate(pairs):
                    a._sock.send(b"%d" % i)  # type: ignore[attr-defined]
                # every recv finds its data at submission: all take a buffer
                # in the one io_uring_enter that submits them
                for i, (_, b) in enumerate(pairs):
                    nursery.start_soon(reader, i, b)
        finally:
            for a, b in pairs:
                a.close()
                b.close()
        assert results == {i: b"%d" % i for i in range(n)}

    run(main)
    assert fallbacks > 0


def test_connect_cancelled_in_flight_closes_the_socket() -> None:
    # A listener whose accept queue is full drops SYNs: the connect waits in
    # the kernel until the deadline cancels it.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    with listener:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(listener.getsockname())
            fillers.append(s)

        async def main() -> None:
            before = count("CONNECT")
            with trio.socket.socket() as sock:
                with trio.move_on_after(0.3) as scope:
                    await sock.connect(listener.getsockname())
                if not scope.cancelled_caught:  # pragma: no cover
                    pytest.skip("the kernel accepted the connection anyway")
                assert sock.fileno() == -1  # trio closes a cancelled connect's socket
            assert count("CONNECT") == before + 1

        try:
            run(main)
        finally:
            for s in fillers:
                s.close()


def test_msghdr_ops_bad_arguments_as_trio() -> None:
    # try-first: the stdlib checks the arguments, after trio's cancel point
    async def main() -> None:
        a, b = trio.socket.socketpair()
        with a, b:
            with trio.testing.assert_checkpoints(), pytest.raises(TypeError):
                await a.sendmsg(5)  # type: ignore[arg-type]
            with trio.testing.assert_checkpoints(), pytest.raises(TypeError):
                await a.sendmsg([b"x"], 5)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await a.sendmsg([b"x"], [], 0, None, 5)  # type: ignore[call-arg]
            with (
                trio.testing.assert_checkpoints(),
                pytest.raises(ValueError, match="negative buffersize"),
            ):
                await b.recvfrom(-1)
            assert await a.sendmsg(iter([b"a", b"b"])) == 2
            assert await b.recv(2) == b"ab"

    run(main)
