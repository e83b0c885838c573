"""Demo: an echo server and its client, both on io_uring, then the ring's statistics.

python examples/echo_demo.py [--clients N] [--messages M]
"""

from __future__ import annotations

import argparse
import functools
import time

import trio

import trio_uring


async def handler(stream: trio.SocketStream) -> None:
    async for data in stream:
        await stream.send_all(data)


async def client(port: int, messages: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        for i in range(messages):
            payload = b"ping %d" % i
            await stream.send_all(payload)
            got = b""
            while len(got) < len(payload):
                got += await stream.receive_some(len(payload) - len(got))
            assert got == payload, (got, payload)


async def main(clients: int, messages: int) -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        t0 = time.perf_counter()
        async with trio.open_nursery() as clients_nursery:
            for _ in range(clients):
                clients_nursery.start_soon(client, port, messages)
        elapsed = time.perf_counter() - t0
        stats = trio.lowlevel.current_statistics().io_statistics
        total = clients * messages
        print(f"echoed {total} messages over {clients} connections in {elapsed:.2f} s")
        print(f"backend:      {stats.backend}")
        print(f"setup flags:  {', '.join(stats.setup_flags)}")
        print(f"ring:         {stats.sq_entries} SQ / {stats.cq_entries} CQ entries")
        print(f"enters:       {stats.enters}")
        print(f"in flight:    {stats.ops_in_flight}")
        submitted = ", ".join(f"{k}={v}" for k, v in stats.submitted.items())
        print(f"submitted:    {submitted}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--messages", type=int, default=1000)
    args = parser.parse_args()
    trio_uring.run(main, args.clients, args.messages)
