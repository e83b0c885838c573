"""Test helper: make io_uring unavailable for real, using a seccomp filter.

``deny_io_uring(errno)`` installs a seccomp BPF filter in the *calling
process* so that ``io_uring_setup``, ``io_uring_enter`` and
``io_uring_register`` fail with the given errno, the way Docker's default
profile (EPERM) or a "deny unknown syscalls" profile (ENOSYS) does.  A seccomp
filter can never be removed, so only ever call it in a throwaway subprocess;
``run_in_subprocess_with_denied_io_uring`` does exactly that.

Pure ``ctypes``, no dependencies beyond the standard library, so that the
subprocess prelude can load this file by path before anything else is
imported.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import platform
import struct
import subprocess
import sys
from pathlib import Path

__all__ = [
    "IO_URING_SYSCALLS",
    "SKIP_EXIT_CODE",
    "SeccompUnavailable",
    "deny_io_uring",
    "probe_io_uring_setup",
    "run_in_subprocess_with_denied_io_uring",
]

# Syscall numbers.  Since Linux 5.1 new syscalls share one number across all
# architectures (asm-generic unified numbering), so io_uring is 425..427 on
# both x86_64 and aarch64.
NR_IO_URING_SETUP = 425
NR_IO_URING_ENTER = 426
NR_IO_URING_REGISTER = 427
IO_URING_SYSCALLS = (NR_IO_URING_SETUP, NR_IO_URING_ENTER, NR_IO_URING_REGISTER)

# machine -> (AUDIT_ARCH_* value, seccomp(2) syscall number)
_ARCHES: dict[str, tuple[int, int]] = {
    "x86_64": (0xC000003E, 317),  # AUDIT_ARCH_X86_64
    "aarch64": (0xC00000B7, 277),  # AUDIT_ARCH_AARCH64
}
_MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}

# On x86_64 the x32 ABI reports AUDIT_ARCH_X86_64 too, with this bit set in nr.
_X32_SYSCALL_BIT = 0x40000000

# prctl / seccomp constants (linux/prctl.h, linux/seccomp.h)
_PR_SET_SECCOMP = 22
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_MODE_FILTER = 2
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000
_SECCOMP_RET_DATA = 0x0000FFFF

# struct seccomp_data { int nr; __u32 arch; __u64 ip; __u64 args[6]; }
_OFF_NR = 0
_OFF_ARCH = 4

# classic BPF opcodes (linux/bpf_common.h)
_BPF_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
_BPF_ALU_AND_K = 0x04 | 0x50 | 0x00  # BPF_ALU | BPF_AND | BPF_K
_BPF_JMP_JEQ_K = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
_BPF_RET_K = 0x06 | 0x00  # BPF_RET | BPF_K

# Exit status used by the subprocess prelude when seccomp cannot be set up on
# this machine; callers should turn it into a test skip.
SKIP_EXIT_CODE = 77

# sizeof(struct io_uring_params)
_IO_URING_PARAMS_SIZE = 120


class SeccompUnavailable(RuntimeError):
    """Seccomp filtering cannot be used here; tests should skip."""


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [
        ("len", ctypes.c_ushort),
        ("filter", ctypes.POINTER(_SockFilter)),
    ]


def _stmt(code: int, k: int) -> tuple[int, int, int, int]:
    return (code, 0, 0, k)


def _jump(code: int, k: int, jt: int, jf: int) -> tuple[int, int, int, int]:
    return (code, jt, jf, k)


def _native_arch() -> tuple[int, int]:
    """(audit arch, seccomp syscall nr) of this process, or raise."""
    if not sys.platform.startswith("linux"):
        raise SeccompUnavailable(f"seccomp needs Linux, not {sys.platform}")
    if struct.calcsize("P") != 8:
        raise SeccompUnavailable("only 64-bit Python processes are supported")
    machine = platform.machine().lower()
    machine = _MACHINE_ALIASES.get(machine, machine)
    try:
        return _ARCHES[machine]
    except KeyError:
        raise SeccompUnavailable(
            f"no seccomp filter for architecture {machine!r} "
            f"(supported: {', '.join(_ARCHES)})"
        ) from None


def _build_program(
    audit_arch: int, errno_value: int
) -> list[tuple[int, int, int, int]]:
    ret_errno = _SECCOMP_RET_ERRNO | (errno_value & _SECCOMP_RET_DATA)
    setup, enter, register = IO_URING_SYSCALLS
    prog = [
        # A foreign arch (e.g. a 32-bit compat syscall) is let through: we
        # only claim to filter the native ABI of this 64-bit process.
        _stmt(_BPF_LD_W_ABS, _OFF_ARCH),
        _jump(_BPF_JMP_JEQ_K, audit_arch, 0, 5),
        _stmt(_BPF_LD_W_ABS, _OFF_NR),
        # Fold x32 syscalls onto their x86_64 numbers (harmless elsewhere:
        # no aarch64 syscall number has that bit set).
        _stmt(_BPF_ALU_AND_K, ~_X32_SYSCALL_BIT & 0xFFFFFFFF),
        _jump(_BPF_JMP_JEQ_K, setup, 3, 0),
        _jump(_BPF_JMP_JEQ_K, enter, 2, 0),
        _jump(_BPF_JMP_JEQ_K, register, 1, 0),
        _stmt(_BPF_RET_K, _SECCOMP_RET_ALLOW),
        _stmt(_BPF_RET_K, ret_errno),
    ]
    return prog


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def deny_io_uring(errno_value: int) -> None:
    """Make io_uring_setup/enter/register fail with ``errno_value`` from now
    on, in this process and all its threads and children.  Irreversible.

    Raises SeccompUnavailable if the filter cannot be installed here.
    """
    if not 0 < errno_value <= _SECCOMP_RET_DATA:
        raise ValueError(f"errno value out of range: {errno_value!r}")
    audit_arch, nr_seccomp = _native_arch()

    insns = _build_program(audit_arch, errno_value)
    filters = (_SockFilter * len(insns))(*(_SockFilter(*insn) for insn in insns))
    prog = _SockFprog(len(insns), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))

    libc = _libc()
    libc.prctl.restype = ctypes.c_int
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    libc.syscall.restype = ctypes.c_long

    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise SeccompUnavailable(
            f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(err)}"
        )

    # Prefer seccomp(2) with TSYNC so threads that already exist are covered
    # too; fall back to the prctl interface on kernels/sandboxes without it.
    res = libc.syscall(
        ctypes.c_long(nr_seccomp),
        ctypes.c_long(_SECCOMP_SET_MODE_FILTER),
        ctypes.c_long(_SECCOMP_FILTER_FLAG_TSYNC),
        ctypes.byref(prog),
    )
    if res == 0:
        return
    err = ctypes.get_errno()
    if err not in (_errno.ENOSYS, _errno.EINVAL):
        raise SeccompUnavailable(
            f"seccomp(SECCOMP_SET_MODE_FILTER) failed: {os.strerror(err)}"
        )
    if (
        libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0)
        != 0
    ):
        err = ctypes.get_errno()
        raise SeccompUnavailable(
            f"prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER) failed: {os.strerror(err)}"
        )


def probe_io_uring_setup() -> int:
    """Call io_uring_setup(8, &params) directly; close the ring if one was
    made.  Returns 0 on success, else the errno."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    params = ctypes.create_string_buffer(_IO_URING_PARAMS_SIZE)
    fd = libc.syscall(
        ctypes.c_long(NR_IO_URING_SETUP), ctypes.c_long(8), ctypes.byref(params)
    )
    if fd < 0:
        return ctypes.get_errno()
    os.close(fd)
    return 0


_PRELUDE = """\
import importlib.util as _ilu, sys as _sys
_spec = _ilu.spec_from_file_location("_seccomp_prelude", {path!r})
_mod = _ilu.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
try:
    _mod.deny_io_uring({errno_value!r})
except _mod.SeccompUnavailable as _exc:
    print("SECCOMP-UNAVAILABLE:", _exc, file=_sys.stderr)
    raise SystemExit({skip_code!r})
_code = _sys.argv.pop(1)
del _ilu, _spec, _mod
exec(compile(_code, "<denied-io-uring>", "exec"), {{"__name__": "__main__"}})
"""


def run_in_subprocess_with_denied_io_uring(
    errno_value: int,
    code: str,
    *,
    timeout: float = 60.0,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh ``sys.executable -c`` where io_uring syscalls
    fail with ``errno_value``.  Output is captured as text.

    If seccomp cannot be used the child exits with SKIP_EXIT_CODE and a
    "SECCOMP-UNAVAILABLE: ..." line on stderr.
    """
    prelude = _PRELUDE.format(
        path=str(Path(__file__).resolve()),
        errno_value=errno_value,
        skip_code=SKIP_EXIT_CODE,
    )
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    if extra_env:
        env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-c", prelude, code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        # not the repository root: there the source tree (without the
        # compiled _ring_ffi) would shadow the installed trio_uring
        cwd=Path(__file__).resolve().parent,
    )
