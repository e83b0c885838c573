"""Multishot accept and multishot recv (provided buffer ring): nothing dropped."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator

import pytest
import trio
import trio.testing

import trio_uring
from trio_uring.lowlevel import MultishotAcceptor, MultishotReceiver


def run(fn: Callable[[], Awaitable[object]]) -> object:
    return trio_uring.run(fn)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(128)
    lst.setblocking(False)
    with lst:
        yield lst


def stats() -> trio_uring.UringStatistics:
    s = trio.lowlevel.current_statistics().io_statistics
    assert isinstance(s, trio_uring.UringStatistics)
    return s


def test_accept_buffers_connections_nobody_waited_for(listener: socket.socket) -> None:
    async def main() -> None:
        port = listener.getsockname()[1]
        async with MultishotAcceptor(listener) as acceptor:
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
            await trio.sleep(0.05)  # all accepted by the kernel, nobody asked yet
            fds = [await acceptor.accept() for _ in range(20)]
            peers = set()
            for fd in fds:
                with socket.socket(fileno=fd) as s:
                    peers.add(s.getpeername())
            assert peers == {c.getsockname() for c in clients}
            for c in clients:
                c.close()
        assert stats().submitted["ACCEPT"] == 1  # one SQE, twenty connections

    run(main)


def test_accept_aclose_closes_untaken_connections(listener: socket.socket) -> None:
    async def main() -> None:
        port = listener.getsockname()[1]
        acceptor = MultishotAcceptor(listener)
        client = socket.create_connection(("127.0.0.1", port))
        await trio.sleep(0.05)
        await acceptor.aclose()
        client.settimeout(10)
        assert client.recv(10) == b""  # the server side was closed, not leaked
        client.close()
        with pytest.raises(trio.ClosedResourceError):
            await acceptor.accept()
        await trio.sleep(0.01)
        assert stats().ops_in_flight == 1  # only trio's wake-up poll

    run(main)


def test_accept_cancelled_wait_loses_nothing(listener: socket.socket) -> None:
    async def main() -> None:
        port = listener.getsockname()[1]
        async with MultishotAcceptor(listener) as acceptor:
            with trio.move_on_after(0.02) as cs:
                await acceptor.accept()
            assert cs.cancelled_caught
            client = socket.create_connection(("127.0.0.1", port))
            fd = await acceptor.accept()
            os.close(fd)
            client.close()

    run(main)


def test_accept_async_iteration(listener: socket.socket) -> None:
    async def main() -> None:
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        got = 0
        async with MultishotAcceptor(listener) as acceptor:
            async for fd in acceptor:
                os.close(fd)
                got += 1
                if got == 3:
                    break
        for c in clients:
            c.close()

    run(main)


def test_accept_notify_closing(listener: socket.socket) -> None:
    async def main() -> None:
        acceptor = MultishotAcceptor(listener)
        async with trio.open_nursery() as n:

            async def waiter() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await acceptor.accept()

            n.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            trio.lowlevel.notify_closing(listener)
        await acceptor.aclose()

    run(main)


def _connected_pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    return a, b


def test_receive_keeps_data_beyond_max_bytes_and_eof() -> None:
    async def main() -> None:
        a, b = _connected_pair()
        with a, b:
            async with MultishotReceiver(a) as rx:
                b.sendall(b"0123456789")
                assert await rx.receive(4) == b"0123"
                assert await rx.receive(4) == b"4567"
                assert await rx.receive(100) == b"89"
                b.shutdown(socket.SHUT_WR)
                assert await rx.receive(100) == b""
                assert await rx.receive(100) == b""

    run(main)


def test_receive_buffers_while_nobody_waits() -> None:
    async def main() -> None:
        a, b = _connected_pair()
        with a, b:
            async with MultishotReceiver(a) as rx:
                for i in range(50):
                    b.sendall(b"%03d" % i)
                    await trio.sleep(0)
                await trio.sleep(0.02)
                data = b""
                while len(data) < 150:
                    data += await rx.receive(1000)
                assert data == b"".join(b"%03d" % i for i in range(50))
            assert stats().submitted["RECV"] == 1

    run(main)


def test_receive_cancelled_wait_loses_nothing() -> None:
    async def main() -> None:
        a, b = _connected_pair()
        with a, b:
            async with MultishotReceiver(a) as rx:
                with trio.move_on_after(0.02):
                    await rx.receive()
                b.sendall(b"kept")
                assert await rx.receive() == b"kept"

    run(main)


def test_receive_more_than_the_buffer_ring_holds_in_order() -> None:
    # 4 MiB through 256 x 4 KiB buffers: the kernel runs out (ENOBUFS) and the
    # receiver re-arms; every byte arrives once and in order.
    total = 4 << 20
    payload = bytes(range(256)) * (total // 256)

    async def main() -> None:
        a, b = _connected_pair()
        with a, b:
            sender = threading.Thread(target=b.sendall, args=(payload,))
            async with MultishotReceiver(a) as rx:
                sender.start()
                got = bytearray()
                while len(got) < total:
                    got += await rx.receive(1 << 20)
                    if len(got) % 7 == 0:
                        await trio.sleep(0.001)  # let the buffers run dry
            await trio.to_thread.run_sync(sender.join)
            assert bytes(got) == payload

    run(main)


def test_receive_aclose_returns_unread_bytes_and_stops() -> None:
    async def main() -> None:
        a, b = _connected_pair()
        with a, b:
            rx = MultishotReceiver(a)
            b.sendall(b"unread")
            await trio.sleep(0.02)
            assert await rx.aclose() == b"unread"
            # the kernel no longer reads the socket: new data stays there
            b.sendall(b"later")
            await trio.lowlevel.wait_readable(a)
            assert a.recv(100) == b"later"

    run(main)


def test_receive_notify_closing() -> None:
    async def main() -> None:
        a, b = _connected_pair()
        with b:
            rx = MultishotReceiver(a)
            async with trio.open_nursery() as n:

                async def waiter() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await rx.receive()

                n.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                trio.lowlevel.notify_closing(a)
            a.close()
            await rx.aclose()

    run(main)


@pytest.mark.parametrize("buffers", [256, 8])
def test_many_receivers_share_the_buffer_ring(
    buffers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 300 receivers share the run's buffers: idle ones hold none.  With only
    # 8 buffers, data arriving on many sockets at once exhausts them: the
    # kernel ends those multishots with ENOBUFS, the receivers re-arm, and
    # every byte still arrives exactly once.
    from trio_uring import _multishot

    monkeypatch.setattr(_multishot, "BUFFER_COUNT", buffers)

    async def main() -> None:
        pairs = [_connected_pair() for _ in range(300)]
        receivers = [MultishotReceiver(a) for a, _ in pairs]
        await trio.sleep(0.01)
        for i, (_, b) in enumerate(pairs):
            b.sendall(b"msg %d" % i)
        for i, rx in enumerate(receivers):
            expected = b"msg %d" % i
            got = b""
            while len(got) < len(expected):
                got += await rx.receive()
            assert got == expected
        if buffers == 8:
            assert stats().submitted["RECV"] > 300  # some were re-armed
        for rx in receivers:
            await rx.aclose()
        for a, b in pairs:
            a.close()
            b.close()

    run(main)


def test_bad_input() -> None:
    async def main() -> None:
        with pytest.raises(TypeError):
            MultishotReceiver(object())
        with pytest.raises(OSError, match="Bad file descriptor"):
            MultishotAcceptor(-1)
        a, b = _connected_pair()
        with a, b:
            async with MultishotReceiver(a) as rx:
                with pytest.raises(ValueError, match="negative"):
                    await rx.receive(-1)
                with pytest.raises(ValueError, match="at least 1"):
                    await rx.receive(0)

    run(main)
