"""Echo server on asyncio or uvloop, for bench/echo.py (peer servers).

The same protocol as ``bench/echo_server.py``: print ``PORT <n>`` once the
listener is bound, serve until SIGTERM/SIGINT, print ``STATS <json>``, exit 0.

``--api``:

* ``protocol`` (default): an ``asyncio.Protocol`` whose ``data_received``
  calls ``transport.write(data)``: asyncio's fastest idiomatic path, no task
  per connection, no coroutine per message.
* ``streams``: ``asyncio.start_server`` with a coroutine per connection doing
  ``await reader.read(65536)``, ``writer.write(data)``, ``await
  writer.drain()``: the shape of the trio servers (one task per connection,
  an await per receive).

``--loop uvloop`` runs the same code on uvloop (``uvloop.new_event_loop``).
TCP_NODELAY is set on every accepted connection (asyncio sets it by default
since 3.x for TCP transports; uvloop too; setting it again is harmless).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
from typing import Any

BACKLOG = 1024
RECV_SIZE = 65536


class EchoProtocol(asyncio.Protocol):
    transport: Any  # asyncio.Transport, or uvloop's (not a subclass of it)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _echo_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            data = await reader.read(RECV_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _main(host: str, port: int, api: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server: asyncio.base_events.Server
    if api == "protocol":
        server = await loop.create_server(
            EchoProtocol, host, port, backlog=BACKLOG, reuse_address=True
        )
    else:
        server = await asyncio.start_server(
            _echo_stream, host, port, backlog=BACKLOG, reuse_address=True
        )
    sys.stdout.write(f"PORT {server.sockets[0].getsockname()[1]}\n")
    sys.stdout.flush()
    await stop.wait()
    server.close()
    return {"loop": type(loop).__module__ + "." + type(loop).__name__, "api": api}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--api", choices=("protocol", "streams"), default="protocol")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port")
    args = parser.parse_args(argv)
    loop: asyncio.AbstractEventLoop
    if args.loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        stats = loop.run_until_complete(_main(args.host, args.port, args.api))
    finally:
        loop.close()
    sys.stdout.write(f"STATS {json.dumps(stats, sort_keys=True)}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
