"""Run every benchmark side by side and write one report (``nox -s bench``).

Design
------
This is a driver of drivers.  Each workload is one of the scripts in
``bench/`` (echo, timeouts, file reads, file operations, idle-connection
memory, ring setup flags), run as a subprocess with ``--json``, so every
script keeps its own rules (fresh child per measurement, contenders
alternating A B C A B C, medians over rounds of per-round ratios) and stays
usable on its own.  This file only chooses the settings (quick by default,
``--full`` for longer runs), collects the JSON and the markdown each script
prints, and writes:

* ``bench/results/<UTC timestamp>/results.md``: the machine, then every
  workload's markdown tables (each with the exact command that produced it);
* ``results.json``: the machine and every workload's full data;
* ``<workload>.png``: one plot per workload (matplotlib; skipped with a line
  saying so when matplotlib cannot be imported);
* with ``--docs``: the plots and one reStructuredText table per workload
  (``<workload>.inc``) into ``docs/_static/bench/``, which
  ``docs/benchmarks.rst`` includes.  ``--from DIR`` regenerates the reports
  (and with ``--docs`` the docs files) from an earlier run's ``results.json``
  without measuring again.

A workload that fails is reported and the others still run; the exit code
is then 1.  Peers that cannot be imported on this Python (uvloop, uringio,
aiofiles, anyio) are skipped by the scripts with a line saying so, and the
report lists them.

The quick settings are sized so the whole suite takes about 12 minutes on a
2-core machine (685 s for the run in the docs); ``--full`` (more rounds,
longer windows) should take about three times as long.

Usage::

    python bench/run_all.py                       # quick, every workload
    python bench/run_all.py --full --docs         # longer; refresh the docs
    python bench/run_all.py --only echo,idle_memory
    python bench/run_all.py --from bench/results/20260101T000000Z --docs
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, dist_version, first_line, loadavg

REPO = BENCH_DIR.parent
DOCS_DIR = REPO / "docs" / "_static" / "bench"
RESULTS_DIR = BENCH_DIR / "results"


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    title: str
    script: str
    quick: tuple[str, ...]
    full: tuple[str, ...]
    # How to read the summary: the sweep key, the per-name dict key, the
    # median/min/max keys of each entry, the unit, and whether more is better.
    group: str
    names: str
    keys: tuple[str, str, str] = ("median", "min", "max")
    unit: str = ""
    higher_is_better: bool = True


STEPS: tuple[Step, ...] = (
    Step(
        "echo",
        "TCP echo, 64-byte messages",
        "echo.py",
        (
            "--backends",
            "all",
            "--conns",
            "1,100,1000",
            "--rounds",
            "3",
            "--seconds",
            "2",
            "--warmup",
            "0.5",
        ),
        (
            "--backends",
            "all",
            "--conns",
            "1,100,1000",
            "--rounds",
            "5",
            "--seconds",
            "3",
            "--warmup",
            "1",
        ),
        "conns",
        "backends",
        ("median_msgs_per_s", "min_msgs_per_s", "max_msgs_per_s"),
        "messages/s",
    ),
    Step(
        "timeouts",
        "Timeouts: recv under a 1 ms deadline that always fires",
        "timeouts.py",
        ("--rounds", "3", "--seconds", "1.5", "--warmup", "0.5"),
        ("--rounds", "5", "--seconds", "3"),
        "tasks",
        "contenders",
        unit="timeouts/s",
    ),
    Step(
        "file_read",
        "Random 4 KiB reads from the page cache",
        "file_read.py",
        ("--rounds", "3", "--seconds", "1.5"),
        ("--rounds", "5", "--seconds", "3"),
        "tasks",
        "contenders",
        unit="reads/s",
    ),
    Step(
        "small_files",
        "Whole small files (4 KiB): open, read, close",
        "file_ops.py",
        ("--workload", "small-files", "--rounds", "3", "--seconds", "1"),
        ("--workload", "small-files", "--rounds", "5", "--seconds", "3"),
        "tasks",
        "contenders",
        unit="files/s",
    ),
    Step(
        "stat",
        "stat() of many files",
        "file_ops.py",
        ("--workload", "stat", "--rounds", "3", "--seconds", "1"),
        ("--workload", "stat", "--rounds", "5", "--seconds", "3"),
        "tasks",
        "contenders",
        unit="stats/s",
    ),
    Step(
        "open_close",
        "open() + close() of many files",
        "file_ops.py",
        ("--workload", "open-close", "--rounds", "3", "--seconds", "1"),
        ("--workload", "open-close", "--rounds", "5", "--seconds", "3"),
        "tasks",
        "contenders",
        unit="open+close/s",
    ),
    Step(
        "idle_memory",
        "Memory per idle connection",
        "idle_memory.py",
        ("--conns", "10000", "--rounds", "3"),
        ("--conns", "10000", "--rounds", "5"),
        "conns",
        "contenders",
        unit="bytes of server RSS per connection",
        higher_is_better=False,
    ),
    Step(
        "setup_flags",
        "io_uring setup flags: in-process ping-pong",
        "setup_flags.py",
        ("--n", "10000", "--rounds", "3"),
        ("--n", "20000", "--rounds", "5"),
        "",
        "variants",
        unit="us per round trip",
        higher_is_better=False,
    ),
)
STEP_BY_NAME = {s.name: s for s in STEPS}
# --smoke: appended to the quick arguments (argparse keeps the last value), a
# check that every workload runs end to end, in about two minutes; the
# figures mean nothing.
SMOKE: dict[str, tuple[str, ...]] = {
    "echo.py": ("--rounds", "1", "--seconds", "0.3", "--warmup", "0.1"),
    "timeouts.py": ("--rounds", "1", "--seconds", "0.3", "--warmup", "0.1"),
    "file_read.py": ("--rounds", "1", "--seconds", "0.3", "--warmup", "0.1"),
    "file_ops.py": ("--rounds", "1", "--seconds", "0.3", "--warmup", "0.1"),
    "idle_memory.py": ("--rounds", "1", "--conns", "500", "--settle", "0.1"),
    "setup_flags.py": ("--rounds", "1", "--n", "1000"),
}


# --------------------------------------------------------------------------
# Machine


def ring_info() -> dict[str, Any]:
    """The setup flags trio_uring's ring gets on this kernel (a child run)."""
    code = (
        "import json, trio, trio_uring\n"
        "async def main():\n"
        "    st = trio.lowlevel.current_statistics().io_statistics\n"
        "    return {'backend': getattr(st, 'backend', '?'),\n"
        "            'setup_flags': sorted(getattr(st, 'setup_flags', ()))}\n"
        "print(json.dumps(trio_uring.run(main)))\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=str(BENCH_DIR),
        )
        if proc.returncode == 0:
            data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
            return data
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"error": repr(exc)}


def machine() -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    versions = {
        name: dist_version(name)
        for name in (
            "trio",
            "trio-uring",
            "anyio",
            "uvloop",
            "aiofiles",
            "uringio",
            "matplotlib",
        )
    }
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "memory": mem_total,
        "kernel": platform.release(),
        "os": first_line(["uname", "-v"]),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "versions": versions,
        "io_uring": ring_info(),
        "compiler": first_line([os.environ.get("CC", "gcc"), "--version"]),
        "git_commit": first_line(
            ["git", "-C", str(BENCH_DIR), "describe", "--always", "--dirty"]
        ),
        "loadavg_start": loadavg(),
    }


def machine_lines(m: dict[str, Any]) -> list[str]:
    v = m["versions"]
    ring = m.get("io_uring", {})
    flags = ", ".join(ring.get("setup_flags", [])) or f"unknown ({ring.get('error')})"
    load = m.get("loadavg_start", [float("nan")])[0]
    load_end = m.get("loadavg_end", [float("nan")])[0]
    return [
        f"- CPU: {m['cpu_model']}, {m['cores']} cores "
        f"(usable: {m['usable_cpus']}), memory {m['memory']}",
        f"- kernel: Linux {m['kernel']} ({m['os']})",
        f"- Python {m['python']} ({m['python_executable']})",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- io_uring setup flags granted: {flags}",
        f"- git: {m['git_commit']}",
        f"- load average (1 min) at start / end: {load:.2f} / {load_end:.2f}",
    ]


# --------------------------------------------------------------------------
# Running


def run_step(step: Step, full: bool, smoke: bool, out: Path) -> dict[str, Any]:
    json_path = out / f"{step.name}.json"
    args = list(step.full if full else step.quick)
    if smoke:
        args += SMOKE.get(step.script, ())
    argv = [
        sys.executable,
        str(BENCH_DIR / step.script),
        *args,
        "--json",
        str(json_path),
    ]
    shown = f"python bench/{step.script} {' '.join(args)}"
    print(f"\n=== {step.name}: {shown}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(
        argv, stdout=subprocess.PIPE, text=True, check=False, cwd=str(BENCH_DIR)
    )
    elapsed = time.monotonic() - t0
    (out / f"{step.name}.md").write_text(proc.stdout)
    record: dict[str, Any] = {
        "command": shown,
        "seconds": elapsed,
        "exit": proc.returncode,
        "ok": proc.returncode == 0 and json_path.exists(),
    }
    if record["ok"]:
        record["data"] = json.loads(json_path.read_text())
    print(
        f"=== {step.name}: {'ok' if record['ok'] else 'FAILED'} in {elapsed:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return record


# --------------------------------------------------------------------------
# Reading the summaries


def rows(
    step: Step, data: dict[str, Any]
) -> list[tuple[str, list[tuple[str, float, float, float]]]]:
    """``[(group label, [(name, median, min, max), ...]), ...]``."""
    med, lo, hi = step.keys
    summary = data["summary"]
    blocks = summary if isinstance(summary, list) else [summary]
    out = []
    for block in blocks:
        label = f"{step.group}={block[step.group]}" if step.group else ""
        entries = [
            (name, float(e[med]), float(e[lo]), float(e[hi]))
            for name, e in block[step.names].items()
        ]
        out.append((label, entries))
    return out


def ratio_rows(
    step: Step, data: dict[str, Any]
) -> list[tuple[str, str, float, float, float]]:
    """``[(group label, "a / b", median, min, max), ...]``."""
    summary = data["summary"]
    blocks = summary if isinstance(summary, list) else [summary]
    out = []
    for block in blocks:
        label = f"{step.group}={block[step.group]}" if step.group else ""
        for r in block.get("ratios", []):
            name = r.get("contender", r.get("backend", r.get("variant", "?")))
            out.append(
                (label, f"{name} / {r['reference']}", r["median"], r["min"], r["max"])
            )
    return out


def descriptions(step: Step, data: dict[str, Any]) -> dict[str, str]:
    found = data.get("settings", {}).get("descriptions")
    if found:
        return dict(found)
    spec = importlib.util.spec_from_file_location(
        f"_bench_{step.name}", BENCH_DIR / step.script
    )
    if spec is None or spec.loader is None:
        return {}
    try:
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    except Exception:
        return {}
    table = getattr(mod, "CONTENDERS", None) or {}
    variants = getattr(mod, "VARIANTS", None)
    if table:
        return {n: c.description for n, c in table.items()}
    if isinstance(variants, dict):
        return {
            n: ("trio's epoll manager" if v is None else " | ".join(v))
            for n, v in variants.items()
        }
    return {}


def skipped(data: dict[str, Any]) -> dict[str, str]:
    return dict(data.get("settings", {}).get("skipped", {}))


# --------------------------------------------------------------------------
# Plots


def plot(step: Step, data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = rows(step, data)
    n = len(groups)
    height = max(2.5, 0.32 * max(len(e) for _, e in groups) + 1.2)
    width = max(7.5, 4.6 * n + 1.5)
    fig, axes = plt.subplots(1, n, figsize=(width, height + 0.4), squeeze=False)
    for ax, (label, entries) in zip(axes[0], groups, strict=True):
        names = [e[0] for e in entries]
        meds = [e[1] for e in entries]
        err = [
            [max(0.0, e[1] - e[2]) for e in entries],
            [max(0.0, e[3] - e[1]) for e in entries],
        ]
        colors = [
            "#d62728"
            if "uring" in name or name in ("default", "coop", "submit-all", "none")
            else "#1f77b4"
            for name in names
        ]
        ypos = list(range(len(names)))[::-1]
        ax.barh(ypos, meds, xerr=err, color=colors, capsize=2, alpha=0.85)
        ax.set_yticks(ypos)
        ax.set_yticklabels(names, fontsize=8)
        ax.set_title(label or step.title, fontsize=9)
        ax.set_xlabel(step.unit, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    better = "more is better" if step.higher_is_better else "less is better"
    fig.suptitle(
        f"{step.title}\n({better}; bars: median, whiskers: min-max over "
        "rounds; red: io_uring)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------
# Reports


def markdown_report(
    m: dict[str, Any], steps: dict[str, dict[str, Any]], command: str, out: Path
) -> str:
    lines = [
        "# trio-uring benchmark results",
        "",
        f"Produced by `{command}` at {out.name}.",
        "",
        "## Machine",
        "",
        *machine_lines(m),
        "",
    ]
    for name, rec in steps.items():
        step = STEP_BY_NAME[name]
        lines += [
            f"# {step.title}",
            "",
            f"`{rec['command']}` ({rec['seconds']:.0f} s)",
            "",
        ]
        if not rec["ok"]:
            lines += [f"**FAILED** (exit {rec['exit']}); see the console output.", ""]
            continue
        md = (out / f"{name}.md").read_text() if (out / f"{name}.md").exists() else ""
        lines += [md.strip(), ""]
        if (out / f"{name}.png").exists():
            lines += [f"![{step.title}]({name}.png)", ""]
    return "\n".join(lines) + "\n"


def _fmt(value: float, unit: str) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def rst_table(header: list[str], body: list[list[str]], widths: str = "") -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1"]
    if widths:
        lines.append(f"   :widths: {widths}")
    lines.append("")
    for row in [header, *body]:
        first = True
        for cell in row:
            lines.append(f"   {'* -' if first else '  -'} {cell}")
            first = False
    lines.append("")
    return lines


def rst_step(step: Step, rec: dict[str, Any], m: dict[str, Any], png: bool) -> str:
    data = rec["data"]
    load = data.get("machine", {}).get("loadavg_start", [float("nan")])[0]
    lines = [
        f"``{rec['command']}`` (load average {load:.2f} when it started; "
        f"{rec['seconds']:.0f} s)",
        "",
    ]
    desc = descriptions(step, data)
    # One row per contender, one column per group (task or connection
    # count): "median (min - max)".
    groups = rows(step, data)
    labels = [label for label, _ in groups]
    cells: dict[str, dict[str, str]] = {}
    for label, entries in groups:
        for name, med, lo, hi in entries:
            cells.setdefault(name, {})[label] = (
                f"{_fmt(med, step.unit)} ({_fmt(lo, step.unit)} - "
                f"{_fmt(hi, step.unit)})"
            )
    head = ["contender"] + [
        f"{label or step.unit}" + (f": {step.unit}" if label else "")
        for label in labels
    ]
    body = [
        [f"``{name}``"] + [by.get(label, "-") for label in labels]
        for name, by in cells.items()
    ]
    lines += [
        f"Median {step.unit} over rounds (min - max in brackets):",
        "",
        *rst_table(head, body),
    ]
    rcells: dict[str, dict[str, str]] = {}
    for label, name, med, lo, hi in ratio_rows(step, data):
        rcells.setdefault(name, {})[label] = f"{med:.3f} ({lo:.3f} - {hi:.3f})"
    if rcells:
        rlabels = [
            label for label in labels if any(label in v for v in rcells.values())
        ]
        lines += [
            "Median of the per-round ratios (min - max in brackets):",
            "",
            *rst_table(
                ["ratio"] + [label or "ratio" for label in rlabels],
                [
                    [f"``{name}``"] + [by.get(label, "-") for label in rlabels]
                    for name, by in rcells.items()
                ],
            ),
        ]
    if desc:
        shown = [
            n for n in desc if any(n == e[0] for _, es in rows(step, data) for e in es)
        ]
        lines += rst_table(
            ["contender", "what it runs"], [[f"``{n}``", desc[n]] for n in shown]
        )
    for name, why in skipped(data).items():
        lines += [f"Skipped ``{name}``: {why}.", ""]
    if png:
        lines += [
            f".. image:: /_static/bench/{step.name}.png",
            f"   :alt: {step.title}",
            "",
        ]
    return "\n".join(lines)


def write_docs(
    m: dict[str, Any], steps: dict[str, dict[str, Any]], out: Path, command: str
) -> None:
    DOCS_DIR.mkdir(parents=True, exist_ok=True)
    header = [
        f"Produced by ``{command}`` (run {out.name}) on:",
        "",
        *machine_lines(m),
        "",
    ]
    (DOCS_DIR / "machine.inc").write_text("\n".join(header) + "\n")
    for name, rec in steps.items():
        if not rec["ok"]:
            continue
        png = out / f"{name}.png"
        if png.exists():
            (DOCS_DIR / png.name).write_bytes(png.read_bytes())
        text = rst_step(STEP_BY_NAME[name], rec, m, png.exists())
        (DOCS_DIR / f"{name}.inc").write_text(text + "\n")
    print(f"docs includes and plots written to {DOCS_DIR}", file=sys.stderr)


def report(
    m: dict[str, Any],
    steps: dict[str, dict[str, Any]],
    out: Path,
    command: str,
    docs: bool,
) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        print(
            f"matplotlib is not importable on Python {platform.python_version()} "
            f"({sys.executable}): plots skipped (pip install matplotlib)",
            file=sys.stderr,
        )
    else:
        for name, rec in steps.items():
            if rec["ok"]:
                try:
                    plot(STEP_BY_NAME[name], rec["data"], out / f"{name}.png")
                except Exception as exc:
                    print(f"plot for {name} failed: {exc!r}", file=sys.stderr)
    text = markdown_report(m, steps, command, out)
    (out / "results.md").write_text(text)
    if docs:
        write_docs(m, steps, out, command)
    print(text)
    print(f"results written to {out}", file=sys.stderr)


# --------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    names = [s.name for s in STEPS]
    parser.add_argument("--full", action="store_true", help="longer runs, more rounds")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny runs: check that everything works (figures meaningless)",
    )
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(names)}")
    parser.add_argument("--skip", help="comma-separated workloads to leave out")
    parser.add_argument(
        "--out", type=Path, help="results directory (default: bench/results/<UTC time>)"
    )
    parser.add_argument(
        "--docs",
        action="store_true",
        help=f"also write the plots and .inc tables into {DOCS_DIR.relative_to(REPO)}",
    )
    parser.add_argument(
        "--from",
        dest="from_dir",
        type=Path,
        help="no measuring: rebuild the reports from DIR/results.json",
    )
    args = parser.parse_args(argv)
    command = " ".join(
        ["python bench/run_all.py", *(argv if argv is not None else sys.argv[1:])]
    )

    if args.from_dir is not None:
        saved = json.loads((args.from_dir / "results.json").read_text())
        report(
            saved["machine"], saved["steps"], args.from_dir, saved["command"], args.docs
        )
        return 0

    chosen = names
    for opt, keep in ((args.only, True), (args.skip, False)):
        if opt:
            picked = [x.strip() for x in opt.split(",") if x.strip()]
            unknown = [x for x in picked if x not in names]
            if unknown:
                parser.error(f"unknown workload(s) {unknown}; known: {','.join(names)}")
            chosen = [n for n in chosen if (n in picked) == keep]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out or RESULTS_DIR / stamp
    out.mkdir(parents=True, exist_ok=True)

    m = machine()
    print("Machine:", *machine_lines(m), sep="\n", file=sys.stderr)
    steps: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    for name in chosen:
        steps[name] = run_step(STEP_BY_NAME[name], args.full, args.smoke, out)
    m["loadavg_end"] = loadavg()
    m["total_seconds"] = time.monotonic() - t0
    (out / "results.json").write_text(
        json.dumps({"command": command, "machine": m, "steps": steps}, indent=1) + "\n"
    )
    report(m, steps, out, command, args.docs)
    failed = [n for n, r in steps.items() if not r["ok"]]
    print(f"total {m['total_seconds']:.0f} s", file=sys.stderr)
    if failed:
        print(f"FAILED workloads: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
