"""Timeout benchmark: many tasks whose reads always time out.

Every task owns one end of a silent socket pair and loops::

    with trio.move_on_after(0.001):
        await <recv 100 bytes from its socket>

for ``--seconds`` after a short warmup; the score is completed timeouts per
second (all tasks together).  Nothing is ever sent, so every iteration is
"arm a wait, arm a deadline, the deadline fires, tear the wait down": the cost
of cancellation and timers on each IO manager.

Contenders (each run in a fresh subprocess, ``--child``):

* ``epoll``: ``trio.run``, ``await sock.recv(100)`` on a ``trio.socket``
  socket pair (readiness: epoll_ctl on first wait, then EAGAIN + wait).
* ``uring``: the same code under ``trio_uring.run``: trio's socket methods
  on trio_uring's native path (try the syscall; on EAGAIN a RECV with a
  provided buffer, under the deadline's linked timeout).
* ``uring-poll``: the same with ``TRIO_URING_NATIVE_SOCKETS=0``: trio's own
  socket code over the readiness path (one POLL_ADD per wait, cancelled on
  timeout).
* ``uring-native``: ``trio_uring.run``, ``await trio_uring.lowlevel.recv(sock,
  100)`` (kernel-executed IORING_OP_RECV; under a trio deadline the kernel
  gets a linked LINK_TIMEOUT).
* ``floor`` (reference, no IO): ``trio.run``, ``await trio.sleep_forever()``
  under the same deadline: what trio's cancel scopes, deadlines and scheduler
  cost alone, i.e. the best any IO manager can do under trio.
* ``asyncio`` / ``uvloop`` (if importable): ``async with asyncio.timeout(0.001):
  await loop.sock_recv(sock, 100)`` (``asyncio.wait_for`` before 3.11).

Rounds alternate contenders (A B C A B C ...); the headline is the median over
rounds of the per-round ratio contender/epoll.  The io_uring children also
report their SQEs per timeout (LINK_TIMEOUT, ASYNC_CANCEL, ...) from
``trio.lowlevel.current_statistics().io_statistics``.

``--profile`` replaces the measurement by one cProfile'd run per contender and
task count, and prints where the time goes per timeout (cProfile inflates
Python-level call costs; read it for proportions, not absolute numbers).

Usage::

    python bench/timeouts.py                       # --tasks 100,1000 --rounds 5
    python bench/timeouts.py --contenders epoll,uring-native --seconds 1
    python bench/timeouts.py --contenders uring-native --tasks 1000 --profile
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import (
    CHILD_SLACK_S,
    BenchError,
    Contender,
    Layout,
    Profiler,
    Window,
    add_cpu_option,
    add_round_options,
    alternate,
    command_text,
    emit,
    error,
    fmt_io,
    header,
    int_list,
    loadavg,
    machine_info,
    measure_window,
    median,
    median_per_key,
    name_list,
    new_parser,
    pinning_text,
    profile_markdown,
    ratio_table,
    spawn,
    spread,
    summarize_blocks,
    target_lines,
    window_result,
    write_json,
)

SCRIPT = Path(__file__).resolve()
TIMEOUT_S = 0.001
RECV_SIZE = 100
LAYOUT = Layout(name="contender", names="contenders", group="tasks")
SHOWN_IO = ("LINK_TIMEOUT", "ASYNC_CANCEL", "RECV", "POLL_ADD", "enters")


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender("epoll", "trio.run, trio socket recv", ("trio",)),
        Contender(
            "uring",
            "trio_uring.run, trio socket recv (native sockets)",
            ("trio", "trio_uring"),
        ),
        Contender(
            "uring-poll",
            "trio_uring.run, trio socket recv, TRIO_URING_NATIVE_SOCKETS=0",
            ("trio", "trio_uring"),
        ),
        Contender(
            "uring-native",
            "trio_uring.run, trio_uring.lowlevel.recv (IORING_OP_RECV)",
            ("trio", "trio_uring"),
        ),
        Contender(
            "floor", "trio.run, trio.sleep_forever (no IO: trio's own cost)", ("trio",)
        ),
        Contender("asyncio", "asyncio, loop.sock_recv + asyncio.timeout", ()),
        Contender("uvloop", "uvloop, loop.sock_recv + asyncio.timeout", ("uvloop",)),
    )
}
OPTIONAL = ("asyncio", "uvloop")


# --------------------------------------------------------------------------
# Child side: one measurement in this process


async def _trio_child(
    contender: str, tasks: int, seconds: float, warmup: float, prof: Profiler
) -> Window:
    import trio

    native = contender == "uring-native"
    recv: Callable[..., Any] | None = None
    if native:
        import trio_uring.lowlevel

        recv = trio_uring.lowlevel.recv
    count = 0
    pairs = [trio.socket.socketpair() for _ in range(tasks)]

    async def worker_trio(sock: trio.socket.SocketType) -> None:
        nonlocal count
        while True:
            with trio.move_on_after(TIMEOUT_S):
                await sock.recv(RECV_SIZE)
                raise RuntimeError("a silent socket returned data")
            count += 1

    async def worker_native(sock: trio.socket.SocketType) -> None:
        nonlocal count
        assert recv is not None
        while True:
            with trio.move_on_after(TIMEOUT_S):
                await recv(sock, RECV_SIZE)
                raise RuntimeError("a silent socket returned data")
            count += 1

    async def worker_floor(sock: trio.socket.SocketType) -> None:
        nonlocal count
        while True:
            with trio.move_on_after(TIMEOUT_S):
                await trio.sleep_forever()
            count += 1

    worker = {"uring-native": worker_native, "floor": worker_floor}.get(
        contender, worker_trio
    )
    async with trio.open_nursery() as nursery:
        for a, _b in pairs:
            nursery.start_soon(worker, a)
        w = await measure_window(trio.sleep, lambda: count, warmup, seconds, prof)
        st = trio.lowlevel.current_statistics().io_statistics
        w.setup_flags = list(getattr(st, "setup_flags", ()))
        nursery.cancel_scope.cancel()
    for a, b in pairs:
        a.close()
        b.close()
    return w


async def _asyncio_child(
    tasks: int, seconds: float, warmup: float, prof: Profiler
) -> Window:
    import asyncio

    loop = asyncio.get_running_loop()
    count = 0
    pairs = [socket.socketpair() for _ in range(tasks)]
    for a, b in pairs:
        a.setblocking(False)
        b.setblocking(False)
    timeout_cm = getattr(asyncio, "timeout", None)

    async def worker(sock: socket.socket) -> None:
        nonlocal count
        while True:
            try:
                if timeout_cm is not None:
                    async with timeout_cm(TIMEOUT_S):
                        await loop.sock_recv(sock, RECV_SIZE)
                else:  # Python 3.10
                    await asyncio.wait_for(loop.sock_recv(sock, RECV_SIZE), TIMEOUT_S)
            except TimeoutError:
                count += 1
            else:
                raise RuntimeError("a silent socket returned data")

    workers = [asyncio.ensure_future(worker(a)) for a, _b in pairs]
    w = await measure_window(
        asyncio.sleep, lambda: count, warmup, seconds, prof, io=False
    )
    for t in workers:
        t.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    for a, b in pairs:
        a.close()
        b.close()
    return w


def child_main(args: argparse.Namespace) -> int:
    contender: str = args.child
    prof = Profiler(args.profile)
    if contender in ("epoll", "uring", "uring-poll", "uring-native", "floor"):
        import trio

        if contender == "uring-poll":
            os.environ["TRIO_URING_NATIVE_SOCKETS"] = "0"

        run: Callable[..., Any] = trio.run
        if contender.startswith("uring"):
            import trio_uring

            run = trio_uring.run
        w = run(_trio_child, contender, args.tasks[0], args.seconds, args.warmup, prof)
    elif contender == "asyncio":
        import asyncio

        w = asyncio.run(_asyncio_child(args.tasks[0], args.seconds, args.warmup, prof))
    elif contender == "uvloop":
        import uvloop

        w = uvloop.run(_asyncio_child(args.tasks[0], args.seconds, args.warmup, prof))
    else:
        raise SystemExit(f"unknown contender {contender}")
    emit(window_result(w, "timeout", prof, setup_flags=w.setup_flags))
    return 0


# --------------------------------------------------------------------------
# Driver side


def run_child(
    contender: str, tasks: int, args: argparse.Namespace, *, profile: bool = False
) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(SCRIPT),
        "--child",
        contender,
        "--tasks",
        str(tasks),
        "--seconds",
        f"{args.seconds:g}",
        "--warmup",
        f"{args.warmup:g}",
    ]
    if profile:
        argv.append("--profile")
    return spawn(
        argv,
        f"{contender} (tasks={tasks})",
        args.seconds + args.warmup + CHILD_SLACK_S,
        args.cpu,
    )


def summarize(
    runs: list[dict[str, Any]], names: Sequence[str], baseline: str
) -> list[dict[str, Any]]:
    def stats(mine: list[dict[str, Any]]) -> dict[str, Any]:
        rates = [r["timeouts_per_s"] for r in mine]
        cpu = [r["cpu_us_per_timeout"] for r in mine if r["cpu_us_per_timeout"]]
        return {
            "timeouts_per_s": rates,
            **spread(rates),
            "median_cpu_us_per_timeout": median(cpu),
            "median_cpu_utilisation": median(
                [r["cpu_utilisation"] or 0.0 for r in mine]
            ),
            "io_per_timeout": median_per_key(mine, "io_per_timeout"),
            "setup_flags": mine[0]["setup_flags"] if mine else [],
        }

    return summarize_blocks(
        LAYOUT,
        runs,
        names,
        lambda r: r["timeouts_per_s"],
        stats,
        [(name, baseline) for name in names if name != baseline],
    )


def markdown(
    summary: list[dict[str, Any]], machine: dict[str, Any], settings: dict[str, Any]
) -> str:
    lines = header(
        machine,
        settings,
        "Timeout benchmark",
        f"- settings: {settings['rounds']} rounds x {settings['seconds']:g} s "
        f"(+{settings['warmup']:g} s warmup), deadline {TIMEOUT_S * 1e3:g} ms, "
        f"recv({RECV_SIZE}) on a silent socketpair per task; "
        f"{settings['pinning']}",
    )
    lines += [
        "",
        "| tasks | contender | timeouts/s (median) | min | max | "
        "CPU us/timeout | CPU use | SQEs per timeout |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for block in summary:
        for name, c in block["contenders"].items():
            lines.append(
                f"| {block['tasks']} | {name} | {c['median']:,.0f} | "
                f"{c['min']:,.0f} | {c['max']:,.0f} | "
                f"{c['median_cpu_us_per_timeout']:.1f} | "
                f"{c['median_cpu_utilisation']:.0%} | "
                f"{fmt_io(c['io_per_timeout'], SHOWN_IO)} |"
            )
    lines += ratio_table(LAYOUT, summary)
    lines += target_lines(
        summary, [(None, "uring", "epoll", 1.5), (None, "uring-native", "epoll", 1.5)]
    )
    lines += [
        "",
        "floor = trio.sleep_forever() under the same deadline, no IO at all: the",
        "cost of trio's cancel scope, deadline and scheduler alone, so floor / epoll",
        "bounds what any IO manager under trio can reach.",
        "CPU us/timeout = the child's user+sys CPU time / timeouts in the window;",
        "CPU use = CPU time / wall time (below 100%: the loop idled, i.e. it kept",
        "up with the deadlines and the rate is capped by tasks / 1 ms).",
        "SQEs per timeout: io_uring submissions by opcode and io_uring_enter calls",
        "per completed timeout (io_uring contenders only).",
    ]
    return "\n".join(lines)


def select_contenders(requested: list[str] | None) -> list[str]:
    """The requested contenders; by default all, minus missing optional peers."""
    names = requested or list(CONTENDERS)
    chosen = []
    for name in names:
        missing = [
            m for m in CONTENDERS[name].requires if importlib.util.find_spec(m) is None
        ]
        if missing:
            msg = f"skipping {name}: {', '.join(missing)} not importable"
            if requested is not None and name not in OPTIONAL:
                raise BenchError(msg)
            print(msg, file=sys.stderr)
            continue
        chosen.append(name)
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("timeouts/s: N tasks looping recv under a 1 ms deadline")
    parser.add_argument(
        "--contenders",
        type=name_list(CONTENDERS, "contender"),
        help=f"comma-separated, in this order each round (default: all "
        f"importable); known: {', '.join(CONTENDERS)}",
    )
    parser.add_argument("--tasks", type=int_list, default=[100, 1000])
    add_round_options(parser, warmup=0.5)
    add_cpu_option(parser)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of measuring: one cProfile'd run per contender and task "
        "count; prints the top functions per timeout",
    )
    parser.add_argument("--json", type=Path, help="also write all data here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("need --rounds >= 1, --seconds > 0, --warmup >= 0")

    try:
        names = select_contenders(args.contenders)
    except BenchError as exc:
        return error(exc)
    if not names:
        return error("no contender to run")
    baseline = names[0]
    machine = machine_info()
    machine["loadavg_start"] = loadavg()
    rounds = 1 if args.profile else args.rounds
    try:
        runs = alternate(
            LAYOUT,
            names,
            rounds,
            lambda name, tasks: run_child(name, tasks, args, profile=args.profile),
            lambda r: (
                f"{r['timeouts_per_s']:>10,.0f} timeouts/s  "
                f"cpu {r['cpu_us_per_timeout'] or float('nan'):.1f} us/timeout  "
                f"{fmt_io(r['io_per_timeout'], SHOWN_IO)}"
            ),
            groups=args.tasks,
            width=13,
        )
    except BenchError as exc:
        return error(exc)
    machine["loadavg_end"] = loadavg()
    settings = {
        "contenders": names,
        "baseline": baseline,
        "tasks": args.tasks,
        "rounds": rounds,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "profile": args.profile,
        "pinning": pinning_text(args.cpu),
        "command": command_text(argv),
    }
    summary = summarize(runs, names, baseline)
    print(markdown(summary, machine, settings))
    if args.profile:
        print(profile_markdown(runs))
    write_json(args.json, machine, settings, summary, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
