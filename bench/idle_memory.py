"""Idle-connection memory: what a server pays per connection that waits.

A server process accepts ``--conns`` (10,000) TCP connections over loopback
and gives each one a task (or, for asyncio, a coroutine) that waits in a
receive of 65,536 bytes; no byte is ever sent.  Once every connection's task
is waiting, the server settles (``--settle`` seconds, then ``gc.collect()``)
and reads its own memory from ``/proc/self/status`` (VmRSS, RssAnon) and
``/proc/self/smaps_rollup`` (Pss_Anon).  The figure is the growth from the
baseline (taken after the listener is bound and the event loop is running,
before the first connection) divided by the number of connections.

The connections come from another process (``--client``: plain blocking
sockets, one per connection, held open until the driver says stop), so the
client's memory is never counted.  Both processes raise RLIMIT_NOFILE's soft
limit to the hard limit; 10,000 connections need about 10,000 fds on each
side.

What the figures do not include: kernel memory (socket buffers, io_uring's
internal poll entries, the TCP state) is not in RSS.  A receive buffer that
a native io_uring recv hands to the kernel is user memory; whether it counts
depends on whether its pages were touched (an untouched ``malloc`` of 64 KiB
may cost nothing until data arrives).

Contenders (each run is a fresh server process, rounds alternate):

* ``trio-raw-epoll`` / ``trio-raw-uring``: ``trio.socket``, ``await
  sock.recv(65536)``, on ``trio.run`` / ``trio_uring.run``.
* ``trio-streams-epoll`` / ``trio-streams-uring``: the accepted socket wrapped
  in ``trio.SocketStream``, ``await stream.receive_some(65536)``.
* ``uring-lowlevel``: ``await trio_uring.lowlevel.recv(fd, 65536)`` (a
  pending IORING_OP_RECV per connection).
* ``asyncio`` / ``uvloop``: ``asyncio.start_server``, each handler awaiting
  ``reader.read(65536)``.

Usage::

    python bench/idle_memory.py                      # --conns 10000 --rounds 3
    python bench/idle_memory.py --conns 2000 --contenders trio-raw-epoll,trio-raw-uring
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import os
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    BenchError,
    Contender,
    Layout,
    alternate,
    command_text,
    emit,
    error,
    header,
    loadavg,
    machine_info,
    name_list,
    new_parser,
    ratio_table,
    spread,
    summarize_blocks,
    write_json,
)

SCRIPT = Path(__file__).resolve()
RECV_SIZE = 65536
LAYOUT = Layout(name="contender", names="contenders", group="conns")
START_TIMEOUT_S = 30.0

CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender(
            "trio-raw-epoll", "trio.socket sock.recv(65536), trio.run", ("trio",)
        ),
        Contender(
            "trio-raw-uring",
            "trio.socket sock.recv(65536), trio_uring.run",
            ("trio", "trio_uring"),
        ),
        Contender(
            "trio-streams-epoll",
            "trio.SocketStream.receive_some(65536), trio.run",
            ("trio",),
        ),
        Contender(
            "trio-streams-uring",
            "trio.SocketStream.receive_some(65536), trio_uring.run",
            ("trio", "trio_uring"),
        ),
        Contender(
            "uring-lowlevel",
            "trio_uring.lowlevel.recv(fd, 65536) (a pending IORING_OP_RECV)",
            ("trio", "trio_uring"),
        ),
        Contender("asyncio", "asyncio.start_server, reader.read(65536)", ()),
        Contender("uvloop", "the asyncio server on uvloop", ("uvloop",)),
    )
}
DEFAULT = tuple(CONTENDERS)
# Natural comparisons, reported besides the one against the first contender.
PEERS = (
    ("trio-streams-uring", "trio-streams-epoll"),
    ("uring-lowlevel", "trio-raw-uring"),
    ("uvloop", "asyncio"),
)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def memory_kib() -> dict[str, int]:
    """VmRSS and RssAnon (status), Pss_Anon and Rss (smaps_rollup), in KiB."""
    out: dict[str, int] = {}
    for name, keys in (
        ("/proc/self/status", ("VmRSS", "RssAnon")),
        ("/proc/self/smaps_rollup", ("Pss_Anon", "Rss")),
    ):
        try:
            text = Path(name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key in keys:
                label = f"smaps_{key}" if name.endswith("rollup") else key
                out[label] = int(rest.split()[0])
    return out


# --------------------------------------------------------------------------
# Server child


def _announce(port: int) -> None:
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()


async def _trio_server(contender: str, conns: int, settle: float) -> dict[str, Any]:
    import trio

    listener = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    listener.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
    await listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    waiting = 0
    all_waiting = trio.Event()
    streams = "streams" in contender
    lowlevel_recv: Callable[..., Any] | None = None
    if contender == "uring-lowlevel":
        from trio_uring import lowlevel

        lowlevel_recv = lowlevel.recv

    async def handler(sock: trio.socket.SocketType) -> None:
        nonlocal waiting
        waiting += 1
        if waiting == conns:
            all_waiting.set()
        with sock:
            if streams:
                stream = trio.SocketStream(sock)
                await stream.receive_some(RECV_SIZE)
            elif lowlevel_recv is not None:
                await lowlevel_recv(sock.fileno(), RECV_SIZE)
            else:
                await sock.recv(RECV_SIZE)

    await trio.sleep(0.05)
    gc.collect()
    before = memory_kib()
    _announce(listener.getsockname()[1])
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(conns):
            conn, _addr = await listener.accept()
            nursery.start_soon(handler, conn)
        await all_waiting.wait()
        accept_s = time.perf_counter() - t0
        # Let every task reach its wait (the counter goes up just before).
        await trio.sleep(settle)
        gc.collect()
        after = memory_kib()
        nursery.cancel_scope.cancel()
    listener.close()
    return {"before_kib": before, "after_kib": after, "accept_s": accept_s}


async def _asyncio_server(conns: int, settle: float) -> dict[str, Any]:
    import asyncio

    waiting = 0
    all_waiting = asyncio.Event()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal waiting
        waiting += 1
        if waiting == conns:
            all_waiting.set()
        try:
            await reader.read(RECV_SIZE)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    await asyncio.sleep(0.05)
    gc.collect()
    before = memory_kib()
    server = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=4096)
    _announce(server.sockets[0].getsockname()[1])
    t0 = time.perf_counter()
    await all_waiting.wait()
    accept_s = time.perf_counter() - t0
    await asyncio.sleep(settle)
    gc.collect()
    after = memory_kib()
    server.close()
    return {"before_kib": before, "after_kib": after, "accept_s": accept_s}


def server_main(contender: str, conns: int, settle: float) -> int:
    raise_nofile()
    if contender in ("asyncio", "uvloop"):
        import asyncio

        loop: asyncio.AbstractEventLoop
        if contender == "uvloop":
            import uvloop

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        # No loop.close(): os._exit below skips winding down 10,000 handlers.
        result = loop.run_until_complete(_asyncio_server(conns, settle))
    else:
        import trio

        run: Callable[..., Any] = trio.run
        if contender.endswith("uring") or contender == "uring-lowlevel":
            import trio_uring

            run = trio_uring.run
        result = run(_trio_server, contender, conns, settle)
    before, after = result["before_kib"], result["after_kib"]
    result["delta_bytes_per_conn"] = {
        k: (after[k] - before[k]) * 1024 / conns for k in after if k in before
    }
    emit(result)
    sys.stdout.flush()
    os._exit(0)  # skip tearing down thousands of sockets and tasks


# --------------------------------------------------------------------------
# Client child


def client_main(port: int, conns: int) -> int:
    raise_nofile()
    socks = []
    for _ in range(conns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    sys.stdout.write("CONNECTED\n")
    sys.stdout.flush()
    sys.stdin.read()  # hold them until the driver closes our stdin
    os._exit(0)


# --------------------------------------------------------------------------
# Driver


def _read_line(
    proc: subprocess.Popen[str], prefix: str, timeout: float, what: str
) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{what}: no {prefix!r} line within {timeout:.0f} s")
            if not sel.select(timeout=left):
                continue
            line = proc.stdout.readline()
            if not line:
                raise BenchError(f"{what}: exited before printing {prefix!r}")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()


def run_once(
    contender: str, conns: int, settle: float, timeout: float
) -> dict[str, Any]:
    import json

    server = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "--server",
            contender,
            "--conns",
            str(conns),
            "--settle",
            f"{settle:g}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client: subprocess.Popen[str] | None = None
    try:
        port = int(_read_line(server, "PORT ", START_TIMEOUT_S, f"{contender} server"))
        client = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--client", str(port), "--conns", str(conns)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = _read_line(server, "RESULT ", timeout, f"{contender} server")
        except BenchError as exc:
            server.kill()
            _out, err = server.communicate()
            raise BenchError(f"{exc}\n{err[-2000:]}") from None
        result: dict[str, Any] = json.loads(line)
    finally:
        if client is not None:
            if client.stdin is not None:
                client.stdin.close()
            try:
                client.wait(timeout=10)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return result


def summarize(runs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    def value(r: dict[str, Any]) -> float:
        return float(r["delta_bytes_per_conn"]["VmRSS"])

    def stats(mine: list[dict[str, Any]]) -> dict[str, Any]:
        rss = [value(r) for r in mine]
        anon = [r["delta_bytes_per_conn"].get("RssAnon", float("nan")) for r in mine]
        return {
            "rss_bytes_per_conn": rss,
            **spread(rss),
            "median_anon_bytes_per_conn": statistics.median(anon),
            "median_baseline_rss_kib": statistics.median(
                [r["before_kib"]["VmRSS"] for r in mine]
            ),
            "median_accept_s": statistics.median([r["accept_s"] for r in mine]),
        }

    baseline = names[0]
    pairs = [(n, baseline) for n in names if n != baseline]
    for pair in PEERS:
        if pair[0] in names and pair[1] in names and pair not in pairs:
            pairs.append(pair)
    return summarize_blocks(LAYOUT, runs, names, value, stats, pairs)


def markdown(
    summary: list[dict[str, Any]], machine: dict[str, Any], settings: dict[str, Any]
) -> str:
    lines = header(
        machine,
        settings,
        "Idle-connection memory",
        f"- settings: {settings['rounds']} rounds, a fresh server per run, each "
        f"connection's task waiting in a {RECV_SIZE} B receive; growth of the "
        f"server's RSS from before the first connection to {settings['settle']:g} s "
        "after all are idle, per connection",
    )
    lines += [
        "",
        "| conns | contender | RSS bytes/conn (median) | min | max | "
        "RssAnon bytes/conn | baseline RSS MiB | accept all (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for block in summary:
        for name, c in block["contenders"].items():
            lines.append(
                f"| {block['conns']} | {name} | {c['median']:,.0f} | "
                f"{c['min']:,.0f} | {c['max']:,.0f} | "
                f"{c['median_anon_bytes_per_conn']:,.0f} | "
                f"{c['median_baseline_rss_kib'] / 1024:.1f} | "
                f"{c['median_accept_s']:.2f} |"
            )
    lines += ratio_table(LAYOUT, summary)
    lines += ["", "| contender | what it runs |", "|---|---|"]
    lines += [f"| {n} | {d} |" for n, d in settings["descriptions"].items()]
    for n, why in settings["skipped"].items():
        lines.append(f"- skipped {n}: {why}")
    lines += [
        "",
        "Ratios here are memory ratios: below 1 means less memory per connection",
        "than the first contender.  Kernel memory (socket and io_uring state) is",
        "not in RSS.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("server memory per idle connection (RSS growth / conns)")
    parser.add_argument(
        "--contenders",
        type=name_list(CONTENDERS, "contender"),
        help=f"comma-separated (default: {','.join(DEFAULT)}, minus what this "
        "Python cannot import)",
    )
    parser.add_argument("--conns", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--settle", type=float, default=0.5, help="seconds idle before measuring"
    )
    parser.add_argument("--json", type=Path, help="also write all data here")
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.server:
        return server_main(args.server, args.conns, args.settle)
    if args.client is not None:
        return client_main(args.client, args.conns)
    if args.conns < 1 or args.rounds < 1 or args.settle < 0:
        parser.error("need --conns >= 1, --rounds >= 1, --settle >= 0")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < args.conns + 100:
        return error(
            f"RLIMIT_NOFILE hard limit {hard} is too low for {args.conns} "
            "connections (each side needs one fd per connection)"
        )

    requested: list[str] | None = args.contenders
    names: list[str] = []
    skipped: dict[str, str] = {}
    for name in requested or DEFAULT:
        missing = [
            m for m in CONTENDERS[name].requires if importlib.util.find_spec(m) is None
        ]
        if missing:
            skipped[name] = (
                f"Python {sys.version.split()[0]} ({sys.executable}) cannot import "
                f"{', '.join(missing)}"
            )
            print(f"skipping {name}: {skipped[name]}", file=sys.stderr)
        else:
            names.append(name)
    if not names:
        return error("no contender to run")

    machine = machine_info()
    machine["loadavg_start"] = loadavg()
    timeout = START_TIMEOUT_S + args.conns / 500 + args.settle + 30
    try:
        runs = alternate(
            LAYOUT,
            names,
            args.rounds,
            lambda name, conns: run_once(name, conns, args.settle, timeout),
            lambda r: (
                f"{r['delta_bytes_per_conn']['VmRSS']:>8,.0f} B/conn RSS, "
                f"{r['delta_bytes_per_conn'].get('RssAnon', float('nan')):,.0f} anon"
            ),
            groups=[args.conns],
            width=18,
        )
    except BenchError as exc:
        return error(exc)
    machine["loadavg_end"] = loadavg()
    settings = {
        "contenders": names,
        "descriptions": {n: CONTENDERS[n].description for n in names},
        "skipped": skipped,
        "conns": args.conns,
        "rounds": args.rounds,
        "settle": args.settle,
        "command": command_text(argv),
    }
    summary = summarize(runs, names)
    print(markdown(summary, machine, settings))
    write_json(args.json, machine, settings, summary, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
