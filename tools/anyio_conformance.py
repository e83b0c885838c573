#!/usr/bin/env python3
"""Run anyio's own test suite (trio backend) on epoll and on io_uring, and compare.

anyio's wheel does not ship its tests; its sdist does.  This script downloads
the sdist of the anyio installed in *this* interpreter's environment
(``pip download --no-binary :all: --no-deps anyio==<version>``; or takes one
given with ``--sdist``), extracts ``tests/`` and ``pyproject.toml`` (anyio's
pytest configuration: auto mode, ``filterwarnings = error``, per-test
timeouts) into a work directory, and runs the suite twice, in subprocesses of
the current interpreter, against the *installed* anyio:

* ``epoll``: plain trio, the reference;
* ``uring``: the same plus ``--trio-uring`` (trio-uring's pytest plugin,
  i.e. ``trio_uring.install()`` for the session), so every ``trio.run`` and
  every guest run anyio's test runner starts is on io_uring.

Both runs are restricted to the trio backend: test items parametrized with an
``anyio_backend`` other than trio are deselected (the asyncio ones test
nothing of ours); tests without an ``anyio_backend`` parameter still run
(several call ``anyio.run(..., backend="trio")`` themselves).  Running the
``[trio]`` items under ``--trio-uring`` instead of with a ``"trio_uring"``
backend parameter keeps the test ids identical in both runs and keeps the
tests' own ``anyio_backend_name == "trio"`` checks meaningful.

The script measures whatever trio-uring does when it runs: native sockets or
files added later are covered without changes here.

Per-test outcomes are recorded by tools/conformance.py's recorder plugin
(this file, loaded with ``-p anyio_conformance``, reuses it), with test ids
relative to the work directory (``tests/test_sockets.py::test_x[trio]``).
The summary lists every test that passes on epoll but not on io_uring.
Exit status: 0 if there is none apart from the entries of
``tools/anyio_expected_differences.txt`` (same format as
tools/conformance_expected_differences.txt: ``<test id> | <reason>``); 1 if
there is another, if the io_uring run was not on io_uring, or if a run
crashed or hung; 2 on bad usage.

The packages anyio's suite needs are in ``TEST_DEPS`` (the nox
``anyio_conformance`` session installs them).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Any

import conformance as _base
from conformance import (  # noqa: F401 - the hooks are this plugin's too
    NOT_RUN,
    OUT_ENV,
    PASSED,
    RunResult,
    fmt_counts,
    pytest_itemcollected,
    pytest_runtest_logreport,
    pytest_runtest_logstart,
    pytest_unconfigure,
    read_expected,
    uring_sanity_check,
)

if _base.pytest is not None:
    from conformance import (  # noqa: F401
        pytest_make_collect_report,
        pytest_runtest_call,
    )

HERE = Path(__file__).resolve().parent
EXPECTED_FILE = HERE / "anyio_expected_differences.txt"

# (import name, PyPI name): what anyio's test suite imports or loads with -p.
# pytest_mock and pytest_timeout are required (anyio's addopts load them);
# the others only keep tests from being skipped.
TEST_DEPS = [
    ("pytest_mock", "pytest-mock"),
    ("pytest_timeout", "pytest-timeout"),
    ("trustme", "trustme"),
    ("hypothesis", "hypothesis"),
    ("psutil", "psutil"),
    ("blockbuster", "blockbuster"),
    ("truststore", "truststore"),
]

TRIO_BACKEND = "trio"


# ---------------------------------------------------------------------------
# The in-process pytest plugin (active only when OUT_ENV is set).
# ---------------------------------------------------------------------------


class _AnyioRecorder(_base._Recorder):
    def __init__(self, path: str, base: Path) -> None:
        super().__init__(path)
        self.base = base.resolve()

    def probe(self, when: str) -> None:
        # anyio's test runner keeps a trio guest run alive in the main thread
        # across tests, so a probe there would be "run() inside a run()":
        # probe from a fresh thread (install() covers every thread).
        t = threading.Thread(target=super().probe, args=(when,))
        t.start()
        t.join()


def _backend_name(param: Any) -> str | None:
    if isinstance(param, str):
        return param
    if isinstance(param, tuple) and param and isinstance(param[0], str):
        return param[0]
    return None


def pytest_configure(config: Any) -> None:
    path = os.environ.get(OUT_ENV)
    if path:
        _base._recorder = _AnyioRecorder(path, Path(str(config.rootpath)))


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    if not os.environ.get(OUT_ENV):
        return
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = getattr(callspec, "params", {})
        if "anyio_backend" in params:
            name = _backend_name(params["anyio_backend"])
            (keep if name == TRIO_BACKEND else drop).append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# ---------------------------------------------------------------------------
# The driver.
# ---------------------------------------------------------------------------


def anyio_version() -> str:
    from importlib.metadata import version

    return version("anyio")


def fetch_sdist(version: str, dest: Path) -> Path:
    """Download anyio's sdist for ``version`` into ``dest`` (pip's own client)."""
    dest.mkdir(parents=True, exist_ok=True)
    name = f"anyio-{version}.tar.gz"
    if (dest / name).exists():
        return dest / name
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-binary",
        ":all:",
        "--no-deps",
        f"anyio=={version}",
        "-d",
        str(dest),
    ]
    print(f"downloading the anyio {version} sdist: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True)
    found = sorted(dest.glob(f"anyio-{version}.tar.gz"))
    if not found:
        raise SystemExit(f"pip did not leave {name} in {dest}")
    return found[0]


def extract_suite(sdist: Path, workdir: Path) -> None:
    """Extract tests/ and pyproject.toml from the sdist into ``workdir``."""
    shutil.rmtree(workdir / "tests", ignore_errors=True)
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            _top, _, rest = m.name.partition("/")
            if not rest or ".." in Path(rest).parts or Path(rest).is_absolute():
                continue
            if not (m.isfile() or m.isdir()):
                continue
            if rest == "pyproject.toml" or rest.startswith("tests/"):
                m.name = rest
                members.append(m)
        if not any(m.name == "pyproject.toml" for m in members):
            raise SystemExit(f"{sdist} has no pyproject.toml")
        if sys.version_info >= (3, 12):
            tar.extractall(workdir, members=members, filter="data")
        else:  # members checked above: regular files and dirs, inside workdir
            tar.extractall(workdir, members=members)


def run_pytest(
    name: str,
    extra: list[str],
    workdir: Path,
    timeout: float,
    tests: list[str] | None = None,
) -> RunResult:
    out = workdir / f"{name}.jsonl"
    log = workdir / f"{name}.log"
    out.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *(tests or ["tests"]),
        "-c",
        str(workdir / "pyproject.toml"),
        "--rootdir",
        str(workdir),
        "-p",
        "anyio_conformance",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rfE",
        f"--junitxml={workdir / (name + '.xml')}",
        *extra,
    ]
    return _base.run_logged(name, cmd, workdir, out, log, timeout)


def rerun(
    ids: list[str], rounds: int, workdir: Path, timeout: float, extra: list[str]
) -> list[str]:
    """Rerun ``ids`` alone on both backends; return those never passing on io_uring.

    In the full run a test can fail because of an earlier one: a socket an
    earlier test leaked (IPv6 tests fail where ``localhost`` has no ``::1``)
    warns, and under ``filterwarnings = error`` fails, whichever test runs when
    the garbage collector finds it; a loaded machine breaks tests that race
    ``sleep()`` calls.  Alone, such a test passes; a real difference does not.
    """
    passes: dict[str, dict[str, int]] = {t: {"epoll": 0, "uring": 0} for t in ids}
    for i in range(rounds):
        for name, more in (("epoll", []), ("uring", ["--trio-uring"])):
            r = run_pytest(
                f"rerun{i + 1}-{name}", [*extra, *more], workdir, timeout, tests=ids
            )
            for t in ids:
                passes[t][name] += r.outcomes.get(t, NOT_RUN) == PASSED
    print(f"\n--- unexpected differences rerun alone ({rounds} rounds)")
    confirmed = []
    for t in ids:
        e, u = passes[t]["epoll"], passes[t]["uring"]
        if u == 0:
            verdict = "CONFIRMED: never passes on io_uring"
            confirmed.append(t)
        elif u == rounds:
            verdict = "passes on io_uring when rerun: a full-run artefact"
        else:
            verdict = "FLAKY on io_uring"
        print(f"  {t}: epoll {e}/{rounds}, io_uring {u}/{rounds} -- {verdict}")
    return confirmed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after '--' are passed to both pytest runs.",
    )
    parser.add_argument("--only", choices=["epoll", "uring", "both"], default="both")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where to put the extracted suite, <run>.xml/.log/.jsonl "
        "(default: a new temp dir)",
    )
    parser.add_argument(
        "--sdist", type=Path, help="use this anyio sdist instead of downloading one"
    )
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument(
        "--expected",
        type=Path,
        default=EXPECTED_FILE,
        help="expected-differences file (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="kill a pytest run after this many seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--rerun",
        type=int,
        default=3,
        metavar="N",
        help="rerun each unexpected difference alone N times on both backends; "
        "it fails the run only if it never passes on io_uring (default: "
        "%(default)s; 0: every difference fails the run)",
    )
    argv = sys.argv[1:]
    passthrough: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1 :]
    args = parser.parse_args(argv)

    if _base.pytest is None:
        print("pytest is not installed in this environment", file=sys.stderr)
        return 2
    expected = read_expected(args.expected)

    import trio

    version = anyio_version()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="anyio-conformance-"))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    sdist = args.sdist or fetch_sdist(version, workdir / "sdist")
    extract_suite(sdist, workdir)

    print(f"python   {platform.python_version()} ({sys.executable})")
    print(f"trio     {trio.__version__}")
    print(f"anyio    {version} (tests from {sdist.name})")
    print(f"kernel   {platform.release()}")
    print(f"output   {workdir}")
    missing = [d for d in TEST_DEPS if not _importable(d[0])]
    for _mod, dist in missing:
        print(f"WARNING: {dist} is not installed (some anyio tests skip or fail)")

    extra = list(passthrough)
    if args.keyword:
        extra += ["-k", args.keyword]

    found = _base.run_managers(
        args.only,
        lambda name, on_uring: run_pytest(
            name, [*extra, "--trio-uring"] if on_uring else extra, workdir, args.timeout
        ),
        "anyio conformance",
    )
    if found is None:
        return 1
    runs = found
    failures = _base.report_runs(
        runs, f"anyio {version} conformance summary (trio backend)"
    )
    n_problems = len(failures)
    _base.report_epoll_failures(runs)

    if args.only == "both":
        ep, ur = runs["epoll"], runs["uring"]
        baseline, diffs, unexpected = _base.compare_runs(ep, ur, expected)
        for t in expected:
            if ep.outcomes.get(t) == PASSED and ur.outcomes.get(t) == PASSED:
                print(f"  expected-difference entry now passes, remove it: {t}")
            elif t not in ep.outcomes and t not in ur.outcomes:
                print(f"  expected-difference entry not run (stale id?): {t}")
        confirmed = [t for t, _ in unexpected]
        if unexpected and args.rerun > 0:
            confirmed = rerun(confirmed, args.rerun, workdir, args.timeout, extra)
        if confirmed:
            failures.append(f"{len(confirmed)} tests pass on epoll, not io_uring")
        n_ok = len(baseline) - len(diffs)
        plain_line = (
            f"anyio conformance: {n_ok} passed, {len(confirmed) + n_problems} failed"
        )
    else:
        ((name, r),) = runs.items()
        c = r.counts()
        n_bad = c.get("failed", 0) + c.get("error", 0) + n_problems
        plain_line = f"{name}: {c.get(PASSED, 0)} passed, {n_bad} failed"

    print(f"\nJUnit XML, logs and raw outcomes: {workdir}")
    print(f"total wall time: {sum(r.wall for r in runs.values()):.1f} s")
    if failures:
        print("\nANYIO CONFORMANCE FAILED:")
        for f in failures:
            print(f"  - {f}")
    else:
        print("\nanyio conformance OK")
    print(plain_line)
    return 1 if failures else 0


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main())
