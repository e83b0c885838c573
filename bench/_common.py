"""Helpers shared by the bench drivers (echo, timeouts, file_read, setup_flags).

Design
------
The drivers are scripts, not a package: each one runs as ``python bench/X.py``
and finds this module because Python puts the script's own directory first on
``sys.path`` (that holds for the ``--child`` re-runs too, also under another
``--python``).  So this module imports only the standard library at module
level; trio is imported inside the functions that need it, which only ever
run in a child.

What lives here is what every driver does the same way:

* driver side: run the measurements in alternating rounds (:func:`alternate`),
  one child process per measurement (:func:`spawn`, optionally pinned to CPUs,
  reading one ``RESULT <json>`` line), then group the runs, take medians and
  the median over rounds of per-round ratios (:func:`summarize_blocks`,
  :func:`ratio`), and print machine info and markdown tables and write JSON;
* child side: measure one window after a warmup (:func:`measure_window`): the
  count, wall and CPU time, io_uring submissions and an optional cProfile.

The record keys stay each driver's own (``backend``/``contender``/``variant``,
``conns``/``tasks``): a :class:`Layout` names them, so the JSON and markdown
the drivers write are unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
CHILD_SLACK_S = 60.0
RESULT_PREFIX = "RESULT "

Run = dict[str, Any]


class BenchError(Exception):
    """A run failed; the message says which and why."""


def error(message: object) -> int:
    """Print ``error: message`` to stderr; the exit code of a failed driver."""
    print(f"error: {message}", file=sys.stderr)
    return 1


@dataclasses.dataclass(frozen=True)
class Contender:
    name: str
    description: str
    requires: tuple[str, ...]


# --------------------------------------------------------------------------
# Command line


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated positive integers."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return values


def name_list(known: Collection[str], what: str) -> Callable[[str], list[str]]:
    """argparse type: comma-separated distinct names out of ``known``."""

    def parse(text: str) -> list[str]:
        names = [x.strip() for x in text.split(",") if x.strip()]
        unknown = [n for n in names if n not in known]
        if unknown or not names or len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(
                f"bad {what} list {text!r}; known: {', '.join(known)}"
            )
        return names

    return parse


def new_parser(description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )


def add_round_options(parser: argparse.ArgumentParser, *, warmup: float) -> None:
    """``--rounds``, ``--seconds`` and ``--warmup`` (seconds per run)."""
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per run")
    parser.add_argument("--warmup", type=float, default=warmup, help="per run")


def add_cpu_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cpu", type=int, help="pin every child to this CPU (default: unpinned)"
    )


def pinning_text(cpu: int | None) -> str:
    return f"children pinned to CPU {cpu}" if cpu is not None else "no CPU pinning"


def command_text(argv: list[str] | None) -> str:
    """The command line as run, for the report."""
    return " ".join(["python", sys.argv[0], *(argv or sys.argv[1:])])


# --------------------------------------------------------------------------
# Machine info


def first_line(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.splitlines()[0].strip() if out.strip() else "unknown"


def dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    git = first_line(["git", "-C", str(BENCH_DIR), "describe", "--always", "--dirty"])
    return {
        "kernel": platform.release(),
        "cpu_model": cpu_model,
        "nproc": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "trio": dist_version("trio"),
        "trio_uring": dist_version("trio-uring"),
        "compiler": first_line([os.environ.get("CC", "gcc"), "--version"]),
        "git_commit": git,
    }


def loadavg() -> list[float]:
    return list(os.getloadavg())


# --------------------------------------------------------------------------
# Child processes


def pinned(cpus: Collection[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child to ``cpus`` (None: no pinning)."""
    if cpus is None:
        return None

    def pin() -> None:  # runs in the child between fork and exec
        os.sched_setaffinity(0, cpus)

    return pin


def spawn(argv: list[str], label: str, timeout: float, cpu: int | None = None) -> Run:
    """Run one child; return the JSON of its ``RESULT`` line."""
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            preexec_fn=pinned(None if cpu is None else {cpu}),
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{label} did not finish within {timeout:.0f} s") from exc
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise BenchError(
            f"{label} failed (exit {proc.returncode}): {' '.join(argv)}\n"
            f"{proc.stderr[-3000:]}"
        )
    result: Run = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return result


def emit(result: Run) -> None:
    """Child side of :func:`spawn`."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------
# Child side: one measured window


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Profiler:
    """cProfile around the measured window only (``--profile``)."""

    def __init__(self, enabled: bool) -> None:
        self.prof: Any = None
        if enabled:
            import cProfile

            self.prof = cProfile.Profile()

    def start(self) -> None:
        if self.prof is not None:
            self.prof.enable()

    def stop(self) -> None:
        if self.prof is not None:
            self.prof.disable()

    def report(self, per: int, top: int = 25) -> dict[str, Any] | None:
        """The ``top`` functions by own time, in us and calls per ``per``."""
        if self.prof is None or per <= 0:
            return None
        import pstats

        st = pstats.Stats(self.prof)
        rows = []
        raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
        total_tt = sum(v[2] for v in raw.values())
        for (file, line, func), (_cc, nc, tt, ct, _callers) in raw.items():
            rows.append(
                {
                    "function": f"{Path(file).name}:{line}({func})"
                    if file != "~"
                    else func,
                    "calls_per": nc / per,
                    "own_us_per": tt / per * 1e6,
                    "cum_us_per": ct / per * 1e6,
                }
            )
        rows.sort(key=lambda r: -r["own_us_per"])
        return {"total_us_per": total_tt / per * 1e6, "top": rows[:top]}


def io_counts() -> dict[str, int]:
    """SQEs submitted so far by opcode, plus enters (io_uring only)."""
    import trio

    st = trio.lowlevel.current_statistics().io_statistics
    submitted = getattr(st, "submitted", None)
    if not isinstance(submitted, dict):
        return {}
    out = {k: int(v) for k, v in submitted.items()}
    out["enters"] = int(getattr(st, "enters", 0))
    return out


def delta_per(
    before: dict[str, int], after: dict[str, int], n: int
) -> dict[str, float]:
    if n <= 0:
        return {}
    keys = sorted(set(before) | set(after))
    return {
        k: (after.get(k, 0) - before.get(k, 0)) / n
        for k in keys
        if after.get(k, 0) != before.get(k, 0)
    }


@dataclasses.dataclass
class Window:
    """What a child measured between warmup end and run end."""

    count: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0
    io_before: dict[str, int] = dataclasses.field(default_factory=dict)
    io_after: dict[str, int] = dataclasses.field(default_factory=dict)
    setup_flags: list[str] = dataclasses.field(default_factory=list)


async def measure_window(
    sleep: Callable[[float], Awaitable[object]],
    count: Callable[[], int],
    warmup: float,
    seconds: float,
    prof: Profiler,
    *,
    io: bool = True,
) -> Window:
    """Sleep ``warmup``, then measure ``seconds`` of the workers' ``count()``
    (with ``io``: also the io_uring submissions; needs a running trio)."""
    w = Window()
    await sleep(warmup)
    if io:
        w.io_before = io_counts()
    c0, t0, cpu0 = count(), time.perf_counter(), cpu_seconds()
    prof.start()
    await sleep(seconds)
    prof.stop()
    w.count = count() - c0
    w.elapsed = time.perf_counter() - t0
    w.cpu = cpu_seconds() - cpu0
    if io:
        w.io_after = io_counts()
    return w


def window_result(w: Window, unit: str, prof: Profiler, **extra: Any) -> Run:
    """A child's ``RESULT``: rates and costs per ``unit`` (e.g. ``read``)."""
    return {
        "count": w.count,
        "elapsed_s": w.elapsed,
        f"{unit}s_per_s": w.count / w.elapsed if w.elapsed > 0 else 0.0,
        f"cpu_us_per_{unit}": w.cpu / w.count * 1e6 if w.count else None,
        "cpu_utilisation": w.cpu / w.elapsed if w.elapsed > 0 else None,
        f"io_per_{unit}": delta_per(w.io_before, w.io_after, w.count),
        **extra,
        "profile": prof.report(w.count),
    }


# --------------------------------------------------------------------------
# Driver side: alternating rounds


@dataclasses.dataclass(frozen=True)
class Layout:
    """The keys a driver's run records and summary use."""

    name: str  # a run's contender, e.g. "contender"
    names: str = ""  # a summary block's per-contender dict, e.g. "contenders"
    group: str | None = None  # the outer sweep, e.g. "tasks"; None: no sweep


def alternate(
    layout: Layout,
    names: Sequence[str],
    rounds: int,
    measure: Callable[[str, int], Run],
    describe: Callable[[Run], str],
    *,
    groups: Sequence[int] = (0,),
    width: int,
) -> list[Run]:
    """Every group, every round, every contender in turn (A B A B ...):
    ``measure(name, group)`` one run, label it and print a progress line.
    Raises :class:`BenchError` when a run fails."""
    runs: list[Run] = []
    for group in groups:
        prefix = "" if layout.group is None else f"{layout.group}={group} "
        for rnd in range(1, rounds + 1):
            for name in names:
                r = measure(name, group)
                r[layout.name] = name
                if layout.group is not None:
                    r[layout.group] = group
                r["round"] = rnd
                runs.append(r)
                print(
                    f"{prefix}round {rnd}/{rounds} {name:>{width}}: {describe(r)}",
                    file=sys.stderr,
                    flush=True,
                )
    return runs


# --------------------------------------------------------------------------
# Summary


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs: Sequence[float], suffix: str = "") -> dict[str, float]:
    """``median``, ``min`` and ``max`` of ``xs`` (keys end in ``suffix``)."""
    return {
        f"median{suffix}": median(xs),
        f"min{suffix}": min(xs, default=float("nan")),
        f"max{suffix}": max(xs, default=float("nan")),
    }


def median_per_key(runs: Sequence[Run], key: str) -> dict[str, float]:
    """Per key of the runs' ``key`` dicts, the median over runs (missing: 0)."""
    keys = sorted({k for r in runs for k in r[key]})
    return {k: median([r[key].get(k, 0.0) for r in runs]) for k in keys}


def by_round(
    runs: Sequence[Run], name_key: str, value: Callable[[Run], float]
) -> dict[int, dict[str, float]]:
    """``{round: {contender: value}}``."""
    out: dict[int, dict[str, float]] = {}
    for r in runs:
        out.setdefault(r["round"], {})[r[name_key]] = value(r)
    return out


def ratio(
    rounds: dict[int, dict[str, float]],
    name: str,
    reference: str,
    name_key: str = "contender",
) -> Run:
    """Median (min, max) over rounds of the per-round ratio name/reference."""
    per_round = [
        v[name] / v[reference]
        for v in rounds.values()
        if name in v and reference in v and v[reference] > 0
    ]
    return {
        name_key: name,
        "reference": reference,
        "per_round": per_round,
        **spread(per_round),
    }


def summarize_blocks(
    layout: Layout,
    runs: Sequence[Run],
    names: Sequence[str],
    value: Callable[[Run], float],
    stats: Callable[[list[Run]], dict[str, Any]],
    pairs: Sequence[tuple[str, str]],
) -> list[Run]:
    """One block per group (e.g. task count): ``stats`` of each contender's
    runs and the ratios of ``value`` for each (name, reference) pair."""
    assert layout.group is not None
    out: list[Run] = []
    for group in sorted({r[layout.group] for r in runs}):
        rows = [r for r in runs if r[layout.group] == group]
        rounds = by_round(rows, layout.name, value)
        out.append(
            {
                layout.group: group,
                layout.names: {
                    name: stats([r for r in rows if r[layout.name] == name])
                    for name in names
                },
                "ratios": [ratio(rounds, n, ref, layout.name) for n, ref in pairs],
            }
        )
    return out


# --------------------------------------------------------------------------
# Reports


def machine_line(machine: dict[str, Any], *, git: bool = True) -> str:
    return (
        f"- machine: kernel {machine['kernel']}, {machine['cpu_model']}, "
        f"nproc {machine['nproc']}, Python {machine['python']}, "
        f"trio {machine['trio']}, trio-uring {machine['trio_uring']}"
        + (f", git {machine['git_commit']}" if git else "")
    )


def loadavg_line(machine: dict[str, Any]) -> str:
    return (
        f"- load average (1 min) before/after: "
        f"{machine['loadavg_start'][0]:.2f} / {machine['loadavg_end'][0]:.2f} "
        f"(includes this benchmark; a high value before means other work ran)"
    )


def header(
    machine: dict[str, Any], settings: dict[str, Any], title: str, settings_line: str
) -> list[str]:
    return [
        f"## {title}",
        "",
        machine_line(machine),
        loadavg_line(machine),
        settings_line,
        f"- command: `{settings['command']}`",
    ]


def fmt_io(io: dict[str, float], shown: Sequence[str] | None = None) -> str:
    """``OP n.nn, ...`` for the keys ``shown`` (default: all), or ``-``."""
    keys = list(io) if shown is None else [k for k in shown if k in io]
    return ", ".join(f"{k} {io[k]:.2f}" for k in keys) or "-"


def ratio_cells(r: Run, name_key: str = "contender") -> str:
    return (
        f"{r[name_key]} / {r['reference']} | "
        f"{r['median']:.3f} | {r['min']:.3f} | {r['max']:.3f} |"
    )


def ratio_table(layout: Layout, summary: Sequence[Run]) -> list[str]:
    """The markdown table of every block's ratios (nothing if there are none)."""
    group = layout.group
    assert group is not None
    if not any(b["ratios"] for b in summary):
        return []
    lines = [
        "",
        f"| {group} | ratio | median of per-round ratios | min | max |",
        "|---:|---|---:|---:|---:|",
    ]
    for block in summary:
        for r in block["ratios"]:
            lines.append(f"| {block[group]} | {ratio_cells(r, layout.name)}")
    return lines


def target_lines(
    summary: list[Run], targets: Sequence[tuple[int | None, str, str, float]]
) -> list[str]:
    """Check ``(tasks or None for all, contender, reference, minimum ratio)``
    against the median per-round ratios; one markdown bullet per check."""
    out: list[str] = []
    for block in summary:
        for tasks, name, ref, minimum in targets:
            if tasks is not None and tasks != block["tasks"]:
                continue
            for r in block["ratios"]:
                if r["contender"] == name and r["reference"] == ref:
                    verdict = "met" if r["median"] >= minimum else "**missed**"
                    out.append(
                        f"- tasks={block['tasks']}: {name} / {ref} = "
                        f"{r['median']:.2f} (target >= {minimum:g}): {verdict}"
                    )
    if out:
        out = ["", "Targets from the issue:", "", *out]
    return out


def profile_markdown(
    results: list[Run], unit: str = "timeout", rate_key: str = ""
) -> str:
    """Markdown tables of the children's ``profile`` reports (per ``unit``)."""
    rate_key = rate_key or f"{unit}s_per_s"
    lines: list[str] = []
    for r in results:
        p = r.get("profile")
        if not p:
            continue
        lines += [
            "",
            f"### Profile: {r['contender']}, {r['tasks']} tasks "
            f"({r[rate_key]:,.0f} {unit}s/s under cProfile; "
            f"profiled own time {p['total_us_per']:.1f} us per {unit})",
            "",
            f"| function | calls/{unit} | own us/{unit} | cum us/{unit} |",
            "|---|---:|---:|---:|",
        ]
        for row in p["top"]:
            lines.append(
                f"| `{row['function']}` | {row['calls_per']:.2f} | "
                f"{row['own_us_per']:.2f} | {row['cum_us_per']:.2f} |"
            )
    return "\n".join(lines)


def write_json(
    path: Path | None,
    machine: dict[str, Any],
    settings: dict[str, Any],
    summary: Any,
    runs: list[Run],
) -> None:
    """With ``--json PATH``: all the data, for later analysis."""
    if path is None:
        return
    data = {"machine": machine, "settings": settings, "summary": summary, "runs": runs}
    path.write_text(json.dumps(data, indent=2) + "\n")
