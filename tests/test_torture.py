"""Randomized cancellation torture: an op that raised Cancelled did not happen,
an op that completed in the kernel delivers its result.

Three families run under a storm of cancellations that land at every moment of
an op's life (GUIDE section 3):

* before submit: the scope is cancelled before the call (the pending
  cancel is delivered at the op's wait, which un-queues its SQE: it never
  reaches the kernel);
* while queued: a sibling task (:class:`Chaos`) cancels the scope in the same
  trio batch, after the SQE was prepared and before ``io_uring_enter``: the
  SQE becomes a NOP;
* in flight: the sibling cancels a few batches later, or a tiny deadline
  (0-200 µs, a linked timeout in the kernel, sometimes pushed back while the
  op waits so the kernel's timeout fires early and the op is resubmitted)
  runs out: ASYNC_CANCEL, and the op's own CQE decides (``-ECANCELED``:
  Cancelled; a result: delivered, Cancelled at the next checkpoint).

Each family then checks that nothing was lost or doubled:

1. recv: a byte stream over a socketpair or TCP loopback, fed by sends that
   are cancelled too, must arrive exactly (order kept, every byte once);
   some runs switch between ``recv`` and a ``MultishotReceiver``;
2. accept: every connection a client made is accepted exactly once; some
   runs switch between ``accept`` and a ``MultishotAcceptor``;
3. write: records written to distinct offsets of a regular file, to an
   O_DIRECT file and to a one-page pipe (where writes wait for room): every
   confirmed record is there, every cancelled one is not.

Each (family, seed) run must see at least :data:`TARGET` Cancelled (two runs
per family: 102,000), plus :data:`GUEST_TARGET` in one more run per family on
a guest-mode ring (see :func:`run_torture`): 117,000 in all, in about 25 s
on two cores.  Every run also ends with nothing of its own left in the ring
and with NOPs (un-queued SQEs) and ASYNC_CANCELs submitted.  A failure
prints the seed (pytest shows the captured output) and the test id carries
it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import math
import mmap
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import outcome
import pytest
import trio

import trio_uring
from trio_uring import lowlevel

T = TypeVar("T")

#: Cancelled raised per (family, seed) run: 2 seeds x 3 families >= 102,000
TARGET = 17_000
#: the same storm on a guest ring (see run_torture), on top
GUEST_TARGET = 5_000
SEEDS = [20240601, 7, 1234]
#: a hang is a bug: no run may take this long
HANG_SECONDS = 60.0
#: largest send / recv / record
MAX_CHUNK = 1 << 16
#: the byte stream is this (prime) period of random bytes, so a lost or
#: doubled chunk shifts everything after it off the pattern
PERIOD = 1_000_003
_PATTERN = random.Random(0).randbytes(PERIOD)
_PATTERN2 = _PATTERN + _PATTERN[:MAX_CHUNK]
#: the same without zero bytes, for file records (a cancelled region stays 0)
_NONZERO2 = _PATTERN2.replace(b"\0", b"\x01")
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_BUF = 4096


def pattern(offset: int, n: int, source: bytes = _PATTERN2) -> bytes:
    """Bytes ``offset .. offset + n`` of the endless stream."""
    start = offset % PERIOD
    if n <= MAX_CHUNK:
        return source[start : start + n]
    return b"".join(
        pattern(offset + i, min(MAX_CHUNK, n - i), source)
        for i in range(0, n, MAX_CHUNK)
    )


def first_difference(a: bytes | bytearray, b: bytes | bytearray) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def log_size(rng: random.Random, top: int = MAX_CHUNK) -> int:
    """1..top, log-uniform: as many tiny chunks as huge ones."""
    return max(1, min(top, int(2 ** rng.uniform(0, math.log2(top)))))


# --- the cancellation storm ---------------------------------------------------
class Chaos:
    """A sibling task that acts on armed scopes after some of its own turns.

    It checkpoints in a loop, so it runs once per trio batch.  A countdown of
    0 fires in the batch the scope was armed in: after the armed task in
    trio's (randomly ordered) batch, the op's SQE is still queued; before it,
    the cancel lands in the next batch, in flight.  A countdown k > 0 fires k
    batches later: in flight, or after the op completed.
    """

    def __init__(self) -> None:
        self._armed: list[tuple[int, Callable[[], object]]] = []
        self.running = True

    def arm(self, turns: int, action: Callable[[], object]) -> None:
        self._armed.append((turns, action))

    async def run(self) -> None:
        while self.running:
            if self._armed:
                left: list[tuple[int, Callable[[], object]]] = []
                for turns, action in self._armed:
                    if turns <= 0:
                        action()
                    else:
                        left.append((turns - 1, action))
                self._armed = left
            await trio.lowlevel.checkpoint()


def move_deadline(scope: trio.CancelScope, rng: random.Random) -> Callable[[], None]:
    """An action that pushes the deadline back (or drops it) while the op
    waits: the kernel's linked timeout fires early and the op goes again."""
    later = math.inf if rng.random() < 0.3 else rng.uniform(50e-6, 400e-6)

    def move() -> None:
        scope.deadline = trio.current_time() + later

    return move


@dataclass
class Tally:
    attempts: int = 0
    #: Cancelled raised (the op did not happen)
    cancelled: int = 0
    #: of which the scope was cancelled before the call
    before_submit: int = 0
    #: the op completed and its result was delivered
    completed: int = 0
    #: of which the scope had been cancelled meanwhile (Cancelled comes later)
    completed_under_cancel: int = 0
    modes: dict[str, int] = field(default_factory=dict)

    def add(self, other: Tally) -> None:
        self.attempts += other.attempts
        self.cancelled += other.cancelled
        self.before_submit += other.before_submit
        self.completed += other.completed
        self.completed_under_cancel += other.completed_under_cancel
        for mode, n in other.modes.items():
            self.modes[mode] = self.modes.get(mode, 0) + n


async def attempt(
    rng: random.Random,
    chaos: Chaos,
    tally: Tally,
    op: Callable[[], Awaitable[T]],
) -> T | None:
    """Run ``op()`` under a randomly timed cancellation.

    Returns its result, or None if it raised Cancelled.  The result is taken
    before any further checkpoint, so a value delivered under a cancelled
    scope is never dropped.
    """
    tally.attempts += 1
    roll = rng.random()
    with trio.CancelScope() as cs:
        if roll < 0.12:
            mode = "before"
            cs.cancel()
        elif roll < 0.40:
            mode = "same-batch"
            chaos.arm(0, cs.cancel)
        elif roll < 0.62:
            mode = "after-turns"
            chaos.arm(rng.choice((1, 1, 1, 2, 2, 3, 4, 6, 9)), cs.cancel)
        elif roll < 0.78:
            mode = "deadline"
            cs.deadline = trio.current_time() + rng.uniform(0, 200e-6)
        elif roll < 0.85:
            mode = "deadline+turns"
            cs.deadline = trio.current_time() + rng.uniform(0, 200e-6)
            chaos.arm(rng.randrange(3), cs.cancel)
        elif roll < 0.93:
            mode = "deadline-moved"
            cs.deadline = trio.current_time() + rng.uniform(0, 100e-6)
            chaos.arm(rng.randrange(3), move_deadline(cs, rng))
        else:
            mode = "none"
        tally.modes[mode] = tally.modes.get(mode, 0) + 1
        try:
            value = await op()
        except trio.Cancelled:
            tally.cancelled += 1
            tally.before_submit += mode == "before"
            raise
        tally.completed += 1
        if cs.cancel_called:
            tally.completed_under_cancel += 1
        return value
    return None


async def pause(rng: random.Random, most: int) -> None:
    """0..most checkpoints: a random moment."""
    for _ in range(rng.randrange(most + 1)):
        await trio.lowlevel.checkpoint()


def io_stats() -> trio_uring.UringStatistics:
    s = trio.lowlevel.current_statistics().io_statistics
    assert isinstance(s, trio_uring.UringStatistics)
    return s


async def settled() -> trio_uring.UringStatistics:
    """Statistics once only trio's own wake-up poll is left in the ring.

    Every native op's task was woken by its final CQE; what may still be
    on its way are the CQEs of linked timeouts and of cancelled readiness
    polls, which follow within microseconds.
    """
    give_up = time.monotonic() + 2
    while True:
        s = io_stats()
        if s.ops_in_flight == 1 or time.monotonic() > give_up:
            break
        await trio.sleep(0.001)
    assert s.ops_in_flight == 1, lowlevel.format_table(lowlevel.inflight())
    return s


def check_moments(
    tally: Tally, target: int, before: dict[str, int], after: dict[str, int], what: str
) -> None:
    """All three cancellation moments happened in this run."""

    def delta(name: str) -> int:
        return after.get(name, 0) - before.get(name, 0)

    print(
        f"{what}: {tally}; NOP +{delta('NOP')}, ASYNC_CANCEL +{delta('ASYNC_CANCEL')},"
        f" LINK_TIMEOUT +{delta('LINK_TIMEOUT')}"
    )
    assert tally.cancelled >= target, (what, tally)
    assert tally.before_submit > 0, (what, tally)
    assert delta("NOP") > 0, (what, "no cancel landed while queued", after)
    assert delta("ASYNC_CANCEL") > 0, (what, "no cancel landed in flight", after)


@contextlib.contextmanager
def announce(**params: object) -> Iterator[None]:
    desc = " ".join(f"{k}={v!r}" for k, v in params.items())
    print(f"torture {desc}")
    start = time.monotonic()
    try:
        yield
    except BaseException:
        print(f"FAILED: torture {desc}")
        raise
    finally:
        print(f"torture {desc}: {time.monotonic() - start:.2f} s")


def run_torture(host: str, fn: Callable[..., Awaitable[None]], *args: object) -> None:
    """``trio_uring.run(fn, *args)``, or as a guest of asyncio (``host="guest"``).

    A guest ring has no DEFER_TASKRUN: the kernel posts completions whenever
    it likes, also while trio's tasks run (get_events waits in a worker
    thread).  So an op can complete after trio decided to cancel it and
    before the abort reaches the kernel: ASYNC_CANCEL comes too late, and
    the result must be delivered.  On the run thread's own ring the kernel
    posts completions only inside io_uring_enter, which makes that window
    rare for sockets.
    """
    if host == "run":
        trio_uring.run(fn, *args)
        return

    async def asyncio_main() -> outcome.Outcome[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[outcome.Outcome[None]] = loop.create_future()
        trio_uring.start_guest_run(
            fn,
            *args,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=True,
        )
        return await done

    asyncio.run(asyncio_main()).unwrap()


# --- 1. recv (and send) ------------------------------------------------------
def stream_pair(kind: str) -> tuple[socket.socket, socket.socket]:
    if kind == "unix":
        a, b = socket.socketpair()
    else:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            a = socket.create_connection(listener.getsockname())
            b, _ = listener.accept()
    for s in (a, b):
        s.setblocking(False)
        # small buffers: sends fill them and wait in the kernel too
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 15)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 15)
    return a, b


async def plain_send(sock: socket.socket, data: bytes) -> int:
    """trio's own way (a non-blocking send, wait_writable while it would block):
    the data arrives by a syscall of this thread, outside io_uring_enter."""
    await trio.lowlevel.checkpoint_if_cancelled()
    while True:
        try:
            return sock.send(data)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)


async def recv_torture(seed: int, kind: str, api: str, target: int) -> None:
    """``api="native"``: every receive is one ``lowlevel.recv``;
    ``"multishot"``: now and then the receiver switches to a
    ``MultishotReceiver`` for a while, then closes it (taking the bytes it
    holds) and goes on with ``lowlevel.recv``."""
    rng_send = random.Random(f"{seed}-send")
    rng_recv = random.Random(f"{seed}-recv")
    chaos = Chaos()
    recv_tally = Tally()
    send_tally = Tally()
    sent = 0  # bytes the kernel took (send results)
    received = 0  # bytes delivered by recv, each checked against the pattern
    a, b = stream_pair(kind)
    stats0 = io_stats().submitted

    async def sender() -> None:
        nonlocal sent
        while recv_tally.cancelled < target:
            await pause(rng_send, 4)
            size = log_size(rng_send)
            data = pattern(sent, size)
            send = lowlevel.send if rng_send.random() < 0.5 else plain_send
            n = await attempt(
                rng_send, chaos, send_tally, functools.partial(send, a, data)
            )
            if n is not None:
                assert 0 < n <= size, (n, size)
                sent += n
        a.shutdown(socket.SHUT_WR)

    def take(data: bytes, how: str) -> None:
        nonlocal received
        expected = pattern(received, len(data))
        if data != expected:
            at = first_difference(data, expected)
            raise AssertionError(
                f"seed {seed}: stream corrupted at byte {received + at} "
                f"(sent so far {sent}; {how}): a lost or doubled chunk"
            )
        received += len(data)

    async def multishot_phase() -> bool:
        """Some receives from a MultishotReceiver; True at EOF."""
        multishot = lowlevel.MultishotReceiver(b)
        eof = False
        try:
            for _ in range(rng_recv.randint(1, 400)):
                size = log_size(rng_recv)
                receive = functools.partial(multishot.receive, size)
                data = await attempt(rng_recv, chaos, recv_tally, receive)
                if data is None:
                    continue
                assert len(data) <= size
                if not data:
                    eof = True
                    break
                take(data, "multishot receive")
        finally:
            rest = await multishot.aclose()
        take(rest, "bytes left in the MultishotReceiver")
        return eof

    async def receiver() -> None:
        while True:
            if api == "multishot" and rng_recv.random() < 0.005:
                if await multishot_phase():
                    return
                continue
            size = log_size(rng_recv)
            data = await attempt(
                rng_recv, chaos, recv_tally, functools.partial(lowlevel.recv, b, size)
            )
            if data is None:
                continue
            if not data:
                return  # EOF
            assert len(data) <= size
            take(data, "recv")
            if rng_recv.random() < 0.3:
                await pause(rng_recv, 3)

    with a, b, trio.fail_after(HANG_SECONDS):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chaos.run)
            async with trio.open_nursery() as workers:
                workers.start_soon(sender)
                workers.start_soon(receiver)
            chaos.running = False
        assert received == sent, f"seed {seed}: sent {sent}, received {received}"
        stats = await settled()
    print(f"recv/{kind}/{api}: {sent} bytes; send {send_tally}")
    what = f"recv/{kind}/{api}"
    check_moments(recv_tally, target, stats0, stats.submitted, what)


@pytest.mark.parametrize(
    ("seed", "kind", "host", "api", "target"),
    [
        (SEEDS[0], "unix", "run", "native", TARGET),
        (SEEDS[1], "tcp", "run", "multishot", TARGET),
        (SEEDS[2], "unix", "guest", "multishot", GUEST_TARGET),
    ],
    ids=str,
)
def test_recv_torture(seed: int, kind: str, host: str, api: str, target: int) -> None:
    with announce(family="recv", seed=seed, kind=kind, host=host, api=api):
        run_torture(host, recv_torture, seed, kind, api, target)


# --- 2. accept -------------------------------------------------------------
SENTINEL = 0xFFFFFFFF
#: connections the client may have made that the acceptor has not read yet
OUTSTANDING = 32


def listening(kind: str, seed: int) -> socket.socket:
    if kind == "unix":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(f"\0trio-uring-torture-{os.getpid()}-{seed}")
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.setblocking(False)
    return listener


async def recv_exactly(fd: int, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = await lowlevel.recv(fd, n - len(got))
        assert chunk, "connection closed before its index arrived"
        got += chunk
    return got


async def accept_torture(seed: int, kind: str, api: str, target: int) -> None:
    """``api="native"``: every accept is one ``lowlevel.accept``;
    ``"multishot"``: now and then the acceptor switches to a
    ``MultishotAcceptor`` for a while.  Closing one closes the connections
    it accepted and nobody took, so before it is closed the client holds
    off and the acceptor takes every connection made so far."""
    rng_client = random.Random(f"{seed}-client")
    rng_accept = random.Random(f"{seed}-accept")
    chaos = Chaos()
    tally = Tally()
    listener = listening(kind, seed)
    address = listener.getsockname()
    seen: dict[int, int] = {}  # index -> times accepted
    made = 0  # connections started
    connected = 0  # connections whose connect() returned
    connecting = trio.Lock()  # held by the client while it connects
    stats0 = io_stats().submitted

    async def connect(index: int) -> trio.socket.SocketType:
        sock = trio.socket.socket(listener.family, socket.SOCK_STREAM)
        await sock.connect(address)
        await sock.send(index.to_bytes(4, "big"))
        return sock  # and it waits, open, until its index was read

    async def client() -> None:
        nonlocal made, connected
        conns: dict[int, trio.socket.SocketType] = {}
        try:
            stalled_since = math.inf
            while tally.cancelled < target:
                await pause(rng_client, 12)
                if made - len(seen) < OUTSTANDING:
                    async with connecting:
                        made += 1  # before connecting: it may be accepted at once
                        conns[made - 1] = await connect(made - 1)
                        connected += 1
                    stalled_since = math.inf
                else:
                    now = trio.current_time()
                    stalled_since = min(stalled_since, now)
                    missing = sorted(set(range(made)) - set(seen))
                    assert now - stalled_since < 10, (
                        f"seed {seed}: connections made, never accepted: {missing}"
                    )
                for index in [i for i in conns if i in seen]:
                    conns.pop(index).close()
            # the last connection: accept order is connect order, so once it
            # is accepted every earlier one has been too
            async with connecting:
                conns[SENTINEL] = await connect(SENTINEL)
                connected += 1
            with trio.move_on_after(10):
                while SENTINEL not in seen:
                    await trio.sleep(0.001)
            missing = sorted(set(range(made)) - set(seen))
            assert SENTINEL in seen, (
                f"seed {seed}: the last connection was never accepted; "
                f"{len(missing)} others neither: {missing[:20]}"
            )
        finally:
            for sock in conns.values():
                sock.close()

    async def record(fd: int) -> None:
        try:
            index = int.from_bytes(await recv_exactly(fd, 4), "big")
        finally:
            os.close(fd)
        seen[index] = seen.get(index, 0) + 1
        assert seen[index] == 1, f"seed {seed}: connection {index} accepted twice"
        assert index == SENTINEL or index < made, index

    async def multishot_phase() -> None:
        multishot = lowlevel.MultishotAcceptor(listener)
        try:
            for _ in range(rng_accept.randint(1, 300)):
                if SENTINEL in seen:
                    break
                fd = await attempt(rng_accept, chaos, tally, multishot.accept)
                if fd is not None:
                    await record(fd)
            async with connecting:  # no connect() in progress, none to come
                with trio.move_on_after(10):
                    while len(seen) < connected:
                        await record(await multishot.accept())
                missing = sorted(set(range(made)) - set(seen))
                assert len(seen) == connected, (
                    f"seed {seed}: connections made, never accepted: {missing}"
                )
                await multishot.aclose()
        finally:
            await multishot.aclose()

    async def acceptor() -> None:
        while SENTINEL not in seen:
            if api == "multishot" and rng_accept.random() < 0.01:
                await multishot_phase()
                continue
            result = await attempt(
                rng_accept, chaos, tally, functools.partial(lowlevel.accept, listener)
            )
            if result is None:
                continue
            await record(result[0])
            if rng_accept.random() < 0.3:
                await pause(rng_accept, 3)

    with listener, trio.fail_after(HANG_SECONDS):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chaos.run)
            async with trio.open_nursery() as workers:
                workers.start_soon(client)
                workers.start_soon(acceptor)
            chaos.running = False
        missing = sorted(set(range(made)) - set(seen))
        assert not missing, f"seed {seed}: connections never accepted: {missing}"
        assert len(seen) == made + 1
        with pytest.raises(BlockingIOError):  # and nothing extra is queued
            listener.accept()
        stats = await settled()
    print(f"accept/{kind}/{api}: {made} connections")
    what = f"accept/{kind}/{api}"
    check_moments(tally, target, stats0, stats.submitted, what)


@pytest.mark.parametrize(
    ("seed", "kind", "host", "api", "target"),
    [
        (SEEDS[0], "tcp", "run", "native", TARGET),
        (SEEDS[1], "unix", "run", "multishot", TARGET),
        (SEEDS[2], "tcp", "guest", "multishot", GUEST_TARGET),
    ],
    ids=str,
)
def test_accept_torture(seed: int, kind: str, host: str, api: str, target: int) -> None:
    with announce(family="accept", seed=seed, kind=kind, host=host, api=api):
        run_torture(host, accept_torture, seed, kind, api, target)


# --- 3. file writes ---------------------------------------------------------
@dataclass
class Record:
    offset: int
    data: bytes
    confirmed: bool


def first_bad_record(
    records: list[Record], content: bytes, seed: int, what: str
) -> str:
    for i, rec in enumerate(records):
        got = content[rec.offset : rec.offset + len(rec.data)]
        got = got.ljust(len(rec.data), b"\0")
        if rec.confirmed and got != rec.data:
            return f"seed {seed}: {what} record {i} @{rec.offset}: confirmed, not there"
        if not rec.confirmed and got.count(0) != len(got):
            return f"seed {seed}: {what} record {i} @{rec.offset}: cancelled, written"
    return f"seed {seed}: {what}: bytes outside every record"


def check_file(records: list[Record], content: bytes, seed: int, what: str) -> None:
    """Confirmed records are there, cancelled ones are not, nothing else is."""
    end = max((r.offset + len(r.data) for r in records if r.confirmed), default=0)
    expected = bytearray(max(end, len(content)))
    for rec in records:
        if rec.confirmed:
            expected[rec.offset : rec.offset + len(rec.data)] = rec.data
    assert content == bytes(expected), first_bad_record(records, content, seed, what)


async def regular_writer(
    seed: int, path: Path, chaos: Chaos, tally: Tally, quota: int
) -> None:
    """Records at distinct offsets of a regular file, from ONE reused buffer:
    a write that ran after its Cancelled (or after the buffer was refilled)
    would leave the wrong bytes somewhere."""
    rng = random.Random(f"{seed}-file")
    buf = bytearray(512)
    # (never released or resized: the traceback of the last Cancelled, kept
    # by trio's run loop, may still hold a buffer export of it)
    view = memoryview(buf)
    records: list[Record] = []
    offset = 0
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        while tally.cancelled < quota:
            size = rng.randint(1, len(buf))
            data = pattern(offset, size, _NONZERO2)
            view[:size] = data
            chunk = view[:size]
            n = await attempt(
                rng, chaos, tally, functools.partial(lowlevel.write, fd, chunk, offset)
            )
            assert n is None or n == size, (n, size)
            records.append(Record(offset, data, n is not None))
            offset += size + rng.choice((0, 0, 0, 1, 7))
            if rng.random() < 0.2:
                await pause(rng, 2)
        content = os.pread(fd, offset + 1, 0)
    finally:
        os.close(fd)
    check_file(records, content, seed, "regular file")
    print(f"regular file: {len(records)} records, {len(content)} bytes; {tally}")


async def pipe_writer(seed: int, chaos: Chaos, tally: Tally, quota: int) -> None:
    """Atomic (<= PIPE_BUF) records into a one-page pipe that a slow reader
    drains: most writes wait in the kernel for room, so cancels land in
    flight.  The pipe's stream must be exactly the confirmed records, in
    order."""
    rng = random.Random(f"{seed}-pipe")
    rng_reader = random.Random(f"{seed}-pipe-reader")
    r, w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(r, False)  # the reader's side only; io_uring waits for w
    fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_BUF)
    buf = bytearray(PIPE_BUF // 4)
    view = memoryview(buf)
    confirmed = bytearray()
    got = bytearray()
    position = 0  # pattern position: every record is distinct bytes

    async def reader() -> None:
        while True:
            await pause(rng_reader, 6)
            await trio.lowlevel.wait_readable(r)
            data = os.read(r, rng_reader.randint(1, PIPE_BUF))
            if not data:
                return
            got.extend(data)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            try:
                while tally.cancelled < quota:
                    size = rng.randint(1, len(buf))
                    data = pattern(position, size)
                    position += size
                    view[:size] = data
                    chunk = view[:size]
                    n = await attempt(
                        rng,
                        chaos,
                        tally,
                        functools.partial(lowlevel.write, w, chunk, None),
                    )
                    assert n is None or n == size, (n, size)  # atomic
                    if n is not None:
                        confirmed.extend(data)
            finally:
                os.close(w)  # EOF for the reader
    finally:
        os.close(r)
    if bytes(got) != bytes(confirmed):
        at = first_difference(got, confirmed)
        raise AssertionError(
            f"seed {seed}: pipe stream differs at byte {at} "
            f"(got {len(got)}, confirmed {len(confirmed)})"
        )
    print(f"pipe: {len(confirmed)} bytes; {tally}")


async def direct_writer(
    seed: int, path: Path, chaos: Chaos, tally: Tally, count: int
) -> None:
    """O_DIRECT page writes (block I/O the kernel cannot take back once
    issued: a cancel in flight gets the result delivered)."""
    rng = random.Random(f"{seed}-direct")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT | os.O_CLOEXEC, 0o600)
    except OSError:
        print("O_DIRECT not supported here: skipped")
        return
    page = mmap.PAGESIZE
    records: list[Record] = []
    buf = mmap.mmap(-1, page)  # page-aligned, reused for every record
    view = memoryview(buf)
    try:
        os.ftruncate(fd, count * page)
        for i in range(count):
            data = pattern(i * page, page, _NONZERO2)
            view[:] = data
            n = await attempt(
                rng, chaos, tally, functools.partial(lowlevel.write, fd, view, i * page)
            )
            assert n is None or n == page, n
            records.append(Record(i * page, data, n is not None))
    finally:
        os.close(fd)
    content = path.read_bytes()
    assert len(content) == count * page
    check_file(records, content, seed, "O_DIRECT file")
    print(f"O_DIRECT: {count} records; {tally}")


async def write_torture(seed: int, tmp: Path, target: int) -> None:
    chaos = Chaos()
    tallies = {"regular": Tally(), "pipe": Tally(), "direct": Tally()}
    stats0 = io_stats().submitted
    with trio.fail_after(HANG_SECONDS):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chaos.run)
            async with trio.open_nursery() as workers:
                workers.start_soon(
                    regular_writer,
                    seed,
                    tmp / "records",
                    chaos,
                    tallies["regular"],
                    target * 3 // 4,
                )
                workers.start_soon(
                    pipe_writer, seed, chaos, tallies["pipe"], target // 4 + 1
                )
                workers.start_soon(
                    direct_writer, seed, tmp / "direct", chaos, tallies["direct"], 300
                )
            chaos.running = False
        stats = await settled()
    total = Tally()
    for tally in tallies.values():
        total.add(tally)
    check_moments(total, target, stats0, stats.submitted, "write")


@pytest.mark.parametrize(
    ("seed", "host", "target"),
    [
        (SEEDS[0], "run", TARGET),
        (SEEDS[1], "run", TARGET),
        (SEEDS[2], "guest", GUEST_TARGET),
    ],
    ids=str,
)
def test_write_torture(seed: int, host: str, target: int, tmp_path: Path) -> None:
    with announce(family="write", seed=seed, host=host):
        run_torture(host, write_torture, seed, tmp_path, target)
