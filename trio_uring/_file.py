"""Native async files and paths: ``trio.open_file`` & co. on the ring.

trio's :class:`~trio._file_io.AsyncIOWrapper` (and anyio's ``AsyncFile``)
run every method of a synchronous :mod:`io` object in a worker thread.  Under
a :class:`~trio_uring._manager.UringIOManager` this module does the same work
with kernel-executed operations instead; :mod:`trio_uring._file_hooks` routes
the public entry points here.

Design
------

Python's io stack is synchronous and keeps its own buffers (the read-ahead
of ``BufferedReader``, the pending bytes of ``BufferedWriter``, the decoded
characters of ``TextIOWrapper``).  We do not reimplement it and do not fight
it: the *file object stays the real one* (``wrapped`` is exactly what
:func:`open` returns: same types, ``name``, ``mode``, ``encoding``...), but
the async methods never use its I/O methods.  They work on its file
descriptor, under one invariant, true between any two async calls:

    the Python object's buffers are empty, and the kernel's file position
    (``lseek(fd, 0, SEEK_CUR)``) is the logical position.

Everything follows from that:

* ``read(n)``/``read1``/``readinto``/``write`` are one ``IORING_OP_READ`` /
  ``WRITE`` at offset -1 (the file position, which the kernel advances, as
  read(2)/write(2) do; ``O_APPEND`` writes go to the end).  Loops (a
  buffered ``read(n)``/``write`` that the kernel did short) continue shielded
  from cancellation once data moved, and a multi-op ``read()`` that is
  cancelled puts the position back, so a cancelled call never half happened.
* ``seek``/``tell``/``flush`` are the object's own synchronous methods:
  with empty buffers they are an ``lseek`` (which never blocks) or nothing,
  and give Python's exact results and errors.  They checkpoint first.
* ``readline`` (and ``readlines``, ``async for``) needs read-ahead.  It reads
  chunks at *explicit* offsets into a small cache of ours (bytes keyed by
  their file offset), finds the line end, and sets the file position after
  the line with ``lseek``.  So the invariant holds (the kernel position is
  exact; a following ``wrapped.read()`` or ``read(n)`` sees the right byte),
  and iterating a file costs one ring op per cache chunk, plus one ``lseek``
  per line.  Our writes drop the cache.
* Text mode decodes natively for the codecs whose line ends are single ASCII
  bytes and whose encode/decode round-trips: UTF-8, ASCII and Latin-1 with
  ``errors`` ``strict`` or ``surrogateescape``.  Line ends are found at byte
  level, which makes ``tell()`` after ``readline`` the byte offset, exactly
  Python's cookie at a line boundary.  Newline translation follows
  :class:`io.TextIOWrapper` (universal newlines for ``newline=None``/``""``,
  translation only for ``None``; ``\\n`` -> ``newline`` on write).  Whole
  reads (``read()``) decode with a throwaway ``TextIOWrapper`` over the bytes,
  so they are Python's decoding by construction.
* ``aclose`` duplicates the fd, closes the Python object (a plain ``close(2)``
  of a file that stays open through the duplicate, so nothing slow happens
  in the event loop), then closes the duplicate with ``IORING_OP_CLOSE``:
  the final release (the filesystem's flush-on-close) runs on the ring.
* Reads above 128 KiB go straight into the ``bytes`` object they return
  (see ``pread``), as ``os.read`` does; smaller ones into a cffi buffer.
* One engine per file object (a weak registry), shared by every trio and
  anyio wrapper of it.  An op that follows a yield inside one call (the
  rest of a short write, the next chunk of a ``readline``) first checks
  that no other task closed the file meanwhile: its fd number could
  already name another file.
* ``open``: :func:`io.open` is first run with an opener that captures the
  ``os.open`` flags it computed and stops, so every argument error is
  Python's own and comes before anything touches the file system; then
  ``IORING_OP_OPENAT`` opens, and :func:`io.open` builds the object stack
  around that fd (its opener returns it), so the result is what ``open()``
  would return.

When the invariant cannot be kept, the call goes to the original thread
path (``trio.to_thread.run_sync`` of the object's method), and the
invariant is checked afterwards (``tell()`` equals the kernel position); if
Python's layer kept data, the file stays on the thread path from then on.
That covers: non-seekable files (pipes, FIFOs, ttys: every call), text files
we did not open (``wrap_file`` of a text object: we cannot learn its
``newline`` argument), other codecs and error handlers, ``peek`` in text
mode, ``readline``/``read`` with an unusual size type, seeking a text file to
a cookie that carries decoder state, and all errors (a closed file, a
write-only file read...), which then come from the real method.

Mixing: the async methods and synchronous I/O on ``wrapped`` see the same
position as long as the synchronous calls leave Python's buffers empty
(``wrapped.flush()``, ``seek``, ``tell``, and no read-ahead).  A synchronous
``wrapped.read()``/``readline()`` fills Python's read buffer, after which the
async methods do not see the bytes Python buffered: call ``await
f.seek(f.wrapped.tell())`` to resynchronise.
"""

from __future__ import annotations

import codecs
import ctypes
import errno as _errno
import io
import os
import stat as _stat
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import trio
import trio._core._run as _trio_run

from . import _native, _ops_file
from ._manager import UringIOManager
from ._ring import OP
from ._ring_ffi import ffi

_READ = OP["READ"]
_WRITE = OP["WRITE"]
_CUR = _native.CURRENT_POSITION
_CHUNK = 8192  # the cache's read size (io.DEFAULT_BUFFER_SIZE)
_from_buffer = ffi.from_buffer
_cast = ffi.cast
_buffer = ffi.buffer
_lseek = os.lseek
_checkpoint = trio.lowlevel.checkpoint
_cancel_point = trio.lowlevel.checkpoint_if_cancelled
_RUN: Any = _trio_run.GLOBAL_RUN_CONTEXT
_io_open: Any = io.open  # called with computed arguments

_RAW_TYPES = (io.FileIO,)
_BUFFERED_TYPES = (io.BufferedReader, io.BufferedWriter, io.BufferedRandom)
#: codecs whose encode(decode(b)) == b and whose CR/LF are single ASCII bytes
_NATIVE_CODECS = {"utf-8", "ascii", "iso8859-1"}
_NATIVE_ERRORS = {"strict", "surrogateescape"}
#: the attribute our open() puts on the TextIOWrapper: its newline argument
NEWLINE_ATTR = "_trio_uring_newline"
_NO_NEWLINE = object()


def uring_manager() -> UringIOManager | None:
    """The running trio's UringIOManager (in the run's own thread), or None."""
    try:
        manager = _RUN.runner.io_manager
    except AttributeError:
        return None
    if type(manager) is UringIOManager and manager.native_files:
        return manager
    return None


class _Captured(Exception):
    pass


# Big reads go straight into the bytes object they return, as os.read
# does: it is made uninitialised (PyBytes_FromStringAndSize(NULL, n), never a
# shared singleton for n > 1) and the kernel fills it before anyone else can
# see it.  Reading into a scratch buffer and copying out costs a second pass
# over fresh memory, and on the VMs measured here userspace page faults made
# that copy 3-5x slower than the whole of os.pread (a 2.4 MB file: 1.3 ms
# against 0.11 ms; straight into the bytes: 0.17 ms).  (Measured with
# bench/open_file.py --workload read_bytes.)  Small reads do the same in C
# (_speedups.Core.start_read); big ones go through ``submit`` for its
# IOSQE_ASYNC flag below.
_BIG = 1 << 17
#: IOSQE_ASYNC, for a big read while another is in flight: straight to an
#: io-wq worker.  The inline attempt cannot fault in the fresh pages of the
#: result, so it stops short and the kernel retries; with 16 tasks reading
#: 2.4 MB files concurrently that made read_bytes 4x slower than forcing the
#: worker from the start (and than trio's thread path).  Alone, the inline
#: attempt is slightly faster (about 10%), so the first big read keeps it.
#: Only for fds private to one call (Path.read_bytes/read_text): an op sent
#: to io-wq looks its fd up only when the worker starts it, so on a file
#: object another task could close the fd first and the read would get
#: EBADF -- or, with the number reused, another file.
_IOSQE_ASYNC = 1 << 4
_big_in_flight = 0
_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)


async def pread(fd: int, n: int, offset: int, private: bool = False) -> bytes:
    """One READ of up to ``n`` bytes at ``offset`` (``_CUR``: the file
    position), returning them as bytes, like os.read/os.pread.  ``private``:
    nobody else can close ``fd`` meanwhile (see _IOSQE_ASYNC)."""
    manager = _RUN.runner.io_manager
    if n <= _BIG:
        data: bytes = await manager._core.start_read(_READ, fd, n, offset, 0)
        return data
    global _big_in_flight
    n = min(n, _ops_file.MAX_RW_COUNT)
    out: bytes = _new_bytes(None, n)
    view = _from_buffer(out)
    flags = _IOSQE_ASYNC if private and _big_in_flight else 0
    _big_in_flight += 1
    try:
        got = await manager.submit(
            _READ, fd, int(_cast("uintptr_t", view)), n, offset,
            keep=(out, view), sqe_flags=flags,
        )  # fmt: skip
    finally:
        _big_in_flight -= 1
    return out if got == n else out[:got]


# --------------------------------------------------------------------- files
class NativeFile:
    """The native engine behind one async file object (see the module doc)."""

    __slots__ = (
        "__weakref__",
        "binary",
        "buffered",
        "cache",
        "cache_pos",
        "dead",
        "encoding",
        "errors",
        "f",
        "fd",
        "newline",
        "readable",
        "text",
        "writable",
    )

    def __init__(self, f: Any, fd: int, text: bool, newline: Any) -> None:
        self.f = f
        self.fd = fd
        self.text = text
        self.binary: Any = f.buffer if text else f
        self.buffered = text or type(f) is not io.FileIO
        self.readable = bool(f.readable())
        self.writable = bool(f.writable())
        self.newline = newline
        self.encoding = ""
        self.errors = "strict"
        if text:
            self.encoding = codecs.lookup(f.encoding).name
            self.errors = f.errors or "strict"
        self.cache = b""
        self.cache_pos = 0
        self.dead = False

    # ---------------------------------------------------------- plumbing
    async def thread(self, name: str, *args: Any) -> Any:
        """The original path: the object's own method in a worker thread."""
        try:
            return await trio.to_thread.run_sync(partial(getattr(self.f, name), *args))
        finally:
            self.cache = b""
            self.resync()

    def resync(self) -> None:
        """After a thread-path call: is the invariant still true?"""
        try:
            if self.f.closed:
                return
            if self.f.tell() != _lseek(self.fd, 0, os.SEEK_CUR):
                self.dead = True
        except (OSError, ValueError):
            self.dead = True

    def _ok(self, reading: bool) -> bool:
        """True if a native call can go ahead (else: the thread path, which
        also gives the exact error for a closed or wrong-mode file)."""
        if self.dead or self.f.closed or uring_manager() is None:
            return False
        return self.readable if reading else self.writable

    def _check_open(self) -> None:
        """Before an op that follows a yield: another task may have closed
        the file meanwhile, and its fd number may already name another file."""
        if self.f.closed:
            raise trio.ClosedResourceError("the file was closed by another task")

    async def _read_raw(self, n: int, offset: int) -> bytes:
        """One READ of up to n bytes (offset -1: the file position)."""
        self._check_open()
        return await pread(self.fd, n, offset)

    async def _read_full(self, n: int) -> bytes:
        """Buffered read(n): up to n bytes, short only at end of file."""
        data = await self._read_raw(n, _CUR)
        if len(data) == n or not data or not self.buffered:
            return data
        parts = [data]
        left = n - len(data)
        with trio.CancelScope(shield=True):  # data moved: finish the call
            while left:
                more = await self._read_raw(left, _CUR)
                if not more:
                    break
                parts.append(more)
                left -= len(more)
        return b"".join(parts)

    async def _read_all(self) -> bytes:
        start = _lseek(self.fd, 0, os.SEEK_CUR)
        try:
            size = os.fstat(self.fd).st_size
        except OSError:
            size = 0
        parts = []
        # The rest of the file in one read (exactly: a short result would be
        # copied), then small reads until end of file.
        chunk = size - start if size > start else _CHUNK
        try:
            while True:
                data = await self._read_raw(chunk, _CUR)
                if not data:
                    break
                parts.append(data)
                chunk = _CHUNK * 8
        except BaseException:
            # Cancelled (or failed) half way: the call did not happen.
            if parts:
                _lseek(self.fd, start, os.SEEK_SET)
            raise
        return b"".join(parts)

    async def _write_all(self, data: Any) -> int:
        """Write all of ``data`` at the file position (shielded once started)."""
        manager = _native.current_manager()
        self.cache = b""
        view = _from_buffer(data)
        total = len(view)
        try:
            addr = int(_cast("uintptr_t", view))
            n: int = await manager.submit(_WRITE, self.fd, addr, total, _CUR, keep=view)
            if n < total and n and self.buffered:
                with trio.CancelScope(shield=True):
                    while n < total:
                        self._check_open()
                        w = await manager.submit(
                            _WRITE, self.fd, addr + n, total - n, _CUR, keep=view
                        )
                        if not w:
                            raise OSError(_errno.EIO, os.strerror(_errno.EIO))
                        n += w
        finally:
            ffi.release(view)
        return total if self.buffered else n

    # --------------------------------------------------- cached line reads
    async def _fill(self, pos: int, need: int) -> bool:
        """Make the cache hold bytes from ``pos``; read ``need`` more after what
        it holds.  False at end of file (nothing new)."""
        cache, cpos = self.cache, self.cache_pos
        if not (cpos <= pos <= cpos + len(cache)):
            cache, cpos = b"", pos
        elif pos - cpos > _CHUNK * 8:  # drop what is behind us
            cache, cpos = cache[pos - cpos :], pos
        end = cpos + len(cache)
        data = await self._read_raw(max(need, _CHUNK), end)
        self.cache, self.cache_pos = cache + data, cpos
        return bool(data)

    def _line_end(self, buf: bytes, start: int, eof: bool) -> int:
        """Index after the first line end in buf[start:], or -1 (need more)."""
        nl = self.newline
        if not self.text or nl == "\n":
            i = buf.find(b"\n", start)
            return -1 if i < 0 else i + 1
        if nl is None or nl == "":
            i = buf.find(b"\n", start)
            j = buf.find(b"\r", start, i if i >= 0 else len(buf))
            if j < 0:
                return -1 if i < 0 else i + 1
            if j + 1 < len(buf):
                return j + 2 if buf[j + 1] == 10 else j + 1
            return j + 1 if eof else -1
        i = buf.find(nl.encode("ascii"), start)
        return -1 if i < 0 else i + len(nl)

    async def _line_bytes(self, limit: int) -> tuple[bytes, int]:
        """(the next line's bytes, the file offset after them); at most
        ``limit`` bytes (-1: no limit).  Does not move the file position."""
        pos = _lseek(self.fd, 0, os.SEEK_CUR)
        eof = False
        scanned = 0
        while True:
            cache, cpos = self.cache, self.cache_pos
            if cpos <= pos <= cpos + len(cache):
                start = pos - cpos
                end = self._line_end(cache, start + scanned, eof)
                if end >= 0:
                    if 0 <= limit < end - start:
                        end = start + limit
                    return cache[start:end], cpos + end
                have = len(cache) - start
                if eof or 0 <= limit <= have:
                    end = len(cache) if limit < 0 else min(len(cache), start + limit)
                    return cache[start:end], cpos + end
                scanned = max(0, have - 1)  # a CR may pair with the next byte
            if not await self._fill(pos, _CHUNK):
                eof = True
            await trio.lowlevel.checkpoint_if_cancelled()

    # ------------------------------------------------------------- reading
    async def read(self, size: Any = -1) -> Any:
        if size is None:
            size = -1
        if type(size) is not int or not self._ok(True):
            return await self.thread("read", size)
        if self.text:
            return await self._read_text(size)
        if size < 0:
            return await self._read_all()
        if size > _BIG:
            return await self._read_full(size)
        # The common case inline: one READ at the file position.
        data: bytes = await _RUN.runner.io_manager._core.start_read(
            _READ, self.fd, size, _CUR, 0
        )
        got = len(data)
        if got == size or not got or not self.buffered:
            return data
        with trio.CancelScope(shield=True):  # data moved: finish the call
            rest = await self._read_full(size - got)
        return data + rest

    async def readall(self) -> Any:
        if not self._ok(True):
            return await self.thread("readall")
        return await self._read_all()

    async def read1(self, size: Any = -1) -> Any:
        if size is None:
            size = -1
        if type(size) is not int or not self._ok(True):
            return await self.thread("read1", size)
        return await self._read_raw(size if size >= 0 else _CHUNK, _CUR)

    async def _readinto(self, name: str, buf: Any) -> Any:
        if not self._ok(True):
            return await self.thread(name, buf)
        try:
            view, addr, length = _native.writable_buffer(buf)
        except TypeError:
            return await self.thread(name, buf)
        manager = _native.current_manager()
        try:
            n: int = await manager.submit(_READ, self.fd, addr, length, _CUR, keep=view)
            if n and n < length and self.buffered and name == "readinto":
                with trio.CancelScope(shield=True):
                    while n < length:
                        self._check_open()
                        got = await manager.submit(
                            _READ, self.fd, addr + n, length - n, _CUR, keep=view
                        )
                        if not got:
                            break
                        n += got
        finally:
            ffi.release(view)
        return n

    async def readinto(self, buf: Any) -> Any:
        return await self._readinto("readinto", buf)

    async def readinto1(self, buf: Any) -> Any:
        return await self._readinto("readinto1", buf)

    async def peek(self, size: Any = 0) -> Any:
        if type(size) is not int or not self._ok(True) or self.text:
            return await self.thread("peek", size)
        pos = _lseek(self.fd, 0, os.SEEK_CUR)
        return await self._read_raw(max(size, _CHUNK), pos)

    async def readline(self, size: Any = -1) -> Any:
        if size is None:
            size = -1
        if type(size) is not int or not self._ok(True):
            return await self.thread("readline", size)
        if not self.text:
            line, after = await self._line_bytes(size)
            _lseek(self.fd, after, os.SEEK_SET)
            return line
        return await self._readline_text(size)

    async def readlines(self, hint: Any = -1) -> Any:
        if hint is None:
            hint = -1
        if type(hint) is not int or not self._ok(True):
            return await self.thread("readlines", hint)
        lines = []
        total = 0
        while True:
            line = await self.readline()
            if not line:
                break
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    # --------------------------------------------------------------- text
    def _decode(self, data: bytes) -> str:
        return data.decode(self.encoding, self.errors)

    def _translate(self, text: str) -> str:
        if self.newline is None and "\r" in text:
            return text.replace("\r\n", "\n").replace("\r", "\n")
        return text

    async def _readline_text(self, size: int) -> str:
        line, after = await self._line_bytes(-1)
        text = self._translate(self._decode(line))
        if 0 <= size < len(text):
            text = text[:size]
            after -= len(line) - len(text.encode(self.encoding, self.errors))
        _lseek(self.fd, after, os.SEEK_SET)
        return text

    async def _read_text(self, size: int) -> str:
        if size < 0:
            data = await self._read_all()
            t = io.TextIOWrapper(
                io.BytesIO(data), self.encoding, self.errors, self.newline
            )
            return t.read()
        if size == 0:
            await _checkpoint()
            return ""
        pos = _lseek(self.fd, 0, os.SEEK_CUR)
        need = 4 * size + 2  # size chars (4 bytes at most each) + a CR LF
        while True:
            cache, cpos = self.cache, self.cache_pos
            if cpos <= pos and pos + need <= cpos + len(cache):
                break
            if not await self._fill(pos, need):
                break
            await trio.lowlevel.checkpoint_if_cancelled()
        cache, cpos = self.cache, self.cache_pos
        avail = cache[pos - cpos : pos - cpos + need] if cpos <= pos else b""
        eof = len(avail) < need
        if self.encoding == "utf-8":
            raw: str = codecs.utf_8_decode(avail, self.errors, eof)[0]
        else:
            raw = self._decode(avail)
        if self.newline is None:
            if raw.endswith("\r") and not eof:
                raw = raw[:-1]
            raw = raw[: _raw_prefix(raw, size)]
        else:
            raw = raw[:size]
        after = pos + len(raw.encode(self.encoding, self.errors))
        _lseek(self.fd, after, os.SEEK_SET)
        return self._translate(raw)

    # ------------------------------------------------------------- writing
    async def write(self, data: Any) -> Any:
        if not self._ok(False):
            return await self.thread("write", data)
        if self.text:
            if type(data) is not str:
                return await self.thread("write", data)
            nl = self.newline
            s = data.replace("\n", nl) if nl and nl != "\n" and "\n" in data else data
            try:
                raw = s.encode(self.encoding, self.errors)
            except UnicodeEncodeError:
                return await self.thread("write", data)
            await self._write_all(raw)
            return len(data)
        try:
            return await self._write_all(data)
        except TypeError:
            return await self.thread("write", data)

    async def writelines(self, lines: Iterable[Any]) -> None:
        if not self._ok(False):
            return await self.thread("writelines", lines)  # type: ignore[no-any-return]
        items = list(lines)
        if self.text:
            if not all(type(s) is str for s in items):
                return await self.thread("writelines", items)  # type: ignore[no-any-return]
            await self.write("".join(items))
            return None
        try:
            joined = b"".join(items)
        except TypeError:
            return await self.thread("writelines", items)  # type: ignore[no-any-return]
        await self._write_all(joined)
        return None

    async def truncate(self, size: Any = None) -> Any:
        if not self._ok(False) or (size is not None and type(size) is not int):
            return await self.thread("truncate", size)
        await trio.lowlevel.checkpoint_if_cancelled()
        self.cache = b""
        if size is None:
            size = _lseek(self.fd, 0, os.SEEK_CUR)
        if size < 0:
            return await self.thread("truncate", size)
        await _ops_file.ftruncate(self.fd, size)
        return size

    # ------------------------------------------------- position and flush
    async def seek(self, target: Any, whence: Any = 0) -> Any:
        if self.dead or (
            self.text and whence == 0 and type(target) is int and target >> 64
        ):
            return await self.thread("seek", target, whence)
        await _cancel_point()
        f = self.f
        if (
            whence == 0
            and not self.text
            and type(target) is int
            and 0 <= target < 1 << 63
            and not f.closed
        ):
            # With Python's buffers empty, a binary seek is exactly an
            # lseek (Python's own also re-reads the position first).
            return _lseek(self.fd, target, 0)
        return f.seek(target, whence)

    async def tell(self) -> Any:
        if self.dead:
            return await self.thread("tell")
        await _cancel_point()
        return self.f.tell()

    async def flush(self) -> Any:
        if self.dead:
            return await self.thread("flush")
        await _cancel_point()
        return self.f.flush()

    async def aclose(self) -> None:
        """Close with the final release on the ring (shielded, like trio's)."""
        f = self.f
        with trio.CancelScope(shield=True):
            if self.dead or f.closed or uring_manager() is None:
                await trio.to_thread.run_sync(f.close)
            else:
                try:
                    dup = os.dup(self.fd)
                except OSError:
                    await trio.to_thread.run_sync(f.close)
                else:
                    try:
                        # Ops of other tasks on this fd end with
                        # ClosedResourceError; Python's buffers are empty, so
                        # close() is only a close(2), and not the last one.
                        _native.current_manager().notify_closing(self.fd)
                        f.close()
                    finally:
                        await _ops_file.close(dup)
        self.cache = b""
        await trio.lowlevel.checkpoint_if_cancelled()


def _raw_prefix(raw: str, n: int) -> int:
    """How many chars of ``raw`` give ``n`` chars after universal-newline
    translation (``\\r\\n`` -> ``\\n``, ``\\r`` -> ``\\n``)."""
    if "\r\n" not in raw:
        return min(n, len(raw))
    i = out = 0
    while i < len(raw) and out < n:
        i += 2 if raw.startswith("\r\n", i) else 1
        out += 1
    return i


#: file object -> weakref to its NativeFile, or False (threads).  Weak both
#: ways: the engine (which holds the file) lives as long as an async wrapper
#: holds it, and an unclosed file is still closed when its last user drops it.
_ENGINES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def engine_for(f: Any) -> NativeFile | None:
    """The NativeFile of the io object ``f``, or None when it must use threads.

    One per file object while any async wrapper of it (trio's or anyio's)
    is alive, so they share one read cache.  Called in the event loop thread
    of a trio run on io_uring.
    """
    try:
        entry = _ENGINES.get(f)
    except TypeError:  # not weak-referenceable: not a real io object
        return None
    if entry is False:
        return None
    if entry is not None:
        eng: NativeFile | None = entry()
        if eng is not None:
            return eng
    eng = _new_engine(f)
    _ENGINES[f] = False if eng is None else weakref.ref(eng)
    return eng


def _new_engine(f: Any) -> NativeFile | None:
    try:
        tp = type(f)
        if tp is io.TextIOWrapper:
            newline = getattr(f, NEWLINE_ATTR, _NO_NEWLINE)
            if newline is _NO_NEWLINE or type(f.buffer) not in _BUFFERED_TYPES:
                return None
            if codecs.lookup(f.encoding).name not in _NATIVE_CODECS:
                return None
            if (f.errors or "strict") not in _NATIVE_ERRORS:
                return None
            raw = f.buffer.raw
            text = True
        elif tp in _BUFFERED_TYPES:
            raw = f.raw
            newline = None
            text = False
        elif tp is io.FileIO:
            raw = f
            newline = None
            text = False
        else:
            return None
        if type(raw) is not io.FileIO or f.closed or not f.seekable():
            return None
        fd = raw.fileno()
        if f.tell() != _lseek(fd, 0, os.SEEK_CUR):
            return None  # Python's layer holds data: keep to its methods
        return NativeFile(f, fd, text, newline)
    except (OSError, ValueError, AttributeError, LookupError):
        return None


# ---------------------------------------------------------------------- open
def _capture_flags(*args: Any) -> int:
    """io.open's own argument checks, then the os.open flags it would use."""
    box: list[int] = []

    def opener(_name: Any, flags: int) -> int:
        box.append(flags)
        raise _Captured

    try:
        _io_open(*args, opener)
    except _Captured:
        return box[0]
    raise AssertionError("io.open did not call the opener")  # pragma: no cover


async def open_native(
    file: Any,
    mode: str = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
) -> Any:
    """:func:`io.open` with the open itself done by ``IORING_OP_OPENAT``.

    ``file`` must be a path (str, bytes, os.PathLike), not an fd.
    """
    flags = _capture_flags(file, mode, buffering, encoding, errors, newline, closefd)
    fd = await _ops_file.openat(file, flags & ~os.O_CLOEXEC, 0o666)
    try:
        f = _io_open(
            file, mode, buffering, encoding, errors, newline, closefd, lambda *_: fd
        )
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise type(exc)(exc.errno, exc.strerror, file) from None
        raise
    except BaseException:
        # The stack could not be built (e.g. an unknown encoding): io.open
        # closed what it opened, as open() would.
        raise
    if type(f) is io.TextIOWrapper:
        setattr(f, NEWLINE_ATTR, newline)
    return f


# --------------------------------------------------------------------- paths
_IGNORED = (_errno.ENOENT, _errno.ENOTDIR, _errno.EBADF, _errno.ELOOP)


async def stat(path: Any, follow_symlinks: bool = True) -> os.stat_result:
    return await _ops_file.statx(os.fspath(path), follow_symlinks=follow_symlinks)


async def check_mode(
    path: Any, check: Callable[[int], bool], follow_symlinks: bool = True
) -> bool | None:
    """check(st_mode) of path; False where pathlib says False for a missing
    path; None for an error pathlib would treat differently (ask pathlib)."""
    try:
        st = await stat(path, follow_symlinks)
    except OSError as exc:
        return False if exc.errno in _IGNORED else None
    except ValueError:
        return False
    return check(st.st_mode)


def is_dir(mode: int) -> bool:
    return _stat.S_ISDIR(mode)


def is_file(mode: int) -> bool:
    return _stat.S_ISREG(mode)


def is_symlink(mode: int) -> bool:
    return _stat.S_ISLNK(mode)


def exists(mode: int) -> bool:
    return True


async def unlink(path: Any, missing_ok: bool = False) -> None:
    try:
        await _ops_file.unlinkat(os.fspath(path))
    except FileNotFoundError:
        if not missing_ok:
            raise


async def rmdir(path: Any) -> None:
    await _ops_file.unlinkat(os.fspath(path), flags=_ops_file.AT_REMOVEDIR)


async def rename(src: Any, dst: Any) -> None:
    await _ops_file.renameat(os.fspath(src), os.fspath(dst))


async def mkdir(
    path: Any, mode: int = 0o777, parents: bool = False, exist_ok: bool = False
) -> None:
    """pathlib.Path.mkdir's logic over IORING_OP_MKDIRAT."""
    import pathlib

    p = pathlib.Path(path)
    try:
        await _ops_file.mkdirat(os.fspath(p), mode)
    except FileNotFoundError:
        if not parents or p.parent == p:
            raise
        await mkdir(p.parent, parents=True, exist_ok=True)
        await mkdir(p, mode, parents=False, exist_ok=exist_ok)
    except OSError:
        if not exist_ok or await check_mode(p, is_dir) is not True:
            raise


async def symlink_to(path: Any, target: Any) -> None:
    await _ops_file.symlinkat(os.fspath(target), os.fspath(path))


async def hardlink_to(path: Any, target: Any) -> None:
    # os.link (pathlib's) is link(2): a symlink target is not followed.
    await _ops_file.linkat(os.fspath(target), os.fspath(path), follow_symlinks=False)


async def touch(path: Any, mode: int = 0o666, exist_ok: bool = True) -> bool:
    """pathlib's touch; False if this case needs pathlib's own code.

    pathlib updates the times of an existing path with utime(2), which
    opens nothing: opening a FIFO or a device for writing could block or
    act.  So an existing path is only opened (to futimens it) when STATX
    says it is a regular file; anything else is left to pathlib.
    """
    p = os.fspath(path)
    if exist_ok:
        try:
            st = await _ops_file.statx(p)
        except FileNotFoundError:
            pass
        except OSError:
            return False
        else:
            if not _stat.S_ISREG(st.st_mode):
                return False
            try:
                fd = await _ops_file.openat(p, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                return False
            try:
                os.utime(fd)
            finally:
                await _ops_file.close(fd)
            return True
    flags = os.O_CREAT | os.O_WRONLY | (0 if exist_ok else os.O_EXCL)
    try:
        fd = await _ops_file.openat(p, flags, mode)
    except (IsADirectoryError, PermissionError):
        return False
    await _ops_file.close(fd)
    return True


async def read_bytes(path: Any) -> bytes:
    fd = await _ops_file.openat(os.fspath(path), os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if _stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(
                _errno.EISDIR, os.strerror(_errno.EISDIR), os.fspath(path)
            )
        parts = []
        chunk = st.st_size or _CHUNK
        while True:
            data = await pread(fd, chunk, _CUR, private=True)
            if not data:
                break
            parts.append(data)
            chunk = _CHUNK * 8
        return b"".join(parts)
    finally:
        with trio.CancelScope(shield=True):
            await _ops_file.close(fd)


async def write_bytes(path: Any, data: Any) -> int:
    view = memoryview(data)
    fd = await _ops_file.openat(
        os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666
    )
    try:
        raw = view.cast("B") if view.ndim != 1 or view.format != "B" else view
        n = 0
        with trio.CancelScope(shield=True):  # the file is truncated: finish
            while n < len(raw):
                n += await _ops_file.write(fd, raw[n:])
        return view.nbytes
    finally:
        with trio.CancelScope(shield=True):
            await _ops_file.close(fd)


def decode_text(
    data: bytes, encoding: str | None, errors: str | None, newline: str | None
) -> str:
    return io.TextIOWrapper(io.BytesIO(data), encoding, errors, newline).read()


def encode_text(
    data: str, encoding: str | None, errors: str | None, newline: str | None
) -> bytes:
    out = io.BytesIO()
    t = io.TextIOWrapper(out, encoding, errors, newline, write_through=True)
    t.write(data)
    t.flush()
    value = out.getvalue()
    t.detach()
    return value
