"""nox sessions for trio-uring.

    nox -l                                  # list sessions
    nox -s tests                            # every Python x {oldest, newest} trio
    nox -s "tests-3.12(trio='newest')"      # one of them
    nox -s tests -p 3.13                    # both trio versions on one Python
    nox -s conformance                      # trio's own suite, epoll vs io_uring
    nox -s anyio_conformance                # anyio's suite (trio backend), same
    nox -s bench                            # bench/run_all.py: every benchmark
    nox -s docs                             # sphinx-build -W
    nox -s lint                             # ruff check, ruff format --check, mypy

Arguments after ``--`` go to the tool each session runs (pytest,
tools/conformance.py, bench/run_all.py, sphinx-build).

Interpreters: nox looks for ``python3.10`` ... ``python3.13`` on PATH. Under
pyenv the shims exist for every installed version but only answer for the
selected ones, so this file adds the installed 3.10-3.13 to the selection
(PYENV_VERSION) for its own process and children (see ``_expose_pyenv_pythons``);
pyenv's global configuration is not touched. A missing interpreter is an
error, not a skip: a session list that silently shrinks tests nothing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nox
from nox.command import CommandFailed

HERE = Path(__file__).resolve().parent

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
# `nox` alone: everything except the benchmark (slow, and noisy on shared CI).
nox.options.sessions = ["tests", "conformance", "anyio_conformance", "docs", "lint"]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
NEWEST_PYTHON = PYTHONS[-1]

# The oldest trio each Python can run at all, whatever pyproject.toml allows:
# trio 0.25.x fails its own test suite on Python 3.13 (its KeyboardInterrupt
# protection writes to locals(), which PEP 667 made a snapshot), trio 0.26.0
# passes it. The "oldest" sessions use the newer of this and the lower bound
# on trio in pyproject.toml's dependencies for that Python.
TRIO_FLOOR_BY_PYTHON = {"3.13": "0.26.0"}


def _expose_pyenv_pythons() -> None:
    """Make pyenv's shims answer for every installed 3.10-3.13.

    ``python3.12`` is a pyenv shim that fails unless 3.12.x is among the
    selected versions. Selecting them through PYENV_VERSION (for this process
    and its children only) keeps the current selection first, so ``python``
    still means what it meant.
    """
    if shutil.which("pyenv") is None:
        return
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    try:
        installed = sorted(p.name for p in (root / "versions").iterdir())
        # A pyenv shim (e.g. a `nox` installed with pyenv's pip) runs us with
        # PYENV_VERSION set to its own version only: extend it, keep it first.
        current = (
            os.environ.get("PYENV_VERSION")
            or subprocess.run(
                ["pyenv", "version-name"], capture_output=True, text=True, check=True
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return
    chosen = current.split(":") if current else []
    for minor in PYTHONS:
        matches = [v for v in installed if re.fullmatch(re.escape(minor) + r"\.\d+", v)]
        if matches:
            newest = max(matches, key=lambda v: tuple(int(x) for x in v.split(".")))
            if newest not in chosen:
                chosen.append(newest)
    if chosen:
        os.environ["PYENV_VERSION"] = ":".join(chosen)


_expose_pyenv_pythons()


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def _pyproject_trio_floor(python: str) -> str | None:
    """The lower bound on trio in pyproject.toml's dependencies for ``python``."""
    text = (HERE / "pyproject.toml").read_text(encoding="utf-8")
    if sys.version_info < (3, 11):  # no tomllib: take the first "trio>=X"
        match = re.search(r"[\"']trio\s*>=\s*([0-9][0-9.]*)", text)
        return match.group(1) if match else None
    else:
        import tomllib
        from packaging.requirements import Requirement

        floors = []
        for dep in tomllib.loads(text).get("project", {}).get("dependencies", []):
            req = Requirement(dep)
            if req.name.lower() != "trio":
                continue
            if req.marker and not req.marker.evaluate({"python_version": python}):
                continue
            floors += [s.version for s in req.specifier if s.operator in (">=", "==")]
        return max(floors, key=_version_tuple) if floors else None


def oldest_trio(python: str) -> str:
    candidates = [
        v
        for v in (_pyproject_trio_floor(python), TRIO_FLOOR_BY_PYTHON.get(python))
        if v
    ]
    if not candidates:
        raise RuntimeError("pyproject.toml has no lower bound on trio")
    return max(candidates, key=_version_tuple)


def _conformance_deps() -> list[str]:
    """The packages trio's test suite needs (kept in tools/conformance.py)."""
    spec = importlib.util.spec_from_file_location(
        "_conformance", HERE / "tools" / "conformance.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [dist for _mod, dist, _used_by in module.TEST_DEPS]


def _show_versions(session: nox.Session) -> None:
    session.run(
        "python",
        "-c",
        "import sys, trio; print('python', sys.version.split()[0], '| trio', "
        "trio.__version__)",
    )


@nox.session(python=PYTHONS)
@nox.parametrize("trio", ["oldest", "newest"])
def tests(session: nox.Session, trio: str) -> None:
    """pytest tests/, against the oldest supported and the newest trio."""
    if trio == "oldest":
        session.install(".[test]", f"trio=={oldest_trio(str(session.python))}")
    else:
        session.install("--upgrade", ".[test]", "trio")
    _show_versions(session)
    session.run("pytest", "tests", *session.posargs)


@nox.session(python=NEWEST_PYTHON)
def conformance(session: nox.Session) -> None:
    """trio's own test suite on epoll and on io_uring (tools/conformance.py)."""
    session.install("--upgrade", ".", "trio", "pytest", *_conformance_deps())
    _show_versions(session)
    session.run("python", "tools/conformance.py", "--run-slow", *session.posargs)


def _anyio_conformance_deps() -> list[str]:
    """The packages anyio's test suite needs (kept in tools/anyio_conformance.py)."""
    tools = str(HERE / "tools")
    spec = importlib.util.spec_from_file_location(
        "_anyio_conformance", HERE / "tools" / "anyio_conformance.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, tools)  # it imports tools/conformance.py
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(tools)
    return [dist for _mod, dist in module.TEST_DEPS]


@nox.session(python=NEWEST_PYTHON)
def anyio_conformance(session: nox.Session) -> None:
    """anyio's own test suite, trio backend, on epoll and on io_uring.

    tools/anyio_conformance.py downloads the sdist of the installed anyio
    (its tests are not in the wheel) with pip.
    """
    session.install(
        "--upgrade", ".", "trio", "anyio", "pytest", *_anyio_conformance_deps()
    )
    _show_versions(session)  # the script prints anyio's version
    session.run("python", "tools/anyio_conformance.py", *session.posargs)


@nox.session(python=NEWEST_PYTHON)
def bench(session: nox.Session) -> None:
    """Every benchmark side by side: ``bench/run_all.py`` (arguments after
    ``--`` go to it, e.g. ``nox -s bench -- --full --docs``).

    The peers in bench/requirements.txt are installed one by one, so one
    that has no wheel for this Python (uvloop, uringio) does not stop the
    others; the scripts skip a peer they cannot import with a line saying so.
    """
    session.install(".")
    requirements = HERE / "bench" / "requirements.txt"
    for line in requirements.read_text().splitlines():
        req = line.split("#", 1)[0].strip()
        if not req:
            continue
        try:
            session.install(req, silent=True)
        except CommandFailed:
            session.warn(f"could not install {req!r}: what needs it is skipped")
    session.run("python", "bench/run_all.py", *session.posargs)


@nox.session(python=NEWEST_PYTHON)
def docs(session: nox.Session) -> None:
    """Build the HTML docs; warnings are errors."""
    session.install(".", "-r", "docs/requirements.txt")
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )


@nox.session(python=NEWEST_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, mypy --strict trio_uring (all of them)."""
    # Editable, so that the compiled trio_uring._ring_ffi sits next to the
    # sources mypy reads.
    session.install("-e", ".[test]", "ruff", "mypy")
    failed = []
    for cmd in (
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "--strict", "trio_uring"],
    ):
        try:
            session.run(*cmd)
        except CommandFailed:
            failed.append(" ".join(cmd))
    if failed:
        session.error("failed: " + "; ".join(failed))
