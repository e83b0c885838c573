"""``trio.open_file`` benchmark: random 4 KiB seek+read from the page cache.

The same user code -- ``f = await trio.open_file(path, "rb")`` per task, then
``await f.seek(offset); await f.read(4096)`` in a loop -- is run by N tasks
(``--tasks 1,16``) under:

* ``thread``: ``trio.run`` (epoll): trio's own file path, every call in a
  worker thread (``trio.to_thread.run_sync``);
* ``uring``: ``trio_uring.run``: the hooked ``AsyncIOWrapper``, each
  ``read`` one ``IORING_OP_READ`` at the file position, ``seek`` an
  ``lseek`` plus a checkpoint;
* ``lowlevel`` (reference, not user code): ``trio_uring.run`` and
  ``trio_uring._ops_file.read(fd, 4096, offset)``, one pread-style native op
  per read: the cost of the op itself, without the file object;
* ``uringio`` (when ``--python`` can import it, Python >= 3.12): asyncio on
  ``uringio.UringioLoop``, ``await f.read(size=4096, offset=off)`` (pread
  style: one op, no seek).
* ``floor`` (reference, not user code): ``trio_uring.run``, each read a
  blocking ``os.pread`` between two ``trio.lowlevel.checkpoint()`` calls:
  the two trips through trio's scheduler that the user code's two awaits
  must make (each is a checkpoint), with I/O that costs the event loop
  nothing beyond the kernel's own read.  No IO manager can make this user
  code under trio faster than ``floor``; ``floor / uringio`` bounds what
  ``uring / uringio`` can reach.

``--workload lines`` (``async for`` over a 50,000-line text file, per line)
and ``--workload read_bytes`` (``trio.Path.read_bytes()`` of that 2.4 MB
file, per call) compare ``thread`` and ``uring`` only.

Each contender runs in a fresh subprocess; rounds alternate contenders
(A B C A B C ...); the report gives the median reads/s per contender and the
median over rounds of the per-round ratios.  A 64 MiB file is made once and
read fully before each run so every read hits the page cache.

    .venv/bin/python bench/open_file.py --rounds 5 --seconds 2
    .venv/bin/python bench/open_file.py --python /tmp/v312/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

SEED = 1234
N_OFFSETS = 1 << 16


def _offsets(size: int, block: int) -> list[int]:
    rng = random.Random(SEED)
    return [rng.randrange(size // block) * block for _ in range(N_OFFSETS)]


def child(args: argparse.Namespace) -> None:
    block, tasks, seconds, warmup = args.block, args.tasks[0], args.seconds, 0.3
    size = os.stat(args.file).st_size
    offsets = _offsets(size, block)
    count = 0
    stop = False
    result: dict[str, Any] = {}

    if args.child == "uringio":
        import asyncio

        import uringio

        async def amain() -> None:
            nonlocal count, stop
            f = await uringio.open_file(path=args.file)

            async def worker(i: int) -> None:
                nonlocal count
                while not stop:
                    await f.read(size=block, offset=offsets[i & (N_OFFSETS - 1)])
                    i += 1
                    count += 1

            ts = [asyncio.ensure_future(worker(t * 4099)) for t in range(tasks)]
            await asyncio.sleep(warmup)
            c0, t0, cpu0 = count, time.perf_counter(), time.process_time()
            await asyncio.sleep(seconds)
            c1, t1, cpu1 = count, time.perf_counter(), time.process_time()
            stop = True
            await asyncio.gather(*ts)
            await f.close()
            result.update(
                rate=(c1 - c0) / (t1 - t0), cpu_us=1e6 * (cpu1 - cpu0) / (c1 - c0)
            )

        loop_factory = uringio.UringioLoop
        asyncio.run(amain(), loop_factory=loop_factory)  # type: ignore[call-arg]
    else:
        import trio

        async def main() -> None:
            nonlocal count, stop

            async def lowlevel_worker(i: int) -> None:
                nonlocal count
                from trio_uring import _ops_file

                fd = os.open(args.file, os.O_RDONLY)
                while not stop:
                    await _ops_file.read(fd, block, offsets[i & (N_OFFSETS - 1)])
                    i += 1
                    count += 1
                os.close(fd)

            async def floor_worker(i: int) -> None:
                nonlocal count
                fd = os.open(args.file, os.O_RDONLY)
                checkpoint = trio.lowlevel.checkpoint
                while not stop:
                    await checkpoint()  # f.seek(): a checkpoint
                    os.pread(fd, block, offsets[i & (N_OFFSETS - 1)])
                    await checkpoint()  # f.read(): another
                    i += 1
                    count += 1
                os.close(fd)

            async def lines_worker() -> None:
                nonlocal count
                while not stop:
                    async with await trio.open_file(args.file) as f:
                        async for _line in f:
                            count += 1

            async def read_bytes_worker() -> None:
                nonlocal count
                path = trio.Path(args.file)
                while not stop:
                    await path.read_bytes()
                    count += 1

            async def worker(i: int) -> None:
                nonlocal count
                if args.workload == "lines":
                    await lines_worker()
                    return
                if args.workload == "read_bytes":
                    await read_bytes_worker()
                    return
                if args.child == "lowlevel":
                    await lowlevel_worker(i)
                    return
                if args.child == "floor":
                    await floor_worker(i)
                    return
                async with await trio.open_file(args.file, "rb") as f:
                    while not stop:
                        await f.seek(offsets[i & (N_OFFSETS - 1)])
                        await f.read(block)
                        i += 1
                        count += 1

            async with trio.open_nursery() as nursery:
                for t in range(tasks):
                    nursery.start_soon(worker, t * 4099)
                await trio.sleep(warmup)
                c0, t0, cpu0 = count, time.perf_counter(), time.process_time()
                await trio.sleep(seconds)
                c1, t1, cpu1 = count, time.perf_counter(), time.process_time()
                stop = True
            result.update(
                rate=(c1 - c0) / (t1 - t0), cpu_us=1e6 * (cpu1 - cpu0) / (c1 - c0)
            )
            if args.child == "uring":
                st = trio.lowlevel.current_statistics().io_statistics
                result["submitted"] = dict(st.submitted)

        if args.child in ("uring", "lowlevel", "floor"):
            import trio_uring

            trio_uring.run(main)
        else:
            trio.run(main)
    print(json.dumps(result))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument(
        "--tasks", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16]
    )
    ap.add_argument("--block", type=int, default=4096)
    ap.add_argument("--contenders", default="thread,uring,lowlevel,floor,uringio")
    ap.add_argument(
        "--workload",
        choices=("seekread", "lines", "read_bytes"),
        default="seekread",
        help="seekread: seek + read(4096) per op (default); lines: async for "
        "over a 50,000-line text file, per line; read_bytes: trio.Path."
        "read_bytes() of that 2.4 MB file, per call (thread and uring only)",
    )
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--child")
    ap.add_argument("--file")
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    names = args.contenders.split(",")
    unit = {"seekread": "reads", "lines": "lines", "read_bytes": "calls"}[args.workload]
    if args.workload != "seekread":
        names = [n for n in names if n in ("thread", "uring")]
    if "uringio" in names:
        probe = subprocess.run(
            [args.python, "-c", "import uringio"], capture_output=True
        )
        if probe.returncode:
            print(f"skipping uringio: {args.python} cannot import it", file=sys.stderr)
            names.remove("uringio")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.bin")
        rng = random.Random(SEED)
        if args.workload == "seekread":
            with open(path, "wb") as f:
                for _ in range(64):
                    f.write(rng.randbytes(1 << 20))
        else:
            with open(path, "w") as f:
                for i in range(50_000):
                    f.write(f"line {i} " + "x" * 40 + "\n")
        rates: dict[tuple[int, str], list[float]] = {}
        cpus: dict[tuple[int, str], list[float]] = {}
        for tasks in args.tasks:
            for r in range(args.rounds):
                for name in names:
                    with open(path, "rb") as f:
                        while f.read(1 << 20):
                            pass
                    out = subprocess.run(
                        [args.python, os.path.abspath(__file__), "--child", name,
                         "--file", path, "--tasks", str(tasks),
                         "--workload", args.workload, "--block",
                         str(args.block), "--seconds", str(args.seconds)],
                        capture_output=True, text=True, cwd=tmp, check=False,
                    )  # fmt: skip
                    if out.returncode:
                        print(out.stderr, file=sys.stderr)
                        return 1
                    res = json.loads(out.stdout.strip().splitlines()[-1])
                    rates.setdefault((tasks, name), []).append(res["rate"])
                    cpus.setdefault((tasks, name), []).append(res["cpu_us"])
                    ops = res.get("submitted", "") if r == 0 else ""
                    print(f"tasks={tasks:<3} round {r + 1}  {name:<8} "
                          f"{res['rate']:>10,.0f} {unit}/s  "
                          f"{res['cpu_us']:.1f} CPU us/{unit[:-1]}  {ops}",
                          file=sys.stderr)  # fmt: skip
    print(f"\n{args.workload}; load average: {os.getloadavg()[0]:.2f}; "
          f"{args.rounds} rounds x "
          f"{args.seconds:g} s; python {args.python}\n")  # fmt: skip
    print(f"| tasks | contender | {unit}/s (median) | min | max | "
          f"CPU us/{unit[:-1]} |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|")
    for (tasks, name), rs in rates.items():
        med = statistics.median(rs)
        cpu = statistics.median(cpus[tasks, name])
        print(f"| {tasks} | {name} | {med:,.0f} | {min(rs):,.0f} | "
              f"{max(rs):,.0f} | {cpu:.1f} |")  # fmt: skip
    print("\n| tasks | ratio | median of per-round ratios |")
    print("|---:|---|---:|")
    for tasks in args.tasks:
        pairs = (
            ("uring", "thread"),
            ("uring", "uringio"),
            ("uring", "lowlevel"),
            ("floor", "uringio"),
            ("uring", "floor"),
        )
        for a, b in pairs:
            if (tasks, a) in rates and (tasks, b) in rates:
                ratios = [
                    x / y for x, y in zip(rates[tasks, a], rates[tasks, b], strict=True)
                ]
                print(f"| {tasks} | {a} / {b} | {statistics.median(ratios):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
