"""Ring setup flags benchmark: an in-process ping-pong under each flag set.

Two tasks bounce one byte over a ``socket.socketpair()`` (non-blocking stdlib
sockets) through ``trio.lowlevel.wait_readable``: the pinger sends, waits
until its end is readable and reads the reply; the ponger waits, reads and
answers.  Every round trip is two readiness waits and two wake-ups, so it
measures the IO manager's wait/wake path and the loop's enter/harvest cost
with nothing else going on.

Variants (each in a fresh subprocess, ``--child``):

* ``epoll``: ``trio.run``.
* ``default``: ``trio_uring.run`` with SUBMIT_ALL | COOP_TASKRUN |
  TASKRUN_FLAG | SINGLE_ISSUER | DEFER_TASKRUN (trio-uring's first choice).
* ``coop``: SUBMIT_ALL | COOP_TASKRUN | TASKRUN_FLAG.
* ``submit-all``: SUBMIT_ALL only.
* ``none``: no setup flags.

The io_uring variants monkeypatch ``trio_uring._ring._flag_candidates`` to
return just that flag set, and report the flags the ring really got (a kernel
that rejects one fails the run instead of silently falling back).  Rounds
alternate variants; the headline is the median over rounds of the per-round
ratio of round-trip times against ``epoll`` and against ``default``.

Usage::

    python bench/setup_flags.py                          # N=20000, 5 rounds
    python bench/setup_flags.py --n 50000 --rounds 9 --json out.json
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import (
    CHILD_SLACK_S,
    BenchError,
    Layout,
    add_cpu_option,
    alternate,
    by_round,
    command_text,
    cpu_seconds,
    delta_per,
    emit,
    error,
    fmt_io,
    header,
    io_counts,
    loadavg,
    machine_info,
    median,
    median_per_key,
    name_list,
    new_parser,
    pinning_text,
    ratio,
    ratio_cells,
    spawn,
    spread,
    write_json,
)

SCRIPT = Path(__file__).resolve()
LAYOUT = Layout(name="variant")

# Flag names as in trio_uring._ring.SETUP_FLAG_NAMES; None: trio on epoll.
VARIANTS: dict[str, tuple[str, ...] | None] = {
    "epoll": None,
    "default": (
        "SUBMIT_ALL",
        "COOP_TASKRUN",
        "TASKRUN_FLAG",
        "SINGLE_ISSUER",
        "DEFER_TASKRUN",
    ),
    "coop": ("SUBMIT_ALL", "COOP_TASKRUN", "TASKRUN_FLAG"),
    "submit-all": ("SUBMIT_ALL",),
    "none": (),
}


# --------------------------------------------------------------------------
# Child side


async def _ping_pong(n: int, warmup: int) -> dict[str, Any]:
    import trio

    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    wait_readable = trio.lowlevel.wait_readable
    result: dict[str, Any] = {}

    async def ponger(total: int) -> None:
        for _ in range(total):
            await wait_readable(b)
            b.recv(1)
            b.send(b"x")

    async def pinger(count: int) -> None:
        for _ in range(count):
            a.send(b"x")
            await wait_readable(a)
            if a.recv(1) != b"x":
                raise RuntimeError("ping-pong lost a byte")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ponger, warmup + n)
        await pinger(warmup)
        io0 = io_counts()
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        await pinger(n)
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
        io1 = io_counts()
    st = trio.lowlevel.current_statistics().io_statistics
    a.close()
    b.close()
    result.update(
        us_per_rt=elapsed / n * 1e6,
        cpu_us_per_rt=cpu / n * 1e6,
        io_per_rt=delta_per(io0, io1, n),
        setup_flags=sorted(getattr(st, "setup_flags", ())),
        backend=getattr(st, "backend", "?"),
    )
    return result


def child_main(args: argparse.Namespace) -> int:
    import trio

    wanted = VARIANTS[args.child]
    run: Callable[..., Any] = trio.run
    if wanted is not None:
        import trio_uring
        from trio_uring import _ring

        by_name = {name: bit for bit, name in _ring.SETUP_FLAG_NAMES.items()}
        flags = 0
        for name in wanted:
            flags |= by_name[name]

        def only(guest: bool) -> list[int]:
            return [flags]

        _ring._flag_candidates = only
        run = trio_uring.run
    result = run(_ping_pong, args.n, args.warmup_n)
    if wanted is not None:
        got = set(result["setup_flags"]) - {"CQSIZE"}
        if got != set(wanted):
            print(
                f"ring got flags {sorted(got)}, wanted {sorted(wanted)}",
                file=sys.stderr,
            )
            return 1
    emit(result)
    return 0


# --------------------------------------------------------------------------
# Driver side


def summarize(runs: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    # ratios of speed (round trips per second), so > 1 means faster
    rounds = by_round(runs, LAYOUT.name, lambda r: 1e6 / r["us_per_rt"])
    variants: dict[str, Any] = {}
    for name in names:
        mine = [r for r in runs if r["variant"] == name]
        us = [r["us_per_rt"] for r in mine]
        variants[name] = {
            "us_per_rt": us,
            **spread(us),
            "median_cpu_us_per_rt": median([r["cpu_us_per_rt"] for r in mine]),
            "io_per_rt": median_per_key(mine, "io_per_rt"),
            "setup_flags": mine[0]["setup_flags"] if mine else [],
        }
    ratios = []
    for ref in ("epoll", "default"):
        if ref in names:
            ratios += [ratio(rounds, n, ref) for n in names if n != ref]
    return {"variants": variants, "ratios": ratios}


def markdown(
    summary: dict[str, Any], machine: dict[str, Any], settings: dict[str, Any]
) -> str:
    lines = header(
        machine,
        settings,
        "Setup flags benchmark (ping-pong)",
        f"- settings: {settings['rounds']} rounds, {settings['n']} round trips "
        f"(+{settings['warmup_n']} warmup) of 1 byte over a socketpair, two "
        f"tasks, trio.lowlevel.wait_readable; {settings['pinning']}",
    )
    lines += [
        "",
        "| variant | setup flags (as granted) | us/round trip (median) | min | max "
        "| CPU us/rt | SQEs per round trip |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, v in summary["variants"].items():
        shown = [f for f in v["setup_flags"] if f != "CQSIZE"]
        flags = "epoll" if name == "epoll" else "\\|".join(shown) or "-"
        lines.append(
            f"| {name} | {flags} | {v['median']:.2f} | {v['min']:.2f} | "
            f"{v['max']:.2f} | {v['median_cpu_us_per_rt']:.2f} | "
            f"{fmt_io(v['io_per_rt'])} |"
        )
    lines += [
        "",
        "| speed ratio (round trips/s) | median of per-round ratios | min | max |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {ratio_cells(r)}" for r in summary["ratios"]]
    lines += ["", "Ratios above 1: the variant is faster than the reference."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("ping-pong round-trip time under each io_uring setup flag set")
    parser.add_argument(
        "--variants",
        type=name_list(VARIANTS, "variant"),
        default=list(VARIANTS),
        help=f"comma-separated, in this order each round; known: {', '.join(VARIANTS)}",
    )
    parser.add_argument("--n", type=int, default=20000, help="round trips")
    parser.add_argument(
        "--warmup-n", type=int, default=2000, help="round trips before timing"
    )
    parser.add_argument("--rounds", type=int, default=5)
    add_cpu_option(parser)
    parser.add_argument("--json", type=Path, help="also write all data here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    if args.rounds < 1 or args.n < 1 or args.warmup_n < 0:
        parser.error("need --rounds >= 1, --n >= 1, --warmup-n >= 0")
    names: list[str] = args.variants

    machine = machine_info()
    machine["loadavg_start"] = loadavg()
    try:
        runs = alternate(
            LAYOUT,
            names,
            args.rounds,
            lambda name, _group: spawn(
                [
                    sys.executable,
                    str(SCRIPT),
                    "--child",
                    name,
                    "--n",
                    str(args.n),
                    "--warmup-n",
                    str(args.warmup_n),
                ],
                name,
                CHILD_SLACK_S + args.n * 1e-3,
                args.cpu,
            ),
            lambda r: f"{r['us_per_rt']:7.2f} us/rt  cpu {r['cpu_us_per_rt']:.2f}",
            width=10,
        )
    except BenchError as exc:
        return error(exc)
    machine["loadavg_end"] = loadavg()
    settings = {
        "variants": names,
        "n": args.n,
        "warmup_n": args.warmup_n,
        "rounds": args.rounds,
        "pinning": pinning_text(args.cpu),
        "command": command_text(argv),
    }
    summary = summarize(runs, names)
    print(markdown(summary, machine, settings))
    write_json(args.json, machine, settings, summary, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
