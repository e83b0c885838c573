"""io_uring unavailability: detection, diagnosis, and the epoll fallback.

The seccomp cases are exercised for real: each test spawns a fresh
interpreter, installs a seccomp filter there that makes the io_uring
syscalls fail with EPERM (Docker's default profile) or ENOSYS (kernel
without io_uring, or a "deny unknown syscalls" profile), and reports back
as JSON.  The sysctl and missing-feature cases would need global, root-only
changes, so they are covered through the pure ``diagnose`` function.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import trio_uring
from trio_uring._ring import diagnose

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="io_uring is Linux-only"
)


def _load_seccomp_helper() -> ModuleType:
    # Loaded by path so this works whatever the pytest import mode is and
    # whether or not tests/ is a package.
    path = Path(__file__).resolve().parent / "_seccomp.py"
    spec = importlib.util.spec_from_file_location("_trio_uring_test_seccomp", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_seccomp = _load_seccomp_helper()

SUBPROCESS_TIMEOUT = 60.0

DENIALS = [
    pytest.param(errno.EPERM, "seccomp-or-permission", id="EPERM"),
    pytest.param(errno.ENOSYS, "enosys", id="ENOSYS"),
]

# Per-cause substrings the error message must contain (case-insensitive);
# any one of each group is enough.
MESSAGE_HINTS = {
    "seccomp-or-permission": ("seccomp",),
    "enosys": ("enosys", "not implemented", "kernel"),
}


def _child_pythonpath() -> str:
    # The child must import the very trio_uring this process imported
    # (installed, editable or a source checkout on sys.path).
    package_parent = str(Path(trio_uring.__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join(p for p in (package_parent, existing) if p)


def _run_denied(errno_value: int, code: str) -> dict[str, Any]:
    """Run ``code`` with io_uring denied; it must print one JSON object as its
    last line of output.  Skips the test if seccomp is unusable here."""
    proc = _seccomp.run_in_subprocess_with_denied_io_uring(
        errno_value,
        textwrap.dedent(code),
        timeout=SUBPROCESS_TIMEOUT,
        extra_env={"PYTHONPATH": _child_pythonpath()},
    )
    if proc.returncode == _seccomp.SKIP_EXIT_CODE:
        pytest.skip(f"cannot install a seccomp filter here: {proc.stderr.strip()}")
    assert proc.returncode == 0, (
        f"child failed with status {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"child printed nothing; stderr:\n{proc.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _io_uring_disabled_sysctl() -> int | None:
    try:
        return int(Path("/proc/sys/kernel/io_uring_disabled").read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------
# The test helper itself


@pytest.mark.parametrize(
    "errno_value", [errno.EPERM, errno.ENOSYS], ids=["EPERM", "ENOSYS"]
)
def test_seccomp_helper_denies_io_uring_syscalls(errno_value: int) -> None:
    result = _run_denied(
        errno_value,
        """
        import ctypes, json

        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        params = ctypes.create_string_buffer(120)  # struct io_uring_params
        errnos = {}
        for nr in (425, 426, 427):
            ctypes.set_errno(0)
            res = libc.syscall(
                ctypes.c_long(nr), ctypes.c_long(8), ctypes.byref(params)
            )
            errnos[nr] = None if res >= 0 else ctypes.get_errno()
        print(json.dumps({"errnos": errnos}))
        """,
    )
    assert result["errnos"] == {
        "425": errno_value,
        "426": errno_value,
        "427": errno_value,
    }


def test_seccomp_helper_leaves_parent_alone() -> None:
    _run_denied(errno.EPERM, "print('{}')")
    err = _seccomp.probe_io_uring_setup()
    if err:
        name = errno.errorcode.get(err, err)
        pytest.skip(f"io_uring unavailable in the test process itself: {name}")


def test_seccomp_helper_refuses_unknown_arch(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the arch lookup is exercised: nothing is installed in this process.
    monkeypatch.setattr(_seccomp.platform, "machine", lambda: "riscv64")
    with pytest.raises(_seccomp.SeccompUnavailable, match="riscv64"):
        _seccomp._native_arch()


# ---------------------------------------------------------------------------
# Detection in the unrestricted test process


def test_available_in_parent() -> None:
    err = _seccomp.probe_io_uring_setup()
    if err:
        pytest.skip(f"io_uring unavailable here: {errno.errorcode.get(err, err)}")
    if _io_uring_disabled_sysctl():
        pytest.skip("kernel.io_uring_disabled is set")
    assert trio_uring.is_available() is True
    assert trio_uring.unavailable_reason() is None


# ---------------------------------------------------------------------------
# Detection and run()/install() with io_uring denied by seccomp


@pytest.mark.parametrize(("errno_value", "reason"), DENIALS)
def test_is_available_false(errno_value: int, reason: str) -> None:
    result = _run_denied(
        errno_value,
        """
        import json
        import trio_uring

        print(json.dumps({
            "available": trio_uring.is_available(),
            "reason": trio_uring.unavailable_reason(),
            "available_again": trio_uring.is_available(),
        }))
        """,
    )
    assert result["available"] is False
    assert result["available_again"] is False
    assert isinstance(result["reason"], str)
    assert result["reason"].strip()


_RUN_NO_FALLBACK = """
import json
import trio_uring

ran = []

async def main():
    ran.append(True)

try:
    trio_uring.run(main{kwargs})
except trio_uring.UringUnavailableError as exc:
    out = {{
        "raised": True,
        "is_runtime_error": isinstance(exc, RuntimeError),
        "errno": exc.errno,
        "reason": exc.reason,
        "message": str(exc),
    }}
else:
    out = {{"raised": False}}
out["ran"] = bool(ran)
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    "kwargs", ["", ", fallback=None"], ids=["default", "explicit-None"]
)
@pytest.mark.parametrize(("errno_value", "reason"), DENIALS)
def test_run_without_fallback_raises(
    errno_value: int, reason: str, kwargs: str
) -> None:
    result = _run_denied(errno_value, _RUN_NO_FALLBACK.format(kwargs=kwargs))
    assert result["raised"], "trio_uring.run() did not raise UringUnavailableError"
    assert result["ran"] is False, "user code ran before the error"
    assert result["is_runtime_error"] is True
    assert result["reason"] == reason
    assert result["errno"] == errno_value
    message = result["message"].lower()
    assert any(hint in message for hint in MESSAGE_HINTS[reason]), result["message"]


@pytest.mark.parametrize(("errno_value", "reason"), DENIALS)
def test_run_epoll_fallback_warns_once(errno_value: int, reason: str) -> None:
    result = _run_denied(
        errno_value,
        """
        import json, warnings
        import trio
        import trio_uring

        class Recorder:
            # trio.abc.Instrument duck type; proves trio kwargs are forwarded
            def __init__(self):
                self.runs = 0
            def before_run(self):
                self.runs += 1

        async def main(x):
            await trio.sleep(0)
            return trio.lowlevel.current_statistics().io_statistics.backend, x * 2

        recorder = Recorder()
        with warnings.catch_warnings(record=True) as caught:
            # "always" defeats the warnings registry: once-per-process must
            # be the library's own doing.
            warnings.simplefilter("always")
            results = [
                trio_uring.run(main, 1, fallback="epoll"),
                trio_uring.run(main, 2, fallback="epoll", instruments=[recorder]),
                trio_uring.run(main, 3, fallback="epoll"),
            ]
        Warn = trio_uring.UringFallbackWarning
        ours = [w for w in caught if issubclass(w.category, Warn)]
        print(json.dumps({
            "results": results,
            "warnings": [str(w.message) for w in ours],
            "is_runtime_warning": issubclass(Warn, RuntimeWarning),
            "instrument_runs": recorder.runs,
        }))
        """,
    )
    assert result["results"] == [["epoll", 2], ["epoll", 4], ["epoll", 6]]
    assert result["is_runtime_warning"] is True
    assert len(result["warnings"]) == 1, result["warnings"]
    assert "epoll" in result["warnings"][0].lower()
    assert result["instrument_runs"] == 1


@pytest.mark.parametrize(("errno_value", "reason"), DENIALS)
def test_install_epoll_fallback_warns_once(errno_value: int, reason: str) -> None:
    result = _run_denied(
        errno_value,
        """
        import json, warnings
        import trio
        import trio_uring

        async def main():
            await trio.sleep(0)
            return trio.lowlevel.current_statistics().io_statistics.backend

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trio_uring.install(fallback="epoll")
            backends = [trio.run(main), trio.run(main)]
            # run() after install() shares the same once-per-process warning
            backends.append(trio_uring.run(main, fallback="epoll"))
        Warn = trio_uring.UringFallbackWarning
        ours = [w for w in caught if issubclass(w.category, Warn)]
        print(json.dumps({
            "backends": backends,
            "warnings": [str(w.message) for w in ours],
        }))
        """,
    )
    assert result["backends"] == ["epoll", "epoll", "epoll"]
    assert len(result["warnings"]) == 1, result["warnings"]


@pytest.mark.parametrize(("errno_value", "reason"), DENIALS)
def test_install_without_fallback_raises(errno_value: int, reason: str) -> None:
    result = _run_denied(
        errno_value,
        """
        import json
        import trio
        import trio_uring

        ran = []

        async def main():
            ran.append(True)

        stage = "install"
        try:
            trio_uring.install(fallback=None)
            stage = "trio.run"
            trio.run(main)
        except trio_uring.UringUnavailableError as exc:
            out = {
                "raised": True,
                "stage": stage,
                "errno": exc.errno,
                "reason": exc.reason,
            }
        else:
            out = {"raised": False}
        out["ran"] = bool(ran)
        print(json.dumps(out))
        """,
    )
    # Raising from install() itself or from the later trio.run() are both
    # fine, as long as user code never runs.
    assert result["raised"], "no UringUnavailableError from install()/trio.run()"
    assert result["ran"] is False
    assert result["reason"] == reason
    assert result["errno"] == errno_value


# ---------------------------------------------------------------------------
# Pure diagnosis: causes that cannot be produced for real in a test


def test_diagnose_sysctl_disabled_for_all() -> None:
    exc = diagnose(errno.EPERM, 2, [])
    assert isinstance(exc, trio_uring.UringUnavailableError)
    assert isinstance(exc, RuntimeError)
    assert exc.reason == "sysctl-disabled"
    assert exc.errno == errno.EPERM
    assert "sysctl kernel.io_uring_disabled=0" in str(exc)


def test_diagnose_sysctl_disabled_for_unprivileged() -> None:
    exc = diagnose(errno.EPERM, 1, [])
    assert exc.reason == "sysctl-disabled"
    assert exc.errno == errno.EPERM
    assert "io_uring_group" in str(exc)


@pytest.mark.parametrize("sysctl", [0, None], ids=["sysctl-0", "sysctl-unreadable"])
def test_diagnose_eperm_without_sysctl_is_seccomp(sysctl: int | None) -> None:
    exc = diagnose(errno.EPERM, sysctl, [])
    assert exc.reason == "seccomp-or-permission"
    assert exc.errno == errno.EPERM
    assert "seccomp" in str(exc).lower()


@pytest.mark.parametrize("sysctl", [0, None], ids=["sysctl-0", "sysctl-unreadable"])
def test_diagnose_enosys(sysctl: int | None) -> None:
    exc = diagnose(errno.ENOSYS, sysctl, [])
    assert exc.reason == "enosys"
    assert exc.errno == errno.ENOSYS


def test_diagnose_missing_feature() -> None:
    exc = diagnose(0, 0, ["EXT_ARG"])
    assert isinstance(exc, trio_uring.UringUnavailableError)
    assert exc.reason == "missing-feature"
    assert exc.errno in (None, 0)
    assert "EXT_ARG" in str(exc)


def test_diagnose_messages_are_distinct() -> None:
    excs = [
        diagnose(errno.EPERM, 2, []),
        diagnose(errno.EPERM, 1, []),
        diagnose(errno.EPERM, 0, []),
        diagnose(errno.ENOSYS, 0, []),
        diagnose(0, 0, ["EXT_ARG"]),
    ]
    messages = [str(e) for e in excs]
    assert all(m.strip() for m in messages)
    assert len(set(messages)) == len(messages)
