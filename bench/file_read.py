"""File read benchmark: random 4 KiB preads from a file in the page cache.

A ``--size-mib`` (64) file is created once under a temporary directory and
read sequentially before every run, so every read is a page-cache hit: the
benchmark measures the cost of getting a read done from an async framework,
not the disk.  N tasks (``--tasks 1,16``) each loop over precomputed random
block-aligned offsets (the same seeded sequence for every contender) reading
``--block`` (4096) bytes at a time; the score is reads per second.

Contenders (each run in a fresh subprocess, ``--child``):

* ``trio-thread``: ``trio.run`` + ``trio.to_thread.run_sync(os.pread, ...)``:
  trio's own file I/O path (what ``trio.open_file`` does for every call).
* ``trio-uring-native``: ``trio_uring.run`` + ``trio_uring._ops_file.read(fd,
  n, offset)`` (IORING_OP_READ, returns bytes like ``os.pread``).
* ``trio-uring-readinto``: the same with ``_ops_file.readinto`` into a buffer
  preallocated per task (no bytes object per read).
* ``trio-sync`` (reference): ``trio.run``, a plain blocking ``os.pread`` then
  ``await trio.lowlevel.checkpoint()``: the read's own cost plus one trip
  through trio's scheduler, about the best an async read under trio can do.
* ``uringio``: the asyncio io_uring loop from PyPI (``uringio.UringioLoop``,
  ``await file.read(size=n, offset=off)``); wheels exist for Python >= 3.12
  only.  Skipped with a message when not importable by ``--python``.

All contenders run on the same interpreter, ``--python`` (default: this one),
so a comparison with uringio needs a 3.12+ environment with trio, trio-uring
and uringio installed, e.g.::

    ~/.pyenv/versions/3.12.1/bin/python -m venv /tmp/v312
    /tmp/v312/bin/pip install uringio trio && /tmp/v312/bin/pip install -e .
    python bench/file_read.py --python /tmp/v312/bin/python

Rounds alternate contenders; the headline is the median over rounds of the
per-round ratio against ``trio-thread``.  ``--profile`` replaces the
measurement by one cProfile'd run per contender and task count.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
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
    dist_version,
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
N_OFFSETS = 1 << 16
SEED = 20240611
LAYOUT = Layout(name="contender", names="contenders", group="tasks")


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender(
            "trio-thread", "trio.run + trio.to_thread.run_sync(os.pread)", ("trio",)
        ),
        Contender(
            "trio-uring-native",
            "trio_uring.run + _ops_file.read (IORING_OP_READ, bytes)",
            ("trio", "trio_uring"),
        ),
        Contender(
            "trio-uring-readinto",
            "trio_uring.run + _ops_file.readinto (preallocated buffer)",
            ("trio", "trio_uring"),
        ),
        Contender(
            "trio-sync", "trio.run + os.pread + trio.lowlevel.checkpoint()", ("trio",)
        ),
        Contender(
            "uringio",
            "asyncio on uringio.UringioLoop + File.read(size, offset)",
            ("uringio",),
        ),
    )
}
OPTIONAL = ("uringio", "trio-uring-readinto")
DEFAULT = (
    "trio-thread",
    "trio-uring-native",
    "trio-uring-readinto",
    "trio-sync",
    "uringio",
)


# --------------------------------------------------------------------------
# Child side


def _offsets(size: int, block: int) -> list[int]:
    rng = random.Random(SEED)
    nblocks = size // block
    return [rng.randrange(nblocks) * block for _ in range(N_OFFSETS)]


def _uring_read_fns() -> tuple[
    Callable[[int, int, int], Awaitable[bytes]],
    Callable[[int, Any, int], Awaitable[int]],
]:
    """``_ops_file.read``/``readinto``, or the raw lifecycle if that module is
    not there (yet)."""
    try:
        from trio_uring import _ops_file
    except ImportError:
        from trio_uring import _native, _ring
        from trio_uring._ring_ffi import ffi

        read_op = _ring.OP["READ"]

        async def readinto(fd: int, buf: Any, offset: int) -> int:
            cbuf = ffi.from_buffer(buf, require_writable=True)
            addr = int(ffi.cast("uintptr_t", cbuf))
            n: int = await _native.current_manager().submit(
                read_op, fd, addr, len(cbuf), offset, keep=cbuf
            )
            return n

        async def read(fd: int, nbytes: int, offset: int) -> bytes:
            buf = bytearray(nbytes)
            n = await readinto(fd, buf, offset)
            return bytes(buf[:n])

        return read, readinto
    return _ops_file.read, _ops_file.readinto


async def _trio_child(
    contender: str,
    path: str,
    tasks: int,
    block: int,
    seconds: float,
    warmup: float,
    prof: Profiler,
) -> Window:
    import trio

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    size = os.fstat(fd).st_size
    offsets = _offsets(size, block)
    expect = os.pread(fd, block, offsets[0])
    count = 0
    stop = False
    run_sync = trio.to_thread.run_sync
    pread = os.pread

    async def thread_worker(start: int) -> None:
        nonlocal count
        i = start
        while not stop:
            await run_sync(pread, fd, block, offsets[i & (N_OFFSETS - 1)])
            i += 1
            count += 1

    async def sync_worker(start: int) -> None:
        nonlocal count
        i = start
        checkpoint = trio.lowlevel.checkpoint
        while not stop:
            pread(fd, block, offsets[i & (N_OFFSETS - 1)])
            await checkpoint()
            i += 1
            count += 1

    workers: dict[str, Callable[[int], Awaitable[None]]] = {
        "trio-thread": thread_worker,
        "trio-sync": sync_worker,
    }
    if contender.startswith("trio-uring"):
        read, readinto = _uring_read_fns()
        if await read(fd, block, offsets[0]) != expect:
            raise RuntimeError("trio_uring read returned wrong data")

        async def native_worker(start: int) -> None:
            nonlocal count
            i = start
            while not stop:
                await read(fd, block, offsets[i & (N_OFFSETS - 1)])
                i += 1
                count += 1

        async def readinto_worker(start: int) -> None:
            nonlocal count
            buf = bytearray(block)
            i = start
            while not stop:
                await readinto(fd, buf, offsets[i & (N_OFFSETS - 1)])
                i += 1
                count += 1

        workers["trio-uring-native"] = native_worker
        workers["trio-uring-readinto"] = readinto_worker
    worker = workers[contender]
    async with trio.open_nursery() as nursery:
        for t in range(tasks):
            nursery.start_soon(worker, t * (N_OFFSETS // tasks))
        w = await measure_window(trio.sleep, lambda: count, warmup, seconds, prof)
        stop = True
    os.close(fd)
    return w


async def _uringio_child(
    path: str, tasks: int, block: int, seconds: float, warmup: float, prof: Profiler
) -> Window:
    import asyncio

    import uringio

    f = await uringio.open_file(path=path)
    size = os.stat(path).st_size
    offsets = _offsets(size, block)
    with open(path, "rb") as plain:
        expect = os.pread(plain.fileno(), block, offsets[0])
    if await f.read(size=block, offset=offsets[0]) != expect:
        raise RuntimeError("uringio read returned wrong data")
    count = 0
    stop = False

    async def worker(start: int) -> None:
        nonlocal count
        i = start
        while not stop:
            await f.read(size=block, offset=offsets[i & (N_OFFSETS - 1)])
            i += 1
            count += 1

    running = [
        asyncio.ensure_future(worker(t * (N_OFFSETS // tasks))) for t in range(tasks)
    ]
    w = await measure_window(
        asyncio.sleep, lambda: count, warmup, seconds, prof, io=False
    )
    stop = True
    await asyncio.gather(*running)
    await f.close()
    return w


def child_main(args: argparse.Namespace) -> int:
    contender: str = args.child
    prof = Profiler(args.profile)
    tasks = args.tasks[0]
    if contender == "uringio":
        import asyncio

        import uringio

        w = asyncio.run(
            _uringio_child(
                args.file, tasks, args.block, args.seconds, args.warmup, prof
            ),
            loop_factory=uringio.UringioLoop,  # type: ignore[call-arg]
        )
    else:
        import trio

        run: Callable[..., Any] = trio.run
        if contender.startswith("trio-uring"):
            import trio_uring

            run = trio_uring.run
        w = run(
            _trio_child,
            contender,
            args.file,
            tasks,
            args.block,
            args.seconds,
            args.warmup,
            prof,
        )
    emit(window_result(w, "read", prof))
    return 0


def info_main() -> int:
    """``--info``: what this interpreter has, for the driver."""
    import importlib.util
    import platform

    mods = ("trio", "trio_uring", "uringio")
    emit(
        {
            "python": platform.python_version(),
            "importable": {m: importlib.util.find_spec(m) is not None for m in mods},
            "trio": dist_version("trio"),
            "trio_uring": dist_version("trio-uring"),
            "uringio": dist_version("uringio"),
        }
    )
    return 0


# --------------------------------------------------------------------------
# Driver side


def make_file(directory: Path, size: int) -> Path:
    path = directory / "file_read.bin"
    chunk = 1 << 20
    rng = random.Random(SEED)
    with path.open("wb") as f:
        for _ in range(size // chunk):
            f.write(rng.randbytes(chunk))
        f.write(rng.randbytes(size % chunk))
    return path


def warm(path: Path) -> None:
    """Read the whole file, so the page cache holds it."""
    with path.open("rb", buffering=0) as f:
        while f.read(1 << 20):
            pass


def fs_type(path: Path) -> str:
    try:
        out = subprocess.run(
            ["stat", "-f", "-c", "%T", str(path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out or "unknown"


def summarize(
    runs: list[dict[str, Any]], names: Sequence[str], baseline: str
) -> list[dict[str, Any]]:
    def stats(mine: list[dict[str, Any]]) -> dict[str, Any]:
        rates = [r["reads_per_s"] for r in mine]
        return {
            "reads_per_s": rates,
            **spread(rates),
            "median_cpu_us_per_read": median(
                [r["cpu_us_per_read"] for r in mine if r["cpu_us_per_read"]]
            ),
            "median_cpu_utilisation": median(
                [r["cpu_utilisation"] or 0.0 for r in mine]
            ),
            "io_per_read": median_per_key(mine, "io_per_read"),
        }

    pairs = [(n, baseline) for n in names if n != baseline]
    for peer in ("uringio", "trio-uring-native"):
        if peer in names and peer != baseline:
            pairs += [
                (n, peer)
                for n in ("trio-uring-native", "trio-uring-readinto")
                if n in names and n != peer
            ]
            break
    return summarize_blocks(
        LAYOUT, runs, names, lambda r: r["reads_per_s"], stats, pairs
    )


def markdown(
    summary: list[dict[str, Any]], machine: dict[str, Any], settings: dict[str, Any]
) -> str:
    lines = header(
        machine,
        settings,
        "File read benchmark",
        f"- settings: {settings['rounds']} rounds x {settings['seconds']:g} s "
        f"(+{settings['warmup']:g} s warmup), random {settings['block']} B "
        f"aligned reads from a {settings['size_mib']} MiB file in the page cache "
        f"({settings['fs_type']}); uringio {machine.get('uringio', '-')}; "
        f"{settings['pinning']}",
    )
    lines += [
        "",
        "| tasks | contender | reads/s (median) | min | max | CPU us/read | "
        "CPU use | SQEs per read |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for block in summary:
        for name, c in block["contenders"].items():
            lines.append(
                f"| {block['tasks']} | {name} | {c['median']:,.0f} | "
                f"{c['min']:,.0f} | {c['max']:,.0f} | "
                f"{c['median_cpu_us_per_read']:.1f} | "
                f"{c['median_cpu_utilisation']:.0%} | {fmt_io(c['io_per_read'])} |"
            )
    lines += ratio_table(LAYOUT, summary)
    lines += target_lines(
        summary,
        [
            (None, "trio-uring-native", "uringio", 1.0),
            (16, "trio-uring-native", "trio-thread", 15.0),
        ],
    )
    lines += [
        "",
        "trio-sync = blocking os.pread + one trio checkpoint per read (a",
        "reference, not an option: it blocks the loop for the read).",
        "trio-thread is bimodal on a small VM: with the other CPU idle each",
        "hand-off is a cross-CPU wake-up and it runs 2-3x slower than when the",
        "worker shares the loop's CPU (busy machine, or --cpu): check min/max.",
        "CPU us/read = the child's user+sys CPU time (all threads) / reads;",
        "CPU use = CPU time / wall time (above 100%: worker threads ran in",
        "parallel with the event loop).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("random 4 KiB reads from a page-cached file: reads/s")
    parser.add_argument(
        "--contenders",
        type=name_list(CONTENDERS, "contender"),
        help=f"comma-separated, in this order each round (default: "
        f"{','.join(DEFAULT)}, minus what --python cannot import)",
    )
    parser.add_argument("--tasks", type=int_list, default=[1, 16])
    add_round_options(parser, warmup=0.5)
    parser.add_argument("--block", type=int, default=4096, help="bytes per read")
    parser.add_argument("--size-mib", type=int, default=64, help="file size")
    parser.add_argument(
        "--dir", type=Path, help="where to create the file (default: a temp dir)"
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for every child (all contenders use the same one)",
    )
    add_cpu_option(parser)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of measuring: one cProfile'd run per contender and task count",
    )
    parser.add_argument("--json", type=Path, help="also write all data here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--info", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.info:
        return info_main()
    if args.child:
        return child_main(args)
    if (
        args.rounds < 1
        or args.seconds <= 0
        or args.warmup < 0
        or args.block < 1
        or args.size_mib * (1 << 20) < args.block
    ):
        parser.error("need --rounds >= 1, --seconds > 0, --warmup >= 0, a block")

    try:
        info = spawn([args.python, str(SCRIPT), "--info"], "--info", 60.0)
    except BenchError as exc:
        return error(exc)
    requested: list[str] | None = args.contenders
    names: list[str] = []
    for name in requested or DEFAULT:
        missing = [m for m in CONTENDERS[name].requires if not info["importable"][m]]
        if not missing:
            names.append(name)
            continue
        msg = f"{args.python} cannot import {', '.join(missing)}"
        if requested is not None and name not in OPTIONAL:
            return error(f"{name}: {msg}")
        print(f"skipping {name}: {msg}", file=sys.stderr)
    if not names:
        return error("no contender to run")
    baseline = names[0]

    machine = machine_info()
    # Report the children's interpreter, not the driver's.
    machine.update(
        python=info["python"],
        trio=info["trio"],
        trio_uring=info["trio_uring"],
        uringio=info["uringio"],
        child_python=args.python,
    )
    machine["loadavg_start"] = loadavg()
    rounds = 1 if args.profile else args.rounds
    with tempfile.TemporaryDirectory(
        prefix="trio-uring-file-read-", dir=args.dir
    ) as tmp:
        path = make_file(Path(tmp), args.size_mib << 20)
        fs = fs_type(path)

        def measure(name: str, tasks: int) -> dict[str, Any]:
            warm(path)
            argv_child = [
                args.python,
                str(SCRIPT),
                "--child",
                name,
                "--file",
                str(path),
                "--tasks",
                str(tasks),
                "--block",
                str(args.block),
                "--seconds",
                f"{args.seconds:g}",
                "--warmup",
                f"{args.warmup:g}",
            ]
            if args.profile:
                argv_child.append("--profile")
            return spawn(
                argv_child,
                f"{name} (tasks={tasks})",
                args.seconds + args.warmup + CHILD_SLACK_S,
                args.cpu,
            )

        try:
            runs = alternate(
                LAYOUT,
                names,
                rounds,
                measure,
                lambda r: (
                    f"{r['reads_per_s']:>10,.0f} reads/s  cpu "
                    f"{r['cpu_us_per_read'] or float('nan'):.1f} us/read"
                ),
                groups=args.tasks,
                width=19,
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
        "block": args.block,
        "size_mib": args.size_mib,
        "fs_type": fs,
        "profile": args.profile,
        "pinning": pinning_text(args.cpu),
        "command": command_text(argv),
    }
    summary = summarize(runs, names, baseline)
    print(markdown(summary, machine, settings))
    if args.profile:
        print(profile_markdown(runs, "read"))
    write_json(args.json, machine, settings, summary, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
