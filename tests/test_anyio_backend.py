"""anyio on io_uring: ``backend="trio"`` after install(), and ``"trio_uring"``."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_uring
from trio_uring import _install

anyio = pytest.importorskip("anyio")
sniffio = pytest.importorskip("sniffio")

TESTS_DIR = Path(__file__).resolve().parent


def _anyio_trio_requirement_unmet() -> str | None:
    """Why anyio's trio backend cannot run on the installed trio, or None.

    anyio declares its trio floor in its ``trio`` extra (4.16: trio >= 0.32);
    pip does not enforce it without the extra, so the oldest-trio sessions
    get a newer anyio whose test runner calls trio APIs that trio lacks.
    """
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    for line in requires("anyio") or []:
        req = Requirement(line)
        if req.name == "trio" and not req.specifier.contains(version("trio")):
            return f"anyio {version('anyio')} needs {req}, trio is {version('trio')}"
    return None


needs_anyio_trio_runner = pytest.mark.skipif(
    _anyio_trio_requirement_unmet() is not None,
    reason=str(_anyio_trio_requirement_unmet()),
)


def _child_env() -> dict[str, str]:
    # The child must import the very trio_uring this process imported.
    env = dict(os.environ)
    parent = str(Path(trio_uring.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH")) if p)
    env.pop("PYTHONWARNINGS", None)
    return env


def _run_child(code: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_child_env(),
        cwd=TESTS_DIR,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


async def _introspect() -> dict[str, Any]:
    def in_worker() -> str | None:
        try:
            return sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            return None

    return {
        "backend": trio.lowlevel.current_statistics().io_statistics.backend,
        "sniffio": sniffio.current_async_library(),
        "cvar": sniffio.current_async_library_cvar.get(),
        "worker": await trio.to_thread.run_sync(in_worker),
        "cancelled": anyio.get_cancelled_exc_class(),
        "current_backend": anyio._core._eventloop.get_async_backend(),
    }


def test_install_then_backend_trio_runs_on_io_uring() -> None:
    with trio_uring.installed():
        seen = anyio.run(_introspect, backend="trio")
    assert seen["backend"] == "io_uring"
    assert seen["sniffio"] == "trio"
    assert anyio.run(_introspect, backend="trio")["backend"] == "epoll"


def test_backend_trio_uring_runs_on_io_uring_and_looks_like_trio() -> None:
    from anyio._backends._trio import TrioBackend

    seen = anyio.run(_introspect, backend="trio_uring")
    assert seen["backend"] == "io_uring"
    assert seen["sniffio"] == "trio"
    assert seen["cvar"] == "trio"
    assert seen["worker"] is None  # trio clears it for worker threads
    assert seen["cancelled"] is trio.Cancelled
    assert seen["current_backend"] is TrioBackend
    # nothing left behind
    assert sniffio.current_async_library_cvar.get() is None
    assert anyio.run(_introspect, backend="trio")["backend"] == "epoll"
    assert _install._pending_requests == 0


def test_backend_class_is_anyios_trio_backend_subclass() -> None:
    from anyio._backends._trio import TrioBackend

    backend = anyio._core._eventloop.get_async_backend("trio_uring")
    assert issubclass(backend, TrioBackend)
    assert backend is not TrioBackend
    module = sys.modules["anyio._backends._trio_uring"]
    assert module.backend_class is backend
    # anyio's own lists stay its built-in backends
    assert "trio_uring" not in anyio.get_all_backends()


def test_args_and_return_value() -> None:
    async def main(a: int, b: str) -> tuple[int, str]:
        await anyio.sleep(0)
        return a, b

    assert anyio.run(main, 1, "x", backend="trio_uring") == (1, "x")


def test_exception_propagates() -> None:
    async def main() -> None:
        await anyio.sleep(0)
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        anyio.run(main, backend="trio_uring")
    assert _install._pending_requests == 0


def test_backend_options_pass_through() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    before: list[int] = []

    class Instrument(trio.abc.Instrument):
        def before_run(self) -> None:
            before.append(1)

    async def main() -> tuple[object, float, str]:
        await anyio.sleep(1000)  # autojump: instant
        return (
            trio.lowlevel.current_clock(),
            anyio.current_time(),
            trio.lowlevel.current_statistics().io_statistics.backend,
        )

    got_clock, now, backend = anyio.run(
        main,
        backend="trio_uring",
        backend_options={"clock": clock, "instruments": [Instrument()]},
    )
    assert got_clock is clock
    assert now >= 1000
    assert backend == "io_uring"
    assert before == [1]


def test_bad_fallback_option() -> None:
    with pytest.raises(ValueError, match="fallback"):
        anyio.run(_introspect, backend="trio_uring", backend_options={"fallback": "x"})


def test_already_running_is_refused() -> None:
    async def main() -> None:
        anyio.run(_introspect, backend="trio_uring")

    with pytest.raises(RuntimeError, match="Already running trio"):
        anyio.run(main, backend="trio_uring")


def test_unknown_backend_name_still_refused() -> None:
    with pytest.raises(LookupError):
        anyio.run(_introspect, backend="trio_uring2")


def test_importing_trio_uring_does_not_import_anyio() -> None:
    result = _run_child(
        """
        import json, sys
        import trio_uring
        print(json.dumps({"anyio": "anyio" in sys.modules}))
        """
    )
    assert result == {"anyio": False}


@pytest.mark.parametrize("order", ["anyio-first", "trio_uring-first"])
def test_registration_in_either_import_order(order: str) -> None:
    imports = (
        "import anyio; import trio_uring"
        if order == "anyio-first"
        else "import trio_uring; import anyio"
    )
    result = _run_child(
        f"""
        import json
        {imports}
        import trio, sniffio
        async def main():
            return (trio.lowlevel.current_statistics().io_statistics.backend,
                    sniffio.current_async_library())
        print(json.dumps(anyio.run(main, backend="trio_uring")))
        """
    )
    assert result == ["io_uring", "trio"]


def test_unadaptable_anyio_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from anyio._backends import _trio as anyio_trio

    from trio_uring import _anyio

    monkeypatch.delattr(anyio_trio.TestRunner, "_call_in_runner_task")
    with pytest.raises(ImportError, match="_call_in_runner_task"):
        _anyio._build_backend()


def test_without_trio_uring_imported_the_name_is_unknown() -> None:
    result = _run_child(
        """
        import json, anyio
        async def main():
            pass
        try:
            anyio.run(main, backend="trio_uring")
        except LookupError as exc:
            print(json.dumps(str(exc)))
        """
    )
    assert "trio_uring" in result


def test_unavailable_raises_or_falls_back() -> None:
    spec = importlib.util.spec_from_file_location(
        "_trio_uring_test_seccomp", TESTS_DIR / "_seccomp.py"
    )
    assert spec is not None
    assert spec.loader is not None
    seccomp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seccomp)
    code = """
        import json, warnings
        import anyio, trio, trio_uring
        async def main():
            return trio.lowlevel.current_statistics().io_statistics.backend
        out = {}
        try:
            anyio.run(main, backend="trio_uring")
        except trio_uring.UringUnavailableError:
            out["default"] = "raised"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out["fallback"] = anyio.run(
                main, backend="trio_uring", backend_options={"fallback": "epoll"}
            )
        out["warned"] = [w.category.__name__ for w in caught]
        print(json.dumps(out))
    """
    proc = seccomp.run_in_subprocess_with_denied_io_uring(
        1,  # EPERM
        textwrap.dedent(code),
        timeout=120,
        extra_env={"PYTHONPATH": _child_env()["PYTHONPATH"]},
    )
    if proc.returncode == seccomp.SKIP_EXIT_CODE:
        pytest.skip(f"cannot install a seccomp filter here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {
        "default": "raised",
        "fallback": "epoll",
        "warned": ["UringFallbackWarning"],
    }


# ---------------------------------------------------------------------------
# anyio's pytest plugin with anyio_backend = "trio_uring"

PLUGIN_TEST_FILE = """
import sniffio
import pytest
import trio
import trio_uring
from trio_uring import _install

def backend():
    return trio.lowlevel.current_statistics().io_statistics.backend

@pytest.fixture(scope="module", params=[
    pytest.param("trio_uring", id="name"),
    pytest.param(("trio_uring", {"restrict_keyboard_interrupt_to_checkpoints": True}),
                 id="tuple"),
    pytest.param("trio", id="plain-trio"),
])
def anyio_backend(request):
    return request.param

def expected(anyio_backend):
    name = anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]
    return "io_uring" if name == "trio_uring" else "epoll"

@pytest.fixture
async def agen_fixture(anyio_backend):
    yield backend()
    assert backend() == expected(anyio_backend)

@pytest.fixture
async def coro_fixture(anyio_backend):
    return sniffio.current_async_library()

@pytest.mark.anyio
async def test_backend(anyio_backend, agen_fixture, coro_fixture):
    assert backend() == expected(anyio_backend) == agen_fixture
    assert sniffio.current_async_library() == "trio" == coro_fixture
    if backend() == "io_uring":  # a guest run: no single-issuer ring
        flags = trio.lowlevel.current_statistics().io_statistics.setup_flags
        assert "DEFER_TASKRUN" not in flags
        assert "SINGLE_ISSUER" not in flags
    assert _install._pending_requests == 0

@pytest.mark.anyio
async def test_second_test_same_runner(anyio_backend):
    import anyio
    await anyio.sleep(0)
    assert backend() == expected(anyio_backend)
    assert _install._pending_requests == 0

def test_nothing_pending_afterwards():
    assert _install._pending_requests == 0
"""


@needs_anyio_trio_runner
def test_anyio_pytest_plugin_accepts_trio_uring(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PLUGIN_TEST_FILE)
    result = pytester.runpytest_subprocess("-p", "anyio", "-v")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(
        ["*test_backend?name?*PASSED*", "*test_backend?tuple?*PASSED*"]
    )


MOCK_CLOCK_TEST_FILE = """
import pytest
import trio
import trio.testing

@pytest.fixture
def anyio_backend():
    return ("trio_uring", {"clock": trio.testing.MockClock(autojump_threshold=0)})

@pytest.mark.anyio
async def test_clock_option_reaches_trio():
    assert isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    assert trio.lowlevel.current_statistics().io_statistics.backend == "io_uring"
    await trio.sleep(3600)
"""


@needs_anyio_trio_runner
def test_anyio_pytest_plugin_backend_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MOCK_CLOCK_TEST_FILE)
    result = pytester.runpytest_subprocess("-p", "anyio")
    result.assert_outcomes(passed=1)


NO_IMPORT_TEST_FILE = """
import pytest
import trio

@pytest.fixture
def anyio_backend():
    return "trio_uring"

@pytest.mark.anyio
async def test_on_io_uring():
    assert trio.lowlevel.current_statistics().io_statistics.backend == "io_uring"
"""


@needs_anyio_trio_runner
def test_anyio_pytest_plugin_needs_no_import(pytester: pytest.Pytester) -> None:
    # trio-uring's pytest11 entry point imports trio_uring, which registers
    # the name; a test module need not import it.
    pytester.makepyfile(NO_IMPORT_TEST_FILE)
    pytester.runpytest_subprocess("-p", "anyio").assert_outcomes(passed=1)
    # ...and the name really comes from there
    result = pytester.runpytest_subprocess("-p", "anyio", "-p", "no:trio_uring")
    result.assert_outcomes(failed=1)
