"""Native file and path operations: os.* semantics, trio's cancellation contract.

Every test runs under ``trio_uring.run``.  The same "catalogue" coroutine
checks each operation against its ``os`` equivalent natively, and again with
opcodes hidden from the probe so that the worker-thread fallback runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_uring
from trio_uring import _native
from trio_uring import _ops_file as uf
from trio_uring._ring import OP, OPCODE_NAMES

FILE_OPS = (
    "READ", "WRITE", "READV", "WRITEV", "OPENAT", "OPENAT2", "CLOSE", "STATX",
    "FSYNC", "FALLOCATE", "FTRUNCATE", "RENAMEAT", "UNLINKAT", "MKDIRAT",
    "SYMLINKAT", "LINKAT", "SPLICE", "TEE",
)  # fmt: skip
FALLOC_FL_KEEP_SIZE = 0x01
BAD_FD = 1_000_000  # above any fd table this test process has
STAT_EXTRAS = (
    "st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns",
    "st_ctime_ns", "st_blksize", "st_blocks", "st_rdev",
)  # fmt: skip


# --- helpers ------------------------------------------------------------------
def umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def submitted() -> dict[str, int]:
    return dict(trio.lowlevel.current_statistics().io_statistics.submitted)


def in_flight() -> int:
    """Kernel ops in flight, other than the polls of tasks waiting on fds."""
    stats = trio.lowlevel.current_statistics().io_statistics
    n: int = stats.ops_in_flight - stats.tasks_waiting_read - stats.tasks_waiting_write
    return n


def spy_submit(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the opcode name of every manager.submit/submit_rw call in this run."""
    manager = _native.current_manager()
    seen: list[str] = []
    original = manager.submit

    async def spy(opcode: int, *args: Any, **kwargs: Any) -> int:
        seen.append(OPCODE_NAMES[opcode])
        return await original(opcode, *args, **kwargs)

    original_rw = manager.submit_rw

    async def spy_rw(opcode: int, *args: Any, **kwargs: Any) -> int:
        seen.append(OPCODE_NAMES[opcode])
        return await original_rw(opcode, *args, **kwargs)

    monkeypatch.setattr(manager, "submit", spy)
    monkeypatch.setattr(manager, "submit_rw", spy_rw)
    return seen


def hide_opcodes(names: tuple[str, ...]) -> None:
    """Make the probe say this kernel lacks ``names`` (the fallback runs)."""
    manager = _native.current_manager()
    manager.supported = manager.supported - {OP[n] for n in names}


def assert_same_stat(ours: os.stat_result, theirs: os.stat_result) -> None:
    assert ours == theirs
    for name in STAT_EXTRAS:
        assert getattr(ours, name) == getattr(theirs, name), name


@contextlib.contextmanager
def raises_errno(code: int) -> Iterator[pytest.ExceptionInfo[OSError]]:
    with pytest.raises(OSError, match=re.escape(f"[Errno {code}]")) as info:
        yield info
    assert info.value.errno == code


def pipe() -> tuple[int, int]:
    r, w = os.pipe()
    return r, w


def fill_pipe(w: int) -> int:
    """Fill a (blocking) pipe to the brim; returns the bytes written."""
    os.set_blocking(w, False)
    total = 0
    try:
        while True:
            total += os.write(w, b"x" * 65536)
    except BlockingIOError:
        pass
    with contextlib.suppress(BlockingIOError):
        while True:
            total += os.write(w, b"x")
    os.set_blocking(w, True)
    return total


def drain(r: int) -> bytes:
    os.set_blocking(r, False)
    out = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(r, 1 << 20):
            out += chunk
    os.set_blocking(r, True)
    return out


# --- the catalogue against os.* -----------------------------------------------
async def catalogue(d: Path) -> None:
    """Every operation once, each result compared with its os.* equivalent."""
    mask = umask()
    p = d / "f"
    fd = await uf.openat(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        assert not os.get_inheritable(fd)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o640 & ~mask
        # offset None: the file position, which advances (like os.write/read)
        assert await uf.write(fd, b"hello ") == 6
        assert await uf.write(fd, memoryview(b"world")) == 5
        assert os.lseek(fd, 0, os.SEEK_CUR) == 11
        # an offset: there, and the position does not move (like os.pwrite)
        assert await uf.write(fd, b"W", 6) == 1
        assert os.lseek(fd, 0, os.SEEK_CUR) == 11
        assert os.pread(fd, 100, 0) == b"hello World"
        assert await uf.read(fd, 100, 0) == b"hello World"
        assert await uf.read(fd, 100) == b""
        assert await uf.read(fd, 0, 0) == b""
        os.lseek(fd, 0, os.SEEK_SET)
        assert await uf.read(fd, 5) == b"hello"
        assert os.lseek(fd, 0, os.SEEK_CUR) == 5
        buf = bytearray(10)
        assert await uf.readinto(fd, buf) == 6
        assert buf[:6] == b" World"
        assert await uf.readinto(fd, memoryview(buf)[2:4], 0) == 2
        assert buf[:6] == b" Wheld"
        assert await uf.writev(fd, [b"ab", bytearray(b"cd"), memoryview(b"ef")], 0) == 6
        a, b = bytearray(4), bytearray(10)
        assert await uf.readv(fd, [a, b], 0) == 11
        assert (a, b[:7]) == (b"abcd", b"efWorld")
        os.lseek(fd, 0, os.SEEK_SET)
        assert await uf.writev(fd, (x for x in [b"A", b"B"])) == 2
        assert os.lseek(fd, 0, os.SEEK_CUR) == 2
        assert await uf.readv(fd, [a]) == 4
        assert a == b"cdef"
        assert os.lseek(fd, 0, os.SEEK_CUR) == 6
        assert await uf.readv(fd, []) == 0
        # statx is os.stat, field for field
        assert_same_stat(await uf.statx(p), os.stat(p))
        assert_same_stat(await uf.statx(str(p).encode()), os.stat(p))
        assert_same_stat(await uf.statx(fd), os.stat(fd))
        await uf.fsync(fd)
        await uf.fdatasync(fd)
        await uf.fallocate(fd, 0, 0, 8192)
        assert os.fstat(fd).st_size == 8192
        await uf.fallocate(fd, FALLOC_FL_KEEP_SIZE, 8192, 4096)
        assert os.fstat(fd).st_size == 8192
        await uf.ftruncate(fd, 3)
        assert os.pread(fd, 100, 0) == b"ABc"
        await uf.ftruncate(fd, 5)
        assert os.pread(fd, 100, 0) == b"ABc\0\0"
        # splice and tee
        r, w = pipe()
        r2, w2 = pipe()
        try:
            assert await uf.splice(fd, w, 3, offset_src=0) == 3
            assert os.read(r, 10) == b"ABc"
            os.write(w, b"xyz")
            assert await uf.tee(r, w2, 10) == 3
            assert os.read(r2, 10) == b"xyz"
            assert await uf.splice(r, fd, 3, offset_dst=1) == 3
            assert os.pread(fd, 10, 0) == b"Axyz\0"
        finally:
            for x in (r, w, r2, w2):
                os.close(x)
    finally:
        await uf.close(fd)
    with raises_errno(errno.EBADF):
        os.fstat(fd)

    # errors carry the filename, like os.*
    with pytest.raises(FileExistsError) as exists:
        await uf.openat(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    assert exists.value.filename == str(p)
    with pytest.raises(FileNotFoundError) as missing:
        await uf.openat(d / "missing")
    assert missing.value.filename == str(d / "missing")
    with pytest.raises(FileNotFoundError) as missing:
        await uf.statx(b"/nonexistent/x")
    assert missing.value.filename == b"/nonexistent/x"

    # directories, links and names
    sub = d / "sub"
    await uf.mkdirat(sub, 0o750)
    assert stat.S_IMODE(os.stat(sub).st_mode) == 0o750 & ~mask
    with pytest.raises(FileExistsError):
        await uf.mkdirat(sub)
    dfd = await uf.openat(sub, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(await uf.openat("g", os.O_WRONLY | os.O_CREAT, dir_fd=dfd))
        assert (sub / "g").is_file()
        assert_same_stat(await uf.statx("g", dir_fd=dfd), os.stat("g", dir_fd=dfd))
        await uf.symlinkat("g", "lnk", dir_fd=dfd)
        assert os.readlink(sub / "lnk") == "g"
        assert_same_stat(
            await uf.statx(sub / "lnk", follow_symlinks=False), os.lstat(sub / "lnk")
        )
        assert_same_stat(await uf.statx(sub / "lnk"), os.stat(sub / "g"))
        # linkat follows a symlink by default (like os.link), with or without dir fds
        await uf.linkat("lnk", "hard", src_dir_fd=dfd, dst_dir_fd=dfd)
        await uf.linkat(sub / "lnk", sub / "hard2")
        for name in ("hard", "hard2"):
            assert not (sub / name).is_symlink()
            assert os.stat(sub / name).st_ino == os.stat(sub / "g").st_ino
        await uf.linkat(sub / "lnk", sub / "hard3", follow_symlinks=False)
        assert (sub / "hard3").is_symlink()
        with pytest.raises(FileExistsError) as clash:
            await uf.symlinkat("x", sub / "g")
        assert (clash.value.filename, clash.value.filename2) == ("x", str(sub / "g"))

        await uf.renameat("g", "h", src_dir_fd=dfd, dst_dir_fd=dfd)
        assert (sub / "h").is_file()
        assert not (sub / "g").exists()
        with pytest.raises(FileExistsError) as clash:
            await uf.renameat(sub / "h", sub / "hard", flags=uf.RENAME_NOREPLACE)
        assert clash.value.filename == str(sub / "h")
        assert clash.value.filename2 == str(sub / "hard")
        await uf.renameat(sub / "h", sub / "hard3", flags=uf.RENAME_EXCHANGE)
        assert (sub / "h").is_symlink()
        assert not (sub / "hard3").is_symlink()
        with pytest.raises(FileNotFoundError) as gone:
            await uf.renameat(sub / "nope", sub / "x")
        assert (gone.value.filename, gone.value.filename2) == (
            str(sub / "nope"),
            str(sub / "x"),
        )

        # openat2: resolution controls
        os.close(await uf.openat2("hard", dir_fd=dfd, resolve=uf.RESOLVE_BENEATH))
        with raises_errno(errno.EXDEV) as escaped:
            await uf.openat2("../f", dir_fd=dfd, resolve=uf.RESOLVE_BENEATH)
        assert escaped.value.filename == "../f"
        with raises_errno(errno.ELOOP):
            await uf.openat2("lnk", dir_fd=dfd, resolve=uf.RESOLVE_NO_SYMLINKS)
        new = await uf.openat2("new", os.O_WRONLY | os.O_CREAT, dir_fd=dfd)
        try:
            assert not os.get_inheritable(new)
            assert stat.S_IMODE(os.fstat(new).st_mode) == 0o777 & ~mask
        finally:
            os.close(new)
    finally:
        os.close(dfd)

    with raises_errno(errno.ENOTEMPTY) as full:
        await uf.unlinkat(sub, flags=uf.AT_REMOVEDIR)
    assert full.value.filename == str(sub)
    with pytest.raises(IsADirectoryError):
        await uf.unlinkat(sub)
    for name in sorted(os.listdir(sub)):
        await uf.unlinkat(sub / name)
    await uf.unlinkat(sub, flags=uf.AT_REMOVEDIR)
    assert not sub.exists()
    with pytest.raises(FileNotFoundError) as missing:
        await uf.unlinkat(sub)
    assert missing.value.filename == str(sub)
    assert in_flight() == 0


def test_catalogue_native(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        seen = spy_submit(monkeypatch)
        before = submitted()
        await catalogue(tmp_path)
        assert set(seen) == set(FILE_OPS)
        after = submitted()
        for name in FILE_OPS:
            assert after.get(name, 0) > before.get(name, 0), name

    trio_uring.run(main)


@pytest.mark.parametrize("hidden", [*FILE_OPS, "ALL"])
def test_catalogue_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hidden: str
) -> None:
    """A kernel without an opcode: the op runs its os.* equivalent in a thread."""
    names = FILE_OPS if hidden == "ALL" else (hidden,)

    async def main() -> None:
        hide_opcodes(names)
        seen = spy_submit(monkeypatch)
        await catalogue(tmp_path)
        assert not set(seen) & set(names)
        assert set(seen) == set(FILE_OPS) - set(names)

    trio_uring.run(main)


def test_needs_io_uring_manager() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="io_uring"):
            await uf.read(0, 1)

    trio.run(main)


# --- bad input: a clear exception, and the ring stays healthy -----------------
class Ctx:
    def __init__(self, d: Path) -> None:
        self.d = d
        self.path = d / "f"
        self.path.write_bytes(b"hello")
        self.fd = os.open(self.path, os.O_RDWR)
        self.rofd = os.open(self.path, os.O_RDONLY)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.rofd)


Call = Callable[[Ctx], Awaitable[object]]
BAD_INPUT: list[tuple[str, Call, type[BaseException], int | None]] = [
    # closed / never-opened fds: EBADF from the kernel
    ("read-badfd", lambda c: uf.read(BAD_FD, 1), OSError, errno.EBADF),
    ("readinto-badfd", lambda c: uf.readinto(BAD_FD, bytearray(1)), OSError,
     errno.EBADF),
    ("write-badfd", lambda c: uf.write(BAD_FD, b"x"), OSError, errno.EBADF),
    ("readv-badfd", lambda c: uf.readv(BAD_FD, [bytearray(1)]), OSError, errno.EBADF),
    ("writev-badfd", lambda c: uf.writev(BAD_FD, [b"x"]), OSError, errno.EBADF),
    ("fsync-badfd", lambda c: uf.fsync(BAD_FD), OSError, errno.EBADF),
    ("fdatasync-badfd", lambda c: uf.fdatasync(BAD_FD), OSError, errno.EBADF),
    ("fallocate-badfd", lambda c: uf.fallocate(BAD_FD, 0, 0, 1), OSError, errno.EBADF),
    ("ftruncate-badfd", lambda c: uf.ftruncate(BAD_FD, 0), OSError, errno.EBADF),
    ("close-badfd", lambda c: uf.close(BAD_FD), OSError, errno.EBADF),
    ("statx-badfd", lambda c: uf.statx(BAD_FD), OSError, errno.EBADF),
    ("splice-badfd", lambda c: uf.splice(BAD_FD, c.fd, 1), OSError, errno.EBADF),
    ("tee-badfd", lambda c: uf.tee(c.fd, BAD_FD, 1), OSError, errno.EBADF),
    ("openat-baddirfd", lambda c: uf.openat("x", dir_fd=BAD_FD), OSError, errno.EBADF),
    ("read-negfd", lambda c: uf.read(-1, 1), OSError, errno.EBADF),
    # what the kernel refuses
    ("write-rofd", lambda c: uf.write(c.rofd, b"x"), OSError, errno.EBADF),
    ("ftruncate-rofd", lambda c: uf.ftruncate(c.rofd, 0), OSError, errno.EINVAL),
    ("fallocate-zero", lambda c: uf.fallocate(c.fd, 0, 0, 0), OSError, errno.EINVAL),
    ("splice-no-pipe", lambda c: uf.splice(c.rofd, c.fd, 1), OSError, errno.EINVAL),
    ("openat2-mode", lambda c: uf.openat2(c.path, mode=0o600), OSError, errno.EINVAL),
    # negative sizes and offsets
    ("read-negsize", lambda c: uf.read(c.fd, -1), ValueError, None),
    ("read-negoffset", lambda c: uf.read(c.fd, 1, -1), ValueError, None),
    ("write-negoffset", lambda c: uf.write(c.fd, b"x", -5), ValueError, None),
    ("readinto-negoffset", lambda c: uf.readinto(c.fd, bytearray(1), -1),
     ValueError, None),
    ("fallocate-neglen", lambda c: uf.fallocate(c.fd, 0, 0, -1), ValueError, None),
    ("ftruncate-neg", lambda c: uf.ftruncate(c.fd, -1), ValueError, None),
    ("splice-negcount", lambda c: uf.splice(c.fd, c.fd, -1), ValueError, None),
    ("openat-negflags", lambda c: uf.openat(c.path, -1), ValueError, None),
    ("splice-fixed", lambda c: uf.splice(c.fd, c.fd, 1, flags=1 << 31),
     ValueError, None),
    ("statx-fd-dirfd", lambda c: uf.statx(c.fd, dir_fd=c.fd), ValueError, None),
    # not buffers, not ints, read-only buffers
    ("write-str", lambda c: uf.write(c.fd, "text"), TypeError, None),
    ("write-int", lambda c: uf.write(c.fd, 12), TypeError, None),
    ("readinto-bytes", lambda c: uf.readinto(c.fd, b"xx"), TypeError, None),
    ("readinto-romv", lambda c: uf.readinto(c.fd, memoryview(b"x")), TypeError, None),
    ("readv-ro", lambda c: uf.readv(c.fd, [bytearray(1), b"x"]), TypeError, None),
    ("readv-buffer", lambda c: uf.readv(c.fd, bytearray(4)), TypeError, None),
    ("writev-int", lambda c: uf.writev(c.fd, 5), TypeError, None),
    ("writev-ints", lambda c: uf.writev(c.fd, [1, 2]), TypeError, None),
    ("read-strsize", lambda c: uf.read(c.fd, "5"), TypeError, None),
    ("read-stroffset", lambda c: uf.read(c.fd, 1, "0"), TypeError, None),
    ("read-strfd", lambda c: uf.read("3", 1), TypeError, None),
    ("openat-float", lambda c: uf.openat(3.5), TypeError, None),
    ("ftruncate-none", lambda c: uf.ftruncate(c.fd, None), TypeError, None),
    # too large for the kernel's fields
    ("read-hugesize", lambda c: uf.read(c.fd, 2**31), OverflowError, None),
    ("read-hugeoffset", lambda c: uf.read(c.fd, 1, 2**63), OverflowError, None),
    ("write-hugeoffset", lambda c: uf.write(c.fd, b"x", 2**64), OverflowError, None),
    ("read-hugefd", lambda c: uf.read(2**31, 1), OverflowError, None),
    ("fallocate-huge", lambda c: uf.fallocate(c.fd, 0, 0, 2**63), OverflowError, None),
    ("splice-hugecount", lambda c: uf.splice(c.fd, c.fd, 2**31), OverflowError, None),
    ("openat-hugeflags", lambda c: uf.openat(c.path, 2**32), OverflowError, None),
    # NUL bytes in paths
    ("openat-nul", lambda c: uf.openat("a\0b"), ValueError, None),
    ("openat2-nul", lambda c: uf.openat2(b"a\0b"), ValueError, None),
    ("statx-nul", lambda c: uf.statx("a\0b"), ValueError, None),
    ("mkdirat-nul", lambda c: uf.mkdirat(c.d / "a\0b"), ValueError, None),
    ("unlinkat-nul", lambda c: uf.unlinkat("a\0b"), ValueError, None),
    ("renameat-nul-src", lambda c: uf.renameat("a\0b", "c"), ValueError, None),
    ("renameat-nul-dst", lambda c: uf.renameat(c.path, "a\0b"), ValueError, None),
    ("symlinkat-nul", lambda c: uf.symlinkat("a\0b", "c"), ValueError, None),
    ("linkat-nul", lambda c: uf.linkat(c.path, "a\0b"), ValueError, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "exc", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
def test_bad_input(
    tmp_path: Path, call: Call, exc: type[BaseException], code: int | None
) -> None:
    async def main() -> None:
        c = Ctx(tmp_path)
        try:
            with pytest.raises(exc) as info:
                await call(c)
            if code is not None:
                assert isinstance(info.value, OSError)
                assert info.value.errno == code
            # the ring is healthy: a following op works, nothing is left over
            assert await uf.read(c.fd, 10, 0) == b"hello"
            assert await uf.write(c.fd, b"J", 0) == 1
            assert_same_stat(await uf.statx(c.path), os.stat(c.path))
            assert in_flight() == 0
            assert c.path.read_bytes() == b"Jello"
            assert sorted(os.listdir(tmp_path)) == ["f"]
        finally:
            c.close()

    trio_uring.run(main)


# --- cancelled before submission: nothing happens -----------------------------
async def _pipe_with(data: bytes) -> tuple[int, int]:
    r, w = pipe()
    os.write(w, data)
    return r, w


Check = Callable[[Ctx, Any], None]


def _unchanged(c: Ctx, _: Any) -> None:
    assert c.path.read_bytes() == b"hello"
    assert os.lseek(c.fd, 0, os.SEEK_CUR) == 0
    assert sorted(os.listdir(c.d)) == ["f"]


def _pipe_kept(c: Ctx, fds: Any) -> None:
    _unchanged(c, None)
    assert drain(fds[0]) == b"data"


def _pipe_empty(c: Ctx, fds: Any) -> None:
    _unchanged(c, None)
    assert drain(fds[2]) == b""
    assert drain(fds[0]) == b"data"


def _still_open(c: Ctx, _: Any) -> None:
    _unchanged(c, None)
    os.fstat(c.fd)


async def _two_pipes(data: bytes) -> tuple[int, int, int, int]:
    r, w = await _pipe_with(data)
    r2, w2 = pipe()
    return r, w, r2, w2


CancelCase = tuple[
    str,
    Callable[[Ctx], Awaitable[Any]] | None,
    Callable[[Ctx, Any], Awaitable[object]],
    Check,
]
CANCEL_BEFORE: list[CancelCase] = [
    ("READ", None, lambda c, _: uf.read(c.fd, 5), _unchanged),
    ("READ", None, lambda c, _: uf.readinto(c.fd, bytearray(5)), _unchanged),
    ("READV", None, lambda c, _: uf.readv(c.fd, [bytearray(5)]), _unchanged),
    ("WRITE", None, lambda c, _: uf.write(c.fd, b"XX"), _unchanged),
    ("WRITEV", None, lambda c, _: uf.writev(c.fd, [b"XX"]), _unchanged),
    ("OPENAT", None,
     lambda c, _: uf.openat(c.d / "new", os.O_CREAT | os.O_WRONLY), _unchanged),
    ("OPENAT2", None,
     lambda c, _: uf.openat2(c.d / "new", os.O_CREAT | os.O_WRONLY), _unchanged),
    ("CLOSE", None, lambda c, _: uf.close(c.fd), _still_open),
    ("STATX", None, lambda c, _: uf.statx(c.path), _unchanged),
    ("FSYNC", None, lambda c, _: uf.fsync(c.fd), _unchanged),
    ("FALLOCATE", None, lambda c, _: uf.fallocate(c.fd, 0, 0, 4096), _unchanged),
    ("FTRUNCATE", None, lambda c, _: uf.ftruncate(c.fd, 1), _unchanged),
    ("RENAMEAT", None, lambda c, _: uf.renameat(c.path, c.d / "g"), _unchanged),
    ("UNLINKAT", None, lambda c, _: uf.unlinkat(c.path), _unchanged),
    ("MKDIRAT", None, lambda c, _: uf.mkdirat(c.d / "sub"), _unchanged),
    ("SYMLINKAT", None, lambda c, _: uf.symlinkat("f", c.d / "l"), _unchanged),
    ("LINKAT", None, lambda c, _: uf.linkat(c.path, c.d / "l"), _unchanged),
    ("SPLICE", lambda c: _pipe_with(b"data"),
     lambda c, p: uf.splice(p[0], c.fd, 4), _pipe_kept),
    ("TEE", lambda c: _two_pipes(b"data"),
     lambda c, p: uf.tee(p[0], p[3], 4), _pipe_empty),
]  # fmt: skip


@pytest.mark.parametrize("fallback", [False, True], ids=["native", "fallback"])
@pytest.mark.parametrize(
    ("opname", "setup", "call", "check"),
    [pytest.param(*case, id=f"{i}-{case[0]}") for i, case in enumerate(CANCEL_BEFORE)],
)
def test_cancelled_before_submit(
    tmp_path: Path,
    opname: str,
    setup: Callable[[Ctx], Awaitable[Any]] | None,
    call: Callable[[Ctx, Any], Awaitable[object]],
    check: Check,
    fallback: bool,
) -> None:
    async def main() -> None:
        if fallback:
            hide_opcodes(FILE_OPS)
        c = Ctx(tmp_path)
        extra = await setup(c) if setup is not None else ()
        try:
            before = submitted()
            with trio.CancelScope() as cs:
                cs.cancel()
                await call(c, extra)
                pytest.fail("not cancelled")  # pragma: no cover
            assert cs.cancelled_caught
            assert submitted().get(opname, 0) == before.get(opname, 0)
            check(c, extra)
            assert in_flight() == 0
        finally:
            c.close()
            for fd in extra:
                os.close(fd)

    trio_uring.run(main)


# --- cancelled in flight: the kernel's verdict, nothing lost ------------------
ReadLike = Callable[[int], Awaitable[bytes]]


async def _read(fd: int) -> bytes:
    return await uf.read(fd, 100)


async def _readinto(fd: int) -> bytes:
    buf = bytearray(100)
    n = await uf.readinto(fd, buf)
    return bytes(buf[:n])


async def _readv(fd: int) -> bytes:
    a, b = bytearray(3), bytearray(100)
    n = await uf.readv(fd, [a, b])
    return bytes((a + b)[:n])


async def _splice_through(fd: int) -> bytes:
    r, w = pipe()
    try:
        n = await uf.splice(fd, w, 100)
        return os.read(r, n) if n else b""
    finally:
        os.close(r)
        os.close(w)


async def _tee_through(fd: int) -> bytes:
    r, w = pipe()
    try:
        n = await uf.tee(fd, w, 100)
        os.read(fd, n)  # tee leaves the data in the source: consume it
        return os.read(r, n) if n else b""
    finally:
        os.close(r)
        os.close(w)


READERS = {
    "read": _read,
    "readinto": _readinto,
    "readv": _readv,
    "splice": _splice_through,
    "tee": _tee_through,
}


@pytest.mark.parametrize("reader", READERS)
def test_cancel_in_flight_loses_nothing(reader: str) -> None:
    read_fn = READERS[reader]

    async def main() -> None:
        r, w = pipe()
        try:
            outcomes: list[str] = []

            async def blocked() -> None:
                try:
                    await read_fn(r)
                except trio.Cancelled:
                    outcomes.append("cancelled")
                    raise
                outcomes.append("returned")  # pragma: no cover

            async with trio.open_nursery() as nursery:
                nursery.start_soon(blocked)
                await trio.testing.wait_all_tasks_blocked()
                assert in_flight() == 1
                nursery.cancel_scope.cancel()
            assert outcomes == ["cancelled"]
            assert in_flight() == 0
            os.write(w, b"all of it")
            assert await read_fn(r) == b"all of it"
        finally:
            os.close(r)
            os.close(w)

    trio_uring.run(main)


def test_cancel_in_flight_write_writes_nothing() -> None:
    async def main() -> None:
        r, w = pipe()
        try:
            filled = fill_pipe(w)
            with trio.CancelScope() as cs:

                async def cancel_soon() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    cs.cancel()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(cancel_soon)
                    await uf.write(w, b"0123456789")
            assert cs.cancelled_caught
            assert in_flight() == 0
            assert len(drain(r)) == filled
            assert await uf.write(w, b"next") == 4
            assert drain(r) == b"next"
        finally:
            os.close(r)
            os.close(w)

    trio_uring.run(main)


def test_buffer_pinned_while_in_flight() -> None:
    """The kernel may write into the buffer until the op's last CQE."""

    async def main() -> None:
        r, w = pipe()
        buf = bytearray(8)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(uf.readinto, r, buf)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(BufferError):
                    buf.extend(b"grow")
                os.write(w, b"abc")
            assert buf[:3] == b"abc"
        finally:
            os.close(r)
            os.close(w)

    trio_uring.run(main)


@pytest.mark.parametrize(
    "ending", ["returned", "failed", "cancelled-before", "cancelled-in-flight"]
)
@pytest.mark.parametrize("op", ["readinto", "readv", "write", "writev"])
def test_buffer_released_when_op_ends(op: str, ending: str) -> None:
    """Like os.*, the caller's buffer is free again as soon as the call ends:
    a bytearray can be resized, a memoryview released."""

    async def main() -> None:
        r, w = pipe()
        ba = bytearray(8)
        view = memoryview(bytearray(8))
        fd = BAD_FD if ending == "failed" else (w if op.startswith("write") else r)
        if op.startswith("write") and ending == "cancelled-in-flight":
            fill_pipe(w)
        elif op.startswith("read") and ending != "cancelled-in-flight":
            os.write(w, b"x" * 16)
        calls = {
            "readinto": lambda: uf.readinto(fd, ba),
            "readv": lambda: uf.readv(fd, [ba, view]),
            "write": lambda: uf.write(fd, ba),
            "writev": lambda: uf.writev(fd, [ba, view]),
        }
        try:
            with trio.CancelScope() as cs:
                if ending == "cancelled-before":
                    cs.cancel()
                if ending == "failed":
                    with raises_errno(errno.EBADF):
                        await calls[op]()
                elif ending == "cancelled-in-flight":
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(calls[op])
                        await trio.testing.wait_all_tasks_blocked()
                        with pytest.raises(BufferError):
                            ba.extend(b"pinned while the kernel may use it")
                        cs.cancel()
                else:
                    await calls[op]()
            assert cs.cancelled_caught == ending.startswith("cancelled")
            ba.extend(b"resizable")
            view.release()
        finally:
            os.close(r)
            os.close(w)

    trio_uring.run(main)


# --- deadlines ----------------------------------------------------------------
@pytest.mark.parametrize("reader", ["read", "splice"])
def test_deadline_uses_linked_timeout(reader: str) -> None:
    read_fn = READERS[reader]

    async def main() -> None:
        r, w = pipe()
        try:
            with trio.move_on_after(0.05) as cs:
                await read_fn(r)
            assert cs.cancelled_caught
            assert submitted().get("LINK_TIMEOUT", 0) >= 1
            assert in_flight() == 0
            os.write(w, b"all of it")
            assert await read_fn(r) == b"all of it"
        finally:
            os.close(r)
            os.close(w)

    trio_uring.run(main)


def test_deadline_under_mock_clock_is_trios() -> None:
    async def main() -> None:
        r, w = pipe()
        try:
            start = trio.current_time()
            with trio.move_on_after(1000) as cs:
                await uf.read(r, 10)
            assert cs.cancelled_caught
            assert trio.current_time() - start >= 1000
            assert "LINK_TIMEOUT" not in submitted()
            os.write(w, b"all of it")
            assert await uf.read(r, 100) == b"all of it"
        finally:
            os.close(r)
            os.close(w)

    trio_uring.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# --- fd closed while an op is pending -----------------------------------------
@pytest.mark.parametrize("how", ["notify_closing", "close"])
@pytest.mark.parametrize("reader", ["read", "readv", "splice"])
def test_closed_while_pending(reader: str, how: str) -> None:
    async def main() -> None:
        r, w = pipe()
        r2, w2 = pipe()
        # A splice is tracked under its output fd: block it on an empty pipe
        # and close its output.  The readers block on r.
        target = w if reader == "splice" else r

        async def blocked() -> None:
            op = uf.splice(r2, w, 10) if reader == "splice" else READERS[reader](r)
            with pytest.raises(trio.ClosedResourceError):
                await op

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(blocked)
                await trio.testing.wait_all_tasks_blocked()
                if how == "close":
                    await uf.close(target)
                    with raises_errno(errno.EBADF):
                        os.fstat(target)
                else:
                    trio.lowlevel.notify_closing(target)
            assert in_flight() == 0
        finally:
            for fd in (r, w, r2, w2):
                if not (how == "close" and fd == target):
                    os.close(fd)

    trio_uring.run(main)


def test_closed_while_writing() -> None:
    async def main() -> None:
        r, w = pipe()
        try:
            fill_pipe(w)

            async def blocked() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await uf.write(w, b"more")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(blocked)
                await trio.testing.wait_all_tasks_blocked()
                trio.lowlevel.notify_closing(w)
            assert in_flight() == 0
        finally:
            os.close(r)
            os.close(w)

    trio_uring.run(main)
