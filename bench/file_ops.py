"""File operation benchmark: whole small files, stat, open/close.

Three workloads (``--workload``), each over ``--files`` (1,000) small files
of ``--file-size`` (4096) bytes in a temporary directory, all in the page
cache (every file is read once before every run).  N tasks (``--tasks
1,16``) each loop over the files (task t starts at file t * files/N); the
score is operations per second (all tasks together).

``small-files``: read a whole file (open, read, close):

* ``trio-open-file``: ``async with await trio.open_file(p, "rb") as f: await
  f.read()``: trio's own path, a worker thread hop per call (open, read,
  close: three hops; ``read()`` of a regular file reads until EOF, so a
  fourth call returns the empty read).
* ``trio-thread``: one ``trio.to_thread.run_sync`` hop doing the whole
  open/read/close in the thread: the best a thread-based design can do.
* ``uring-read-file``: ``trio_uring.lowlevel.read_file(p)``: one linked
  OPENAT -> READ -> CLOSE chain on a direct descriptor.
* ``uring-read-file-sized``: the same with ``max_bytes`` = file size + 1
  (``read_file`` allocates a ``max_bytes`` buffer, 1 MiB by default).
* ``uring-ops``: ``lowlevel.openat`` + ``lowlevel.read`` + ``lowlevel.close``,
  three native ops (three round trips through the event loop).
* ``aiofiles``: asyncio + ``aiofiles.open`` (a thread hop per call).
* ``uringio``: asyncio on ``uringio.UringioLoop``, ``open_file`` + ``read`` +
  ``close`` (PyPI, wheels for Python >= 3.12).

``stat``: ``os.stat`` of each file:

* ``trio-path``: ``await trio.Path(p).stat()`` (a worker thread hop).
* ``uring-statx``: ``trio_uring.lowlevel.statx(p)`` (IORING_OP_STATX).
* ``aiofiles``: ``await aiofiles.os.stat(p)`` (asyncio, a thread hop).

``open-close``: open each file read-only and close it again:

* ``trio-thread``: ``to_thread.run_sync(os.open)`` then
  ``to_thread.run_sync(os.close)`` (what ``trio.open_file`` + ``aclose`` do).
* ``uring-ops``: ``lowlevel.openat`` + ``lowlevel.close`` (IORING_OP_OPENAT,
  IORING_OP_CLOSE).
* ``aiofiles``: ``f = await aiofiles.open(p, "rb")``, ``await f.close()``.

Every measurement is a fresh child (``--child``), rounds alternate the
contenders (A B C A B C ...), the headline is the median over rounds of the
per-round ratio against the first contender; a contender whose module the
interpreter cannot import is skipped with a line saying so.

Usage::

    python bench/file_ops.py --workload small-files
    python bench/file_ops.py --workload stat --tasks 16 --rounds 3
"""

from __future__ import annotations

import argparse
import importlib.util
import os
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
    ratio_table,
    spawn,
    spread,
    summarize_blocks,
    window_result,
    write_json,
)

SCRIPT = Path(__file__).resolve()
LAYOUT = Layout(name="contender", names="contenders", group="tasks")

WORKLOADS: dict[str, dict[str, Contender]] = {
    "small-files": {
        c.name: c
        for c in (
            Contender(
                "trio-open-file",
                "trio.open_file + read + aclose (thread hop per call)",
                ("trio",),
            ),
            Contender(
                "trio-thread",
                "one trio.to_thread.run_sync hop: open, read, close",
                ("trio",),
            ),
            Contender(
                "uring-read-file",
                "trio_uring.lowlevel.read_file: OPENAT->READ->CLOSE chain",
                ("trio", "trio_uring"),
            ),
            Contender(
                "uring-read-file-sized",
                "the same chain with max_bytes=file size + 1 (default: 1 MiB)",
                ("trio", "trio_uring"),
            ),
            Contender(
                "uring-ops",
                "lowlevel.openat + read + close (three native ops)",
                ("trio", "trio_uring"),
            ),
            Contender(
                "aiofiles",
                "asyncio + aiofiles.open + read (thread hop per call)",
                ("aiofiles",),
            ),
            Contender(
                "uringio",
                "asyncio on uringio.UringioLoop: open_file + read + close",
                ("uringio",),
            ),
        )
    },
    "stat": {
        c.name: c
        for c in (
            Contender("trio-path", "trio.Path.stat (worker thread hop)", ("trio",)),
            Contender(
                "uring-statx",
                "trio_uring.lowlevel.statx (IORING_OP_STATX)",
                ("trio", "trio_uring"),
            ),
            Contender(
                "aiofiles", "asyncio + aiofiles.os.stat (thread hop)", ("aiofiles",)
            ),
        )
    },
    "open-close": {
        c.name: c
        for c in (
            Contender(
                "trio-thread",
                "to_thread.run_sync(os.open) + to_thread.run_sync(os.close)",
                ("trio",),
            ),
            Contender(
                "uring-ops",
                "lowlevel.openat + lowlevel.close (OPENAT, CLOSE)",
                ("trio", "trio_uring"),
            ),
            Contender(
                "aiofiles",
                "asyncio + aiofiles.open + close (thread hops)",
                ("aiofiles",),
            ),
        )
    },
}
ASYNCIO_CONTENDERS = ("aiofiles", "uringio")


# --------------------------------------------------------------------------
# Child side


def _file_paths(directory: str, files: int) -> list[str]:
    return [os.path.join(directory, f"f{i:06d}") for i in range(files)]


def _trio_op(
    workload: str, contender: str, size: int
) -> Callable[[str], Awaitable[object]]:
    import trio

    run_sync = trio.to_thread.run_sync

    def read_whole(path: str) -> bytes:
        with open(path, "rb", buffering=0) as f:
            return f.read()

    if contender.startswith("uring"):
        from trio_uring import lowlevel

    if workload == "small-files":
        if contender == "trio-open-file":

            async def op(path: str) -> object:
                async with await trio.open_file(path, "rb") as f:
                    return await f.read()

        elif contender == "trio-thread":

            async def op(path: str) -> object:
                return await run_sync(read_whole, path)

        elif contender == "uring-read-file":

            async def op(path: str) -> object:
                return await lowlevel.read_file(path)

        elif contender == "uring-read-file-sized":

            async def op(path: str) -> object:
                return await lowlevel.read_file(path, size + 1)

        else:  # uring-ops
            rd = size + 1  # one read returns the whole file (and shows EOF)

            async def op(path: str) -> object:
                fd = await lowlevel.openat(path, os.O_RDONLY)
                try:
                    return await lowlevel.read(fd, rd, 0)
                finally:
                    await lowlevel.close(fd)

        return op
    if workload == "stat":
        if contender == "trio-path":

            async def op(path: str) -> object:
                return await trio.Path(path).stat()

        else:  # uring-statx

            async def op(path: str) -> object:
                return await lowlevel.statx(path)

        return op
    # open-close
    if contender == "trio-thread":

        async def op(path: str) -> object:
            fd = await run_sync(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
            await run_sync(os.close, fd)
            return None

    else:  # uring-ops

        async def op(path: str) -> object:
            fd = await lowlevel.openat(path, os.O_RDONLY)
            await lowlevel.close(fd)
            return None

    return op


async def _check(
    workload: str, op: Callable[[str], Awaitable[object]], path: str
) -> None:
    """One call up front: a wrong result fails the run, not the figures."""
    got = await op(path)
    if workload == "small-files":
        with open(path, "rb") as f:
            want = f.read()
        if got != want:
            raise RuntimeError(f"whole-file read returned {len(got)!r} wrong bytes")  # type: ignore[arg-type]
    elif workload == "stat":
        st = os.stat(path)
        if getattr(got, "st_size", None) != st.st_size:
            raise RuntimeError("stat returned a wrong size")


async def _trio_child(
    workload: str,
    contender: str,
    paths: list[str],
    size: int,
    tasks: int,
    seconds: float,
    warmup: float,
    prof: Profiler,
) -> Window:
    import trio

    op = _trio_op(workload, contender, size)
    await _check(workload, op, paths[0])
    count = 0
    stop = False
    n = len(paths)

    async def worker(start: int) -> None:
        nonlocal count
        i = start
        while not stop:
            await op(paths[i % n])
            i += 1
            count += 1

    async with trio.open_nursery() as nursery:
        for t in range(tasks):
            nursery.start_soon(worker, t * n // tasks)
        w = await measure_window(trio.sleep, lambda: count, warmup, seconds, prof)
        stop = True
    return w


def _asyncio_op(
    workload: str, contender: str, size: int
) -> Callable[[str], Awaitable[object]]:
    if contender == "uringio":
        import uringio

        async def op(path: str) -> object:
            f = await uringio.open_file(path=path)
            try:
                return await f.read(size=size, offset=0)
            finally:
                await f.close()

        return op
    import aiofiles
    import aiofiles.os

    if workload == "small-files":

        async def op(path: str) -> object:
            async with aiofiles.open(path, "rb") as f:
                return await f.read()

    elif workload == "stat":

        async def op(path: str) -> object:
            return await aiofiles.os.stat(path)

    else:

        async def op(path: str) -> object:
            f = await aiofiles.open(path, "rb")
            await f.close()
            return None

    return op


async def _asyncio_child(
    workload: str,
    contender: str,
    paths: list[str],
    size: int,
    tasks: int,
    seconds: float,
    warmup: float,
    prof: Profiler,
) -> Window:
    import asyncio

    op = _asyncio_op(workload, contender, size)
    await _check(workload, op, paths[0])
    count = 0
    stop = False
    n = len(paths)

    async def worker(start: int) -> None:
        nonlocal count
        i = start
        while not stop:
            await op(paths[i % n])
            i += 1
            count += 1

    running = [asyncio.ensure_future(worker(t * n // tasks)) for t in range(tasks)]
    w = await measure_window(
        asyncio.sleep, lambda: count, warmup, seconds, prof, io=False
    )
    stop = True
    await asyncio.gather(*running)
    return w


def child_main(args: argparse.Namespace) -> int:
    contender: str = args.child
    prof = Profiler(args.profile)
    paths = _file_paths(args.file_dir, args.files)
    call = (
        args.workload,
        contender,
        paths,
        args.file_size,
        args.tasks[0],
        args.seconds,
        args.warmup,
        prof,
    )
    if contender in ASYNCIO_CONTENDERS:
        import asyncio

        if contender == "uringio":
            import uringio

            w = asyncio.run(
                _asyncio_child(*call),
                loop_factory=uringio.UringioLoop,  # type: ignore[call-arg]
            )
        else:
            w = asyncio.run(_asyncio_child(*call))
    else:
        import trio

        run: Callable[..., Any] = trio.run
        if contender.startswith("uring"):
            import trio_uring

            run = trio_uring.run
        w = run(_trio_child, *call)
    emit(window_result(w, "op", prof))
    return 0


# --------------------------------------------------------------------------
# Driver side


def make_files(directory: Path, files: int, size: int) -> None:
    data = os.urandom(size)
    for p in _file_paths(str(directory), files):
        with open(p, "wb") as f:
            f.write(data)


def warm(directory: Path, files: int) -> None:
    for p in _file_paths(str(directory), files):
        with open(p, "rb", buffering=0) as f:
            f.read()


def summarize(
    runs: list[dict[str, Any]], names: Sequence[str], baseline: str
) -> list[dict[str, Any]]:
    def stats(mine: list[dict[str, Any]]) -> dict[str, Any]:
        rates = [r["ops_per_s"] for r in mine]
        return {
            "ops_per_s": rates,
            **spread(rates),
            "median_cpu_us_per_op": median(
                [r["cpu_us_per_op"] for r in mine if r["cpu_us_per_op"]]
            ),
            "median_cpu_utilisation": median(
                [r["cpu_utilisation"] or 0.0 for r in mine]
            ),
            "io_per_op": median_per_key(mine, "io_per_op"),
        }

    return summarize_blocks(
        LAYOUT,
        runs,
        names,
        lambda r: r["ops_per_s"],
        stats,
        [(n, baseline) for n in names if n != baseline],
    )


def markdown(
    summary: list[dict[str, Any]], machine: dict[str, Any], settings: dict[str, Any]
) -> str:
    lines = header(
        machine,
        settings,
        f"File operations: {settings['workload']}",
        f"- settings: {settings['rounds']} rounds x {settings['seconds']:g} s "
        f"(+{settings['warmup']:g} s warmup), {settings['files']} files of "
        f"{settings['file_size']} B in the page cache; {settings['pinning']}",
    )
    lines += [
        "",
        "| tasks | contender | ops/s (median) | min | max | CPU us/op | "
        "CPU use | SQEs per op |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for block in summary:
        for name, c in block["contenders"].items():
            lines.append(
                f"| {block['tasks']} | {name} | {c['median']:,.0f} | "
                f"{c['min']:,.0f} | {c['max']:,.0f} | "
                f"{c['median_cpu_us_per_op']:.1f} | "
                f"{c['median_cpu_utilisation']:.0%} | {fmt_io(c['io_per_op'])} |"
            )
    lines += ratio_table(LAYOUT, summary)
    lines += ["", "| contender | what it runs |", "|---|---|"]
    lines += [f"| {n} | {d} |" for n, d in settings["descriptions"].items()]
    for n, why in settings["skipped"].items():
        lines.append(f"- skipped {n}: {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("whole small files, stat, open/close: ops/s")
    parser.add_argument("--workload", choices=tuple(WORKLOADS), default="small-files")
    parser.add_argument(
        "--contenders",
        type=name_list(sorted({n for w in WORKLOADS.values() for n in w}), "contender"),
        help="comma-separated, in this order each round (default: every "
        "contender of the workload this Python can import)",
    )
    parser.add_argument("--tasks", type=int_list, default=[1, 16])
    add_round_options(parser, warmup=0.5)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--file-size", type=int, default=4096, help="bytes")
    parser.add_argument(
        "--dir", type=Path, help="where to create the files (default: a temp dir)"
    )
    add_cpu_option(parser)
    parser.add_argument("--json", type=Path, help="also write all data here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file-dir", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    if args.rounds < 1 or args.seconds <= 0 or args.files < 1 or args.file_size < 1:
        parser.error("need --rounds >= 1, --seconds > 0, --files >= 1, a size")

    table = WORKLOADS[args.workload]
    requested: list[str] | None = args.contenders
    names: list[str] = []
    skipped: dict[str, str] = {}
    for name in requested or list(table):
        if name not in table:
            return error(f"{name} is not a contender of --workload {args.workload}")
        missing = [
            m for m in table[name].requires if importlib.util.find_spec(m) is None
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
    baseline = names[0]

    machine = machine_info()
    machine["aiofiles"] = dist_version("aiofiles")
    machine["uringio"] = dist_version("uringio")
    machine["loadavg_start"] = loadavg()
    with tempfile.TemporaryDirectory(
        prefix="trio-uring-file-ops-", dir=args.dir
    ) as tmp:
        make_files(Path(tmp), args.files, args.file_size)

        def measure(name: str, tasks: int) -> dict[str, Any]:
            warm(Path(tmp), args.files)
            argv_child = [
                sys.executable,
                str(SCRIPT),
                "--child",
                name,
                "--workload",
                args.workload,
                "--file-dir",
                tmp,
                "--files",
                str(args.files),
                "--file-size",
                str(args.file_size),
                "--tasks",
                str(tasks),
                "--seconds",
                f"{args.seconds:g}",
                "--warmup",
                f"{args.warmup:g}",
            ]
            return spawn(
                argv_child,
                f"{args.workload} {name} (tasks={tasks})",
                args.seconds + args.warmup + CHILD_SLACK_S,
                args.cpu,
            )

        try:
            runs = alternate(
                LAYOUT,
                names,
                args.rounds,
                measure,
                lambda r: (
                    f"{r['ops_per_s']:>10,.0f} ops/s  cpu "
                    f"{r['cpu_us_per_op'] or float('nan'):.1f} us/op"
                ),
                groups=args.tasks,
                width=16,
            )
        except BenchError as exc:
            return error(exc)
    machine["loadavg_end"] = loadavg()
    settings = {
        "workload": args.workload,
        "contenders": names,
        "descriptions": {n: table[n].description for n in names},
        "skipped": skipped,
        "baseline": baseline,
        "tasks": args.tasks,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "files": args.files,
        "file_size": args.file_size,
        "pinning": pinning_text(args.cpu),
        "command": command_text(argv),
    }
    summary = summarize(runs, names, baseline)
    print(markdown(summary, machine, settings))
    write_json(args.json, machine, settings, summary, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
