#!/usr/bin/env python3
"""Run trio's own test suite on epoll and on io_uring, and compare.

trio ships its test suite inside the wheel, so the suite of whatever trio is
installed in *this* interpreter's environment can be run with::

    python -m pytest -p trio._tests.pytest_plugin --pyargs trio --skip-optional-imports

This script runs that suite twice, in subprocesses of the current interpreter:

* ``epoll``: plain trio, the reference;
* ``uring``: the same, plus ``--trio-uring`` (trio-uring's pytest plugin), which
  installs the io_uring IO manager for the whole test session.

It records every test's outcome through a small in-process pytest plugin (this
very file, loaded with ``-p conformance``), writes a JUnit XML file and a log per
run, and then prints:

* the outcome counts of each run and its wall time;
* every test that PASSES on epoll but does NOT pass on io_uring (failed, error,
  skipped, xfailed, or never reached because the run crashed or hung);
* every entry of the expected-differences file and what became of it.

Exit status: 0 if every test that passes on epoll passes on io_uring, except the
ones listed in the expected-differences file; 1 if any other one does not, if
the io_uring run did not actually run on io_uring, or if a run crashed or hung;
2 on bad usage or a malformed expected-differences file.

Proof that the io_uring run really used io_uring comes from two places:

1. before the suites, a pytest-free ``python -c`` calls ``trio_uring.install()``
   and checks ``trio.lowlevel.current_statistics().io_statistics.backend``;
2. inside each pytest run, the plugin below calls ``trio.run`` during the first
   and the last test and records which backend it got.

trio's ``test_trio_import`` deletes every ``trio*`` module from ``sys.modules``
(trio_uring's included) and imports a fresh trio that knows nothing of
trio-uring. The plugin puts the original modules back after such a test, and
says so in the summary, so later tests keep running on the session's trio.

Expected differences (``tools/conformance_expected_differences.txt``): one test
per line, ``<test id> | <reason>``, where the test id is the pytest node id
relative to the directory that contains the ``trio`` package, e.g.::

    trio/_core/_tests/test_io.py::test_io_manager_statistics | checks epoll's stats

Blank lines and lines starting with ``#`` are ignored. Ids are matched exactly
(no globbing: ``[...]`` in parametrized ids would be read as a pattern). Listed
tests still run, and each entry is printed with its outcome on every run, so
nothing is hidden; an entry only stops a listed test from failing the exit
status.

The extra packages trio's suite needs so that its optional tests run instead of
skipping are in ``TEST_DEPS`` below (the nox ``conformance`` session installs
them); the script warns about the ones that are missing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

try:
    import pytest
except ImportError:  # pragma: no cover - the script itself reports this in main()
    pytest = None  # type: ignore[assignment]

HERE = Path(__file__).resolve().parent
EXPECTED_FILE = HERE / "conformance_expected_differences.txt"

# Packages trio's test suite imports for tests that are otherwise skipped under
# --skip-optional-imports: (import name, PyPI name, what needs it).
TEST_DEPS = [
    ("trustme", "trustme", "trio/_tests/test_ssl.py, test_dtls.py"),
    ("OpenSSL", "pyOpenSSL", "trio/_tests/test_ssl.py, test_dtls.py"),
    ("yaml", "pyyaml", "trio/_tests/tools/test_sync_requirements.py"),
    ("astor", "astor", "trio/_tests/tools/test_gen_exports.py"),
    ("isort", "isort", "trio/_tests/tools/test_gen_exports.py"),
    ("black", "black", "trio/_tests/tools/test_gen_exports.py"),
    ("ruff", "ruff", "trio/_tests/tools/test_gen_exports.py"),
    ("pylint", "pylint", "trio/_tests/test_exports.py (static-tool checks)"),
    ("jedi", "jedi", "trio/_tests/test_exports.py (static-tool checks)"),
    ("async_generator", "async_generator", "trio/_core/_tests/test_ki.py"),
]

SUITE = ["--pyargs", "trio"]
BASE_PYTEST_ARGS = [
    "-p",
    "trio._tests.pytest_plugin",
    "--skip-optional-imports",
    "-p",
    "no:cacheprovider",
    "-q",
    "-rfE",
    "--tb=short",
    # Dump every thread's stack if a single test runs this long (does not kill).
    "-o",
    "faulthandler_timeout=120",
]

OUT_ENV = "TRIO_CONFORMANCE_OUT"
PASSED = "passed"
NOT_RUN = "not run"


# ---------------------------------------------------------------------------
# The in-process pytest plugin (active only when OUT_ENV is set).
# ---------------------------------------------------------------------------


class _Recorder:
    def __init__(self, path: str) -> None:
        import trio

        self.file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        # Test ids are made relative to the directory holding the trio package,
        # so they are the same whatever the venv, the cwd or the rootdir.
        self.base = Path(trio.__file__).resolve().parent.parent
        self.phases: dict[str, dict[str, Any]] = {}
        self.first_probed = False
        self.trio = trio
        self.modules: dict[str, Any] = {}
        # nodeid -> test id. pytest's node ids are relative to the rootdir, or
        # (pytest >= 9, files outside it) to the argument they came from.
        self.ids: dict[str, str] = {}

    def write(self, **record: Any) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def path_id(self, path: Any) -> str:
        full = Path(str(path)).resolve()
        try:
            return full.relative_to(self.base).as_posix()
        except ValueError:
            return str(full)

    def test_id(self, nodeid: str) -> str:
        return self.ids.get(nodeid, nodeid)

    def probe(self, when: str) -> None:
        try:
            trio = self.trio

            async def backend() -> str:
                return str(trio.lowlevel.current_statistics().io_statistics.backend)

            self.write(event="backend", when=when, backend=trio.run(backend))
        except BaseException as exc:  # recorded, never raised
            self.write(event="backend", when=when, backend=None, error=repr(exc))


_recorder: _Recorder | None = None


def pytest_configure(config: Any) -> None:
    global _recorder
    path = os.environ.get(OUT_ENV)
    if path:
        _recorder = _Recorder(path)


def pytest_unconfigure(config: Any) -> None:
    if _recorder is not None:
        _recorder.file.close()


def pytest_itemcollected(item: Any) -> None:
    if _recorder is not None:
        _, sep, rest = item.nodeid.partition("::")
        _recorder.ids[item.nodeid] = _recorder.path_id(item.path) + sep + rest


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    if _recorder is not None:
        _recorder.modules = {k: m for k, m in sys.modules.items() if k[:4] == "trio"}
        _recorder.write(event="start", id=_recorder.test_id(nodeid))


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    # trio's test_trio_import deletes every sys.modules entry starting with
    # "trio" (trio_uring's too) and imports a fresh trio, which knows nothing
    # of trio-uring; whatever imported trio lazily after it would silently run
    # on epoll. Put the modules the session runs on back after any such test.
    rec = _recorder
    if rec is not None and sys.modules.get("trio") is not rec.modules.get("trio"):
        for name in [k for k in sys.modules if k[:4] == "trio"]:
            if name not in rec.modules:
                del sys.modules[name]
        sys.modules.update(rec.modules)
        rec.write(event="restored_modules", id=rec.test_id(nodeid))


def pytest_runtest_logreport(report: Any) -> None:
    if _recorder is None:
        return
    phases = _recorder.phases.setdefault(report.nodeid, {})
    phases[report.when] = report
    if report.when != "teardown":
        return
    del _recorder.phases[report.nodeid]
    outcome = PASSED
    for when in ("setup", "call", "teardown"):
        rep = phases.get(when)
        if rep is None:
            continue
        if rep.failed:
            outcome = "failed" if when == "call" else "error"
            break
        if rep.skipped:
            outcome = "xfailed" if hasattr(rep, "wasxfail") else "skipped"
            break
        if when == "call" and hasattr(rep, "wasxfail"):
            outcome = "xpassed"
    _recorder.write(
        event="result",
        id=_recorder.test_id(report.nodeid),
        outcome=outcome,
        duration=round(sum(r.duration for r in phases.values()), 4),
    )


if pytest is not None:

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(collector: Any) -> Generator[None, Any, Any]:
        report = yield
        rec = _recorder
        path = getattr(collector, "path", None)
        if rec is not None and path is not None and report.outcome != "passed":
            _, sep, rest = report.nodeid.partition("::")
            test_id = rec.path_id(path) + sep + rest
            if report.failed:
                longrepr = str(report.longrepr)[-2000:]
                rec.write(event="collect_error", id=test_id, longrepr=longrepr)
            else:
                rec.write(event="module_skipped", id=test_id)
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(item: Any) -> Iterator[None]:
        # Probe the backend with fixtures already set up, so that a plugin that
        # installs its IO manager from a session fixture is seen too.
        if _recorder is not None:
            items = item.session.items
            if not _recorder.first_probed:
                _recorder.first_probed = True
                _recorder.probe("first test")
            elif items and item is items[-1]:
                _recorder.probe("last test")
        return (yield)


# ---------------------------------------------------------------------------
# The driver.
# ---------------------------------------------------------------------------


class RunResult:
    def __init__(self, name: str) -> None:
        self.name = name
        self.outcomes: dict[str, str] = {}
        self.durations: dict[str, float] = {}
        self.started: list[str] = []
        self.collect_errors: list[tuple[str, str]] = []
        self.backends: list[dict[str, Any]] = []
        self.restored: list[str] = []
        self.modules_skipped: list[str] = []
        self.returncode: int | None = None
        self.timed_out = False
        self.wall = 0.0

    @property
    def in_progress(self) -> list[str]:
        return [t for t in self.started if t not in self.outcomes]

    def counts(self) -> Counter[str]:
        return Counter(self.outcomes.values())

    def load(self, path: Path) -> None:
        if not path.exists():
            return
        with path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a crash
                    continue
                ev = rec.get("event")
                if ev == "start":
                    self.started.append(rec["id"])
                elif ev == "result":
                    self.outcomes[rec["id"]] = rec["outcome"]
                    self.durations[rec["id"]] = rec["duration"]
                elif ev == "collect_error":
                    self.collect_errors.append((rec["id"], rec["longrepr"]))
                elif ev == "backend":
                    self.backends.append(rec)
                elif ev == "module_skipped":
                    self.modules_skipped.append(rec["id"])
                elif ev == "restored_modules":
                    self.restored.append(rec["id"])

    def problems(self, want_backend: str) -> list[str]:
        """Reasons why this run cannot be trusted (empty if none)."""
        out = []
        if self.timed_out:
            out.append(f"the {self.name} run hit the time limit and was killed")
        elif self.returncode is not None and self.returncode < 0:
            sig = -self.returncode
            try:
                signame = signal.Signals(sig).name
            except ValueError:
                signame = str(sig)
            out.append(f"the {self.name} run was killed by {signame}")
        elif self.returncode not in (0, 1):
            # 0 all passed, 1 some failed; anything else means pytest itself
            # broke (2 interrupted, 3 internal error, 4 usage error, 5 no tests).
            out.append(
                f"pytest exited with status {self.returncode} in the {self.name} run"
            )
        if self.in_progress:
            out.append(
                f"tests started but never finished in the {self.name} run: "
                + ", ".join(self.in_progress)
            )
        if self.outcomes and not self.backends:
            out.append(f"the {self.name} run recorded no backend probe")
        for rec in self.backends:
            if rec.get("backend") != want_backend:
                detail = rec.get("error") or f"backend={rec.get('backend')!r}"
                out.append(
                    f"the {self.name} run was not on {want_backend} at the "
                    f"{rec['when']}: {detail}"
                )
        return out


def read_expected(path: Path) -> dict[str, str]:
    expected: dict[str, str] = {}
    if not path.exists():
        return expected
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        test_id, sep, reason = line.partition(" | ")
        test_id, reason = test_id.strip(), reason.strip()
        if not sep or not test_id or not reason:
            raise SystemExit(
                f"{path}:{lineno}: expected '<test id> | <reason>', got {raw!r}"
            )
        if test_id in expected:
            raise SystemExit(f"{path}:{lineno}: duplicate entry {test_id!r}")
        expected[test_id] = reason
    return expected


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

    # An empty ini file + explicit rootdir: the suite must not pick up the
    # configuration of whatever project happens to contain the venv.
    ini = workdir / "pytest.ini"
    ini.write_text(
        "[pytest]\nmarkers =\n    redistributors_should_skip: trio's own marker\n",
        encoding="utf-8",
    )
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *(SUITE if tests is None else tests),
        *BASE_PYTEST_ARGS,
        "-c",
        str(ini),
        "--rootdir",
        str(workdir),
        "-p",
        "conformance",
        f"--junitxml={workdir / (name + '.xml')}",
        *extra,
    ]
    return run_logged(name, cmd, workdir, out, log, timeout)


def run_logged(
    name: str, cmd: list[str], workdir: Path, out: Path, log: Path, timeout: float
) -> RunResult:
    """Run one pytest command (``cmd``) in ``workdir``; its output goes to the
    terminal and to ``log``, its per-test records to ``out`` (the recorder
    plugin's file); killed with its process group after ``timeout`` s."""
    result = RunResult(name)
    env = dict(os.environ)
    env[OUT_ENV] = str(out)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(HERE), env.get("PYTHONPATH")])
    )
    # the suites check some warnings themselves; keep the environment's own
    # warning filters from turning them into errors.
    env.pop("PYTHONWARNINGS", None)

    print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    with log.open("w", encoding="utf-8") as logf:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )

        def kill() -> None:
            result.timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                logf.write(line)
            result.returncode = proc.wait()
        finally:
            timer.cancel()
    result.wall = time.monotonic() - start
    result.load(out)
    return result


def compare_runs(
    ep: RunResult, ur: RunResult, expected: dict[str, str]
) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """Print how the io_uring run differs from the epoll one.

    Returns (tests passing on epoll, those of them not passing on io_uring
    with their io_uring outcome, the ones of those not in ``expected``).
    """
    baseline = sorted(t for t, o in ep.outcomes.items() if o == PASSED)
    diffs = [(t, ur.outcomes.get(t, NOT_RUN)) for t in baseline]
    diffs = [(t, o) for t, o in diffs if o != PASSED]
    unexpected = [(t, o) for t, o in diffs if t not in expected]
    allowed = [(t, o) for t, o in diffs if t in expected]

    print(
        f"\npass on epoll but not on io_uring: {len(diffs)} "
        f"({len(unexpected)} unexpected, {len(allowed)} listed as expected)"
    )
    for t, o in unexpected:
        print(f"  UNEXPECTED  {t}: {o} on io_uring")
    for t, o in allowed:
        print(f"  expected    {t}: {o} on io_uring -- {expected[t]}")

    gains = sorted(
        t
        for t, o in ur.outcomes.items()
        if o == PASSED and ep.outcomes.get(t) != PASSED
    )
    if gains:
        print(f"\npass on io_uring but not on epoll ({len(gains)}):")
        for t in gains:
            print(f"  {t}: {ep.outcomes.get(t, NOT_RUN)} on epoll")
    return baseline, diffs, unexpected


def uring_sanity_check() -> str | None:
    """Return None if trio_uring.install() really gives trio an io_uring backend."""
    code = (
        "import trio, trio_uring\n"
        "trio_uring.install()\n"
        "async def main():\n"
        "    return trio.lowlevel.current_statistics().io_statistics.backend\n"
        "backend = trio.run(main)\n"
        "print(backend)\n"
        "assert backend == 'io_uring', backend\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            # not the repository root, where the source tree (without the
            # compiled _ring_ffi) would shadow the installed trio_uring
            cwd=tempfile.gettempdir(),
        )
    except subprocess.TimeoutExpired:
        return "the sanity check timed out after 60 s"
    if proc.returncode != 0:
        return (proc.stdout + proc.stderr).strip() or f"exit status {proc.returncode}"
    return None


def run_managers(
    only: str, run: Callable[[str, bool], RunResult], label: str
) -> dict[str, RunResult] | None:
    """The io_uring sanity check (when io_uring runs), then ``run(name,
    on_uring)`` for epoll and/or io_uring as ``only`` says.  None when the
    sanity check failed (reported, with ``label``'s closing line)."""
    if only in ("uring", "both"):
        err = uring_sanity_check()
        if err is not None:
            print("\nio_uring sanity check FAILED (trio_uring.install(); trio.run):")
            print(err)
            print(f"{label}: 0 passed, 1 failed")
            return None
        print("io_uring sanity check: trio_uring.install(); trio.run -> io_uring")
    runs: dict[str, RunResult] = {}
    if only in ("epoll", "both"):
        runs["epoll"] = run("epoll", False)
    if only in ("uring", "both"):
        runs["uring"] = run("uring", True)
    return runs


def report_runs(runs: dict[str, RunResult], title: str) -> list[str]:
    """The summary's header and one line per run (counts, exit code,
    collection errors, modules put back); returns every run's problems."""
    print("\n" + "=" * 72)
    print(title)
    print("=" * 72)
    problems: list[str] = []
    for name, r in runs.items():
        label = "epoll   " if name == "epoll" else "io_uring"
        print(f"{label}: {fmt_counts(r)}  (pytest exit {r.returncode})")
        for test_id, longrepr in r.collect_errors:
            last = longrepr.strip().splitlines()[-1:] or [""]
            print(f"  collection error in {name}: {test_id}: {last[0]}")
        for test_id in r.restored:
            print(f"  note: {test_id} re-imported trio; its modules were put back")
        problems += r.problems("epoll" if name == "epoll" else "io_uring")
    return problems


def report_epoll_failures(runs: dict[str, RunResult]) -> list[str]:
    """Print the tests that fail on epoll itself; return their ids."""
    if "epoll" not in runs:
        return []
    ep_out = runs["epoll"].outcomes
    bad = sorted(t for t, o in ep_out.items() if o in ("failed", "error"))
    if bad:
        print(f"\nfailing on epoll itself ({len(bad)}; not held against io_uring):")
        for t in bad:
            print(f"  {t}: {ep_out[t]}")
    return bad


def fmt_counts(r: RunResult) -> str:
    c = r.counts()
    order = [PASSED, "failed", "error", "skipped", "xfailed", "xpassed"]
    parts = [f"{c.get(k, 0)} {k}" for k in order]
    parts += [f"{v} {k}" for k, v in sorted(c.items()) if k not in order]
    if r.modules_skipped:
        parts.append(f"{len(r.modules_skipped)} modules skipped")
    if r.collect_errors:
        parts.append(f"{len(r.collect_errors)} collection errors")
    return ", ".join(parts) + f"  [{r.wall:.1f} s wall]"


def rerun(
    ids: list[str], rounds: int, workdir: Path, timeout: float, extra: list[str]
) -> None:
    import trio

    base = Path(trio.__file__).resolve().parent.parent
    paths = [str(base / t) for t in ids]
    tally: dict[str, Counter[tuple[str, bool]]] = {t: Counter() for t in ids}
    for i in range(rounds):
        for name, more in (("epoll", []), ("uring", ["--trio-uring"])):
            r = run_pytest(
                f"rerun{i + 1}-{name}", extra + more, workdir, timeout, tests=paths
            )
            for t in ids:
                tally[t][(name, r.outcomes.get(t, NOT_RUN) == PASSED)] += 1
    print(f"\n--- reruns ({rounds} rounds; passes per backend)")
    for t in ids:
        e, u = tally[t][("epoll", True)], tally[t][("uring", True)]
        verdict = "consistent" if u == 0 and e == rounds else "FLAKY"
        print(f"  {t}: epoll {e}/{rounds}, io_uring {u}/{rounds}  ({verdict})")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after '--' are passed to both pytest runs.",
    )
    parser.add_argument("--only", choices=["epoll", "uring", "both"], default="both")
    parser.add_argument(
        "--junit-dir",
        type=Path,
        help="where to write <run>.xml, <run>.log and <run>.jsonl "
        "(default: a new temp dir)",
    )
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument(
        "--run-slow", action="store_true", help="also run the tests trio marks slow"
    )
    parser.add_argument(
        "--expected",
        type=Path,
        default=EXPECTED_FILE,
        help="expected-differences file (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1200.0,
        help="kill a pytest run after this many seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--rerun",
        type=int,
        default=0,
        metavar="N",
        help="rerun each unexpected difference N times on both backends to tell "
        "consistent failures from flaky ones (informational only)",
    )
    argv = sys.argv[1:]
    passthrough: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1 :]
    args = parser.parse_args(argv)

    if pytest is None:
        print("pytest is not installed in this environment", file=sys.stderr)
        return 2
    expected = read_expected(args.expected)

    import trio

    extra = list(passthrough)
    if args.keyword:
        extra += ["-k", args.keyword]
    if args.run_slow:
        extra.append("--run-slow")
    uring_args = ["--trio-uring"]

    workdir = args.junit_dir or Path(tempfile.mkdtemp(prefix="trio-conformance-"))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    print(f"python   {platform.python_version()} ({sys.executable})")
    print(f"trio     {trio.__version__} ({Path(trio.__file__).parent})")
    if importlib.util.find_spec("trio_uring") is not None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"trio-uring {version('trio-uring')}")
        except PackageNotFoundError:
            print("trio-uring (importable, not installed as a distribution)")
    print(f"kernel   {platform.release()}")
    print(f"output   {workdir}")
    missing = [d for d in TEST_DEPS if importlib.util.find_spec(d[0]) is None]
    for _mod, dist, used_by in missing:
        print(f"WARNING: {dist} is not installed; tests in {used_by} will be skipped")

    found = run_managers(
        args.only,
        lambda name, on_uring: run_pytest(
            name, extra + uring_args if on_uring else extra, workdir, args.timeout
        ),
        "conformance",
    )
    if found is None:
        return 1
    runs = found
    failures = report_runs(runs, "trio conformance summary")
    # The closing line counts a broken run (crash, hang, wrong backend) as one
    # more failure, so that it never reads as a clean result.
    n_problems = len(failures)
    bad = report_epoll_failures(runs)
    if bad and args.only == "epoll":
        failures.append(f"{len(bad)} tests fail on epoll")

    if args.only == "both":
        ep, ur = runs["epoll"], runs["uring"]
        baseline, diffs, unexpected = compare_runs(ep, ur, expected)

        if expected:
            print(f"\nexpected-differences entries ({args.expected}):")
            for t, reason in expected.items():
                if t not in ep.outcomes and t not in ur.outcomes:
                    state = "not run in either run (stale id, or deselected)"
                elif ep.outcomes.get(t) != PASSED:
                    state = f"not a difference: {ep.outcomes.get(t, NOT_RUN)} on epoll"
                elif ur.outcomes.get(t) == PASSED:
                    state = "NOW PASSES on io_uring: remove this entry"
                else:
                    state = f"still differs: {ur.outcomes.get(t, NOT_RUN)} on io_uring"
                print(f"  {t}: {state} -- {reason}")
        else:
            print(f"\nexpected-differences entries: none ({args.expected})")

        if unexpected:
            failures.append(f"{len(unexpected)} tests pass on epoll, not io_uring")
            if args.rerun > 0:
                ids = [t for t, _ in unexpected]
                rerun(ids, args.rerun, workdir, args.timeout, extra)
        n_ok = len(baseline) - len(diffs)
        n_bad = len(unexpected) + n_problems
        plain_line = f"conformance: {n_ok} passed, {n_bad} failed"
    else:
        ((name, r),) = runs.items()
        c = r.counts()
        word = "epoll" if name == "epoll" else "io_uring"
        n_bad = c.get("failed", 0) + c.get("error", 0) + n_problems
        plain_line = f"{word}: {c.get(PASSED, 0)} passed, {n_bad} failed"

    print(f"\nJUnit XML, logs and raw outcomes: {workdir}")
    print(f"total wall time: {sum(r.wall for r in runs.values()):.1f} s")
    if failures:
        print("\nCONFORMANCE FAILED:")
        for f in failures:
            print(f"  - {f}")
    else:
        print("\nconformance OK")
    print(plain_line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
