"""Echo server on anyio (trio backend), for bench/echo.py (peer servers).

The same protocol as ``bench/echo_server.py``: print ``PORT <n>`` once the
listener is bound, serve until SIGTERM/SIGINT, print ``STATS <json>``, exit 0.

The server is anyio's idiomatic one: ``anyio.create_tcp_listener`` and
``listener.serve(handler)``, the handler looping ``await
stream.receive(65536)`` / ``await stream.send(data)``.  It runs with
``anyio.run(..., backend="trio")``:

* ``--backend epoll``: trio's own IO manager;
* ``--backend uring``: ``trio_uring.install()`` first, so the same
  ``anyio.run(backend="trio")`` runs trio on io_uring.  (This deliberately
  does not depend on a ``"trio_uring"`` anyio backend name.)
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

import anyio
import anyio.abc

BACKLOG = 1024
RECV_SIZE = 65536


async def _echo(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        try:
            while True:
                data = await stream.receive(RECV_SIZE)
                await stream.send(data)
        except (
            anyio.EndOfStream,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
        ):
            return
        except OSError:
            return


async def _main(host: str, port: int) -> dict[str, Any]:
    listener = await anyio.create_tcp_listener(
        local_host=host, local_port=port, backlog=BACKLOG, reuse_port=False
    )
    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, _echo)
            sys.stdout.write(f"PORT {bound}\n")
            sys.stdout.flush()
            async for _signum in signals:
                tg.cancel_scope.cancel()
                break
    return _statistics()


def _statistics() -> dict[str, Any]:
    """trio's IO manager statistics as JSON-able data (best effort)."""
    import dataclasses

    import trio

    stats: object = trio.lowlevel.current_statistics().io_statistics
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return dataclasses.asdict(stats)
    fields = getattr(type(stats), "__attrs_attrs__", None)
    if fields is not None:
        return {f.name: getattr(stats, f.name) for f in fields}
    return dict(vars(stats)) if hasattr(stats, "__dict__") else {"repr": repr(stats)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("epoll", "uring"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port")
    args = parser.parse_args(argv)
    if args.backend == "uring":
        import trio_uring

        trio_uring.install()
    stats = anyio.run(_main, args.host, args.port, backend="trio")
    sys.stdout.write(f"STATS {json.dumps(stats, default=str, sort_keys=True)}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
