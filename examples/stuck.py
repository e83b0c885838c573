"""A program that gets stuck, to show how to find out on what.

python examples/stuck.py &
python -m trio_uring.inflight $!
"""

from __future__ import annotations

import os
import socket

import trio

import trio_uring
from trio_uring import _native, _ring
from trio_uring._ring_ffi import ffi


async def read_pipe(fd: int) -> None:
    # a native read straight on the ring (trio_uring.lowlevel will wrap this)
    buf = ffi.new("char[]", 4096)
    await _native.current_manager().submit(
        _ring.OP["READ"], fd, int(ffi.cast("uintptr_t", buf)), 4096,
        _native.CURRENT_POSITION, keep=buf,
    )  # fmt: skip


async def main() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    peer = socket.create_connection(listener.getsockname())
    conn, _ = await listener.accept()
    r, _w = os.pipe()
    print(f"pid {os.getpid()} is stuck now", flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.recv, 100, name="waiting-for-the-peer")
        nursery.start_soon(read_pipe, r, name="reading-a-pipe")
        with trio.move_on_after(3600):
            await listener.accept()
    peer.close()


if __name__ == "__main__":
    trio_uring.lowlevel.install_dump_signal()
    trio_uring.run(main)
