"""The thin Python face of the C ring core (``csrc/ring.c``).

Everything above this module speaks in opcodes, fds, addresses and user_data;
nothing above it knows the SQE layout.  This module owns:

* creating a ring with the best setup flags this kernel accepts, and turning
  every way io_uring can be unavailable into a :class:`UringUnavailableError`
  that names the cause and the fix (:func:`diagnose`);
* the opcode probe, so callers can ask ``ring.supports(op)``;
* submit+wait in one ``io_uring_enter`` and batched CQE harvesting.

Setup flags.  ``DEFER_TASKRUN`` (with its prerequisite ``SINGLE_ISSUER``)
makes completions post only when the run thread enters the kernel to wait,
which is exactly what trio's loop does between batches, and it avoids
interrupting the thread with task-work IPIs.  It also forbids any other
thread from entering the ring, so guest mode (whose ``get_events`` runs in a
worker thread) gets a ring without those two flags.  ``COOP_TASKRUN`` joins
them for the same reason.  ``SUBMIT_ALL`` keeps one bad SQE from stranding
the rest of a batch.  Each flag is dropped, most recent kernel feature first,
when the kernel rejects it with EINVAL.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Sequence
from typing import Final

from ._ring_ffi import ffi, lib

# --- opcodes (kernel UAPI enum io_uring_op; names as users see them) ---------
OPCODE_NAMES: Final[tuple[str, ...]] = (
    "NOP", "READV", "WRITEV", "FSYNC", "READ_FIXED", "WRITE_FIXED", "POLL_ADD",
    "POLL_REMOVE", "SYNC_FILE_RANGE", "SENDMSG", "RECVMSG", "TIMEOUT",
    "TIMEOUT_REMOVE", "ACCEPT", "ASYNC_CANCEL", "LINK_TIMEOUT", "CONNECT",
    "FALLOCATE", "OPENAT", "CLOSE", "FILES_UPDATE", "STATX", "READ", "WRITE",
    "FADVISE", "MADVISE", "SEND", "RECV", "OPENAT2", "EPOLL_CTL", "SPLICE",
    "PROVIDE_BUFFERS", "REMOVE_BUFFERS", "TEE", "SHUTDOWN", "RENAMEAT",
    "UNLINKAT", "MKDIRAT", "SYMLINKAT", "LINKAT", "MSG_RING", "FSETXATTR",
    "SETXATTR", "FGETXATTR", "GETXATTR", "SOCKET", "URING_CMD", "SEND_ZC",
    "SENDMSG_ZC", "READ_MULTISHOT", "WAITID", "FUTEX_WAIT", "FUTEX_WAKE",
    "FUTEX_WAITV", "FIXED_FD_INSTALL", "FTRUNCATE", "BIND", "LISTEN",
)  # fmt: skip
OP: Final[dict[str, int]] = {name: i for i, name in enumerate(OPCODE_NAMES)}

OP_NOP: Final = OP["NOP"]
OP_POLL_ADD: Final = OP["POLL_ADD"]
OP_READ: Final = OP["READ"]
OP_ASYNC_CANCEL: Final = OP["ASYNC_CANCEL"]
OP_LINK_TIMEOUT: Final = OP["LINK_TIMEOUT"]
OP_TIMEOUT: Final = OP["TIMEOUT"]

# --- setup flags ---------------------------------------------------------------
SETUP_CQSIZE: Final = 1 << 3
SETUP_SUBMIT_ALL: Final = 1 << 7
SETUP_COOP_TASKRUN: Final = 1 << 8
SETUP_TASKRUN_FLAG: Final = 1 << 9
SETUP_SINGLE_ISSUER: Final = 1 << 12
SETUP_DEFER_TASKRUN: Final = 1 << 13
SETUP_FLAG_NAMES: Final[dict[int, str]] = {
    SETUP_CQSIZE: "CQSIZE",
    SETUP_SUBMIT_ALL: "SUBMIT_ALL",
    SETUP_COOP_TASKRUN: "COOP_TASKRUN",
    SETUP_TASKRUN_FLAG: "TASKRUN_FLAG",
    SETUP_SINGLE_ISSUER: "SINGLE_ISSUER",
    SETUP_DEFER_TASKRUN: "DEFER_TASKRUN",
}

# --- features we require ----------------------------------------------------------
FEAT_NODROP: Final = 1 << 1
FEAT_EXT_ARG: Final = 1 << 8
REQUIRED_FEATURES: Final[dict[str, int]] = {
    "NODROP": FEAT_NODROP,
    "EXT_ARG": FEAT_EXT_ARG,
}

# --- SQE / CQE flags ------------------------------------------------------------
IOSQE_IO_LINK: Final = 1 << 2
IOSQE_IO_HARDLINK: Final = 1 << 3
IOSQE_BUFFER_SELECT: Final = 1 << 5
IOSQE_CQE_SKIP_SUCCESS: Final = 1 << 6
#: TIMEOUT/LINK_TIMEOUT: the timespec is an absolute CLOCK_MONOTONIC time
TIMEOUT_ABS: Final = 1 << 0
#: user_data of linked timeouts: the C harvest drops their CQEs (their
#: operation's own CQE says what happened)
UD_LINK_TIMEOUT: Final = 1
FEAT_CQE_SKIP: Final = 1 << 11
CQE_F_BUFFER: Final = 1 << 0
CQE_BUFFER_SHIFT: Final = 16
RECV_MULTISHOT: Final = 1 << 1
ACCEPT_MULTISHOT: Final = 1 << 0
CQE_F_MORE: Final = 1 << 1
POLL_ADD_MULTI: Final = 1 << 0
ASYNC_CANCEL_ALL: Final = 1 << 0
ASYNC_CANCEL_ANY: Final = 1 << 2

POLLIN: Final = 0x001
POLLOUT: Final = 0x004

DEFAULT_ENTRIES: Final = 1024
DEFAULT_CQ_ENTRIES: Final = 8192
HARVEST_BATCH: Final = 1024

SYSCTL_PATH: Final = "/proc/sys/kernel/io_uring_disabled"


class UringUnavailableError(RuntimeError):
    """io_uring cannot be used in this process.

    ``reason`` is one of ``"sysctl-disabled"``, ``"seccomp-or-permission"``,
    ``"enosys"`` or ``"missing-feature"``; ``errno`` is the error the kernel
    returned (``None`` for a missing feature).  The message names the cause
    and the fix.  Pass ``fallback="epoll"`` to :func:`trio_uring.run` or
    :func:`trio_uring.install` to run on epoll instead.
    """

    def __init__(self, message: str, *, reason: str, errno: int | None) -> None:
        super().__init__(message)
        self.reason = reason
        self.errno = errno


def read_io_uring_disabled(path: str = SYSCTL_PATH) -> int | None:
    """The ``kernel.io_uring_disabled`` sysctl, or None when the kernel has none."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def diagnose(
    err: int, io_uring_disabled: int | None, missing_features: Sequence[str]
) -> UringUnavailableError:
    """Explain why io_uring is unavailable, from what the kernel told us.

    ``err`` is the (positive) errno of ``io_uring_setup`` (0 when setup
    worked), ``io_uring_disabled`` the sysctl value (None: no such sysctl),
    ``missing_features`` the names of required features the ring lacks.
    """
    if err == 0 and missing_features:
        names = ", ".join(f"IORING_FEAT_{f}" for f in missing_features)
        return UringUnavailableError(
            f"io_uring is present but this kernel lacks {names}, which trio-uring "
            "requires (Linux 5.11 or newer has them). Upgrade the kernel, or pass "
            'fallback="epoll" to run on epoll.',
            reason="missing-feature",
            errno=None,
        )
    if err == _errno.EPERM and io_uring_disabled == 2:
        return UringUnavailableError(
            "io_uring is disabled for every process by the sysctl "
            "kernel.io_uring_disabled=2 (io_uring_setup: EPERM). Fix: "
            "`sysctl kernel.io_uring_disabled=0` as root, or pass "
            'fallback="epoll".',
            reason="sysctl-disabled",
            errno=err,
        )
    if err == _errno.EPERM and io_uring_disabled == 1:
        return UringUnavailableError(
            "io_uring is restricted by the sysctl kernel.io_uring_disabled=1: only "
            "root (CAP_SYS_ADMIN) and members of the group named by "
            "kernel.io_uring_group may create rings (io_uring_setup: EPERM). Fix: "
            "add this user to that group, set `sysctl kernel.io_uring_disabled=0`, "
            'or pass fallback="epoll".',
            reason="sysctl-disabled",
            errno=err,
        )
    if err in (_errno.EPERM, _errno.EACCES):
        return UringUnavailableError(
            f"io_uring_setup was refused ({_errno.errorcode[err]}): a seccomp filter "
            "(Docker's and Podman's default profiles block io_uring), an LSM policy "
            "or missing permissions. Fix: allow io_uring_setup, io_uring_enter and "
            "io_uring_register in the container's seccomp profile (for example "
            '`docker run --security-opt seccomp=<profile>`), or pass fallback="epoll".',
            reason="seccomp-or-permission",
            errno=err,
        )
    if err == _errno.ENOSYS:
        return UringUnavailableError(
            "io_uring_setup does not exist here (ENOSYS): the kernel was built "
            "without CONFIG_IO_URING, or a seccomp filter reports it as missing. "
            'Fix: use a kernel with io_uring (5.11+), or pass fallback="epoll".',
            reason="enosys",
            errno=err,
        )
    name = _errno.errorcode.get(err, str(err))
    return UringUnavailableError(
        f"io_uring_setup failed with {name}: {os.strerror(err)}. "
        'Pass fallback="epoll" to run on epoll.',
        reason="seccomp-or-permission" if err == _errno.EACCES else "setup-failed",
        errno=err,
    )


def _flag_candidates(guest: bool) -> list[int]:
    base = SETUP_SUBMIT_ALL
    if guest:
        return [base, 0]
    coop = SETUP_COOP_TASKRUN | SETUP_TASKRUN_FLAG
    return [
        base | coop | SETUP_SINGLE_ISSUER | SETUP_DEFER_TASKRUN,
        base | coop | SETUP_SINGLE_ISSUER,
        base | coop,
        base,
        0,
    ]


class Ring:
    """One io_uring instance.  Not thread-safe: one thread drives it at a time."""

    def __init__(
        self,
        *,
        entries: int = DEFAULT_ENTRIES,
        cq_entries: int = DEFAULT_CQ_ENTRIES,
        guest: bool = False,
        flags: int | None = None,
    ) -> None:
        self._r = ffi.new("struct tu_ring *")
        self._r.fd = -1
        candidates = [flags] if flags is not None else _flag_candidates(guest)
        err = _errno.EINVAL
        for cand in candidates:
            ret = lib.tu_ring_init(self._r, entries, cq_entries, cand)
            if ret == 0:
                err = 0
                break
            err = -ret
            if err != _errno.EINVAL:
                break
        if err:
            raise diagnose(err, read_io_uring_disabled(), [])
        missing = [
            n for n, bit in REQUIRED_FEATURES.items() if not self._r.features & bit
        ]
        if missing:
            lib.tu_ring_exit(self._r)
            raise diagnose(0, None, missing)
        self.fd: int = self._r.fd
        self.setup_flags: int = self._r.setup_flags
        self.features: int = self._r.features
        self.sq_entries: int = self._r.sq_entries
        self.cq_entries: int = self._r.cq_entries
        probe = ffi.new("unsigned char[]", 256)
        n = lib.tu_probe(self._r, probe, 256)
        self._supported = (
            frozenset(i for i in range(256) if probe[i]) if n > 0 else frozenset()
        )
        self._cqe_buf = ffi.new("int64_t[]", 3 * HARVEST_BATCH)
        self.ptr = self._r  # for the manager's hot paths (lib calls)
        self._backlog: list[int] = []
        self._harvested = 0  # CQEs left in _cqe_buf by wait()
        self.closed = False

    # --- facts ------------------------------------------------------------------
    def supports(self, opcode: int) -> bool:
        return opcode in self._supported

    @property
    def setup_flag_names(self) -> list[str]:
        return [
            name for bit, name in SETUP_FLAG_NAMES.items() if self.setup_flags & bit
        ]

    def submitted_counts(self) -> dict[str, int]:
        counts = self._r.submitted
        out: dict[str, int] = {}
        for i in range(256):
            c = counts[i]
            if c:
                out[OPCODE_NAMES[i] if i < len(OPCODE_NAMES) else f"OP_{i}"] = int(c)
        return out

    @property
    def enters(self) -> int:
        return int(self._r.enters)

    # --- SQEs ---------------------------------------------------------------------
    def prep(
        self,
        opcode: int,
        fd: int,
        addr: int = 0,
        length: int = 0,
        offset: int = 0,
        op_flags: int = 0,
        user_data: int = 0,
        sqe_flags: int = 0,
        buf_index: int = 0,
        file_index: int = 0,
        ioprio: int = 0,
    ) -> int:
        """Queue one SQE; returns its SQ position (for :meth:`unprep`).

        ``buf_index`` doubles as the buffer group for IOSQE_BUFFER_SELECT;
        ``ioprio`` carries per-op flags such as IORING_RECV_MULTISHOT.
        """
        args = (
            self._r, opcode, sqe_flags, fd, addr, length, offset, op_flags,
            user_data, buf_index, file_index, ioprio,
        )  # fmt: skip
        pos: int = lib.tu_prep(*args)
        while pos < 0:
            self.flush()
            pos = lib.tu_prep(*args)
        return pos

    def prep_timeout(
        self, opcode: int, ns: int, user_data: int, *, sqe_flags: int = 0,
        count: int = 0, timeout_flags: int = 0,
    ) -> int:  # fmt: skip
        pos: int = lib.tu_prep_timeout(
            self._r, opcode, sqe_flags, ns, count, timeout_flags, user_data
        )
        while pos < 0:
            self.flush()
            pos = lib.tu_prep_timeout(
                self._r, opcode, sqe_flags, ns, count, timeout_flags, user_data
            )
        return pos

    def prep_poll(self, fd: int, mask: int, user_data: int) -> int:
        """Queue a one-shot POLL_ADD; returns its SQ position."""
        pos: int = lib.tu_prep_poll(self._r, fd, mask, user_data)
        while pos < 0:
            self.flush()
            pos = lib.tu_prep_poll(self._r, fd, mask, user_data)
        return pos

    def unprep(self, position: int, user_data: int) -> bool:
        """Turn a queued SQE into a NOP.  False if the kernel already has it."""
        return bool(lib.tu_unprep(self._r, position, user_data) == 0)

    def is_queued(self, position: int, user_data: int) -> bool:
        """Whether that SQE still waits in the SQ (not yet seen by the kernel)."""
        return position >= 0 and bool(lib.tu_is_queued(self._r, position, user_data))

    def sq_free(self) -> int:
        return self.sq_entries - int(lib.tu_sq_pending(self._r))

    def sq_pending(self) -> int:
        return int(lib.tu_sq_pending(self._r))

    def flush(self) -> None:
        """Hand every queued SQE to the kernel now, without waiting."""
        while lib.tu_sq_pending(self._r):
            ret = lib.tu_enter(self._r, 0, 0)
            if ret >= 0 or ret == -_errno.EINTR:
                continue
            if ret in (-_errno.EBUSY, -_errno.EAGAIN):
                # CQ pressure: set completions aside (the next harvest hands
                # them out first) so the kernel has room, then go on.
                if not self._stash():
                    raise OSError(-ret, os.strerror(-ret))
                continue
            raise OSError(-ret, os.strerror(-ret))

    def _stash(self) -> bool:
        cqes = self.harvest()
        self._backlog += cqes
        return bool(cqes)

    # --- submit + wait ------------------------------------------------------------
    def enter(self, min_complete: int, timeout_ns: int) -> int:
        """Submit and wait.  Returns lib.tu_enter's value (count or -errno)."""
        return int(lib.tu_enter(self._r, min_complete, timeout_ns))

    def wait(self, timeout_ns: int) -> int:
        """Submit, wait, harvest (lib.tu_wait).

        Returns the number of CQEs harvested (> 0; take them with
        :meth:`take`), 0 on timeout, or -errno.
        """
        if self._harvested:  # not taken yet: never overwrite them
            return self._harvested
        if self._backlog:
            return len(self._backlog) // 3
        n = int(lib.tu_wait(self._r, timeout_ns, self._cqe_buf, HARVEST_BATCH))
        if n > 0:
            self._harvested = n
        return n

    def take(self) -> list[int]:
        """CQEs from the last :meth:`wait`, else a fresh :meth:`harvest`."""
        n = self._harvested
        if n:
            self._harvested = 0
            out: list[int] = ffi.unpack(self._cqe_buf, 3 * n)
            return out
        return self.harvest()

    def cq_ready(self) -> int:
        return int(lib.tu_cq_ready(self._r)) + len(self._backlog) // 3

    def harvest(self) -> list[int]:
        """Take up to HARVEST_BATCH CQEs as a flat [ud, res, flags, ...] list."""
        if self._harvested:
            return self.take()
        if self._backlog:
            out, self._backlog = self._backlog, []
            return out
        return self._harvest_ring()

    def _harvest_ring(self) -> list[int]:
        n = lib.tu_harvest(self._r, self._cqe_buf, HARVEST_BATCH)
        if n < 0:
            raise OSError(-n, os.strerror(-n))
        return ffi.unpack(self._cqe_buf, 3 * n) if n else []

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            lib.tu_ring_exit(self._r)


def probe_available() -> UringUnavailableError | None:
    """Try to create (and close) a small ring; the error if that fails."""
    try:
        Ring(entries=4, cq_entries=8, guest=True).close()
    except UringUnavailableError as exc:
        return exc
    return None
