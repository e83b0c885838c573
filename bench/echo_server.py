"""Echo server used by bench/echo.py: the same trio code on two IO managers.

Design: the server is deliberately the simplest idiomatic trio code, so that
running it under ``trio.run`` (epoll) and ``trio_uring.run`` (io_uring)
measures the IO manager and nothing else.

* default: trio's raw socket API (``trio.socket``): an accept loop that starts
  one task per connection; each task does ``recv(65536)`` then ``send()``
  until the chunk is written, until EOF.
* ``--streams`` (``--mode streams``): the same through the high-level API
  (``trio.serve_tcp`` and a ``SocketStream`` handler), which adds trio's
  stream layer on top.
* ``--mode lowlevel`` (``--backend uring`` only): the accept loop as in the
  default mode, but each connection task calls ``trio_uring.lowlevel.recv``
  and ``trio_uring.lowlevel.send`` on the socket: kernel-executed
  IORING_OP_RECV / IORING_OP_SEND instead of try-the-syscall-then-wait.

The modes are named by the code they run, not by the IO path underneath it:
trio's own socket methods go native on io_uring, so ``raw`` and ``streams``
on ``uring`` run trio_uring's native socket path.  ``--readiness`` (``uring``
only) sets ``TRIO_URING_NATIVE_SOCKETS=0``: the same code then runs trio's
own socket methods over the IO manager's readiness path (one ``POLL_ADD`` per
wait), which is what the core IO manager alone gives.

Protocol with the driver (any future peer server, e.g. asyncio or uvloop,
follows the same one): print ``PORT <n>`` as the first stdout line once the
listener is bound, serve until SIGTERM or SIGINT, then print one
``STATS <json>`` line (the IO manager's statistics, best effort) and exit 0.

``trio_uring`` is imported only for ``--backend uring``, so the epoll server
runs even where trio_uring is not installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

BACKLOG = 1024
RECV_SIZE = 65536


def _announce_port(port: int) -> None:
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()


async def _echo_raw(sock: trio.socket.SocketType) -> None:
    with sock:
        try:
            while True:
                data = await sock.recv(RECV_SIZE)
                if not data:
                    return
                view = memoryview(data)
                while view:
                    sent = await sock.send(view)
                    view = view[sent:]
        except OSError:
            # Peer reset (the load generator exits with messages in flight).
            return


async def _echo_lowlevel(sock: trio.socket.SocketType) -> None:
    from trio_uring import lowlevel

    recv = lowlevel.recv
    send = lowlevel.send
    with sock:
        fd = sock.fileno()
        try:
            while True:
                data = await recv(fd, RECV_SIZE)
                if not data:
                    return
                view = memoryview(data)
                while view:
                    sent = await send(fd, view)
                    view = view[sent:]
        except OSError:
            return


async def _serve_raw(
    host: str,
    port: int,
    handler: Callable[[trio.socket.SocketType], Awaitable[None]] = _echo_raw,
) -> None:
    listener = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    with listener:
        listener.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        await listener.bind((host, port))
        listener.listen(BACKLOG)
        _announce_port(listener.getsockname()[1])
        async with trio.open_nursery() as nursery:
            while True:
                conn, _addr = await listener.accept()
                conn.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
                nursery.start_soon(handler, conn)


async def _echo_stream(stream: trio.SocketStream) -> None:
    try:
        async for data in stream:
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


async def _serve_streams(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        serve = functools.partial(
            trio.serve_tcp, _echo_stream, port, host=host, backlog=BACKLOG
        )
        listeners: list[trio.SocketListener] = await nursery.start(serve)
        _announce_port(listeners[0].socket.getsockname()[1])


async def _serve_lowlevel(host: str, port: int) -> None:
    await _serve_raw(host, port, _echo_lowlevel)


SERVES: dict[str, Callable[[str, int], Awaitable[None]]] = {
    "raw": _serve_raw,
    "streams": _serve_streams,
    "lowlevel": _serve_lowlevel,
}


async def _main(host: str, port: int, mode: str) -> dict[str, Any]:
    serve = SERVES[mode]
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, host, port)
            async for _signum in signals:
                nursery.cancel_scope.cancel()
                break
    return _statistics()


def _statistics() -> dict[str, Any]:
    """The IO manager's statistics as JSON-able data (best effort)."""
    stats: object = trio.lowlevel.current_statistics().io_statistics
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return dataclasses.asdict(stats)
    fields = getattr(type(stats), "__attrs_attrs__", None)
    if fields is not None:
        return {f.name: getattr(stats, f.name) for f in fields}
    return dict(vars(stats)) if hasattr(stats, "__dict__") else {"repr": repr(stats)}


def _runner(backend: str) -> Callable[..., Any]:
    if backend == "epoll":
        return trio.run
    import trio_uring  # lazy: only this backend needs it

    run: Callable[..., Any] = trio_uring.run
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("epoll", "uring"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port")
    parser.add_argument(
        "--streams",
        action="store_true",
        help="same as --mode streams",
    )
    parser.add_argument(
        "--mode",
        choices=tuple(SERVES),
        default="raw",
        help="raw trio.socket, trio.serve_tcp streams, or trio_uring.lowlevel ops",
    )
    parser.add_argument(
        "--readiness",
        action="store_true",
        help="uring: trio's own socket code over wait_readable/wait_writable "
        "(TRIO_URING_NATIVE_SOCKETS=0)",
    )
    args = parser.parse_args(argv)
    mode: str = "streams" if args.streams else args.mode
    if args.readiness:
        if args.backend != "uring":
            parser.error("--readiness needs --backend uring")
        os.environ["TRIO_URING_NATIVE_SOCKETS"] = "0"
    if mode == "lowlevel" and args.backend != "uring":
        parser.error("--mode lowlevel needs --backend uring")

    run = _runner(args.backend)
    entry: Callable[[str, int, str], Awaitable[dict[str, Any]]] = _main
    stats = run(entry, args.host, args.port, mode)
    try:
        line = json.dumps(stats, default=str, sort_keys=True)
    except (TypeError, ValueError):
        line = json.dumps({"repr": repr(stats)})
    sys.stdout.write(f"STATS {line}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
