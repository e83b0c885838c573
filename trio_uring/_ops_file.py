"""Native file and path operations: the kernel does the work, trio waits.

Each function here is one io_uring opcode with a trio-style signature that
mirrors its ``os`` counterpart (``read`` ~ ``os.read``/``os.pread``,
``openat`` ~ ``os.open``, ``statx`` ~ ``os.stat``...).  They all follow one
shape:

1. validate the arguments, raising what ``os.*`` raises: TypeError for a
   non-buffer (and for a read-only buffer where the kernel must write, where
   ``os.readv`` says BufferError), ValueError for a negative size or an
   embedded NUL, OverflowError for a size the kernel cannot take, EBADF for
   a negative fd;
2. find the running :class:`~trio_uring._manager.UringIOManager`;
3. if this kernel lacks the opcode (``IORING_REGISTER_PROBE``), run the
   ``os`` equivalent in a worker thread (``trio.to_thread.run_sync`` with its
   default, non-abandoning cancellation: the call finishes, its result is
   delivered and Cancelled comes at the next checkpoint, the same contract
   as an in-flight kernel op);
4. otherwise fill the SQE fields and ``await manager.submit(...)``, passing
   as ``keep`` every object whose memory the kernel may read or write (the
   buffers, the iovec array, the NUL-terminated paths, the statx buffer), so
   it stays alive until the op's final CQE whatever happens to the task.
   The caller's own buffers are borrowed through ``ffi.from_buffer`` views
   that are released as soon as ``submit`` returns or raises (the kernel is
   done with them by then), so, as with ``os.write``, a bytearray can be
   resized or a memoryview released right after the call.

The cancellation contract is :meth:`UringIOManager.submit`'s: cancelled
before the SQE reached the kernel means nothing happened; cancelled later
means the kernel decides (``-ECANCELED``: nothing happened, Cancelled;
anything else: the result is delivered, e.g. the fd an ``openat`` created is
returned and not leaked, and Cancelled surfaces at the next checkpoint).

SQE field use follows ``struct io_uring_sqe`` in the kernel UAPI; ``submit``
takes ``fd, addr, len, off, op_flags`` (the per-op flags union) and
``file_index`` (which shares its slot with ``splice_fd_in``).  Where an op
needs a second dirfd (renameat, linkat) it goes in ``len``; a second path
(renameat, symlinkat, linkat) or the statx buffer goes in ``addr2``, which
is the ``off`` slot; splice's input offset goes in ``splice_off_in``, which is
the ``addr`` slot.  A dirfd of ``AT_FDCWD`` in the 32-bit ``len`` slot is
passed as its two's-complement bit pattern; the kernel reads it back as an
int.

Errors: a negative CQE result is raised by ``submit`` as OSError(errno); the
path operations re-raise it with the path(s) attached, as ``os.*`` does, so
``openat("missing")`` raises ``FileNotFoundError(2, ..., "missing")``.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import functools
import os
import struct
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import trio

from . import _native
from ._manager import FdLike, UringIOManager
from ._ring import OP
from ._ring_ffi import ffi

__all__ = [
    "AT_EMPTY_PATH",
    "AT_FDCWD",
    "AT_REMOVEDIR",
    "AT_SYMLINK_FOLLOW",
    "AT_SYMLINK_NOFOLLOW",
    "MAX_RW_COUNT",
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "RENAME_WHITEOUT",
    "RESOLVE_BENEATH",
    "RESOLVE_CACHED",
    "RESOLVE_IN_ROOT",
    "RESOLVE_NO_MAGICLINKS",
    "RESOLVE_NO_SYMLINKS",
    "RESOLVE_NO_XDEV",
    "STATX_BASIC_STATS",
    "close",
    "fallocate",
    "fdatasync",
    "fsync",
    "ftruncate",
    "linkat",
    "mkdirat",
    "openat",
    "openat2",
    "read",
    "readinto",
    "readv",
    "renameat",
    "splice",
    "statx",
    "symlinkat",
    "tee",
    "unlinkat",
    "write",
    "writev",
]

T = TypeVar("T")
StrOrBytesPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]

# --- UAPI constants (linux/fcntl.h, linux/stat.h, linux/openat2.h, fs.h) -------
AT_FDCWD = _native.AT_FDCWD
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000
STATX_BASIC_STATS = 0x7FF
RENAME_NOREPLACE = 1 << 0
RENAME_EXCHANGE = 1 << 1
RENAME_WHITEOUT = 1 << 2
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
RESOLVE_CACHED = 0x20
IORING_FSYNC_DATASYNC = 1 << 0
SPLICE_F_FD_IN_FIXED = 1 << 31
#: the kernel's per-call cap on a read or write (MAX_RW_COUNT: INT_MAX & PAGE_MASK
#: with 4 KiB pages); longer requests transfer at most this much, as with os.*
MAX_RW_COUNT = 0x7FFFF000
_U32 = 0xFFFFFFFF
_IOV_WORDS = "uint64_t[]" if ffi.sizeof("uintptr_t") == 8 else "uint32_t[]"
_SYS_OPENAT2 = 437  # the same number on every architecture (unified table)

_READ = OP["READ"]
_WRITE = OP["WRITE"]
_READV = OP["READV"]
_WRITEV = OP["WRITEV"]
_OPENAT = OP["OPENAT"]
_OPENAT2 = OP["OPENAT2"]
_CLOSE = OP["CLOSE"]
_STATX = OP["STATX"]
_FSYNC = OP["FSYNC"]
_FALLOCATE = OP["FALLOCATE"]
_FTRUNCATE = OP["FTRUNCATE"]
_RENAMEAT = OP["RENAMEAT"]
_UNLINKAT = OP["UNLINKAT"]
_MKDIRAT = OP["MKDIRAT"]
_SYMLINKAT = OP["SYMLINKAT"]
_LINKAT = OP["LINKAT"]
_SPLICE = OP["SPLICE"]
_TEE = OP["TEE"]

_FD_MAX = 0x7FFFFFFF
_SIZE_MAX = 0x7FFFFFFF
_OFFSET_END = 1 << 63
_CURRENT_POSITION = _native.CURRENT_POSITION

# struct statx (linux/stat.h), the first 152 of its 256 bytes:
#   mask blksize attributes nlink uid gid mode __spare0 ino size blocks
#   attributes_mask, then atime btime ctime mtime (i64 sec, u32 nsec, i32 pad),
#   rdev_major rdev_minor dev_major dev_minor, mnt_id
_STATX_LAYOUT = struct.Struct("=IIQIIIHHQQQQ" + "qIi" * 4 + "IIIIQ")
_STATX_SIZE = 256


# --- helpers ------------------------------------------------------------------
def _addr(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


async def _in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The fallback path: ``fn(*args, **kwargs)`` in a worker thread.

    Uses ``trio.to_thread.run_sync``'s default cancellation (not abandoned:
    the call runs to completion), which is the same name-independent
    behaviour on every trio we support (the keyword was ``cancellable``
    before trio 0.23 and is ``abandon_on_cancel`` since).
    """
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def _with_paths(exc: OSError, path: object, path2: object = None) -> OSError:
    """``exc`` with the filename(s) attached, as ``os.*`` would raise it.

    Like ``os.*``, the filename is the path as str or bytes (a
    :class:`pathlib.Path` is given as its ``os.fspath``), an fd as the int.
    """
    if exc.errno is None:
        return exc
    path = _filename(path)
    if path2 is None:
        return OSError(exc.errno, exc.strerror, path)
    return OSError(exc.errno, exc.strerror, path, None, _filename(path2))


def _filename(path: object) -> object:
    if isinstance(path, (str, bytes, int)):
        return path
    return os.fspath(path)  # type: ignore[call-overload]


def _dir_fd(dir_fd: FdLike | None) -> int:
    return AT_FDCWD if dir_fd is None else _native.check_fd(dir_fd)


def _u32(fd: int) -> int:
    """A (possibly negative, e.g. AT_FDCWD) int for a 32-bit SQE field."""
    return fd & _U32


_check_flags = _native.check_flags


def _check_position(value: object, what: str) -> int:
    """A file offset or length that must be given (None is not allowed)."""
    if not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"negative {what}")
    if value >= 1 << 63:
        raise OverflowError(f"{what} too large")
    return value


def _opt_offset(value: int | None, what: str) -> int:
    """None (the fd's own position) or a non-negative offset, for splice."""
    if value is None:
        return _native.CURRENT_POSITION
    if not isinstance(value, int):
        raise TypeError(
            f"{what} must be an integer or None, not {type(value).__name__}"
        )
    if value < 0:
        raise ValueError(f"negative {what}")
    if value >= 1 << 63:
        raise OverflowError(f"{what} too large")
    return value


_libc: ctypes.CDLL | None = None


def _libc_call(name: str, *args: Any) -> int:
    """Call a libc function by name (fallbacks with no ``os`` equivalent)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(_libc, name)
    ret = int(fn(*args))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


async def _rw_borrowing(
    manager: UringIOManager, opcode: int, fd: int, view: Any, length: int, offset: int
) -> int:
    """:func:`_submit_borrowing` for one buffer, through ``submit_rw``."""
    try:
        result = await manager.submit_rw(opcode, fd, view, length, offset)
    except GeneratorExit:
        raise
    except BaseException:
        ffi.release(view)
        raise
    ffi.release(view)
    return result


async def _submit_borrowing(
    manager: UringIOManager,
    opcode: int,
    fd: int,
    addr: int,
    length: int,
    offset: int,
    borrowed: list[Any],
    keep: object,
) -> int:
    """``manager.submit`` for an op on the caller's own buffers.

    ``borrowed`` holds the ``ffi.from_buffer`` views of them.  Once submit
    has returned or raised, the kernel is done with that memory (an op it
    had is over, an op that never reached it was turned into a NOP), so the
    views are released at once, as ``os.write`` and friends release theirs:
    the caller may resize the bytearray or release the memoryview right
    away, rather than after the op's final CQE.  The one exception is
    GeneratorExit: the coroutine was thrown away mid-operation, the kernel
    may still use the memory, and only ``keep`` (held by the op until its
    final CQE) protects it.
    """
    try:
        result = await manager.submit(opcode, fd, addr, length, offset, keep=keep)
    except GeneratorExit:
        raise
    except BaseException:
        _release(borrowed)
        raise
    _release(borrowed)
    return result


def _release(borrowed: list[Any]) -> None:
    for view in borrowed:
        ffi.release(view)


def _writable_buffer(buf: Any) -> tuple[Any, int, int]:
    """_native.writable_buffer, with a read-only buffer a TypeError too.

    (cffi's ``from_buffer(..., require_writable=True)`` raises BufferError
    for a read-only object such as bytes.)
    """
    try:
        return _native.writable_buffer(buf)
    except BufferError:
        raise TypeError(
            f"a writable bytes-like object is required, not read-only "
            f"{type(buf).__name__}"
        ) from None


def _buffers(
    buffers: Iterable[Any], writable: bool
) -> tuple[list[Any], list[Any], Any]:
    """(the buffers as a list, their cffi views, iovec array) for readv/writev.

    ``struct iovec`` is ``{void *iov_base; size_t iov_len}``: two unsigned
    words of pointer width on Linux, so an array of such pairs is an iovec
    array without a cdef for it.
    """
    if isinstance(buffers, (bytes, bytearray, memoryview, str)):
        raise TypeError("buffers must be a sequence of bytes-like objects")
    try:
        items = list(buffers)
    except TypeError:
        raise TypeError(
            f"buffers must be a sequence of bytes-like objects, "
            f"not {type(buffers).__name__}"
        ) from None
    views: list[Any] = []
    iov = ffi.new(_IOV_WORDS, 2 * max(len(items), 1))
    try:
        for i, item in enumerate(items):
            view, addr, length = (
                _writable_buffer(item) if writable else _native.readable_buffer(item)
            )
            views.append(view)
            iov[2 * i] = addr
            iov[2 * i + 1] = length
    except BaseException:
        _release(views)
        raise
    return items, views, iov


# --- read / write -------------------------------------------------------------
async def read(fd: FdLike, nbytes: int, offset: int | None = None) -> bytes:
    """Read up to ``nbytes`` bytes from ``fd`` (``IORING_OP_READ``).

    Like :func:`os.read` (``offset=None``: from the file's current position,
    which advances) or :func:`os.pread` (``offset`` given: from there, the
    position is untouched).  Waits for data on pipes and sockets without
    blocking the thread (on Linux 6.x even when the fd is ``O_NONBLOCK``,
    where :func:`os.read` would raise BlockingIOError).

    :param fd: a file descriptor, or an object with ``fileno()``.
    :param nbytes: the most bytes to read (``0 <= nbytes < 2**31``).
    :param offset: None, or the byte offset to read at.
    :returns: the bytes read; ``b""`` at end of file.
    :raises OSError: from the kernel (``EBADF`` for a closed fd...).
    :raises ValueError: for a negative ``nbytes`` or ``offset``.
    :raises OverflowError: for an ``nbytes`` or ``offset`` too large.
    :raises trio.ClosedResourceError: if ``notify_closing(fd)`` is called
        while the read waits.
    """
    # the checks cost nothing for the plain ints of the common call
    if type(fd) is not int or not 0 <= fd <= _FD_MAX:
        fd = _native.check_fd(fd)
    if type(nbytes) is not int or not 0 <= nbytes <= _SIZE_MAX:
        nbytes = _native.check_size(nbytes, "nbytes")
    if offset is None:
        off = _CURRENT_POSITION
    elif type(offset) is int and 0 <= offset < _OFFSET_END:
        off = offset
    else:
        off = _native.check_offset(offset)
    manager = _native.current_manager()
    if _READ not in manager.supported:
        if offset is None:
            return await _in_thread(os.read, fd, nbytes)
        return await _in_thread(os.pread, fd, nbytes, offset)
    data: bytes = await manager._core.start_read(_READ, fd, nbytes, off, 0)
    return data


async def readinto(fd: FdLike, buf: Any, offset: int | None = None) -> int:
    """Read from ``fd`` straight into the writable buffer ``buf``.

    :param buf: a writable bytes-like object (bytearray, memoryview,
        array...); up to ``len(buf)`` (at most :data:`MAX_RW_COUNT`) bytes
        are read into its start.
    :param offset: None (the current file position, which advances) or the
        byte offset to read at.
    :returns: the number of bytes read (0 at end of file).
    :raises TypeError: if ``buf`` is not a writable buffer (``bytes`` is not).
    :raises OSError, ValueError, OverflowError, trio.ClosedResourceError:
        as :func:`read`.
    """
    fd = _native.check_fd(fd)
    off = _native.check_offset(offset)
    manager = _native.current_manager()
    view, _, length = _writable_buffer(buf)
    if _READ not in manager.supported:
        ffi.release(view)
        if offset is None:
            return await _in_thread(os.readv, fd, [buf])
        return await _in_thread(os.preadv, fd, [buf], offset)
    return await _rw_borrowing(manager, _READ, fd, view, min(length, MAX_RW_COUNT), off)


async def write(fd: FdLike, data: Any, offset: int | None = None) -> int:
    """Write ``data`` to ``fd`` (``IORING_OP_WRITE``).

    Like :func:`os.write` (``offset=None``: at the current position, which
    advances; honours ``O_APPEND``) or :func:`os.pwrite` (at ``offset``).

    :param data: any bytes-like object; at most :data:`MAX_RW_COUNT` bytes
        of it are written by one call.
    :returns: the number of bytes written, which may be less than
        ``len(data)`` (a pipe or socket with little room, a full disk).
    :raises TypeError: if ``data`` is not bytes-like.
    :raises OSError, ValueError, OverflowError, trio.ClosedResourceError:
        as :func:`read` (``EPIPE`` for a pipe with no reader).
    """
    fd = _native.check_fd(fd)
    off = _native.check_offset(offset)
    manager = _native.current_manager()
    view, _, length = _native.readable_buffer(data)
    if _WRITE not in manager.supported:
        ffi.release(view)
        if offset is None:
            return await _in_thread(os.write, fd, data)
        return await _in_thread(os.pwrite, fd, data, offset)
    length = min(length, MAX_RW_COUNT)
    return await _rw_borrowing(manager, _WRITE, fd, view, length, off)


async def readv(fd: FdLike, buffers: Iterable[Any], offset: int | None = None) -> int:
    """Scatter-read from ``fd`` into ``buffers`` in order (``IORING_OP_READV``).

    Like :func:`os.readv` / :func:`os.preadv`.

    :param buffers: a sequence of writable bytes-like objects (at most
        ``os.sysconf("SC_IOV_MAX")`` of them: the kernel refuses more with
        ``EINVAL``).
    :param offset: None (the current file position, which advances) or the
        byte offset to read at.
    :returns: the total number of bytes read.
    :raises TypeError: if ``buffers`` is not a sequence of writable buffers.
    :raises OSError, ValueError, OverflowError, trio.ClosedResourceError:
        as :func:`read`.
    """
    fd = _native.check_fd(fd)
    off = _native.check_offset(offset)
    manager = _native.current_manager()
    items, views, iov = _buffers(buffers, writable=True)
    if not manager.supports(_READV):
        _release(views)
        if offset is None:
            return await _in_thread(os.readv, fd, items)
        return await _in_thread(os.preadv, fd, items, offset)
    return await _submit_borrowing(
        manager, _READV, fd, _addr(iov), len(items), off, views, (views, iov)
    )


async def writev(fd: FdLike, buffers: Iterable[Any], offset: int | None = None) -> int:
    """Gather-write ``buffers`` in order to ``fd`` (``IORING_OP_WRITEV``).

    Like :func:`os.writev` / :func:`os.pwritev`.

    :param buffers: a sequence of bytes-like objects.
    :param offset: None (the current position, which advances) or the byte
        offset to write at.
    :returns: the total number of bytes written (may be short).
    :raises TypeError: if ``buffers`` is not a sequence of buffers.
    :raises OSError, ValueError, OverflowError, trio.ClosedResourceError:
        as :func:`read`.
    """
    fd = _native.check_fd(fd)
    off = _native.check_offset(offset)
    manager = _native.current_manager()
    items, views, iov = _buffers(buffers, writable=False)
    if not manager.supports(_WRITEV):
        _release(views)
        if offset is None:
            return await _in_thread(os.writev, fd, items)
        return await _in_thread(os.pwritev, fd, items, offset)
    return await _submit_borrowing(
        manager, _WRITEV, fd, _addr(iov), len(items), off, views, (views, iov)
    )


# --- open / close / stat ------------------------------------------------------
async def openat(
    path: StrOrBytesPath,
    flags: int = os.O_RDONLY,
    mode: int = 0o777,
    *,
    dir_fd: FdLike | None = None,
) -> int:
    """Open ``path`` and return a new fd (``IORING_OP_OPENAT``).

    Like :func:`os.open`: ``O_CLOEXEC`` is always added (the fd is not
    inheritable), ``mode`` applies only when the file is created (and is
    masked by the umask), a relative ``path`` is resolved against ``dir_fd``
    (default: the working directory).  If the task is cancelled after the
    kernel opened the file, the fd is still returned (and Cancelled is
    raised at the next checkpoint), so it is never leaked.

    :returns: the new file descriptor.
    :raises OSError: with ``filename`` set, e.g. FileNotFoundError,
        FileExistsError (``O_CREAT | O_EXCL``), PermissionError.
    :raises ValueError: for a path with an embedded NUL or a negative
        ``flags``/``mode``.
    :raises TypeError: for a path that is not str, bytes or os.PathLike.
    """
    keep, addr = _native.c_path(path)
    flags = _check_flags(flags, "flags") | os.O_CLOEXEC
    mode = _check_flags(mode, "mode")
    dfd = _dir_fd(dir_fd)
    manager = _native.current_manager()
    if not manager.supports(_OPENAT):
        return await _in_thread(
            os.open, path, flags, mode, dir_fd=None if dir_fd is None else dfd
        )
    try:
        return await manager.submit(_OPENAT, dfd, addr, mode, 0, flags, keep=keep)
    except OSError as exc:
        raise _with_paths(exc, path) from None


def _openat2_thread(dfd: int, path: bytes, how: Any) -> int:
    # openat2(2) has no libc wrapper in older glibcs: use syscall(2).
    return _libc_call(
        "syscall",
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dfd),
        ctypes.c_char_p(path),
        ctypes.c_void_p(_addr(how)),
        ctypes.c_size_t(24),
    )


async def openat2(
    path: StrOrBytesPath,
    flags: int = os.O_RDONLY,
    mode: int | None = None,
    *,
    resolve: int = 0,
    dir_fd: FdLike | None = None,
) -> int:
    """Open ``path`` with openat2(2) path-resolution controls (``IORING_OP_OPENAT2``).

    As :func:`openat`, plus ``resolve``: a mask of ``RESOLVE_*`` flags
    (``RESOLVE_BENEATH`` refuses to leave ``dir_fd``, ``RESOLVE_NO_SYMLINKS``
    refuses symlinks...).  openat2 is strict where openat is lenient: unknown
    flags give ``EINVAL``, and so does a ``mode`` without ``O_CREAT`` or
    ``O_TMPFILE``; ``mode=None`` (default) means 0o777 when creating, else 0.

    :returns: the new file descriptor.
    :raises OSError: with ``filename`` set (``EXDEV`` for an escape that
        ``RESOLVE_BENEATH`` refused, ``ELOOP`` for a refused symlink...).
    :raises ValueError, TypeError: as :func:`openat`.
    """
    keep, addr = _native.c_path(path)
    flags = _check_flags(flags, "flags") | os.O_CLOEXEC
    if mode is None:
        creating = flags & os.O_CREAT or (flags & os.O_TMPFILE) == os.O_TMPFILE
        mode = 0o777 if creating else 0
    mode = _check_flags(mode, "mode")
    resolve = _check_flags(resolve, "resolve")
    dfd = _dir_fd(dir_fd)
    how = ffi.new("uint64_t[3]", [flags, mode, resolve])  # struct open_how
    manager = _native.current_manager()
    try:
        if not manager.supports(_OPENAT2):
            return await _in_thread(_openat2_thread, dfd, os.fsencode(path), how)
        return await manager.submit(
            _OPENAT2, dfd, addr, 24, _addr(how), keep=(keep, how)
        )
    except OSError as exc:
        raise _with_paths(exc, path) from None


async def close(fd: FdLike) -> None:
    """Close ``fd`` (``IORING_OP_CLOSE``).

    First calls ``notify_closing(fd)``, so every task waiting on ``fd`` (its
    native reads and writes included: the ring holds its own reference to
    the file, closing the number alone would not stop them) gets
    ClosedResourceError.  Like :func:`os.close`, the fd is gone even when
    the kernel reports an error from flushing it.  Cancelled before it
    starts, it does nothing.

    :raises OSError: ``EBADF`` for an fd that is not open.
    """
    fd = _native.check_fd(fd)
    manager = _native.current_manager()
    # Cancelled before anything happened: neither wake the waiters nor close.
    await trio.lowlevel.checkpoint_if_cancelled()
    manager.notify_closing(fd)
    if not manager.supports(_CLOSE):
        await _in_thread(os.close, fd)
        return
    await manager.submit(_CLOSE, fd)


def _stat_result(buf: Any) -> os.stat_result:
    f = _STATX_LAYOUT.unpack_from(ffi.buffer(buf, _STATX_SIZE))
    (_mask, blksize, _attrs, nlink, uid, gid, mode, _spare, ino, size, blocks) = f[:11]
    a_s, a_ns, c_s, c_ns, m_s, m_ns = f[12], f[13], f[18], f[19], f[21], f[22]
    rdev_major, rdev_minor, dev_major, dev_minor = f[24:28]
    # The same arithmetic as CPython's fill_time, so floats compare equal.
    return os.stat_result(
        (
            mode,
            ino,
            os.makedev(dev_major, dev_minor),
            nlink,
            uid,
            gid,
            size,
            a_s,
            m_s,
            c_s,
        ),
        {
            "st_atime": a_s + a_ns * 1e-9,
            "st_mtime": m_s + m_ns * 1e-9,
            "st_ctime": c_s + c_ns * 1e-9,
            "st_atime_ns": a_s * 1_000_000_000 + a_ns,
            "st_mtime_ns": m_s * 1_000_000_000 + m_ns,
            "st_ctime_ns": c_s * 1_000_000_000 + c_ns,
            "st_blksize": blksize,
            "st_blocks": blocks,
            "st_rdev": os.makedev(rdev_major, rdev_minor),
        },
    )


async def statx(
    path: StrOrBytesPath | int,
    *,
    dir_fd: FdLike | None = None,
    follow_symlinks: bool = True,
    mask: int = STATX_BASIC_STATS,
) -> os.stat_result:
    """Status of a file, by path or open fd (``IORING_OP_STATX``).

    Like :func:`os.stat` (and :func:`os.lstat` with
    ``follow_symlinks=False``); the result is a real :class:`os.stat_result`
    whose fields equal what ``os.stat`` returns.

    :param path: a path, or an open fd (an int) to stat that file.
    :param dir_fd: resolve a relative ``path`` against this directory fd.
    :param follow_symlinks: False stats a symlink itself.
    :param mask: the ``STATX_*`` fields wanted; the kernel may return more,
        or fewer where a filesystem lacks them (those read as 0).
    :raises OSError: with ``filename`` set, e.g. FileNotFoundError.
    :raises ValueError: for an embedded NUL, or both an fd and ``dir_fd``.
    """
    mask = _check_flags(mask, "mask")
    if isinstance(path, int):
        if dir_fd is not None:
            raise ValueError("statx: can't specify both dir_fd and fd")
        dfd = _native.check_fd(path)
        keep, addr = _native.c_path(b"")
        flags = AT_EMPTY_PATH
    else:
        keep, addr = _native.c_path(path)
        dfd = _dir_fd(dir_fd)
        flags = 0 if follow_symlinks else AT_SYMLINK_NOFOLLOW
    manager = _native.current_manager()
    if not manager.supports(_STATX):
        if isinstance(path, int):
            return await _in_thread(os.stat, path)
        return await _in_thread(
            os.stat,
            path,
            dir_fd=None if dir_fd is None else dfd,
            follow_symlinks=follow_symlinks,
        )
    buf = ffi.new("uint64_t[]", _STATX_SIZE // 8)
    try:
        await manager.submit(
            _STATX, dfd, addr, mask, _addr(buf), flags, keep=(keep, buf)
        )
    except OSError as exc:
        raise _with_paths(exc, path) from None
    return _stat_result(buf)


# --- data integrity and size --------------------------------------------------
async def fsync(fd: FdLike) -> None:
    """Flush ``fd``'s data and metadata to storage (``IORING_OP_FSYNC``).

    Like :func:`os.fsync`.

    :raises OSError: ``EBADF``, ``EINVAL`` (an fd that cannot be synced), ``EIO``.
    """
    fd = _native.check_fd(fd)
    manager = _native.current_manager()
    if not manager.supports(_FSYNC):
        await _in_thread(os.fsync, fd)
        return
    await manager.submit(_FSYNC, fd)


async def fdatasync(fd: FdLike) -> None:
    """Flush ``fd``'s data (and only the metadata needed to read it back).

    Like :func:`os.fdatasync` (``IORING_OP_FSYNC`` with ``IORING_FSYNC_DATASYNC``).

    :raises OSError: as :func:`fsync`.
    """
    fd = _native.check_fd(fd)
    manager = _native.current_manager()
    if not manager.supports(_FSYNC):
        await _in_thread(os.fdatasync, fd)
        return
    await manager.submit(_FSYNC, fd, 0, 0, 0, IORING_FSYNC_DATASYNC)


def _fallocate_thread(fd: int, mode: int, offset: int, length: int) -> None:
    _libc_call(
        "fallocate",
        ctypes.c_int(fd),
        ctypes.c_int(mode),
        ctypes.c_int64(offset),
        ctypes.c_int64(length),
    )


async def fallocate(fd: FdLike, mode: int, offset: int, length: int) -> None:
    """Allocate (or, by ``mode``, punch, zero, collapse...) a byte range.

    fallocate(2) (``IORING_OP_FALLOCATE``): ``mode`` 0 allocates
    ``[offset, offset + length)`` and extends the file if needed, like
    :func:`os.posix_fallocate` without its write-zeroes emulation;
    ``FALLOC_FL_*`` modes come from the kernel's ``linux/falloc.h``.

    :raises OSError: ``EOPNOTSUPP`` where the filesystem cannot do it,
        ``EINVAL`` for ``length == 0``, ``ENOSPC``, ``EBADF``...
    :raises ValueError: for a negative ``mode``, ``offset`` or ``length``.
    :raises OverflowError: for values too large.
    """
    fd = _native.check_fd(fd)
    mode = _check_flags(mode, "mode")
    offset = _check_position(offset, "offset")
    length = _check_position(length, "length")
    manager = _native.current_manager()
    if not manager.supports(_FALLOCATE):
        await _in_thread(_fallocate_thread, fd, mode, offset, length)
        return
    # SQE: len = mode, off = offset, addr = length (as liburing preps it).
    await manager.submit(_FALLOCATE, fd, length, mode, offset)


async def ftruncate(fd: FdLike, length: int) -> None:
    """Truncate or extend the file open as ``fd`` to ``length`` bytes.

    Like :func:`os.ftruncate` (``IORING_OP_FTRUNCATE``, Linux 6.9+; older
    kernels use the fallback thread).

    :raises OSError: ``EBADF``, ``EINVAL`` (not a regular file or not open
        for writing)...
    :raises ValueError: for a negative length.
    """
    fd = _native.check_fd(fd)
    length = _check_position(length, "length")
    manager = _native.current_manager()
    if not manager.supports(_FTRUNCATE):
        await _in_thread(os.ftruncate, fd, length)
        return
    await manager.submit(_FTRUNCATE, fd, 0, 0, length)


# --- directory entries --------------------------------------------------------
def _renameat2_thread(sdfd: int, src: bytes, ddfd: int, dst: bytes, flags: int) -> None:
    _libc_call(
        "renameat2",
        ctypes.c_int(sdfd),
        ctypes.c_char_p(src),
        ctypes.c_int(ddfd),
        ctypes.c_char_p(dst),
        ctypes.c_uint(flags),
    )


async def renameat(
    src: StrOrBytesPath,
    dst: StrOrBytesPath,
    *,
    src_dir_fd: FdLike | None = None,
    dst_dir_fd: FdLike | None = None,
    flags: int = 0,
) -> None:
    """Rename ``src`` to ``dst`` (``IORING_OP_RENAMEAT``, renameat2(2)).

    Like :func:`os.rename`, plus ``flags``: ``RENAME_NOREPLACE`` (fail with
    FileExistsError rather than replace), ``RENAME_EXCHANGE`` (swap the two).

    :raises OSError: with ``filename``/``filename2`` set.
    :raises ValueError: for an embedded NUL or negative flags.
    """
    skeep, saddr = _native.c_path(src)
    dkeep, daddr = _native.c_path(dst)
    flags = _check_flags(flags, "flags")
    sdfd = _dir_fd(src_dir_fd)
    ddfd = _dir_fd(dst_dir_fd)
    manager = _native.current_manager()
    try:
        if not manager.supports(_RENAMEAT):
            if flags:
                await _in_thread(
                    _renameat2_thread, sdfd, os.fsencode(src), ddfd, os.fsencode(dst),
                    flags,
                )  # fmt: skip
            else:
                await _in_thread(
                    os.rename,
                    src,
                    dst,
                    src_dir_fd=None if src_dir_fd is None else sdfd,
                    dst_dir_fd=None if dst_dir_fd is None else ddfd,
                )
            return
        # SQE: fd = olddirfd, addr = oldpath, len = newdirfd, addr2 = newpath
        await manager.submit(
            _RENAMEAT, sdfd, saddr, _u32(ddfd), daddr, flags, keep=(skeep, dkeep)
        )
    except OSError as exc:
        raise _with_paths(exc, src, dst) from None


def _unlink_thread(path: StrOrBytesPath, dir_fd: int | None, flags: int) -> None:
    if flags & ~AT_REMOVEDIR:
        raise OSError(_errno.EINVAL, os.strerror(_errno.EINVAL))
    if flags:
        os.rmdir(path, dir_fd=dir_fd)
    else:
        os.unlink(path, dir_fd=dir_fd)


async def unlinkat(
    path: StrOrBytesPath, *, dir_fd: FdLike | None = None, flags: int = 0
) -> None:
    """Remove a directory entry (``IORING_OP_UNLINKAT``).

    Like :func:`os.unlink`, or :func:`os.rmdir` with ``flags=AT_REMOVEDIR``.

    :raises OSError: with ``filename`` set (``IsADirectoryError`` unlinking
        a directory without ``AT_REMOVEDIR``, ``OSError(ENOTEMPTY)``...).
    :raises ValueError: for an embedded NUL or negative flags.
    """
    keep, addr = _native.c_path(path)
    flags = _check_flags(flags, "flags")
    dfd = _dir_fd(dir_fd)
    manager = _native.current_manager()
    try:
        if not manager.supports(_UNLINKAT):
            await _in_thread(
                _unlink_thread, path, None if dir_fd is None else dfd, flags
            )
            return
        await manager.submit(_UNLINKAT, dfd, addr, 0, 0, flags, keep=keep)
    except OSError as exc:
        raise _with_paths(exc, path) from None


async def mkdirat(
    path: StrOrBytesPath, mode: int = 0o777, *, dir_fd: FdLike | None = None
) -> None:
    """Create a directory (``IORING_OP_MKDIRAT``).  Like :func:`os.mkdir`.

    :raises OSError: with ``filename`` set (FileExistsError...).
    :raises ValueError: for an embedded NUL or a negative mode.
    """
    keep, addr = _native.c_path(path)
    mode = _check_flags(mode, "mode")
    dfd = _dir_fd(dir_fd)
    manager = _native.current_manager()
    try:
        if not manager.supports(_MKDIRAT):
            await _in_thread(
                os.mkdir, path, mode, dir_fd=None if dir_fd is None else dfd
            )
            return
        await manager.submit(_MKDIRAT, dfd, addr, mode, keep=keep)
    except OSError as exc:
        raise _with_paths(exc, path) from None


async def symlinkat(
    target: StrOrBytesPath, linkpath: StrOrBytesPath, *, dir_fd: FdLike | None = None
) -> None:
    """Create a symlink ``linkpath`` pointing to ``target`` (``IORING_OP_SYMLINKAT``).

    Like :func:`os.symlink`; ``dir_fd`` anchors a relative ``linkpath``
    (``target`` is stored as given).

    :raises OSError: with ``filename=target``, ``filename2=linkpath``.
    :raises ValueError: for an embedded NUL.
    """
    tkeep, taddr = _native.c_path(target)
    lkeep, laddr = _native.c_path(linkpath)
    dfd = _dir_fd(dir_fd)
    manager = _native.current_manager()
    try:
        if not manager.supports(_SYMLINKAT):
            await _in_thread(
                os.symlink, target, linkpath, dir_fd=None if dir_fd is None else dfd
            )
            return
        # SQE: fd = newdirfd, addr = target, addr2 = linkpath
        await manager.submit(_SYMLINKAT, dfd, taddr, 0, laddr, keep=(tkeep, lkeep))
    except OSError as exc:
        raise _with_paths(exc, target, linkpath) from None


def _linkat_thread(sdfd: int, src: bytes, ddfd: int, dst: bytes, flags: int) -> None:
    # Not os.link: with follow_symlinks and no dir fds CPython calls link(2),
    # which never follows a symlink on Linux.
    _libc_call(
        "linkat",
        ctypes.c_int(sdfd),
        ctypes.c_char_p(src),
        ctypes.c_int(ddfd),
        ctypes.c_char_p(dst),
        ctypes.c_int(flags),
    )


async def linkat(
    src: StrOrBytesPath,
    dst: StrOrBytesPath,
    *,
    src_dir_fd: FdLike | None = None,
    dst_dir_fd: FdLike | None = None,
    follow_symlinks: bool = True,
) -> None:
    """Create a hard link ``dst`` to ``src`` (``IORING_OP_LINKAT``).

    Like :func:`os.link`: with ``follow_symlinks`` (default) a symlink
    ``src`` is resolved (``AT_SYMLINK_FOLLOW``), otherwise the link points
    at the symlink itself.

    :raises OSError: with ``filename``/``filename2`` set.
    :raises ValueError: for an embedded NUL.
    """
    skeep, saddr = _native.c_path(src)
    dkeep, daddr = _native.c_path(dst)
    sdfd = _dir_fd(src_dir_fd)
    ddfd = _dir_fd(dst_dir_fd)
    flags = AT_SYMLINK_FOLLOW if follow_symlinks else 0
    manager = _native.current_manager()
    try:
        if not manager.supports(_LINKAT):
            await _in_thread(
                _linkat_thread, sdfd, os.fsencode(src), ddfd, os.fsencode(dst), flags
            )
            return
        # SQE: fd = olddirfd, addr = oldpath, len = newdirfd, addr2 = newpath
        await manager.submit(
            _LINKAT, sdfd, saddr, _u32(ddfd), daddr, flags, keep=(skeep, dkeep)
        )
    except OSError as exc:
        raise _with_paths(exc, src, dst) from None


# --- pipes --------------------------------------------------------------------


async def _submit_pipe_op(
    manager: UringIOManager,
    opcode: int,
    dst: int,
    addr: int,
    count: int,
    off: int,
    flags: int,
    src: int,
) -> int:
    """Submit a SPLICE or TEE: fd = dst, splice_fd_in (file_index) = src.

    ``notify_closing`` of either end cancels it.  (The kernel runs these in
    its worker threads; a cancelled one reports a restart code, which the
    manager maps to -ECANCELED.)
    """
    return await manager.submit(
        opcode, dst, addr, count, off, flags, file_index=src, fd2=src
    )


def _check_splice_flags(flags: int) -> int:
    flags = _check_flags(flags, "flags")
    if flags & SPLICE_F_FD_IN_FIXED:
        raise ValueError("SPLICE_F_FD_IN_FIXED (registered files) is not supported")
    return flags


async def splice(
    src: FdLike,
    dst: FdLike,
    count: int,
    offset_src: int | None = None,
    offset_dst: int | None = None,
    flags: int = 0,
) -> int:
    """Move up to ``count`` bytes from ``src`` to ``dst`` (``IORING_OP_SPLICE``).

    Like :func:`os.splice`: one of the two fds must be a pipe; an offset of
    None uses (and advances) that fd's position, and must be None for a pipe.

    The op is tracked under ``dst``: ``notify_closing(dst)`` interrupts it
    with ClosedResourceError, ``notify_closing(src)`` does not (yet).

    :returns: the number of bytes moved; 0 at end of input.
    :raises OSError: ``EINVAL`` (neither fd a pipe, an offset on a pipe),
        ``EBADF``, ``ESPIPE``...
    :raises ValueError, OverflowError: for negative or too large values.
    """
    src = _native.check_fd(src)
    dst = _native.check_fd(dst)
    count = _native.check_size(count, "count")
    off_in = _opt_offset(offset_src, "offset_src")
    off_out = _opt_offset(offset_dst, "offset_dst")
    flags = _check_splice_flags(flags)
    manager = _native.current_manager()
    if not manager.supports(_SPLICE):
        return await _in_thread(
            os.splice, src, dst, count, offset_src, offset_dst, flags
        )
    # SQE: fd = fd_out, off = off_out, splice_off_in (the addr slot) = off_in,
    # len = count, splice_flags, splice_fd_in (the file_index slot) = fd_in.
    return await _submit_pipe_op(
        manager, _SPLICE, dst, off_in, count, off_out, flags, src
    )


def _tee_thread(src: int, dst: int, count: int, flags: int) -> int:
    return _libc_call(
        "tee",
        ctypes.c_int(src),
        ctypes.c_int(dst),
        ctypes.c_size_t(count),
        ctypes.c_uint(flags),
    )


async def tee(src: FdLike, dst: FdLike, count: int, flags: int = 0) -> int:
    """Copy up to ``count`` bytes from pipe ``src`` to pipe ``dst`` (``IORING_OP_TEE``).

    tee(2): the data stays readable in ``src``.  Tracked under ``dst`` for
    ``notify_closing``, like :func:`splice`.

    :returns: the number of bytes duplicated; 0 if ``src`` has no writers left.
    :raises OSError: ``EINVAL`` if either fd is not a pipe (or they are the
        same pipe), ``EBADF``...
    :raises ValueError, OverflowError: for negative or too large values.
    """
    src = _native.check_fd(src)
    dst = _native.check_fd(dst)
    count = _native.check_size(count, "count")
    flags = _check_splice_flags(flags)
    manager = _native.current_manager()
    if not manager.supports(_TEE):
        return await _in_thread(_tee_thread, src, dst, count, flags)
    return await _submit_pipe_op(manager, _TEE, dst, 0, count, 0, flags, src)
