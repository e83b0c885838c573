"""trio's own sockets on native io_uring operations, with unchanged user code.

Every trio socket is a ``trio._socket._SocketType`` (``trio.socket.socket``,
``from_stdlib_socket``, ``socketpair``, ``fromfd``, accepted sockets, and the
ones inside ``open_tcp_stream``, ``serve_tcp``, ``open_unix_socket``,
``SocketStream`` and ``SocketListener``).  Its I/O methods all funnel into
trio's ``_nonblocking_helper``: try the non-blocking syscall; on
``BlockingIOError`` wait for readiness and try again.  So the one place to
reach every trio socket is that class: :func:`hook` replaces its I/O methods
(recv, recv_into, recvfrom, recvfrom_into, recvmsg, recvmsg_into, send,
sendto, sendmsg, accept, connect) with wrappers that look at the running
trio's IO manager -- ``GLOBAL_RUN_CONTEXT.runner.io_manager``, one
thread-local attribute read -- and

* under a :class:`~trio_uring.UringIOManager` run the io_uring path below;
* anywhere else (trio's epoll manager, a plain ``trio.run`` in another thread,
  no run at all) call trio's saved original, so trio's own code runs.

The wrappers also hand over to trio's code when the socket's ``_sock`` is not
a plain ``socket.socket`` (trio's tests swap in subclasses) and for argument
shapes the fast paths do not parse; the hook is installed once (idempotent)
by ``trio_uring.run``/``start_guest_run``/``install`` and can be removed with
:func:`unhook`; left installed it is harmless.

The semantics are trio's, checkpoint for checkpoint:

* every op but ``connect`` is try-first: exactly what
  ``_nonblocking_helper`` does -- ``checkpoint_if_cancelled``, the syscall,
  then ``cancel_shielded_checkpoint`` whether it returned or raised -- so
  arguments are checked and errors raised by the stdlib itself.  Only when
  the syscall says ``EAGAIN`` does the op go to the kernel: the native op
  (RECV, SEND, RECVMSG, SENDMSG, ACCEPT) through
  :meth:`UringIOManager.submit_socket`, whose cancellation contract is
  trio's: cancelled before the kernel saw it means nothing happened; a
  completed kernel op delivers its result (the bytes received, the
  connection accepted) and Cancelled comes at the next checkpoint.  The
  EAGAIN is caught in a plain function (``_attempt``/``_try_recv``), never
  in the coroutine that then waits: a caught exception's traceback makes
  CPython keep a frame object for the coroutine as long as it lives, about
  130 bytes per waiting connection.
* ``connect`` is submit-first: one IORING_OP_CONNECT replaces connect,
  readiness wait and SO_ERROR.
* ``RECV_SUBMIT_FIRST``/``SEND_SUBMIT_FIRST`` switch recv/send to
  submit-first (the kernel makes the first attempt inside the enter the loop
  makes anyway), for measuring; ``docs/native_sockets.rst`` has the numbers
  behind each choice.

Memory: a waiting ``recv`` must not pin a buffer per connection (trio's
``receive_some`` asks for 64 KiB; 10,000 idle connections would pin 640 MB).
So ``recv`` is a RECV with ``IOSQE_BUFFER_SELECT`` on the run's shared
provided-buffer ring (``_SocketBuffers``: 256 buffers of 4 KiB): the
kernel picks a buffer only when data arrives, the completion callback copies
the bytes out and returns the buffer at once.  A recv that finds more than
4 KiB waiting gets 4 KiB; the next call gets the rest (a short read, as
``recv`` may always return).  If the ring is momentarily empty (``ENOBUFS``)
the recv falls back to readiness + syscall for that call.  ``recv_into``
hands the caller's buffer to the kernel (it is the caller's memory anyway).
The msghdr ops with a size argument (``recvfrom``, ``recvmsg``) allocate
their buffer only after EAGAIN, and only up to ``_OWN_BUFFER_LIMIT``; a
bigger one waits for readiness and runs the syscall (trio's path).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import operator
import os
import socket as _stdsocket
from collections.abc import Callable
from typing import Any

import trio
import trio._core._run as _trio_run
import trio._socket as _trio_socket

from . import _multishot, _native
from . import _ops_socket as _ops
from ._manager import UringIOManager
from ._ring_ffi import ffi, lib

_SocketType: Any = _trio_socket._SocketType
_GLOBAL_RUN_CONTEXT = _trio_run.GLOBAL_RUN_CONTEXT
_StdSocket = _stdsocket.socket
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_from_stdlib_socket = trio.socket.from_stdlib_socket

# the opcodes and socket constants the lowlevel catalogue uses too
_RECV = _ops._RECV
_SEND = _ops._SEND
_RECVMSG = _ops._RECVMSG
_SENDMSG = _ops._SENDMSG
_ACCEPT = _ops._ACCEPT
_CONNECT = _ops._CONNECT
_AF_INET = _ops._AF_INET
_AF_INET6 = _ops._AF_INET6
_AF_UNIX = _ops._AF_UNIX
_NATIVE_FAMILIES = _ops._NATIVE_FAMILIES
_MSG_DONTWAIT = _ops._MSG_DONTWAIT
_ACCEPT_FLAGS = _stdsocket.SOCK_CLOEXEC | _stdsocket.SOCK_NONBLOCK
_EAGAIN = _errno.EAGAIN
_ENOBUFS = _errno.ENOBUFS
_MAX_IO = 0x7FFFF000
_BUFFER_SIZE = _multishot.BUFFER_SIZE
#: buffers in the socket receive ring (a power of two)
BUFFER_COUNT = 256
#: its buffer group id ("tv"; _multishot's ring is "tu")
SOCKET_BUFFER_GROUP = 0x7476
#: Per-op strategy (measured, see docs/native_sockets.rst); module-level so
#: the benchmark can flip them.
RECV_SUBMIT_FIRST = False
SEND_SUBMIT_FIRST = False
#: recvfrom/recvmsg allocate at most this much to wait in the kernel with
_OWN_BUFFER_LIMIT = 16384

#: the method names replaced on trio's _SocketType
HOOKED = (
    "recv",
    "recv_into",
    "recvfrom",
    "recvfrom_into",
    "recvmsg",
    "recvmsg_into",
    "send",
    "sendto",
    "sendmsg",
    "accept",
    "connect",
)
_ORIGINAL: dict[str, Any] = {name: _SocketType.__dict__[name] for name in HOOKED}

# Errors a TCP connect reports asynchronously (via SO_ERROR after
# EINPROGRESS); trio words those "Error connecting to <address>: ...".
# The kernel op cannot tell us which way an error came, so the errno decides.
_ASYNC_CONNECT_ERRORS = frozenset(
    {
        _errno.ECONNREFUSED,
        _errno.ETIMEDOUT,
        _errno.EHOSTUNREACH,
        _errno.ECONNRESET,
        _errno.EHOSTDOWN,
        _errno.ENETDOWN,
        _errno.ECONNABORTED,
    }
)


def _try_recv(sock: _stdsocket.socket, nbytes: int) -> bytes | None:
    """``sock.recv(nbytes)``, or None for EAGAIN.

    A plain function on purpose: the BlockingIOError's traceback then holds
    only this frame, which is gone as soon as it returns.  Caught in the
    coroutine instead, the traceback would make CPython materialise a frame
    object for the coroutine, kept for as long as the coroutine waits:
    about 130 bytes per waiting connection (1.3 MiB for 10,000).
    """
    try:
        return sock.recv(nbytes)
    except BlockingIOError:
        return None


_AGAIN: Any = object()  # _attempt's "the syscall said EAGAIN"


def _attempt(sync: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``sync(*args, **kwargs)``, or ``_AGAIN`` for EAGAIN (see _try_recv for
    why this is a plain function)."""
    try:
        return sync(*args, **kwargs)
    except BlockingIOError:
        return _AGAIN


def _manager() -> UringIOManager | None:
    """The running trio's UringIOManager, or None (epoll, or not in trio)."""
    try:
        manager: Any = _GLOBAL_RUN_CONTEXT.runner.io_manager
    except AttributeError:
        return None
    if type(manager) is UringIOManager and manager.native_sockets:
        return manager
    return None


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class _SocketBuffers:
    """The provided-buffer ring trio sockets receive into (group
    ``SOCKET_BUFFER_GROUP``, ``BUFFER_COUNT`` buffers of ``BUFFER_SIZE``).

    Separate from ``_multishot``'s ring so its memory is allocated
    uninitialised: a page of it becomes resident only once the kernel has
    written data into it, so a run whose connections sit idle pays nothing
    for it.  The kernel hands buffers out in ring order and ``take`` gives
    each back as soon as its bytes are copied out.
    """

    def __init__(self, manager: UringIOManager) -> None:
        self._ring_mem = lib.tu_pbuf_ring_alloc(BUFFER_COUNT)
        if self._ring_mem == ffi.NULL:
            raise MemoryError("cannot allocate a provided buffer ring")
        self._buffers = _ops._alloc_uninit("char[]", BUFFER_COUNT * _BUFFER_SIZE)
        self._base = _ops._addr(self._buffers)
        ret = lib.tu_pbuf_ring_register(
            manager._ring.ptr, self._ring_mem, BUFFER_COUNT, SOCKET_BUFFER_GROUP
        )
        if ret < 0:
            lib.tu_pbuf_ring_free(self._ring_mem, BUFFER_COUNT)
            raise OSError(-ret, os.strerror(-ret))
        push = lib.tu_pbuf_ring_push
        ring_mem = self._ring_mem
        base = self._base
        for bid in range(BUFFER_COUNT):
            push(ring_mem, BUFFER_COUNT, base + bid * _BUFFER_SIZE, _BUFFER_SIZE, bid)
        view = ffi.buffer(self._buffers)  # slicing it makes one bytes copy

        def take(bid: int, n: int) -> bytes:
            start = bid * _BUFFER_SIZE
            data: bytes = view[start : start + n]
            push(ring_mem, BUFFER_COUNT, base + start, _BUFFER_SIZE, bid)
            return data

        self.take = take
        # the kernel may write into the buffers until the ring is gone: the
        # manager frees them after closing it
        manager._keep_until_closed.append(self)

    def free(self) -> None:
        if self._ring_mem != ffi.NULL:
            lib.tu_pbuf_ring_free(self._ring_mem, BUFFER_COUNT)
            self._ring_mem = ffi.NULL


def _take_fn(manager: UringIOManager) -> Callable[[int, int], bytes] | None:
    """The run's socket buffer ring's ``take(buffer_id, n)`` (made on first
    use), or None if this kernel has no provided buffer rings."""
    take: Any = manager._socket_take
    if take is None:
        try:
            take = _SocketBuffers(manager).take
        except OSError:
            take = False
        manager._socket_take = take
    return take or None


def _encode(family: int, address: Any) -> bytes | None:
    """The sockaddr for an address trio resolved; None: leave it to the stdlib."""
    try:
        if family == _AF_INET6:
            host, port, *rest = address
            flowinfo = rest[0] if rest else 0
            scope_id = rest[1] if len(rest) > 1 else 0
            address = (host, port, flowinfo, scope_id)
        return _ops._encode(family, address)
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None


# --- the try-first path: trio's _nonblocking_helper, EAGAIN goes native ---------
async def _try_first(
    manager: UringIOManager,
    sync: Callable[[], Any],
    native: Callable[[UringIOManager], Any],
) -> Any:
    """``sync()`` as trio would run it; on BlockingIOError ``await native()``."""
    await _checkpoint_if_cancelled()
    try:
        result = _attempt(sync)
    except BaseException:
        await _cancel_shielded_checkpoint()
        raise
    if result is not _AGAIN:
        await _cancel_shielded_checkpoint()
        return result
    return await native(manager)


async def _readiness_loop(fd: int, reading: bool, sync: Callable[[], Any]) -> Any:
    """Wait (POLL_ADD) and retry ``sync`` until it stops saying EAGAIN."""
    wait = trio.lowlevel.wait_readable if reading else trio.lowlevel.wait_writable
    while True:
        await wait(fd)
        try:
            return sync()
        except BlockingIOError:
            pass


async def _native_retry(
    manager: UringIOManager,
    reading: bool,
    opcode: int,
    fd: int,
    addr: int,
    length: int,
    op_flags: int,
    keep: object,
    release: tuple[Any, ...] = (),
) -> int:
    """One native op; should the kernel answer EAGAIN (a non-blocking
    socket on some kernels), wait for readiness and go again.

    ``release``: the caller's buffers (cffi ``from_buffer`` views) the op
    uses.  They are released as soon as the kernel is done with them (the
    op's final CQE has come, or it never reached the kernel), so a
    memoryview or bytearray is not left exported -- an exception's
    traceback would otherwise keep the view alive, and trio's
    ``send_all`` releases its memoryview slices right after a cancelled
    send.
    """
    try:
        while True:
            try:
                n: int = await manager.submit_socket(
                    opcode, fd, addr, length, 0, op_flags, keep, reading
                )
                return n
            except BlockingIOError:
                if op_flags & _MSG_DONTWAIT:
                    raise
            if reading:
                await trio.lowlevel.wait_readable(fd)
            else:
                await trio.lowlevel.wait_writable(fd)
    finally:
        for view in release:
            ffi.release(view)


# --- recv / recv_into: submit-first ------------------------------------------------
async def _recv_select(
    manager: UringIOManager, sock: _stdsocket.socket, nbytes: int, flags: int
) -> bytes:
    """RECV into a provided buffer; no buffer is held while it waits."""
    take = manager._socket_take or _take_fn(manager)
    fd = sock.fileno()
    if take is None:
        return await _recv_own_buffer(manager, sock, min(nbytes, _BUFFER_SIZE), flags)
    try:
        data: bytes = await manager.submit_socket(
            _RECV, fd, 0, min(nbytes, _BUFFER_SIZE), 0, flags, None, True,
            take, SOCKET_BUFFER_GROUP,
        )  # fmt: skip
        return data
    except OSError as exc:
        if exc.errno == _ENOBUFS:
            # Every provided buffer was in a completion not yet processed
            # (they are back now).  Data is waiting: read it directly.
            return await _readiness_loop_first(sock, nbytes, flags)
        if exc.errno != _EAGAIN or flags & _MSG_DONTWAIT:
            raise
    return await _readiness_loop(fd, True, lambda: sock.recv(nbytes, flags))  # type: ignore[no-any-return]


async def _readiness_loop_first(
    sock: _stdsocket.socket, nbytes: int, flags: int
) -> bytes:
    try:
        return sock.recv(nbytes, flags)
    except BlockingIOError:
        pass
    return await _readiness_loop(sock.fileno(), True, lambda: sock.recv(nbytes, flags))  # type: ignore[no-any-return]


async def _recv_own_buffer(
    manager: UringIOManager, sock: _stdsocket.socket, nbytes: int, flags: int
) -> bytes:
    buf = _ops._alloc_uninit("char[]", nbytes)
    n = await _native_retry(
        manager, True, _RECV, sock.fileno(), _ops._addr(buf), nbytes, flags, buf
    )
    data: bytes = ffi.buffer(buf, n)[:]
    return data


def _int_args(args: tuple[Any, ...], kwargs: dict[str, Any], most: int) -> bool:
    return (
        not kwargs
        and 1 <= len(args) <= most
        and all(type(a) is int and 0 <= a <= _MAX_IO for a in args)
    )


async def _recv(self: Any, *args: Any, **kwargs: Any) -> Any:
    manager = _manager()
    sock = self._sock
    if manager is None or type(sock) is not _StdSocket:
        return await _ORIGINAL["recv"](self, *args, **kwargs)
    if len(args) == 1 and not kwargs and type(args[0]) is int and args[0] > 0:
        nbytes = args[0]  # the common recv(n), checked inline
        if RECV_SUBMIT_FIRST:
            return await _recv_select(manager, sock, min(nbytes, _MAX_IO), 0)
        await _checkpoint_if_cancelled()
        try:
            data = _try_recv(sock, nbytes)
        except BaseException:
            await _cancel_shielded_checkpoint()
            raise
        if data is not None:
            await _cancel_shielded_checkpoint()
            return data
        return await _recv_select(manager, sock, min(nbytes, _MAX_IO), 0)
    # try-first, trio's sandwich inlined (no closures on the hot path)
    await _checkpoint_if_cancelled()
    try:
        data = _attempt(sock.recv, *args, **kwargs)
    except BaseException:
        await _cancel_shielded_checkpoint()
        raise
    if data is not _AGAIN:
        await _cancel_shielded_checkpoint()
        return data
    # EAGAIN: the stdlib accepted the arguments, (nbytes[, flags])
    nbytes = operator.index(args[0])
    flags = operator.index(args[1]) if len(args) > 1 else 0
    if not nbytes or flags & _MSG_DONTWAIT or not 0 <= flags <= 0xFFFFFFFF:
        return await _readiness_loop(sock.fileno(), True, lambda: sock.recv(*args))
    return await _recv_select(manager, sock, min(nbytes, _MAX_IO), flags)


async def _recv_into(self: Any, *args: Any, **kwargs: Any) -> Any:
    manager = _manager()
    sock = self._sock
    if manager is None or type(sock) is not _StdSocket:
        return await _ORIGINAL["recv_into"](self, *args, **kwargs)
    await _checkpoint_if_cancelled()
    try:
        n = _attempt(sock.recv_into, *args, **kwargs)
    except BaseException:
        await _cancel_shielded_checkpoint()
        raise
    if n is not _AGAIN:
        await _cancel_shielded_checkpoint()
        return n
    # EAGAIN: the stdlib accepted the arguments, (buffer[, nbytes[, flags]])
    names = ("buffer", "nbytes", "flags")
    values = dict(zip(names, args, strict=False))
    values.update(kwargs)
    nbytes = operator.index(values.get("nbytes", 0))
    flags = operator.index(values.get("flags", 0))
    try:
        cbuf = ffi.from_buffer(values["buffer"], require_writable=True)
    except (TypeError, BufferError, KeyError):
        cbuf = None
    if cbuf is None or flags & _MSG_DONTWAIT or not 0 <= flags <= 0xFFFFFFFF:
        return await _readiness_loop(
            sock.fileno(), True, lambda: sock.recv_into(*args, **kwargs)
        )
    want = min(nbytes or len(cbuf), _MAX_IO)
    return await _native_retry(
        manager, True, _RECV, sock.fileno(), _ops._addr(cbuf), want, flags, cbuf,
        (cbuf,),
    )  # fmt: skip


# --- send: try-first ---------------------------------------------------------------
async def _send_native(
    manager: UringIOManager, sock: _stdsocket.socket, data: Any, flags: int
) -> int:
    cbuf, addr, length = _native.readable_buffer(data)
    return await _native_retry(
        manager, False, _SEND, sock.fileno(), addr, min(length, _MAX_IO), flags, cbuf,
        (cbuf,),
    )  # fmt: skip


async def _send(self: Any, *args: Any, **kwargs: Any) -> Any:
    manager = _manager()
    sock = self._sock
    if manager is None or type(sock) is not _StdSocket:
        return await _ORIGINAL["send"](self, *args, **kwargs)
    if SEND_SUBMIT_FIRST and not kwargs and 1 <= len(args) <= 2:
        flags = args[1] if len(args) > 1 else 0
        if (
            type(flags) is int
            and 0 <= flags <= 0xFFFFFFFF
            and not flags & _MSG_DONTWAIT
        ):
            try:
                cbuf = ffi.from_buffer(args[0])
            except TypeError:
                pass
            else:
                return await _native_retry(
                    manager, False, _SEND, sock.fileno(), _ops._addr(cbuf),
                    min(len(cbuf), _MAX_IO), flags, cbuf, (cbuf,),
                )  # fmt: skip
    await _checkpoint_if_cancelled()
    try:
        result = _attempt(sock.send, *args, **kwargs)
    except BaseException:
        await _cancel_shielded_checkpoint()
        raise
    if result is not _AGAIN:
        await _cancel_shielded_checkpoint()
        return result
    # the stdlib accepted the arguments: (data[, flags])
    flags = args[1] if len(args) > 1 else 0
    return await _send_native(manager, sock, args[0], flags)


# --- the msghdr ops: try-first -------------------------------------------------------
def _family_native(sock: _stdsocket.socket) -> bool:
    return sock.family in _NATIVE_FAMILIES


async def _recvmsg_views(
    manager: UringIOManager,
    sock: _stdsocket.socket,
    views: list[tuple[Any, int, int]],
    ancbufsize: int,
    flags: int,
    release: tuple[Any, ...] = (),
) -> tuple[int, list[tuple[int, int, bytes]], int, Any]:
    """RECVMSG scattering into ``views``; (nbytes, ancdata, msg_flags, address)."""
    block, base, raw, name_off, ctrl_off = _ops._recvmsg_header(views, ancbufsize)
    n = await _native_retry(
        manager, True, _RECVMSG, sock.fileno(), base, 1, flags, (block, views),
        release,
    )  # fmt: skip
    return (n, *_ops._recvmsg_outcome(raw, name_off, ctrl_off, ancbufsize))


def _sized_args(
    args: tuple[Any, ...], kwargs: dict[str, Any], names: tuple[str, ...]
) -> tuple[int, ...] | None:
    """Positional ints as the stdlib accepted them (it already ran once)."""
    if kwargs:
        return None
    values = list(args) + [0] * (len(names) - len(args))
    if len(values) != len(names) or not all(type(v) is int for v in values):
        return None
    return tuple(values)


async def _recvfrom(self: Any, *args: Any, **kwargs: Any) -> Any:
    manager = _manager()
    sock = self._sock
    if manager is None or type(sock) is not _StdSocket:
        return await _ORIGINAL["recvfrom"](self, *args, **kwargs)

    def sync() -> Any:
        return sock.recvfrom(*args, **kwargs)

    async def native(m: UringIOManager) -> Any:
        sized = _sized_args(args, kwargs, ("bufsize", "flags"))
        if sized is None or not _family_native(sock) or sized[0] > _OWN_BUFFER_LIMIT:
            return await _readiness_loop(sock.fileno(), True, sync)
        nbytes, flags = sized
        buf = _ops._alloc_uninit("char[]", max(nbytes, 1))
        n, _, _, address = await _recvmsg_views(
            m, sock, [(buf, _ops._addr(buf), nbytes)], 0, flags
        )
        return ffi.buffer(buf, n)[:], address

    return await _try_first(manager, sync, native)


async def _recvfrom_into(self: Any, *args: Any, **kwargs: Any) -> Any:
    manager = _manager()
    sock = self._sock
    if manager is None or type(sock) is not _StdSocket:
        return await _ORIGINAL["recvfrom_into"](self, *args, **kwargs)

    def sync() -> Any:
        return sock.recvfrom_into(*args, **kwargs)

    async def native(m: UringIOManager) -> Any:
        sized = _sized_args(args[1:], kwargs, ("nbytes", "flags"))
        if sized is None or not _family_native(sock):
            return await _readiness_loop(sock.fileno(), True, sync)
        nbytes, flags = sized
        cbuf, addr, length = _ops._writable(args[0])
        n, _, _, address = await _recvmsg_views(
            m, sock, [(cbuf, addr, nbytes or length)], 0, flags, (cbuf,)
        )
        return n, address

    return await _try_first(manager, sync, native)


async def _recvmsg(self: Any, *args: Any, **kwargs: Any) -> Any:
    manager = _manager()
    sock = self._sock
    if manager is None or type(sock) is not _StdSocket:
        return await _ORIGINAL["recvmsg"](self, *args, **kwargs)

    def sync() -> Any:
        return sock.recvmsg(*args, **kwargs)

    async def native(m: UringIOManager) -> Any:
        sized = _sized_args(args, kwargs, ("bufsize", "ancbufsize", "flags"))
        if sized is None or not _family_native(sock) or sized[0] > _OWN_BUFFER_LIMIT:
            return await _readiness_loop(sock.fileno(), True, sync)
        nbytes, ancbufsize, flags = sized
        buf = _ops._alloc_uninit("char[]", max(nbytes, 1))
        n, anc, msg_flags, address = await _recvmsg_views(
            m, sock, [(buf, _ops._addr(buf), nbytes)], ancbufsize, flags
        )
        return ffi.buffer(buf, n)[:], anc, msg_flags, address

    return await _try_first(manager, sync, native)


async def _recvmsg_into(self: Any, *args: Any, **kwargs: Any) -> Any:
    manager = _manager()
    sock = self._sock
    if manager is None or type(sock) is not _StdSocket:
        return await _ORIGINAL["recvmsg_into"](self, *args, **kwargs)
    # the buffers may be a one-shot iterator: take them once, for both paths
    if not kwargs and args:
        try:
            buffers = list(args[0])
        except TypeError:
            pass
        else:
            args = (buffers, *args[1:])

    def sync() -> Any:
        return sock.recvmsg_into(*args, **kwargs)

    async def native(m: UringIOManager) -> Any:
        sized = _sized_args(args[1:], kwargs, ("ancbufsize", "flags"))
        if sized is None or not _family_native(sock):
            return await _readiness_loop(sock.fileno(), True, sync)
        ancbufsize, flags = sized
        views = [_ops._writable(b) for b in args[0]]
        return await _recvmsg_views(
            m, sock, views, ancbufsize, flags, tuple(v[0] for v in views)
        )

    return await _try_first(manager, sync, native)


async def _sendto(self: Any, *args: Any) -> Any:
    manager = _manager()
    sock = self._sock
    if manager is None or type(sock) is not _StdSocket:
        return await _ORIGINAL["sendto"](self, *args)
    # as trio: data[, flags], address -- the address resolved first
    args_list = list(args)
    args_list[-1] = await self._resolve_address_nocp(args[-1], local=False)

    def sync() -> Any:
        return sock.sendto(*args_list)

    async def native(m: UringIOManager) -> Any:
        flags = args_list[1] if len(args_list) == 3 else 0
        if not _family_native(sock):
            return await _readiness_loop(sock.fileno(), False, sync)
        sockaddr = _encode(sock.family, args_list[-1])
        if sockaddr is None:
            return await _readiness_loop(sock.fileno(), False, sync)
        return await _sendmsg_views(
            m, sock, [_native.readable_buffer(args_list[0])], b"", sockaddr, flags
        )

    return await _try_first(manager, sync, native)


async def _sendmsg_views(
    manager: UringIOManager,
    sock: _stdsocket.socket,
    views: list[tuple[Any, int, int]],
    control: bytes,
    sockaddr: bytes | None,
    flags: int,
) -> int:
    block, base = _ops._sendmsg_header(views, control, sockaddr)
    return await _native_retry(
        manager, False, _SENDMSG, sock.fileno(), base, 1, flags, (block, views),
        tuple(v[0] for v in views),
    )  # fmt: skip


async def _sendmsg(self: Any, *args: Any) -> Any:
    manager = _manager()
    sock = self._sock
    if manager is None or type(sock) is not _StdSocket:
        return await _ORIGINAL["sendmsg"](self, *args)
    if not 1 <= len(args) <= 4:  # trio's signature raises the TypeError
        return await _ORIGINAL["sendmsg"](self, *args)
    # as trio: (buffers, ancdata=(), flags=0, address=None), address resolved
    # first; iterables are taken once (both paths may need them), anything
    # else goes to the stdlib as it is, for its own error
    buffers: Any = args[0]
    ancdata: Any = args[1] if len(args) > 1 else ()
    with contextlib.suppress(TypeError):
        buffers = list(buffers)
    with contextlib.suppress(TypeError):
        ancdata = list(ancdata)
    flags = args[2] if len(args) > 2 else 0
    address = args[3] if len(args) > 3 else None
    if address is not None:
        address = await self._resolve_address_nocp(address, local=False)

    def sync() -> Any:
        return sock.sendmsg(buffers, ancdata, flags, address)

    async def native(m: UringIOManager) -> Any:
        sockaddr = None if address is None else _encode(sock.family, address)
        if not _family_native(sock) or (address is not None and sockaddr is None):
            return await _readiness_loop(sock.fileno(), False, sync)
        views = [_native.readable_buffer(b) for b in buffers]
        control = _ops._control(ancdata)
        return await _sendmsg_views(m, sock, views, control, sockaddr, flags)

    return await _try_first(manager, sync, native)


# --- accept: try-first ----------------------------------------------------------------
async def _accept_native(manager: UringIOManager, sock: _stdsocket.socket) -> Any:
    if not _family_native(sock):
        return await _readiness_loop(sock.fileno(), True, sock.accept)
    len_off = _ops._SOCKADDR_STORAGE
    block, base, raw = _ops._block(len_off + _ops._SOCKLEN.size)
    _ops._SOCKLEN.pack_into(raw, len_off, _ops._SOCKADDR_STORAGE)
    # the kernel writes the address and its length: both stay referenced
    # (keep=) until the final CQE, whatever happens to this task
    while True:
        try:
            newfd: int = await manager.submit_socket(
                _ACCEPT, sock.fileno(), base, 0, base + len_off, _ACCEPT_FLAGS,
                block, True,
            )  # fmt: skip
            break
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock.fileno())
    # From here on nothing awaits: the connection is the caller's even if
    # the task was cancelled while the kernel accepted it.
    try:
        (addrlen,) = _ops._SOCKLEN.unpack_from(raw, len_off)
        address = _ops._decode(raw, 0, addrlen)
        conn = _StdSocket(sock.family, sock.type, sock.proto, fileno=newfd)
    except BaseException:
        os.close(newfd)
        raise
    return conn, address


async def _accept(self: Any) -> Any:
    manager = _manager()
    sock = self._sock
    if manager is None or type(sock) is not _StdSocket:
        return await _ORIGINAL["accept"](self)
    conn, address = await _try_first(
        manager, sock.accept, lambda m: _accept_native(m, sock)
    )
    return _from_stdlib_socket(conn), address


# --- connect: submit-first ------------------------------------------------------------
async def _connect(self: Any, address: Any) -> None:
    manager = _manager()
    sock = self._sock
    if (
        manager is None
        or type(sock) is not _StdSocket
        or sock.family not in _NATIVE_FAMILIES
        or not manager.supports(_CONNECT)
    ):
        await _ORIGINAL["connect"](self, address)
        return
    try:
        address = await self._resolve_address_nocp(address, local=False)
        sockaddr = _encode(sock.family, address)
        if sockaddr is None:  # the stdlib words it: trio's way
            await _ORIGINAL["connect"](self, address)
            return
        cbuf = ffi.new("char[]", sockaddr)
        try:
            await manager.submit(
                _CONNECT, sock.fileno(), _ops._addr(cbuf), 0, len(sockaddr),
                keep=cbuf,
            )  # fmt: skip
            return
        except OSError as exc:
            err = exc.errno
            if err not in (_errno.EINPROGRESS, _errno.EALREADY, _EAGAIN):
                if (
                    err in _ASYNC_CONNECT_ERRORS
                    and sock.family != _AF_UNIX
                    and sock.type == _stdsocket.SOCK_STREAM
                ):
                    raise OSError(
                        err, f"Error connecting to {address!r}: {os.strerror(err)}"
                    ) from None
                raise
        # Still in progress (some kernels report it): finish as trio does.
        await trio.lowlevel.wait_writable(sock)
    except trio.Cancelled:
        # As trio: a connect cannot really be cancelled; close the socket
        # so nobody is confused by its half-way state.
        sock.close()
        raise
    err = sock.getsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_ERROR)
    if err != 0:
        raise OSError(err, f"Error connecting to {address!r}: {os.strerror(err)}")


_WRAPPERS: dict[str, Callable[..., Any]] = {
    "recv": _recv,
    "recv_into": _recv_into,
    "recvfrom": _recvfrom,
    "recvfrom_into": _recvfrom_into,
    "recvmsg": _recvmsg,
    "recvmsg_into": _recvmsg_into,
    "send": _send,
    "sendto": _sendto,
    "sendmsg": _sendmsg,
    "accept": _accept,
    "connect": _connect,
}


def _dress(name: str, wrapper: Callable[..., Any]) -> Callable[..., Any]:
    original = _ORIGINAL[name]
    wrapper.__name__ = name
    wrapper.__qualname__ = f"_SocketType.{name}"
    wrapper.__doc__ = original.__doc__
    wrapper.__trio_uring_original__ = original  # type: ignore[attr-defined]
    return wrapper


for _name, _fn in _WRAPPERS.items():
    _dress(_name, _fn)


def hook() -> None:
    """Put the io_uring wrappers on trio's _SocketType (idempotent).

    Not with TRIO_URING_NATIVE_SOCKETS=0 in the environment: then trio's own
    methods stay, without even the wrappers' manager check in front of them
    (runs started while it was not set are told by their manager's
    ``native_sockets``, which the wrappers check).
    """
    if os.environ.get("TRIO_URING_NATIVE_SOCKETS") == "0":
        return
    for name, wrapper in _WRAPPERS.items():
        if _SocketType.__dict__.get(name) is not wrapper:
            setattr(_SocketType, name, wrapper)


def unhook() -> None:
    """Give trio's _SocketType its own methods back."""
    for name, original in _ORIGINAL.items():
        setattr(_SocketType, name, original)


def hooked() -> bool:
    return all(_SocketType.__dict__.get(n) is w for n, w in _WRAPPERS.items())
