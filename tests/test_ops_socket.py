"""Native socket operations (trio_uring._ops_socket): results as the stdlib
gives them, clear errors for bad input, the cancellation races, deadlines,
notify_closing, and the fallback path when the kernel lacks an opcode.
"""

from __future__ import annotations

import array
import errno
import math
import os
import select
import socket
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing

import trio_uring
from trio_uring import _native
from trio_uring import _ops_socket as ops
from trio_uring._ring import OP

BAD_FD = 4321  # an fd number nothing here opens


def run(fn: Callable[[], Awaitable[object]], **kwargs: Any) -> object:
    return trio_uring.run(fn, **kwargs)


def submitted() -> dict[str, int]:
    stats = trio.lowlevel.current_statistics().io_statistics
    assert isinstance(stats, trio_uring.UringStatistics)
    return stats.submitted


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected AF_UNIX stream pair; ``a`` stays blocking (the stdlib
    default), ``b`` is non-blocking (as trio keeps its sockets)."""
    a, b = socket.socketpair()
    b.setblocking(False)
    return a, b


@pytest.fixture
def sockpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = pair()
    with a, b:
        yield a, b


def nothing_to_read(sock: socket.socket) -> bool:
    try:
        sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)
    except BlockingIOError:
        return True
    return False


def tcp_listener(family: int = socket.AF_INET) -> socket.socket:
    listener = socket.socket(family)
    listener.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    listener.listen()
    return listener


async def ring_is_healthy() -> None:
    await ops.nop()
    a, b = pair()
    with a, b:
        assert await ops.send(a, b"ok") == 2
        assert await ops.recv(b, 10) == b"ok"


# --- happy paths ------------------------------------------------------------------
def test_nop_and_timeout() -> None:
    async def main() -> None:
        await ops.nop()
        await ops.timeout(0)
        await ops.timeout(0.001)
        with trio.move_on_after(0.02) as cs:
            await ops.timeout(math.inf)
        assert cs.cancelled_caught
        assert submitted()["TIMEOUT"] == 3
        assert submitted()["NOP"] >= 1

    run(main)


def test_recv_send_like_the_stdlib(sockpair: tuple[socket.socket, ...]) -> None:
    a, b = sockpair

    async def main() -> None:
        assert await ops.send(a, b"hello world") == 11
        assert await ops.recv(b, 5, socket.MSG_PEEK) == b"hello"
        assert await ops.recv(b, 5) == b"hello"
        buf = bytearray(10)
        assert await ops.recv_into(b, memoryview(buf)[2:], 3) == 3
        assert buf[2:5] == b" wo"
        assert await ops.recv_into(b, buf) == 3
        assert buf[:3] == b"rld"
        assert await ops.send(a, memoryview(b"xyz")[1:]) == 2
        assert await ops.send(a, array.array("b", [65, 66])) == 2
        assert await ops.recv(b.fileno(), 100) == b"yzAB"
        # nbytes=0 returns at once, as the stdlib does (the kernel would wait)
        assert await ops.recv(b, 0) == b""
        assert await ops.recv_into(b, bytearray()) == 0
        stats = submitted()
        assert stats["RECV"] >= 4
        assert stats["SEND"] == 3

    run(main)


def test_recv_waits_on_a_blocking_socket_without_blocking_the_thread() -> None:
    async def main() -> None:
        a, b = pair()
        with a, b:
            got = []

            async def reader() -> None:
                got.append(await ops.recv(a, 100))  # ``a`` is in blocking mode

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                b.send(b"late")
            assert got == [b"late"]
            assert os.get_blocking(a.fileno())

    run(main)


def test_trio_sockets_and_eof() -> None:
    async def main() -> None:
        a, b = trio.socket.socketpair()
        with a, b:
            assert await ops.send(a, b"via trio") == 8
            assert await ops.recv(b, 100) == b"via trio"
            a.close()
            assert await ops.recv(b, 100) == b""

    run(main)


def test_send_to_closed_peer_is_epipe_not_sigpipe() -> None:
    async def main() -> None:
        a, b = pair()
        with a:
            b.close()
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                await ops.send(a, b"x")

    run(main)


@pytest.mark.parametrize("native", [True, False], ids=["native", "fallback"])
def test_msg_dontwait_raises_blockingioerror(
    sockpair: tuple[socket.socket, ...], native: bool
) -> None:
    a, _ = sockpair

    async def main() -> None:
        if not native:
            manager = _native.current_manager()
            manager.supported = manager.supported - {OP["RECV"], OP["RECVMSG"]}
        with pytest.raises(BlockingIOError):
            await ops.recv(a, 10, socket.MSG_DONTWAIT)
        with pytest.raises(BlockingIOError):
            await ops.recv_into(a, bytearray(10), 0, socket.MSG_DONTWAIT)
        with pytest.raises(BlockingIOError):
            await ops.recvmsg(a, 10, 0, socket.MSG_DONTWAIT)
        with pytest.raises(BlockingIOError):
            await ops.recvfrom(a, 10, socket.MSG_DONTWAIT)

    run(main)


@pytest.mark.parametrize(
    ("family", "host"),
    [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")],
)
def test_udp_sendto_recvfrom(family: int, host: str) -> None:
    async def main() -> None:
        with (
            socket.socket(family, socket.SOCK_DGRAM) as u1,
            socket.socket(family, socket.SOCK_DGRAM) as u2,
        ):
            u1.bind((host, 0))
            u2.bind((host, 0))
            assert await ops.sendto(u1, b"dgram", u2.getsockname()) == 5
            assert await ops.recvfrom(u2, 100) == (b"dgram", u1.getsockname())
            # an int fd, and a truncated datagram
            assert await ops.sendto(u1.fileno(), b"0123456789", u2.getsockname()) == 10
            assert await ops.recvfrom(u2.fileno(), 4) == (b"0123", u1.getsockname())
            # what the stdlib receives from us, and we from the stdlib
            u1.sendto(b"std", u2.getsockname())
            assert await ops.recvfrom(u2, 100) == (b"std", u1.getsockname())
            await ops.sendto(u1, b"ours", u2.getsockname())
            assert u2.recvfrom(100) == (b"ours", u1.getsockname())

    run(main)


def test_sendto_resolves_host_names() -> None:
    async def main() -> None:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u1,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u2,
        ):
            u1.bind(("127.0.0.1", 0))
            u2.bind(("127.0.0.1", 0))
            await ops.sendto(u1, b"by name", ("localhost", u2.getsockname()[1]))
            assert await ops.recvfrom(u2, 100) == (b"by name", u1.getsockname())
            await ops.sendto(u1, b"bytes host", (b"127.0.0.1", u2.getsockname()[1]))
            assert await ops.recvfrom(u2, 100) == (b"bytes host", u1.getsockname())

    run(main)


@pytest.mark.parametrize("kind", ["path", "abstract", "unbound"])
def test_unix_datagram_addresses_match_the_stdlib(kind: str) -> None:
    async def main() -> None:
        with (
            tempfile.TemporaryDirectory() as d,
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as u1,
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as u2,
        ):
            if kind == "path":
                u1.bind(os.path.join(d, "one"))
                u2.bind(os.path.join(d, "two"))
            else:
                tag = f"{os.getpid()}-{id(u1)}".encode()
                if kind == "abstract":
                    u1.bind(b"\0trio-uring-a-" + tag)
                u2.bind(b"\0trio-uring-b-" + tag)
            await ops.sendto(u1, b"ours", u2.getsockname())
            u1.sendto(b"std", u2.getsockname())
            ours = await ops.recvfrom(u2, 100)
            std = u2.recvfrom(100)
            assert ours[0] == b"ours"
            assert std[0] == b"std"
            assert ours[1] == std[1]

    run(main)


def test_sendmsg_recvmsg_pass_fds(sockpair: tuple[socket.socket, ...]) -> None:
    a, b = sockpair

    async def main() -> None:
        r, w = os.pipe()
        try:
            fds = array.array("i", [r, w])
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
            assert await ops.sendmsg(a, [b"ab", memoryview(b"cd"), b""], anc) == 4
            data, ancdata, flags, address = await ops.recvmsg(
                b, 100, socket.CMSG_SPACE(2 * fds.itemsize)
            )
            assert (data, flags, address) == (b"abcd", 0, None)
            [(level, kind, payload)] = ancdata
            assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
            got = array.array("i")
            got.frombytes(payload)
            assert len(got) == 2
            os.write(got[1], b"through")
            assert os.read(r, 100) == b"through"
            for fd in got:
                os.close(fd)
            # too little room for the fds: MSG_CTRUNC, as the stdlib reports it
            await ops.sendmsg(a, [b"x"], anc)
            data, ancdata, flags, _ = await ops.recvmsg(b, 100, 0)
            assert data == b"x"
            assert ancdata == []
            assert flags & socket.MSG_CTRUNC
        finally:
            os.close(r)
            os.close(w)

    run(main)


def test_recvmsg_matches_stdlib_for_datagrams() -> None:
    async def main() -> None:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u1,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u2,
        ):
            u1.bind(("127.0.0.1", 0))
            u2.bind(("127.0.0.1", 0))
            u2.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
            for _ in range(2):
                await ops.sendmsg(u1, [b"hello ", b"world"], (), 0, u2.getsockname())
            ours = await ops.recvmsg(u2, 5, 256)
            std = u2.recvmsg(5, 256)
            assert ours == std
            assert ours[0] == b"hello"
            assert ours[2] & socket.MSG_TRUNC
            assert ours[1]
            assert ours[1][0][:2] == (socket.IPPROTO_IP, socket.IP_TOS)

    run(main)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6, socket.AF_UNIX])
def test_accept_and_connect(family: int) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as d:
            if family == socket.AF_UNIX:
                listener = socket.socket(socket.AF_UNIX)
                listener.bind(os.path.join(d, "listener"))
                listener.listen()
            else:
                listener = tcp_listener(family)
            with listener, socket.socket(family) as client:
                accepted: list[tuple[int, object]] = []

                async def acceptor() -> None:
                    accepted.append(await ops.accept(listener))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(acceptor)
                    await trio.testing.wait_all_tasks_blocked()
                    await ops.connect(client, listener.getsockname())
                [(fd, address)] = accepted
                with socket.socket(fileno=fd) as conn:
                    # what the stdlib's accept reports ("" for an unbound
                    # AF_UNIX client)
                    assert address == conn.getpeername() == client.getsockname()
                    assert not os.get_inheritable(fd)
                    assert os.get_blocking(fd)
                    await ops.send(client, b"ping")
                    assert await ops.recv(conn, 10) == b"ping"
                stats = submitted()
                assert stats["ACCEPT"] == 1
                assert stats["CONNECT"] == 1

    run(main)


def test_accept_flags() -> None:
    async def main() -> None:
        with tcp_listener() as listener:
            clients = [socket.create_connection(listener.getsockname()) for _ in "ab"]
            fd, _ = await ops.accept(listener, socket.SOCK_NONBLOCK)
            assert not os.get_blocking(fd)
            assert os.get_inheritable(fd)
            os.close(fd)
            fd, _ = await ops.accept(listener.fileno())
            assert os.get_blocking(fd)
            assert not os.get_inheritable(fd)
            os.close(fd)
            for c in clients:
                c.close()

    run(main)


def test_connect_errors() -> None:
    async def main() -> None:
        with tcp_listener() as listener:
            address = listener.getsockname()
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            await ops.connect(s, address)
        with socket.socket(socket.AF_UNIX) as s, tempfile.TemporaryDirectory() as d:
            with pytest.raises(FileNotFoundError):
                await ops.connect(s, os.path.join(d, "missing"))
            with pytest.raises(OSError, match="too long"):
                await ops.connect(s, "x" * 200)
        with socket.socket() as s:
            with pytest.raises(OverflowError):
                await ops.connect(s, ("127.0.0.1", 70000))
            with pytest.raises(TypeError):
                await ops.connect(s, "127.0.0.1:80")
        await ring_is_healthy()

    run(main)


def test_connect_nonblocking_trio_socket() -> None:
    async def main() -> None:
        with tcp_listener() as listener, trio.socket.socket() as client:
            await ops.connect(client, listener.getsockname())
            conn, _ = listener.accept()
            with conn:
                assert conn.getpeername() == client.getsockname()

    run(main)


def test_socket_and_shutdown() -> None:
    async def main() -> None:
        fd = await ops.socket(socket.AF_INET, socket.SOCK_STREAM)
        with socket.socket(fileno=fd) as s:
            assert (s.family, s.type) == (socket.AF_INET, socket.SOCK_STREAM)
            assert not os.get_inheritable(fd)
            assert os.get_blocking(fd)
        fd = await ops.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        assert not os.get_blocking(fd)
        os.close(fd)
        with pytest.raises(OSError, match="not supported") as info:
            await ops.socket(12345, socket.SOCK_STREAM)
        assert info.value.errno == errno.EAFNOSUPPORT
        a, b = pair()
        with a, b:
            await ops.shutdown(a, socket.SHUT_WR)
            assert await ops.recv(b, 10) == b""
            with pytest.raises(OSError, match="Invalid argument") as info:
                await ops.shutdown(a, 7)
            assert info.value.errno == errno.EINVAL
        assert submitted()["SOCKET"] == 3
        assert submitted()["SHUTDOWN"] == 2

    run(main)


def test_poll() -> None:
    async def main() -> None:
        r, w = os.pipe()
        try:
            assert await ops.poll(w, select.POLLOUT) == select.POLLOUT
            got: list[int] = []

            async def poller() -> None:
                got.append(await ops.poll(r, 1))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(poller)
                await trio.testing.wait_all_tasks_blocked()
                os.write(w, b"x")
            assert got == [select.POLLIN]
        finally:
            os.close(r)
            os.close(w)

    run(main)


# --- bad input ------------------------------------------------------------------------
def _closed_fd_calls() -> list[Callable[[], Awaitable[object]]]:
    return [
        lambda: ops.recv(BAD_FD, 10),
        lambda: ops.recv_into(BAD_FD, bytearray(10)),
        lambda: ops.send(BAD_FD, b"x"),
        lambda: ops.sendto(BAD_FD, b"x", ("127.0.0.1", 9)),
        lambda: ops.recvfrom(BAD_FD, 10),
        lambda: ops.sendmsg(BAD_FD, [b"x"]),
        lambda: ops.recvmsg(BAD_FD, 10),
        lambda: ops.accept(BAD_FD),
        lambda: ops.connect(BAD_FD, ("127.0.0.1", 9)),
        lambda: ops.shutdown(BAD_FD, socket.SHUT_RDWR),
        lambda: ops.poll(BAD_FD, 1),
    ]


def test_bad_fds_raise_ebadf() -> None:
    async def main() -> None:
        for call in _closed_fd_calls():
            with pytest.raises(OSError, match="Bad file descriptor") as info:
                await call()
            assert info.value.errno == errno.EBADF
        with pytest.raises(OSError, match="Bad file descriptor") as info:
            await ops.recv(-1, 10)
        assert info.value.errno == errno.EBADF
        with pytest.raises(TypeError):
            await ops.recv("not a socket", 10)  # type: ignore[arg-type]
        await ring_is_healthy()

    run(main)


BAD_ARGS: list[tuple[str, Callable[[socket.socket], Awaitable[object]], type]] = [
    ("recv negative", lambda s: ops.recv(s, -1), ValueError),
    ("recv huge", lambda s: ops.recv(s, 2**31), OverflowError),
    ("recv float", lambda s: ops.recv(s, 1.5), TypeError),  # type: ignore[arg-type]
    ("recv negative flags", lambda s: ops.recv(s, 1, -1), ValueError),
    ("recv huge flags", lambda s: ops.recv(s, 1, 2**40), OverflowError),
    ("recv_into bytes", lambda s: ops.recv_into(s, b"read-only"), TypeError),
    ("recv_into str", lambda s: ops.recv_into(s, "text"), TypeError),
    (
        "recv_into readonly view",
        lambda s: ops.recv_into(s, memoryview(bytearray(4)).toreadonly()),
        TypeError,
    ),
    ("recv_into negative", lambda s: ops.recv_into(s, bytearray(4), -1), ValueError),
    ("recv_into too big", lambda s: ops.recv_into(s, bytearray(4), 5), ValueError),
    ("recv_into huge", lambda s: ops.recv_into(s, bytearray(4), 2**31), OverflowError),
    ("send str", lambda s: ops.send(s, "text"), TypeError),
    ("send int", lambda s: ops.send(s, 5), TypeError),
    ("sendmsg str buffers", lambda s: ops.sendmsg(s, "text"), TypeError),
    ("sendmsg non-buffer", lambda s: ops.sendmsg(s, [b"x", 3]), TypeError),
    ("sendmsg bad ancdata", lambda s: ops.sendmsg(s, [b"x"], [(1, 2)]), TypeError),  # type: ignore[list-item]
    ("recvfrom negative", lambda s: ops.recvfrom(s, -5), ValueError),
    ("recvmsg negative anc", lambda s: ops.recvmsg(s, 5, -1), ValueError),
    ("recvmsg huge", lambda s: ops.recvmsg(s, 2**31), OverflowError),
    ("poll huge events", lambda s: ops.poll(s, 2**33), OverflowError),
    ("timeout negative", lambda s: ops.timeout(-1), ValueError),
    ("timeout nan", lambda s: ops.timeout(math.nan), ValueError),
    ("timeout str", lambda s: ops.timeout("1"), TypeError),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(
    ("call", "exc"), [(c, e) for _, c, e in BAD_ARGS], ids=[n for n, _, _ in BAD_ARGS]
)
def test_bad_arguments(
    call: Callable[[socket.socket], Awaitable[object]], exc: type[BaseException]
) -> None:
    async def main() -> None:
        a, b = pair()
        with a, b:
            with pytest.raises(exc):
                await call(b)
            assert nothing_to_read(a)  # nothing was sent by a failed call
        await ring_is_healthy()

    run(main)


def test_bad_addresses() -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            with pytest.raises(TypeError):
                await ops.sendto(u, b"x", "127.0.0.1")
            with pytest.raises(TypeError):
                await ops.sendto(u, b"x", ("127.0.0.1", 1, 2))
            with pytest.raises(TypeError):
                await ops.sendto(u, b"x", ("127.0.0.1", "80"))
            with pytest.raises(OverflowError):
                await ops.sendto(u, b"x", ("127.0.0.1", -1))
            with pytest.raises(socket.gaierror):
                await ops.sendto(u, b"x", ("no-such-host.invalid", 9))
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u:
            with pytest.raises(OverflowError):
                await ops.sendto(u, b"x", ("::1", 9, 1 << 20))
            with pytest.raises(TypeError):
                await ops.sendto(u, b"x", ("::1",))
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as u,
            pytest.raises(TypeError),
        ):
            await ops.sendto(u, b"x", 5)
        await ring_is_healthy()

    run(main)


# --- cancellation races -------------------------------------------------------------
def test_cancel_before_submit_sends_nothing(
    sockpair: tuple[socket.socket, ...],
) -> None:
    a, b = sockpair

    async def main() -> None:
        with trio.CancelScope() as cs:
            cs.cancel()
            await ops.send(a, b"never")
        assert cs.cancelled_caught
        with trio.CancelScope() as cs:
            cs.cancel()
            await ops.sendmsg(a, [b"never"])
        assert cs.cancelled_caught
        await ops.nop()
        assert nothing_to_read(b)
        assert "SEND" not in submitted()
        assert "SENDMSG" not in submitted()

    run(main)


class _CancelAfterStep(trio.abc.Instrument):
    """Cancel ``scope`` right after ``task``'s next step (the step that
    queued its SQE), before the run loop can hand the SQE to the kernel."""

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.scope: trio.CancelScope | None = None
        self.pending_sqes = -1

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task and self.scope is not None:
            self.pending_sqes = _native.current_manager()._ring.sq_pending()
            self.scope.cancel()
            self.task = None


def test_cancel_while_queued_sends_nothing(sockpair: tuple[socket.socket, ...]) -> None:
    a, b = sockpair

    async def main() -> None:
        inst = _CancelAfterStep()
        trio.lowlevel.add_instrument(inst)
        try:
            with trio.CancelScope() as cs:
                inst.scope = cs
                inst.task = trio.lowlevel.current_task()
                await ops.send(a, b"never")
        finally:
            trio.lowlevel.remove_instrument(inst)
        assert cs.cancelled_caught
        assert inst.pending_sqes >= 1  # it was cancelled while still queued
        await ops.nop()
        assert nothing_to_read(b)
        assert "SEND" not in submitted()  # un-queued: the kernel never saw it

    run(main)


def test_cancel_in_flight_loses_nothing(sockpair: tuple[socket.socket, ...]) -> None:
    a, b = sockpair

    async def main() -> None:
        cs = trio.CancelScope()
        got: list[bytes] = []

        async def reader() -> None:
            with cs:
                got.append(await ops.recv(b, 100))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert submitted().get("RECV") == 1
            cs.cancel()
        assert cs.cancelled_caught
        assert got == []
        assert submitted().get("ASYNC_CANCEL") == 1
        a.sendall(b"every byte")
        assert await ops.recv(b, 100) == b"every byte"

    run(main)


class _CancelBeforeResume(trio.abc.Instrument):
    """Cancel ``scope`` just before ``task`` resumes (its op has completed)."""

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.scope: trio.CancelScope | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task and self.scope is not None:
            self.scope.cancel()
            self.task = None


def test_cancel_at_completion_delivers_the_result(
    sockpair: tuple[socket.socket, ...],
) -> None:
    a, b = sockpair

    async def main() -> None:
        a.sendall(b"already here")
        inst = _CancelBeforeResume()
        trio.lowlevel.add_instrument(inst)
        got = []
        try:
            with trio.CancelScope() as cs:
                inst.scope = cs
                inst.task = trio.lowlevel.current_task()
                got.append(await ops.recv(b, 100))
                assert cs.cancel_called
                await trio.lowlevel.checkpoint()  # Cancelled surfaces here
                got.append(b"not reached")
        finally:
            trio.lowlevel.remove_instrument(inst)
        assert cs.cancelled_caught
        assert got == [b"already here"]

    run(main)


async def _recv_then_checkpoint(sock: socket.socket, got: list[bytes]) -> None:
    got.append(await ops.recv(sock, 100))
    await trio.lowlevel.checkpoint()
    got.append(b"not reached")


def test_cancel_racing_completion_loses_nothing() -> None:
    """Data arrives in the same instant the recv is cancelled: either the
    recv returns it (and Cancelled comes at the next checkpoint) or it stays
    in the socket; never lost."""

    async def main() -> None:
        for i in range(20):
            a, b = pair()
            with a, b:
                got: list[bytes] = []
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_recv_then_checkpoint, b, got)
                    await trio.testing.wait_all_tasks_blocked()
                    payload = b"race %d" % i
                    a.sendall(payload)
                    nursery.cancel_scope.cancel()
                rest = b""
                if not nothing_to_read(b):
                    rest = b.recv(100)
                assert b"not reached" not in got
                assert b"".join(got) + rest == payload

    run(main)


def test_accept_cancelled_in_flight_loses_no_connection() -> None:
    async def main() -> None:
        with tcp_listener() as listener:
            with trio.move_on_after(math.inf) as cs:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ops.accept, listener)
                    await trio.testing.wait_all_tasks_blocked()
                    cs.cancel()
            assert cs.cancelled_caught
            with socket.create_connection(listener.getsockname()) as client:
                fd, address = await ops.accept(listener)
                os.close(fd)
                assert address == client.getsockname()

    run(main)


async def _accept_into(listener: socket.socket, got: list[tuple[int, object]]) -> None:
    got.append(await ops.accept(listener))


def test_accept_racing_a_connection_loses_nothing() -> None:
    async def main() -> None:
        with tcp_listener() as listener:
            for _ in range(10):
                got: list[tuple[int, object]] = []
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_accept_into, listener, got)
                    await trio.testing.wait_all_tasks_blocked()
                    client = socket.create_connection(listener.getsockname())
                    nursery.cancel_scope.cancel()
                with client:
                    if not got:
                        got.append(await ops.accept(listener))
                    [(fd, address)] = got
                    os.close(fd)
                    assert address == client.getsockname()

    run(main)


# --- deadlines and closing ----------------------------------------------------
def test_deadline_becomes_a_linked_timeout(sockpair: tuple[socket.socket, ...]) -> None:
    a, b = sockpair

    async def main() -> None:
        with trio.move_on_after(0.05) as cs:
            await ops.recv(b, 100)
        assert cs.cancelled_caught
        assert submitted().get("LINK_TIMEOUT", 0) >= 1
        a.sendall(b"after")
        assert await ops.recv(b, 100) == b"after"

    run(main)


def test_mock_clock_gets_no_linked_timeout(sockpair: tuple[socket.socket, ...]) -> None:
    _, b = sockpair

    async def main() -> None:
        start = trio.current_time()
        with trio.move_on_after(1000) as cs:
            await ops.recv(b, 100)
        assert cs.cancelled_caught
        assert trio.current_time() - start >= 1000
        assert "LINK_TIMEOUT" not in submitted()

    run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("op", ["recv", "accept", "poll"])
def test_notify_closing_while_pending(op: str) -> None:
    async def main() -> None:
        a, b = pair()
        listener = tcp_listener()
        with a, b, listener:
            target = listener if op == "accept" else b
            raised: list[BaseException] = []

            async def waiter() -> None:
                try:
                    if op == "recv":
                        await ops.recv(b, 10)
                    elif op == "accept":
                        await ops.accept(listener)
                    else:
                        await ops.poll(b, 1)
                except trio.ClosedResourceError as exc:
                    raised.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                trio.lowlevel.notify_closing(target)
            assert len(raised) == 1
        await ring_is_healthy()

    run(main)


# --- the fallback path (kernel without the opcode) ----------------------------
async def _scenario_recv() -> None:
    a, b = pair()
    with a, b:
        got: list[object] = []

        async def reader() -> None:
            got.append(await ops.recv(a, 100))  # blocking-mode socket: waits
            buf = bytearray(5)
            got.append((await ops.recv_into(b, buf, 3), bytes(buf)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            b.send(b"hello")
            a.send(b"world")
        assert got == [b"hello", (3, b"wor\0\0")]
        assert os.get_blocking(a.fileno())
        assert not os.get_blocking(b.fileno())


def test_fallback_leaves_the_fd_as_it_was() -> None:
    """The fallback runs syscalls on a non-blocking view of the fd; the fd's
    own mode is put back, even when socket.setdefaulttimeout() is in force
    (which makes the stdlib switch fds it wraps to non-blocking)."""

    async def main() -> None:
        manager = _native.current_manager()
        manager.supported = manager.supported - {OP["RECV"], OP["ACCEPT"]}
        a, b = pair()
        listener = tcp_listener()
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(5.0)
        try:
            with a, b, listener:
                assert os.get_blocking(a.fileno())
                assert os.get_blocking(listener.fileno())
                received: list[bytes] = []
                accepted: list[tuple[int, object]] = []
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_recv_then_checkpoint, a, received)
                    nursery.start_soon(_accept_into, listener, accepted)
                    await trio.testing.wait_all_tasks_blocked()
                    b.send(b"x")
                    socket.create_connection(listener.getsockname()).close()
                os.close(accepted[0][0])
                assert received == [b"x", b"not reached"]
                assert os.get_blocking(a.fileno())
                assert os.get_blocking(listener.fileno())
        finally:
            socket.setdefaulttimeout(old)
        assert "RECV" not in submitted()
        assert "ACCEPT" not in submitted()

    run(main)


async def _scenario_send() -> None:
    a, b = pair()
    with a, b:
        assert await ops.send(a, b"abc") == 3
        assert await ops.send(b.fileno(), b"def") == 3
        assert b.recv(10) == b"abc"
        assert a.recv(10) == b"def"
        with trio.CancelScope() as cs:
            cs.cancel()
            await ops.send(a, b"never")
        assert nothing_to_read(b)


async def _scenario_sendmsg() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u1,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u2,
    ):
        u1.bind(("127.0.0.1", 0))
        u2.bind(("127.0.0.1", 0))
        assert await ops.sendto(u1, b"one", u2.getsockname()) == 3
        assert await ops.sendmsg(u1, [b"t", b"wo"], (), 0, u2.getsockname()) == 3
        assert u2.recvfrom(10) == (b"one", u1.getsockname())
        assert u2.recvfrom(10) == (b"two", u1.getsockname())


async def _scenario_recvmsg() -> None:
    with (
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u1,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u2,
    ):
        u1.bind(("::1", 0))
        u2.bind(("::1", 0))
        u1.sendto(b"one", u2.getsockname())
        u1.sendto(b"two", u2.getsockname())
        assert await ops.recvfrom(u2, 10) == (b"one", u1.getsockname())
        assert await ops.recvmsg(u2, 10) == (b"two", [], 0, u1.getsockname())


async def _scenario_accept() -> None:
    with tcp_listener() as listener:
        got: list[tuple[int, object]] = []

        async def acceptor() -> None:
            got.append(await ops.accept(listener, 0))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(acceptor)
            await trio.testing.wait_all_tasks_blocked()
            client = socket.create_connection(listener.getsockname())
        with client:
            [(fd, address)] = got
            assert address == client.getsockname()
            assert os.get_inheritable(fd)
            assert os.get_blocking(fd)
            os.close(fd)
        assert os.get_blocking(listener.fileno())


async def _scenario_connect() -> None:
    with tcp_listener() as listener, socket.socket() as client:
        await ops.connect(client, listener.getsockname())
        assert os.get_blocking(client.fileno())
        conn, address = listener.accept()
        conn.close()
        assert address == client.getsockname()
    with socket.socket() as client, pytest.raises(ConnectionRefusedError):
        await ops.connect(client, address)


async def _scenario_socket() -> None:
    fd = await ops.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with socket.socket(fileno=fd) as s:
        assert (s.family, s.type) == (socket.AF_INET6, socket.SOCK_DGRAM)
        assert not os.get_inheritable(fd)


async def _scenario_shutdown() -> None:
    a, b = pair()
    with a, b:
        await ops.shutdown(b, socket.SHUT_WR)
        assert a.recv(10) == b""


async def _scenario_poll() -> None:
    a, b = pair()
    with a, b:
        assert await ops.poll(a, 4) == 4
        got: list[int] = []

        async def poller() -> None:
            got.append(await ops.poll(b, 1 | 2))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller)
            await trio.testing.wait_all_tasks_blocked()
            a.send(b"x")
        # io_uring reports the wakeup's events that were asked for: a socket
        # wakes readers with POLLPRI too, which select.poll would not show
        assert got[0] & select.POLLIN


async def _scenario_nop() -> None:
    await ops.nop()


async def _scenario_timeout() -> None:
    await ops.timeout(0.001)
    with trio.move_on_after(0.01) as cs:
        await ops.timeout(math.inf)
    assert cs.cancelled_caught


SCENARIOS: dict[str, Callable[[], Awaitable[None]]] = {
    "RECV": _scenario_recv,
    "SEND": _scenario_send,
    "SENDMSG": _scenario_sendmsg,
    "RECVMSG": _scenario_recvmsg,
    "ACCEPT": _scenario_accept,
    "CONNECT": _scenario_connect,
    "SOCKET": _scenario_socket,
    "SHUTDOWN": _scenario_shutdown,
    "POLL_ADD": _scenario_poll,
    "NOP": _scenario_nop,
    "TIMEOUT": _scenario_timeout,
}


@pytest.mark.parametrize("native", [True, False], ids=["native", "fallback"])
@pytest.mark.parametrize("opname", list(SCENARIOS))
def test_native_and_fallback_agree(opname: str, native: bool) -> None:
    async def main() -> None:
        manager = _native.current_manager()
        if not native:
            manager.supported = manager.supported - {OP[opname]}
            assert not manager.supports(OP[opname])
        await SCENARIOS[opname]()
        if native:
            assert submitted().get(opname, 0) >= 1
        elif opname != "POLL_ADD":  # wait_readable itself is a POLL_ADD
            assert opname not in submitted()
        await ring_is_healthy()

    run(main)


def test_unencodable_family_takes_the_stdlib_path() -> None:
    """AF_NETLINK addresses are not ours to encode: sendto/recvfrom still
    work, through the stdlib."""

    async def main() -> None:
        nl_route = 0
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl_route) as nl:
            # RTM_GETLINK dump request: nlmsghdr + ifinfomsg
            request = (
                (32).to_bytes(4, "little")
                + bytes.fromhex("120001030100000000000000")
                + bytes(16)
            )
            assert await ops.sendto(nl, request, (0, 0)) == 32
            data, address = await ops.recvfrom(nl, 65536)
            assert data
            assert address == (0, 0)
            assert "SENDMSG" not in submitted()
            assert "RECVMSG" not in submitted()

    run(main)
