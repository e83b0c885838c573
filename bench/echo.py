"""TCP echo benchmark driver: trio on epoll vs trio on io_uring, side by side.

Design
------
* Load comes from a separate process, ``bench/loadgen.c`` (C, epoll, one
  thread), so the client is never the bottleneck for a Python server.  It is
  built on demand into ``bench/.build/`` with ``gcc -O2 -Wall -Wextra
  -Werror`` (the same flags as ``bench/Makefile``).
* Every measurement is one *run*: start a fresh server process, read the
  ``PORT <n>`` line it prints, run loadgen against it, SIGTERM the server and
  collect its ``STATS <json>`` line.  A fresh server per run means no state
  (caches, ring sizes, leaked tasks) carries over between backends.
* Runs are interleaved: round 1 runs every backend once (A B ...), then
  round 2, and so on, so slow drift of a shared, noisy machine hits every
  backend alike.  The headline number is the median over rounds of the
  per-round ratio backend/baseline: a ratio taken within one round cancels
  most of the machine's drift, and the median drops outlier rounds.
* CPU pinning (``--pin``, applied with ``os.sched_setaffinity`` in the child
  before exec): ``split`` (default, when two or more CPUs are usable) puts the
  server on one CPU and loadgen on another, so they do not fight over one
  core and with many connections the server's CPU is the bottleneck.
  ``same`` puts both on one CPU; ``none`` leaves placement to the scheduler.
  With one connection the exchange is strictly serial and ``split`` adds two
  cross-CPU wakeups per message, which on a VM can cost more than the server
  itself (see bench/README.md); ``same`` shows the server's cost better there.
  Kernel work done on the server's behalf (softirqs, io_uring workers) is not
  pinned.  ``--server-cpu``/``--loadgen-cpu`` choose the CPUs.
* Backends are a table (``BACKENDS``): a name, the server command, the modules
  it needs and the peer it is naturally compared with.  A new peer (asyncio,
  uvloop, a C reference ...) is one more entry whose server follows the same
  PORT/SIGTERM/STATS protocol as ``bench/echo_server.py``.

Usage::

    python bench/echo.py --conns 1,100 --rounds 5 --seconds 3
    python bench/echo.py --backends epoll,uring,epoll-streams,uring-streams \
        --json results.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
    BenchError,
    Layout,
    add_round_options,
    alternate,
    command_text,
    error,
    int_list,
    loadavg,
    loadavg_line,
    machine_info,
    machine_line,
    median,
    new_parser,
    pinned,
    ratio_table,
    spread,
    summarize_blocks,
    write_json,
)

LOADGEN_SRC = BENCH_DIR / "loadgen.c"
BUILD_DIR = BENCH_DIR / ".build"
LOADGEN_BIN = BUILD_DIR / "loadgen"
LOADGEN_CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror")

SERVER_START_TIMEOUT_S = 20.0
SERVER_STOP_TIMEOUT_S = 10.0
LOADGEN_CONNECT_BOUND_S = 5.0  # loadgen's own connect deadline
LOADGEN_SLACK_S = 15.0
LAYOUT = Layout(name="backend", names="backends", group="conns")


# --------------------------------------------------------------------------
# Backends


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    description: str
    # (host, port) -> argv of a server that follows the PORT/SIGTERM/STATS
    # protocol (see bench/echo_server.py).
    command: Callable[[str, int], list[str]]
    # Modules the server imports; checked before any run starts.
    requires: tuple[str, ...] = ()
    # The backend this one is naturally compared with, if selected too.
    peer: str | None = None
    # A C server built into bench/.build/ from this source in bench/.
    c_source: str | None = None


def _trio_server(
    backend: str, *, mode: str, readiness: bool = False
) -> Callable[[str, int], list[str]]:
    def command(host: str, port: int) -> list[str]:
        return [
            sys.executable,
            str(BENCH_DIR / "echo_server.py"),
            "--backend",
            backend,
            *(["--readiness"] if readiness else []),
            "--mode",
            mode,
            "--host",
            host,
            "--port",
            str(port),
        ]

    return command


def _script_server(script: str, *extra: str) -> Callable[[str, int], list[str]]:
    def command(host: str, port: int) -> list[str]:
        argv = [sys.executable, str(BENCH_DIR / script), *extra]
        return [*argv, "--host", host, "--port", str(port)]

    return command


def _c_server(name: str) -> Callable[[str, int], list[str]]:
    def command(host: str, port: int) -> list[str]:
        return [str(BUILD_DIR / name), host, str(port)]

    return command


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend(
            "epoll",
            "trio raw sockets (trio.socket recv/send), trio.run (epoll)",
            _trio_server("epoll", mode="raw"),
            requires=("trio",),
        ),
        Backend(
            "uring",
            "trio raw sockets (trio.socket recv/send), trio_uring.run",
            _trio_server("uring", mode="raw"),
            requires=("trio", "trio_uring"),
            peer="epoll",
        ),
        Backend(
            "uring-poll",
            "the same trio raw sockets, trio_uring.run with "
            "TRIO_URING_NATIVE_SOCKETS=0 (readiness: one POLL_ADD per wait)",
            _trio_server("uring", mode="raw", readiness=True),
            requires=("trio", "trio_uring"),
            peer="epoll",
        ),
        Backend(
            "uring-lowlevel",
            "trio_uring.lowlevel.recv/send (IORING_OP_RECV/SEND), trio_uring.run",
            _trio_server("uring", mode="lowlevel"),
            requires=("trio", "trio_uring"),
            peer="epoll",
        ),
        Backend(
            "epoll-streams",
            "trio.serve_tcp + SocketStream, trio.run (epoll)",
            _trio_server("epoll", mode="streams"),
            requires=("trio",),
        ),
        Backend(
            "uring-streams",
            "trio.serve_tcp + SocketStream, trio_uring.run",
            _trio_server("uring", mode="streams"),
            requires=("trio", "trio_uring"),
            peer="epoll-streams",
        ),
        Backend(
            "uring-streams-poll",
            "trio.serve_tcp + SocketStream, trio_uring.run with "
            "TRIO_URING_NATIVE_SOCKETS=0",
            _trio_server("uring", mode="streams", readiness=True),
            requires=("trio", "trio_uring"),
            peer="epoll-streams",
        ),
        Backend(
            "anyio-epoll",
            "anyio.create_tcp_listener + serve, anyio.run(backend='trio') (epoll)",
            _script_server("echo_anyio.py", "--backend", "epoll"),
            requires=("trio", "anyio"),
        ),
        Backend(
            "anyio-uring",
            "the same anyio server after trio_uring.install()",
            _script_server("echo_anyio.py", "--backend", "uring"),
            requires=("trio", "anyio", "trio_uring"),
            peer="anyio-epoll",
        ),
        Backend(
            "asyncio",
            "asyncio Protocol (data_received -> transport.write), asyncio loop",
            _script_server("echo_asyncio.py", "--loop", "asyncio", "--api", "protocol"),
        ),
        Backend(
            "asyncio-streams",
            "asyncio.start_server, reader.read / writer.write + drain per message",
            _script_server("echo_asyncio.py", "--loop", "asyncio", "--api", "streams"),
        ),
        Backend(
            "uvloop",
            "the asyncio Protocol server on uvloop",
            _script_server("echo_asyncio.py", "--loop", "uvloop", "--api", "protocol"),
            requires=("uvloop",),
            peer="asyncio",
        ),
        Backend(
            "uvloop-streams",
            "the asyncio streams server on uvloop",
            _script_server("echo_asyncio.py", "--loop", "uvloop", "--api", "streams"),
            requires=("uvloop",),
            peer="asyncio-streams",
        ),
        Backend(
            "c-epoll",
            "C reference: bench/echo_ref.c, one thread, epoll, non-blocking",
            _c_server("echo_ref"),
            c_source="echo_ref.c",
        ),
        Backend(
            "c-uring",
            "C reference on io_uring: bench/echo_uring_ref.c, one thread, "
            "RECV/SEND ops, raw syscalls",
            _c_server("echo_uring_ref"),
            c_source="echo_uring_ref.c",
            peer="c-epoll",
        ),
    )
}
# What `run_all.py` runs: every peer above.
ALL_BACKENDS = tuple(BACKENDS)


# --------------------------------------------------------------------------
# Build


def build_c(source: Path, binary: Path) -> Path:
    """Compile ``source`` unless ``binary`` is newer than it."""
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    BUILD_DIR.mkdir(exist_ok=True)
    tmp = BUILD_DIR / f"{binary.name}.tmp{os.getpid()}"
    cc = os.environ.get("CC", "gcc")
    argv = [cc, *LOADGEN_CFLAGS, "-o", str(tmp), str(source), "-lm"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BenchError(
            f"building {binary.name} failed: {' '.join(argv)}\n{proc.stderr}"
        )
    tmp.replace(binary)
    return binary


def build_loadgen() -> Path:
    """Compile loadgen.c unless the binary is newer than the source."""
    return build_c(LOADGEN_SRC, LOADGEN_BIN)


def raise_nofile() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (1,000 connections need more
    fds than the common soft limit of 1024); inherited by the children."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------
# One run


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str
    msg_size: int
    seconds: float
    warmup: float
    server_cpus: frozenset[int] | None
    loadgen_cpus: frozenset[int] | None


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:]


def _read_port(proc: subprocess.Popen[str], stderr_path: Path) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(
                    f"server printed no PORT line within {SERVER_START_TIMEOUT_S} s"
                    f"\n--- server stderr ---\n{_tail(stderr_path)}"
                )
            if not sel.select(timeout=left):
                continue
            # The server writes and flushes the whole line at once.
            line = proc.stdout.readline()
            if not line:
                proc.wait(timeout=5)
                raise BenchError(
                    f"server exited (code {proc.returncode}) before printing PORT"
                    f"\n--- server stderr ---\n{_tail(stderr_path)}"
                )
            if line.startswith("PORT "):
                return int(line.split()[1])


def _stop_server(proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any] | None]:
    """SIGTERM the server; return its exit code and its STATS, if any."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=SERVER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    stats: dict[str, Any] | None = None
    for line in (out or "").splitlines():
        if line.startswith("STATS "):
            try:
                stats = json.loads(line[len("STATS ") :])
            except json.JSONDecodeError:
                stats = {"unparsed": line}
    return proc.returncode, stats


def run_once(
    backend: Backend, conns: int, loadgen: Path, s: Settings, log_dir: Path
) -> dict[str, Any]:
    stderr_path = log_dir / f"server-{backend.name}-{conns}-{time.monotonic_ns()}.err"
    with stderr_path.open("w") as stderr_file:
        proc = subprocess.Popen(
            backend.command(s.host, 0),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
            preexec_fn=pinned(s.server_cpus),  # the driver is single-threaded
        )
    try:
        port = _read_port(proc, stderr_path)
        argv = [
            str(loadgen),
            s.host,
            str(port),
            str(conns),
            str(s.msg_size),
            f"{s.seconds:g}",
            f"{s.warmup:g}",
        ]
        timeout = LOADGEN_CONNECT_BOUND_S + s.warmup + s.seconds + LOADGEN_SLACK_S
        try:
            lg = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout,
                preexec_fn=pinned(s.loadgen_cpus),
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"loadgen did not finish within {timeout:.0f} s") from exc
        if lg.returncode != 0:
            raise BenchError(
                f"loadgen failed (exit {lg.returncode}): {' '.join(argv)}\n"
                f"{lg.stderr.strip()}\n"
                f"--- server ({backend.name}) stderr ---\n{_tail(stderr_path)}"
            )
        try:
            result: dict[str, Any] = json.loads(lg.stdout)
        except json.JSONDecodeError as exc:
            raise BenchError(f"loadgen printed no JSON: {lg.stdout!r}") from exc
    finally:
        code, stats = _stop_server(proc)
    if code != 0:
        print(
            f"warning: {backend.name} server exited with code {code} on SIGTERM"
            f"\n{_tail(stderr_path)}",
            file=sys.stderr,
        )
    result["server_exit"] = code
    result["server_stats"] = stats
    # Per-message costs from the server's IO statistics (warmup included).
    total = result.get("total_messages") or 0
    submitted = (stats or {}).get("submitted")
    if isinstance(submitted, dict) and total:
        total_ops = sum(v for v in submitted.values() if isinstance(v, int))
        result["ops_per_msg"] = total_ops / total
    enters = (stats or {}).get("enters")
    if isinstance(enters, int) and total:
        result["enters_per_msg"] = enters / total
    stderr_path.unlink(missing_ok=True)
    return result


# --------------------------------------------------------------------------
# Summary


def comparisons(names: Sequence[str], baseline: str) -> list[tuple[str, str]]:
    """(backend, reference) pairs to report a ratio for."""
    pairs: list[tuple[str, str]] = []
    for name in names:
        peer = BACKENDS[name].peer
        for ref in (peer, baseline):
            if ref and ref != name and ref in names and (name, ref) not in pairs:
                pairs.append((name, ref))
    return pairs


def summarize(
    runs: list[dict[str, Any]], names: Sequence[str], baseline: str
) -> list[dict[str, Any]]:
    def stats(mine: list[dict[str, Any]]) -> dict[str, Any]:
        rates = [r["msgs_per_s"] for r in mine]
        ops = [r["ops_per_msg"] for r in mine if "ops_per_msg" in r]
        return {
            "msgs_per_s": rates,
            **spread(rates, "_msgs_per_s"),
            "median_p50_us": median([r["p50_us"] for r in mine]),
            "median_p99_us": median([r["p99_us"] for r in mine]),
            "median_ops_per_msg": median(ops) if ops else None,
        }

    return summarize_blocks(
        LAYOUT,
        runs,
        names,
        lambda r: r["msgs_per_s"],
        stats,
        comparisons(names, baseline),
    )


def markdown(
    summary: list[dict[str, Any]], machine: dict[str, Any], settings: dict[str, Any]
) -> str:
    lines = [
        "## Echo benchmark",
        "",
        machine_line(machine, git=False),
        f"- settings: {settings['rounds']} rounds x {settings['seconds']:g} s "
        f"(+{settings['warmup']:g} s warmup), {settings['msg_size']} B messages, "
        f"one in flight per connection; {settings['pinning']}",
        loadavg_line(machine),
        f"- command: `{settings['command']}`",
        "",
        "| conns | backend | msgs/s (median) | min | max | us/msg | "
        "p50 us | p99 us | ops/msg |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for block in summary:
        for name, b in block["backends"].items():
            med = b["median_msgs_per_s"]
            ops = b["median_ops_per_msg"]
            lines.append(
                f"| {block['conns']} | {name} | {med:,.0f} | "
                f"{b['min_msgs_per_s']:,.0f} | {b['max_msgs_per_s']:,.0f} | "
                f"{1e6 / med if med > 0 else float('nan'):.1f} | "
                f"{b['median_p50_us']:.1f} | {b['median_p99_us']:.1f} | "
                f"{'-' if ops is None else f'{ops:.2f}'} |"
            )
    lines += ratio_table(LAYOUT, summary)
    lines += ["", "| backend | what it runs |", "|---|---|"]
    lines += [f"| {n} | {d} |" for n, d in settings.get("descriptions", {}).items()]
    for n, why in settings.get("skipped", {}).items():
        lines.append(f"- skipped {n}: {why}")
    lines += [
        "",
        "us/msg = 1e6 / median msgs/s: with many connections the server's CPU is",
        "the bottleneck, so this is roughly the server's cost per echoed message.",
        "ops/msg = io_uring submissions per message (server STATS, incl. warmup).",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# CLI


def _backend_list(text: str) -> list[str]:
    if text.strip() == "all":
        return list(ALL_BACKENDS)
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown backend(s) {unknown}; known: {', '.join(BACKENDS)}"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"duplicate backend in {text!r}")
    return names


def _cpu_plan(
    args: argparse.Namespace,
) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    if args.pin == "none":
        return None, None
    usable = sorted(os.sched_getaffinity(0))
    if args.pin == "same":
        cpu = args.server_cpu if args.server_cpu is not None else usable[0]
        return frozenset({cpu}), frozenset({cpu})
    if args.server_cpu is not None or args.loadgen_cpu is not None:
        server = args.server_cpu if args.server_cpu is not None else usable[0]
        loadgen = args.loadgen_cpu if args.loadgen_cpu is not None else usable[-1]
        return frozenset({server}), frozenset({loadgen})
    if len(usable) < 2:
        return None, None
    return frozenset({usable[0]}), frozenset({usable[1]})


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("TCP echo benchmark: trio on epoll vs io_uring")
    parser.add_argument(
        "--backends",
        type=_backend_list,
        default=["epoll", "uring"],
        help=f"comma-separated, run in this order each round, or 'all'; known: "
        f"{', '.join(BACKENDS)}",
    )
    parser.add_argument(
        "--baseline", help="backend every other one is compared with (default: first)"
    )
    parser.add_argument("--conns", type=int_list, default=[1, 100])
    add_round_options(parser, warmup=1.0)
    parser.add_argument("--msg-size", type=int, default=64, help="bytes")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--pin",
        choices=("split", "same", "none"),
        default="split",
        help="server and loadgen on different CPUs, on one CPU, or unpinned",
    )
    parser.add_argument("--server-cpu", type=int)
    parser.add_argument("--loadgen-cpu", type=int)
    parser.add_argument("--json", type=Path, help="also write all data here")
    args = parser.parse_args(argv)

    names: list[str] = args.backends
    baseline: str = args.baseline or names[0]
    if baseline not in names:
        parser.error(f"--baseline {baseline} is not among --backends")
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0 or args.msg_size < 1:
        parser.error(
            "need --rounds >= 1, --seconds > 0, --warmup >= 0, --msg-size >= 1"
        )
    runnable: list[str] = []
    skipped: dict[str, str] = {}
    for name in names:
        missing = [
            m for m in BACKENDS[name].requires if importlib.util.find_spec(m) is None
        ]
        if missing:
            skipped[name] = (
                f"Python {sys.version.split()[0]} ({sys.executable}) cannot import "
                f"{', '.join(missing)}"
            )
            print(f"skipping {name}: {skipped[name]}", file=sys.stderr)
        else:
            runnable.append(name)
    if not runnable:
        return error("no backend to run")
    if baseline not in runnable:
        return error(f"the baseline {baseline} cannot run here")
    names = runnable
    raise_nofile()

    server_cpus, loadgen_cpus = _cpu_plan(args)
    pinning = (
        f"server pinned to CPU {sorted(server_cpus)}, loadgen to {sorted(loadgen_cpus)}"
        if server_cpus is not None and loadgen_cpus is not None
        else "no CPU pinning"
    )
    settings = Settings(
        host=args.host,
        msg_size=args.msg_size,
        seconds=args.seconds,
        warmup=args.warmup,
        server_cpus=server_cpus,
        loadgen_cpus=loadgen_cpus,
    )

    try:
        loadgen = build_loadgen()
        for name in names:
            src = BACKENDS[name].c_source
            if src is not None:
                build_c(BENCH_DIR / src, BUILD_DIR / Path(src).stem)
    except BenchError as exc:
        return error(exc)
    machine = machine_info()
    machine["loadavg_start"] = loadavg()
    with tempfile.TemporaryDirectory(prefix="trio-uring-bench-") as tmp:
        try:
            runs = alternate(
                LAYOUT,
                names,
                args.rounds,
                lambda name, conns: run_once(
                    BACKENDS[name], conns, loadgen, settings, Path(tmp)
                ),
                lambda r: (
                    f"{r['msgs_per_s']:>10,.0f} msgs/s  "
                    f"p50 {r['p50_us']:.1f} us  p99 {r['p99_us']:.1f} us"
                ),
                groups=args.conns,
                width=14,
            )
        except BenchError as exc:
            return error(exc)

    machine["loadavg_end"] = loadavg()
    summary = summarize(runs, names, baseline)
    settings_info = {
        "backends": names,
        "descriptions": {n: BACKENDS[n].description for n in names},
        "skipped": skipped,
        "baseline": baseline,
        "conns": args.conns,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "msg_size": args.msg_size,
        "host": args.host,
        "pinning": pinning,
        "command": command_text(argv),
    }
    print(markdown(summary, machine, settings_info))
    write_json(args.json, machine, settings_info, summary, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
