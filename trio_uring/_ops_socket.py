"""Native socket operations (and two odd ones out: nop, timeout).

Each function here is one io_uring opcode with a trio-style signature that
mirrors its :mod:`socket` counterpart (``recv`` ~ ``socket.recv``,
``recvmsg`` ~ ``socket.recvmsg``, ``accept`` ~ ``socket.accept`` but
returning a raw fd...).  ``sock`` is an fd or anything with ``fileno()``: a
stdlib socket, a trio socket.  They all follow one shape:

1. validate the arguments (TypeError for a non-buffer or a read-only buffer
   where the kernel writes, ValueError for a negative size, OverflowError
   for a size the kernel cannot take, EBADF for a negative fd; address
   errors as the stdlib raises them);
2. find the running :class:`~trio_uring._manager.UringIOManager`;
3. if this kernel lacks the opcode (``IORING_REGISTER_PROBE``), or the
   socket's address family is one we do not encode (anything but
   ``AF_INET``, ``AF_INET6``, ``AF_UNIX``, for the ops that carry an
   address), take the path trio's own sockets take: the non-blocking
   syscall, and ``wait_readable``/``wait_writable`` while it would block;
4. otherwise fill the SQE and ``await manager.submit(...)``, passing as
   ``keep`` every object the kernel may read or write (buffers, the
   ``msghdr`` with its iovecs, sockaddr and control buffers, the socklen_t
   that accept writes), so it stays alive until the op's final CQE whatever
   happens to the task.

The cancellation contract is :meth:`UringIOManager.submit`'s: cancelled
before the SQE reached the kernel means nothing happened (a cancelled send
sent nothing); cancelled later means the kernel decides (``-ECANCELED``:
nothing happened, Cancelled; anything else: the result is delivered, the
bytes a recv consumed are returned and the fd an accept created is handed
over, and Cancelled surfaces at the next checkpoint).  The fallback path
keeps the same promise: the syscall either ran (its result is returned) or
did not.

Blocking and non-blocking fds.  io_uring's socket ops wait for readiness by
themselves whatever the fd's ``O_NONBLOCK`` says, so a stdlib socket in
blocking mode works as well as a trio socket.  Should a kernel still answer
``EAGAIN`` (older kernels did for some ops on non-blocking sockets), the op
waits for readiness and goes again; only an explicit ``MSG_DONTWAIT`` turns
``EAGAIN`` into :class:`BlockingIOError`.  The fallback path never blocks
the thread: it runs each syscall on a non-blocking view of the fd and puts
the fd's blocking flag back before anything else can run.

SQE field use (``struct io_uring_sqe``; ``submit`` takes ``fd, addr, len,
off, op_flags``): RECV/SEND put the buffer in ``addr``/``len`` and the MSG_*
flags in ``msg_flags``; RECVMSG/SENDMSG put a ``struct msghdr`` in ``addr``;
ACCEPT puts the sockaddr in ``addr`` and the socklen_t pointer in ``addr2``
(the ``off`` slot); CONNECT puts the sockaddr in ``addr`` and its length in
``addr2``; SOCKET takes the domain in ``fd``, the protocol in ``len`` and
the type in ``off``; SHUTDOWN takes ``how`` in ``len``; POLL_ADD takes the
event mask in ``poll32_events`` (the flags union); TIMEOUT takes a
``__kernel_timespec`` in ``addr`` with ``len`` 1.  ``sendto``/``recvfrom``
are SENDMSG/RECVMSG with one iovec, which every io_uring kernel supports
(SEND only learnt a destination address in later kernels).

Kernel memory layouts are built with :mod:`struct` in native mode, which is
the C layout of this platform: ``struct msghdr`` is
``{void *name; int namelen; struct iovec *iov; size_t iovlen; void
*control; size_t controllen; int flags}`` (56 bytes on 64-bit), ``struct
iovec`` ``{void *base; size_t len}``, ``struct cmsghdr`` ``{size_t len; int
level; int type}``; sockaddrs as in ``<netinet/in.h>`` and ``<sys/un.h>``.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import math
import os
import select
import socket as _socket
import struct
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import trio

from . import _native
from ._manager import FdLike, UringIOManager
from ._ring import OP
from ._ring_ffi import ffi

__all__ = [
    "accept",
    "connect",
    "nop",
    "poll",
    "recv",
    "recv_into",
    "recvfrom",
    "recvmsg",
    "send",
    "sendmsg",
    "sendto",
    "shutdown",
    "socket",
    "timeout",
]

T = TypeVar("T")
Address = Any  # what the stdlib takes/returns for the socket's family

_NOP = OP["NOP"]
_TIMEOUT = OP["TIMEOUT"]
_RECV = OP["RECV"]
_SEND = OP["SEND"]
_RECVMSG = OP["RECVMSG"]
_SENDMSG = OP["SENDMSG"]
_ACCEPT = OP["ACCEPT"]
_CONNECT = OP["CONNECT"]
_SOCKET = OP["SOCKET"]
_SHUTDOWN = OP["SHUTDOWN"]
_POLL_ADD = OP["POLL_ADD"]

_AF_INET = _socket.AF_INET
_AF_INET6 = _socket.AF_INET6
_AF_UNIX = _socket.AF_UNIX
_NATIVE_FAMILIES = frozenset((_AF_INET, _AF_INET6, _AF_UNIX))
_MSG_DONTWAIT = _socket.MSG_DONTWAIT
_SOCK_CLOEXEC = _socket.SOCK_CLOEXEC
_SOCK_NONBLOCK = _socket.SOCK_NONBLOCK
_U32 = 0xFFFFFFFF
#: the most bytes one send/recv hands the kernel (its MAX_RW_COUNT cap)
_MAX_IO = 0x7FFFF000
#: longest kernel timer we ask for ("forever": the kernel clamps to KTIME_MAX)
_FOREVER_SECONDS = 1 << 40

# recv() hands the kernel uninitialised memory: only the first ``result``
# bytes are ever copied out.
_alloc_uninit = ffi.new_allocator(should_clear_after_alloc=False)

# --- kernel layouts (native struct mode == this platform's C layout) ------------
_PTR = struct.calcsize("@P")
_MSGHDR = struct.Struct("@PiPNPNi")
_IOVEC = struct.Struct("@PN")
_CMSGHDR = struct.Struct("@Nii")
_SOCKLEN = struct.Struct("@I")
_SA_FAMILY = struct.Struct("=H")
_IN6_TAIL = struct.Struct("=I")  # sin6_scope_id, host order
_SOCKADDR_STORAGE = 128
_SUN_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path)
_CMSG_HDR_LEN = _socket.CMSG_LEN(0)


def _align(n: int) -> int:
    return (n + _PTR - 1) & ~(_PTR - 1)


_MSGHDR_SIZE = _align(_MSGHDR.size)


def _cmsg_align(n: int) -> int:
    return _socket.CMSG_SPACE(n) - _socket.CMSG_SPACE(0)


# --- helpers ------------------------------------------------------------------
def _addr(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


def _block(size: int) -> tuple[Any, int, Any]:
    """(cdata, address, writable buffer) of ``size`` zeroed, aligned bytes."""
    cdata = ffi.new("uint64_t[]", max(1, (size + 7) // 8))
    return cdata, _addr(cdata), ffi.buffer(cdata)


def _writable(buf: Any) -> tuple[Any, int, int]:
    """``_native.writable_buffer``, with a read-only buffer (cffi says
    BufferError) reported as the TypeError the stdlib raises."""
    try:
        return _native.writable_buffer(buf)
    except BufferError:
        raise TypeError(
            f"a writable bytes-like object is required, not {type(buf).__name__}"
        ) from None


_check_flags = _native.check_flags


@contextlib.contextmanager
def _raw_socket(fd: int) -> Iterator[_socket.socket]:
    """A non-blocking stdlib view of ``fd`` for one synchronous syscall.

    The fd's blocking flag is put back and the view detached (never closed)
    on the way out, before any other task can run.
    """
    blocking = os.get_blocking(fd)
    sock = _socket.socket(fileno=fd)
    try:
        sock.setblocking(False)
        yield sock
    finally:
        sock.detach()
        if blocking:
            os.set_blocking(fd, True)


def _family(sock: Any, fd: int) -> int:
    family = getattr(sock, "family", None)
    if isinstance(family, int):
        return int(family)
    with _raw_socket(fd) as raw:
        return int(raw.family)


async def _nonblocking(
    fd: int, reading: bool, attempt: Callable[[_socket.socket], T], flags: int = 0
) -> T:
    """The fallback path: ``attempt`` on a non-blocking view of ``fd``, waiting
    for readiness while it raises BlockingIOError (trio's own socket loop),
    unless ``flags`` has MSG_DONTWAIT."""
    await trio.lowlevel.checkpoint_if_cancelled()
    wait = trio.lowlevel.wait_readable if reading else trio.lowlevel.wait_writable
    first = True
    while True:
        try:
            with _raw_socket(fd) as raw:
                result = attempt(raw)
        except BlockingIOError:
            if flags & _MSG_DONTWAIT:
                raise
        else:
            if first:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return result
        first = False
        await wait(fd)


async def _submit(
    manager: UringIOManager,
    reading: bool,
    opcode: int,
    fd: int,
    addr: int,
    length: int,
    offset: int,
    op_flags: int,
    keep: object,
    dontwait: bool = False,
) -> int:
    """``manager.submit``; on EAGAIN wait for readiness and go again."""
    try:
        return await manager.submit(
            opcode, fd, addr, length, offset, op_flags, keep=keep
        )
    except BlockingIOError:
        if dontwait:
            raise
    return await _again(
        manager, reading, opcode, fd, addr, length, offset, op_flags, keep
    )


async def _again(
    manager: UringIOManager,
    reading: bool,
    opcode: int,
    fd: int,
    addr: int,
    length: int,
    offset: int,
    op_flags: int,
    keep: object,
) -> int:
    """The kernel said EAGAIN (nothing happened): wait until ``fd`` is ready,
    then submit again, until it does something."""
    while True:
        if reading:
            await trio.lowlevel.wait_readable(fd)
        else:
            await trio.lowlevel.wait_writable(fd)
        try:
            return await manager.submit(
                opcode, fd, addr, length, offset, op_flags, keep=keep
            )
        except BlockingIOError:
            pass


# --- sockaddr encoding / decoding ----------------------------------------------
def _host_str(host: object, family_name: str) -> str:
    if isinstance(host, str):
        return host
    if isinstance(host, (bytes, bytearray)):
        return bytes(host).decode("ascii")
    raise TypeError(
        f"{family_name} host must be str or bytes, not {type(host).__name__}"
    )


def _check_port(port: object) -> int:
    if not isinstance(port, int):
        raise TypeError(f"port must be an integer, not {type(port).__name__}")
    if not 0 <= port <= 0xFFFF:
        raise OverflowError("port must be 0-65535.")
    return port


async def _resolve(family: int, sock_type: int, address: Any) -> tuple[Any, ...]:
    """A numeric (host, port[, flowinfo, scope_id]) for an INET/INET6 address.

    Numeric hosts are taken as they are; ``""`` is the wildcard address and
    ``"<broadcast>"`` the IPv4 broadcast address, as in the stdlib; names
    are resolved with :func:`trio.socket.getaddrinfo` (so trio's custom
    resolvers apply and the thread never blocks on DNS).
    """
    if family == _AF_INET:
        if not isinstance(address, tuple) or len(address) != 2:
            raise TypeError(
                "AF_INET address must be a pair (host, port), "
                f"not {type(address).__name__}"
            )
        host = _host_str(address[0], "AF_INET")
        port = _check_port(address[1])
        if host == "":
            return ("0.0.0.0", port)
        if host == "<broadcast>":
            return ("255.255.255.255", port)
        try:
            _socket.inet_pton(_AF_INET, host)
        except OSError:
            pass
        else:
            return (host, port)
        info = await trio.socket.getaddrinfo(host, port, _AF_INET, sock_type)
        return (info[0][4][0], port)
    if not isinstance(address, tuple) or not 2 <= len(address) <= 4:
        raise TypeError(
            "AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]]), "
            f"not {type(address).__name__}"
        )
    host = _host_str(address[0], "AF_INET6")
    port = _check_port(address[1])
    flowinfo = address[2] if len(address) > 2 else 0
    if not isinstance(flowinfo, int):
        raise TypeError("flowinfo must be an integer")
    if not 0 <= flowinfo <= 0xFFFFF:
        raise OverflowError("flowinfo must be 0-1048575.")
    scope_id = address[3] if len(address) > 3 else None
    if scope_id is not None:
        if not isinstance(scope_id, int):
            raise TypeError("scope_id must be an integer")
        if not 0 <= scope_id <= _U32:
            raise OverflowError("scope_id must be 0-4294967295.")
    if host == "":
        return ("::", port, flowinfo, scope_id or 0)
    try:
        _socket.inet_pton(_AF_INET6, host)
    except OSError:
        pass
    else:
        return (host, port, flowinfo, scope_id or 0)
    # a name, or a numeric host with a %scope suffix
    info = await trio.socket.getaddrinfo(host, port, _AF_INET6, sock_type)
    resolved: Any = info[0][4]
    return (
        resolved[0],
        port,
        flowinfo,
        resolved[3] if scope_id is None else scope_id,
    )


def _encode(family: int, address: Any) -> bytes:
    """The sockaddr for an already-resolved address of ``family``."""
    if family == _AF_INET:
        host: str = address[0]
        port: int = address[1]
        return (
            _SA_FAMILY.pack(_AF_INET)
            + port.to_bytes(2, "big")
            + _socket.inet_pton(_AF_INET, host)
            + bytes(8)
        )
    if family == _AF_INET6:
        host, port = address[0], address[1]
        flowinfo: int = address[2]
        scope_id: int = address[3]
        return (
            _SA_FAMILY.pack(_AF_INET6)
            + port.to_bytes(2, "big")
            + flowinfo.to_bytes(4, "big")
            + _socket.inet_pton(_AF_INET6, host)
            + _IN6_TAIL.pack(scope_id)
        )
    # AF_UNIX: a filesystem path (NUL-terminated), or a Linux abstract name
    # (a leading NUL, the length says where it ends).
    if isinstance(address, (bytes, bytearray, memoryview)):
        path = bytes(address)
    elif isinstance(address, (str, os.PathLike)):
        path = os.fsencode(address)
    else:
        raise TypeError(
            "AF_UNIX address must be str, bytes or os.PathLike, "
            f"not {type(address).__name__}"
        )
    if path[:1] != b"\0":
        if len(path) >= _SUN_PATH_MAX:
            raise OSError("AF_UNIX path too long")
        path += b"\0"
    elif len(path) > _SUN_PATH_MAX:
        raise OSError("AF_UNIX path too long")
    return _SA_FAMILY.pack(_AF_UNIX) + path


async def _sockaddr(sock: Any, fd: int, address: Any) -> tuple[int, Any, bytes | None]:
    """(family, address for the stdlib, sockaddr or None: use the fallback)."""
    family = _family(sock, fd)
    if family == _AF_UNIX:
        return family, address, _encode(family, address)
    if family not in (_AF_INET, _AF_INET6):
        return family, address, None
    sock_type = getattr(sock, "type", 0)
    resolved = await _resolve(family, int(sock_type) & 0xF, address)
    return family, resolved, _encode(family, resolved)


def _decode(raw: Any, offset: int, length: int) -> Address:
    """A sockaddr the kernel wrote, as the stdlib returns it."""
    if length == 0:
        return None  # no address (e.g. the peer of a socketpair)
    data = bytes(raw[offset : offset + min(length, _SOCKADDR_STORAGE)])
    (family,) = _SA_FAMILY.unpack_from(data, 0)
    if family == _AF_INET:
        return (
            _socket.inet_ntop(_AF_INET, data[4:8]),
            int.from_bytes(data[2:4], "big"),
        )
    if family == _AF_INET6:
        return (
            _socket.inet_ntop(_AF_INET6, data[8:24]),
            int.from_bytes(data[2:4], "big"),
            int.from_bytes(data[4:8], "big"),
            _IN6_TAIL.unpack_from(data, 24)[0],
        )
    if family == _AF_UNIX:
        path = data[2:]
        if path[:1] == b"\0":
            return path  # abstract namespace: the length is the name
        return os.fsdecode(path.split(b"\0", 1)[0])
    return (family, data[2:])


# --- nop / timeout ------------------------------------------------------------
async def nop() -> None:
    """A round trip through the kernel that does nothing (``IORING_OP_NOP``).

    A checkpoint, like :func:`trio.lowlevel.checkpoint`, that also shows the
    ring is alive.
    """
    manager = _native.current_manager()
    if not manager.supports(_NOP):
        await trio.lowlevel.checkpoint()
        return
    await manager.submit(_NOP, -1)


async def timeout(seconds: float) -> None:
    """Sleep for ``seconds`` on a kernel timer (``IORING_OP_TIMEOUT``).

    The timer runs on the kernel's monotonic clock, i.e. in real time, even
    when trio runs on a :class:`trio.testing.MockClock`; use
    :func:`trio.sleep` for trio's own clock.  Cancellation works like any
    other op (the timer is cancelled in the kernel).

    :param seconds: how long, ``>= 0``; ``math.inf`` sleeps until cancelled.
    :raises ValueError: for a negative or NaN ``seconds``.
    """
    if not isinstance(seconds, (int, float)):
        raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
    if math.isnan(seconds) or seconds < 0:
        raise ValueError("seconds must be >= 0")
    manager = _native.current_manager()
    if not manager.supports(_TIMEOUT):
        await trio.sleep(seconds)
        return
    if seconds >= _FOREVER_SECONDS:
        sec, nsec = _FOREVER_SECONDS, 0
    else:
        ns = round(seconds * 1e9)
        sec, nsec = divmod(ns, 10**9)
    ts = ffi.new("int64_t[2]", [sec, nsec])  # struct __kernel_timespec
    try:
        await manager.submit(_TIMEOUT, -1, _addr(ts), 1, 0, 0, keep=ts)
    except OSError as exc:
        if exc.errno != _errno.ETIME:  # ETIME: the timer expired, as it should
            raise


# --- recv / send ----------------------------------------------------------------
async def recv(sock: FdLike, nbytes: int, flags: int = 0) -> bytes:
    """Receive up to ``nbytes`` bytes (``IORING_OP_RECV``); like ``socket.recv``.

    :param sock: a socket fd, or an object with ``fileno()``.
    :param nbytes: the most bytes to receive (``0 <= nbytes < 2**31``).
    :param flags: ``MSG_*`` flags (``MSG_PEEK``, ``MSG_WAITALL``...);
        ``MSG_DONTWAIT`` raises :class:`BlockingIOError` instead of waiting.
    :returns: the bytes received; ``b""`` when the peer has shut down, and
        for ``nbytes=0`` at once (a checkpoint, as the stdlib returns at once).
        With ``MSG_TRUNC`` a datagram longer than ``nbytes`` gives its first
        ``nbytes`` bytes (``socket.recv`` pads them to the datagram's length
        with undefined bytes; :func:`recvmsg` tells the length).
    :raises OSError: from the kernel (``EBADF``, ``ENOTSOCK``...).
    :raises ValueError: for a negative ``nbytes``.
    :raises OverflowError: for an ``nbytes`` of ``2**31`` or more.
    :raises trio.ClosedResourceError: if ``notify_closing(sock)`` is called
        while the recv waits.
    """
    fd = _native.check_fd(sock)
    nbytes = _native.check_size(nbytes, "nbytes")
    flags = _check_flags(flags)
    manager = _native.current_manager()
    if not nbytes:
        await trio.lowlevel.checkpoint()
        return b""
    if not manager.supports(_RECV):
        return await _nonblocking(fd, True, lambda s: s.recv(nbytes, flags), flags)
    try:
        data: bytes = await manager._core.start_read(_RECV, fd, nbytes, 0, flags)
    except BlockingIOError:
        if flags & _MSG_DONTWAIT:
            raise
        buf = _alloc_uninit("char[]", nbytes)
        n = await _again(manager, True, _RECV, fd, _addr(buf), nbytes, 0, flags, buf)
        data = ffi.unpack(buf, n)
    return data


async def recv_into(sock: FdLike, buf: Any, nbytes: int = 0, flags: int = 0) -> int:
    """Receive into the writable buffer ``buf`` (``IORING_OP_RECV``).

    Like ``socket.recv_into``: ``nbytes=0`` means ``len(buf)``.

    :returns: the number of bytes received (0 when the peer has shut down,
        and at once for an empty ``buf``).
    :raises TypeError: if ``buf`` is not a writable buffer (``bytes`` is not).
    :raises ValueError: for a negative ``nbytes``, or one larger than ``buf``.
    :raises OSError, OverflowError, trio.ClosedResourceError: as :func:`recv`.
    """
    fd = _native.check_fd(sock)
    cbuf, addr, length = _writable(buf)
    nbytes = _native.check_size(nbytes, "nbytes")
    if nbytes > length:
        raise ValueError("buffer too small for requested bytes")
    flags = _check_flags(flags)
    want = min(nbytes or length, _MAX_IO)
    manager = _native.current_manager()
    if not want:
        await trio.lowlevel.checkpoint()
        return 0
    if not manager.supports(_RECV):
        return await _nonblocking(
            fd, True, lambda s: s.recv_into(buf, want, flags), flags
        )
    try:
        return await manager.submit_rw(_RECV, fd, cbuf, want, 0, flags)
    except BlockingIOError:
        if flags & _MSG_DONTWAIT:
            raise
    return await _again(manager, True, _RECV, fd, addr, want, 0, flags, cbuf)


async def send(sock: FdLike, data: Any, flags: int = 0) -> int:
    """Send ``data`` (``IORING_OP_SEND``); like ``socket.send``.

    :param data: any bytes-like object.
    :param flags: ``MSG_*`` flags.  io_uring always adds ``MSG_NOSIGNAL``
        (a closed peer gives ``EPIPE``, never ``SIGPIPE``).
    :returns: the number of bytes sent, which may be less than ``len(data)``.
    :raises TypeError: if ``data`` is not bytes-like.
    :raises OSError, ValueError, OverflowError, trio.ClosedResourceError:
        as :func:`recv` (``EPIPE``/``ECONNRESET`` for a closed peer).
    """
    fd = _native.check_fd(sock)
    cbuf, addr, length = _native.readable_buffer(data)
    flags = _check_flags(flags)
    manager = _native.current_manager()
    if not manager.supports(_SEND):
        return await _nonblocking(fd, False, lambda s: s.send(data, flags), flags)
    length = min(length, _MAX_IO)
    try:
        return await manager.submit_rw(_SEND, fd, cbuf, length, 0, flags)
    except BlockingIOError:
        if flags & _MSG_DONTWAIT:
            raise
    return await _again(manager, False, _SEND, fd, addr, length, 0, flags, cbuf)


# --- msghdr ops: sendto / recvfrom / sendmsg / recvmsg ---------------------------
def _iovecs(buffers: Iterable[Any]) -> tuple[list[Any], list[Any]]:
    """(the buffers as a list, their cffi views) for sendmsg."""
    if isinstance(buffers, (bytes, bytearray, memoryview, str)):
        raise TypeError("buffers must be an iterable of bytes-like objects")
    try:
        items = list(buffers)
    except TypeError:
        raise TypeError(
            "buffers must be an iterable of bytes-like objects, "
            f"not {type(buffers).__name__}"
        ) from None
    return items, [_native.readable_buffer(item) for item in items]


def _control(ancdata: Iterable[Any]) -> bytes:
    """The control (cmsg) bytes for sendmsg's ``ancdata``."""
    out = bytearray()
    for item in ancdata:
        if not isinstance(item, tuple) or len(item) != 3:
            raise TypeError("ancillary data items must be (level, type, data) tuples")
        level, kind, payload = item
        if not isinstance(level, int) or not isinstance(kind, int):
            raise TypeError("ancillary data level and type must be integers")
        cbuf, _, size = _native.readable_buffer(payload)
        start = len(out)
        out += bytes(_socket.CMSG_SPACE(size))
        _CMSGHDR.pack_into(out, start, _socket.CMSG_LEN(size), level, kind)
        out[start + _CMSG_HDR_LEN : start + _CMSG_HDR_LEN + size] = ffi.buffer(cbuf)
    return bytes(out)


def _parse_control(raw: Any, offset: int, length: int) -> list[tuple[int, int, bytes]]:
    """recvmsg's ancillary data from the control bytes the kernel wrote."""
    out: list[tuple[int, int, bytes]] = []
    pos = 0
    while pos + _CMSG_HDR_LEN <= length:
        cmsg_len, level, kind = _CMSGHDR.unpack_from(raw, offset + pos)
        if cmsg_len < _CMSG_HDR_LEN:
            break
        end = min(pos + cmsg_len, length)
        out.append(
            (level, kind, bytes(raw[offset + pos + _CMSG_HDR_LEN : offset + end]))
        )
        pos += _cmsg_align(cmsg_len)
    return out


def _sendmsg_header(
    views: Sequence[tuple[Any, int, int]], control: bytes, sockaddr: bytes | None
) -> tuple[Any, int]:
    """One block holding a SENDMSG ``msghdr``, its iovecs (``views``:
    ``(owner, address, length)``), the destination and the control data;
    returns the block (keep it until the final CQE) and its address."""
    iov_off = _MSGHDR_SIZE
    name_off = iov_off + _IOVEC.size * len(views)
    ctrl_off = name_off + _align(len(sockaddr) if sockaddr else 0)
    block, base, raw = _block(ctrl_off + len(control))
    for i, (_, addr, length) in enumerate(views):
        _IOVEC.pack_into(raw, iov_off + i * _IOVEC.size, addr, length)
    if sockaddr:
        raw[name_off : name_off + len(sockaddr)] = sockaddr
    if control:
        raw[ctrl_off : ctrl_off + len(control)] = control
    _MSGHDR.pack_into(
        raw, 0,
        base + name_off if sockaddr else 0, len(sockaddr) if sockaddr else 0,
        base + iov_off if views else 0, len(views),
        base + ctrl_off if control else 0, len(control),
        0,
    )  # fmt: skip
    return block, base


def _recvmsg_header(
    views: Sequence[tuple[Any, int, int]], ancbufsize: int
) -> tuple[Any, int, Any, int, int]:
    """One block holding a RECVMSG ``msghdr``, its iovecs, room for the
    source address and ``ancbufsize`` bytes of control data; returns the
    block, its address, its bytes and the offsets of address and control
    data (for :func:`_recvmsg_outcome`)."""
    iov_off = _MSGHDR_SIZE
    name_off = iov_off + _IOVEC.size * len(views)
    ctrl_off = name_off + _SOCKADDR_STORAGE
    block, base, raw = _block(ctrl_off + ancbufsize)
    for i, (_, addr, length) in enumerate(views):
        _IOVEC.pack_into(raw, iov_off + i * _IOVEC.size, addr, length)
    _MSGHDR.pack_into(
        raw, 0,
        base + name_off, _SOCKADDR_STORAGE,
        base + iov_off if views else 0, len(views),
        base + ctrl_off if ancbufsize else 0, ancbufsize,
        0,
    )  # fmt: skip
    return block, base, raw, name_off, ctrl_off


def _recvmsg_outcome(
    raw: Any, name_off: int, ctrl_off: int, ancbufsize: int
) -> tuple[list[tuple[int, int, bytes]], int, Address]:
    """(ancdata, msg_flags, address) of a completed RECVMSG."""
    _, namelen, _, _, _, controllen, msg_flags = _MSGHDR.unpack_from(raw, 0)
    return (
        _parse_control(raw, ctrl_off, min(controllen, ancbufsize)),
        msg_flags,
        _decode(raw, name_off, namelen),
    )


async def _sendmsg_native(
    manager: UringIOManager,
    fd: int,
    views: Sequence[tuple[Any, int, int]],
    control: bytes,
    sockaddr: bytes | None,
    flags: int,
) -> int:
    block, base = _sendmsg_header(views, control, sockaddr)
    return await _submit(
        manager, False, _SENDMSG, fd, base, 1, 0, flags, (block, views),
        bool(flags & _MSG_DONTWAIT),
    )  # fmt: skip


async def sendto(sock: FdLike, data: Any, address: Address, flags: int = 0) -> int:
    """Send ``data`` to ``address`` (``IORING_OP_SENDMSG``); like ``socket.sendto``.

    :param address: for ``AF_INET`` ``(host, port)``, for ``AF_INET6``
        ``(host, port[, flowinfo[, scope_id]])``, for ``AF_UNIX`` a path
        (str, bytes; a leading NUL byte names an abstract socket).  Host
        names are resolved with :func:`trio.socket.getaddrinfo`.  Other
        families take the stdlib's address formats (and the fallback path).
    :returns: the number of bytes sent.
    :raises TypeError: for a non-buffer ``data`` or a malformed address.
    :raises OverflowError: for a port outside 0-65535.
    :raises OSError, trio.ClosedResourceError: as :func:`send`.
    """
    fd = _native.check_fd(sock)
    view = _native.readable_buffer(data)
    flags = _check_flags(flags)
    manager = _native.current_manager()
    _, address, sockaddr = await _sockaddr(sock, fd, address)
    if sockaddr is None or not manager.supports(_SENDMSG):
        return await _nonblocking(
            fd, False, lambda s: s.sendto(data, flags, address), flags
        )
    return await _sendmsg_native(manager, fd, [view], b"", sockaddr, flags)


async def sendmsg(
    sock: FdLike,
    buffers: Iterable[Any],
    ancdata: Iterable[tuple[int, int, Any]] = (),
    flags: int = 0,
    address: Address | None = None,
) -> int:
    """Gather-send ``buffers`` with ancillary data (``IORING_OP_SENDMSG``).

    Like ``socket.sendmsg``: ``ancdata`` is an iterable of ``(level, type,
    data)`` (e.g. ``(SOL_SOCKET, SCM_RIGHTS, array("i", fds))``), ``address``
    a destination for an unconnected socket (formats as :func:`sendto`).

    :returns: the number of bytes sent.
    :raises TypeError: for a non-buffer, a malformed ``ancdata`` item or
        address.
    :raises OSError, ValueError, OverflowError, trio.ClosedResourceError:
        as :func:`send`.
    """
    fd = _native.check_fd(sock)
    items, views = _iovecs(buffers)
    anc = list(ancdata)
    control = _control(anc)
    flags = _check_flags(flags)
    manager = _native.current_manager()
    sockaddr: bytes | None = None
    native = manager.supports(_SENDMSG)
    if address is not None:
        _, address, sockaddr = await _sockaddr(sock, fd, address)
        native = native and sockaddr is not None
    if not native:
        if address is None:
            return await _nonblocking(
                fd, False, lambda s: s.sendmsg(items, anc, flags), flags
            )
        return await _nonblocking(
            fd, False, lambda s: s.sendmsg(items, anc, flags, address), flags
        )
    return await _sendmsg_native(manager, fd, views, control, sockaddr, flags)


async def _recvmsg_native(
    manager: UringIOManager,
    fd: int,
    nbytes: int,
    ancbufsize: int,
    flags: int,
) -> tuple[bytes, list[tuple[int, int, bytes]], int, Address]:
    buf = _alloc_uninit("char[]", max(nbytes, 1))
    block, base, raw, name_off, ctrl_off = _recvmsg_header(
        [(buf, _addr(buf), nbytes)], ancbufsize
    )
    n = await _submit(
        manager, True, _RECVMSG, fd, base, 1, 0, flags, (block, buf),
        bool(flags & _MSG_DONTWAIT),
    )  # fmt: skip
    data: bytes = ffi.buffer(buf, n)[:]
    return (data, *_recvmsg_outcome(raw, name_off, ctrl_off, ancbufsize))


async def recvfrom(sock: FdLike, nbytes: int, flags: int = 0) -> tuple[bytes, Address]:
    """Receive up to ``nbytes`` bytes and the sender's address
    (``IORING_OP_RECVMSG``); like ``socket.recvfrom``.

    :returns: ``(data, address)``; the address is formatted as the stdlib
        does (None when the socket has no peer address to report).
    :raises OSError, ValueError, OverflowError, trio.ClosedResourceError:
        as :func:`recv`.
    """
    fd = _native.check_fd(sock)
    nbytes = _native.check_size(nbytes, "nbytes")
    flags = _check_flags(flags)
    manager = _native.current_manager()
    if _family(sock, fd) not in _NATIVE_FAMILIES or not manager.supports(_RECVMSG):
        return await _nonblocking(fd, True, lambda s: s.recvfrom(nbytes, flags), flags)
    data, _, _, address = await _recvmsg_native(manager, fd, nbytes, 0, flags)
    return data, address


async def recvmsg(
    sock: FdLike, bufsize: int, ancbufsize: int = 0, flags: int = 0
) -> tuple[bytes, list[tuple[int, int, bytes]], int, Address]:
    """Receive data and ancillary data (``IORING_OP_RECVMSG``).

    Like ``socket.recvmsg``: ``ancbufsize`` is the size of the buffer for
    ancillary data (``socket.CMSG_SPACE`` computes it).

    :returns: ``(data, ancdata, msg_flags, address)`` with ``ancdata`` a
        list of ``(level, type, data)``; ``msg_flags`` reports e.g.
        ``MSG_TRUNC``/``MSG_CTRUNC``.  Received fds (``SCM_RIGHTS``) are
        the caller's to close.
    :raises OSError, ValueError, OverflowError, trio.ClosedResourceError:
        as :func:`recv`.
    """
    fd = _native.check_fd(sock)
    bufsize = _native.check_size(bufsize, "bufsize")
    ancbufsize = _native.check_size(ancbufsize, "ancbufsize")
    flags = _check_flags(flags)
    manager = _native.current_manager()
    if _family(sock, fd) not in _NATIVE_FAMILIES or not manager.supports(_RECVMSG):
        return await _nonblocking(
            fd, True, lambda s: s.recvmsg(bufsize, ancbufsize, flags), flags
        )
    return await _recvmsg_native(manager, fd, bufsize, ancbufsize, flags)


# --- accept / connect / socket / shutdown ------------------------------------------
def _accepted(fd: int, flags: int) -> int:
    """Give an fd the stdlib accepted the flags accept4(flags) would have."""
    try:
        os.set_blocking(fd, not flags & _SOCK_NONBLOCK)
        os.set_inheritable(fd, not flags & _SOCK_CLOEXEC)
    except BaseException:
        os.close(fd)
        raise
    return fd


async def accept(sock: FdLike, flags: int = _SOCK_CLOEXEC) -> tuple[int, Address]:
    """Accept a connection on the listening ``sock`` (``IORING_OP_ACCEPT``).

    :param flags: ``accept4`` flags: ``SOCK_CLOEXEC`` (the default: the new
        fd is not inheritable, as the stdlib makes it) and/or
        ``SOCK_NONBLOCK``.
    :returns: ``(fd, address)``: the connection's fd (the caller owns it and
        must close it; ``socket.socket(fileno=fd)`` wraps it) and the peer's
        address as the stdlib formats it.  A connection accepted in the same
        instant the task is cancelled is still returned (nothing is lost or
        leaked); Cancelled comes at the next checkpoint.
    :raises OSError: from the kernel (``EINVAL`` if ``sock`` is not listening).
    :raises trio.ClosedResourceError: if ``notify_closing(sock)`` is called
        while the accept waits.
    """
    fd = _native.check_fd(sock)
    flags = _check_flags(flags)
    manager = _native.current_manager()
    if _family(sock, fd) not in _NATIVE_FAMILIES or not manager.supports(_ACCEPT):
        if flags & ~(_SOCK_CLOEXEC | _SOCK_NONBLOCK):
            raise OSError(_errno.EINVAL, os.strerror(_errno.EINVAL))

        def attempt(s: _socket.socket) -> tuple[int, Address]:
            conn, address = s.accept()
            return _accepted(conn.detach(), flags), address

        return await _nonblocking(fd, True, attempt)
    len_off = _SOCKADDR_STORAGE
    block, base, raw = _block(len_off + _SOCKLEN.size)
    _SOCKLEN.pack_into(raw, len_off, _SOCKADDR_STORAGE)
    newfd = await _submit(
        manager, True, _ACCEPT, fd, base, 0, base + len_off, flags, block
    )
    try:
        (addrlen,) = _SOCKLEN.unpack_from(raw, len_off)
        return newfd, _decode(raw, 0, addrlen)
    except BaseException:
        os.close(newfd)  # never leak the connection's fd
        raise


async def connect(sock: FdLike, address: Address) -> None:
    """Connect ``sock`` to ``address`` (``IORING_OP_CONNECT``).

    Like ``socket.connect`` (address formats as :func:`sendto`; host names
    are resolved without blocking).  If the connect is cancelled the socket
    is left half-way (possibly still connecting): close it, as trio does.

    :raises OSError: from the kernel (``ECONNREFUSED``, ``ENOENT`` for a
        missing AF_UNIX path...).
    :raises TypeError, OverflowError: for a malformed address.
    :raises trio.ClosedResourceError: if ``notify_closing(sock)`` is called
        while the connect waits.
    """
    fd = _native.check_fd(sock)
    manager = _native.current_manager()
    _, address, sockaddr = await _sockaddr(sock, fd, address)
    if sockaddr is not None and manager.supports(_CONNECT):
        cbuf = ffi.new("char[]", sockaddr)
        try:
            await manager.submit(_CONNECT, fd, _addr(cbuf), 0, len(sockaddr), keep=cbuf)
            return
        except OSError as exc:
            # Older kernels may report a non-blocking socket's connect as
            # still in progress: finish it the way trio does.
            if exc.errno not in (_errno.EINPROGRESS, _errno.EALREADY):
                raise
    else:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            with _raw_socket(fd) as raw:
                raw.connect(address)
        except BlockingIOError:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
    await trio.lowlevel.wait_writable(fd)
    with _raw_socket(fd) as raw:
        err = raw.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err), address)


async def socket(family: int, type: int, proto: int = 0) -> int:
    """Create a socket and return its fd (``IORING_OP_SOCKET``, Linux 5.19+).

    Like ``socket.socket(family, type, proto).detach()``: ``SOCK_CLOEXEC``
    is always added (the fd is not inheritable); ``type`` may include
    ``SOCK_NONBLOCK``.  The caller owns the fd.

    :raises OSError: from the kernel (``EAFNOSUPPORT``, ``EINVAL``...).
    """
    family = _check_flags(family, "family")
    type = _check_flags(type, "type") | _SOCK_CLOEXEC
    proto = _check_flags(proto, "proto")
    manager = _native.current_manager()
    if not manager.supports(_SOCKET):
        await trio.lowlevel.checkpoint_if_cancelled()
        fd = _socket.socket(family, type, proto).detach()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return fd
    return await manager.submit(_SOCKET, family, 0, proto, type, closing_fd=-1)


async def shutdown(sock: FdLike, how: int) -> None:
    """Shut down one or both directions of ``sock`` (``IORING_OP_SHUTDOWN``).

    Like ``socket.shutdown``: ``how`` is ``SHUT_RD``, ``SHUT_WR`` or
    ``SHUT_RDWR``.

    :raises OSError: from the kernel (``ENOTCONN``, ``EINVAL`` for a bad
        ``how``...).
    """
    fd = _native.check_fd(sock)
    how = _check_flags(how, "how")
    manager = _native.current_manager()
    if not manager.supports(_SHUTDOWN):
        await _nonblocking(fd, False, lambda s: s.shutdown(how))
        return
    await manager.submit(_SHUTDOWN, fd, 0, how)


# --- poll ---------------------------------------------------------------------------
_POLL_READ_SIDE = (
    select.POLLIN | select.POLLPRI | select.POLLRDNORM | select.POLLRDBAND
    | select.POLLRDHUP
)  # fmt: skip
_POLL_WRITE_SIDE = select.POLLOUT | select.POLLWRNORM | select.POLLWRBAND


async def poll(fd: FdLike, events: int) -> int:
    """Wait until ``fd`` has one of ``events`` (``IORING_OP_POLL_ADD``).

    Works on any pollable fd (sockets, pipes, eventfds...).  One-shot: it
    completes once, with what the kernel reported.

    :param events: a ``select.POLL*`` mask.
    :returns: the ``revents`` mask (never 0).  As with :func:`select.poll`
        it holds the requested events that occurred plus ``POLLERR`` /
        ``POLLHUP``; unlike it, io_uring also always reports ``POLLRDHUP``,
        and reports the events of the wakeup itself, so it may include a
        requested event a fresh poll would not show (a socket wakes its
        readers with ``POLLIN | POLLPRI``).
    :raises OSError, trio.ClosedResourceError: as :func:`recv`.
    """
    fd = _native.check_fd(fd)
    events = _check_flags(events, "events")
    manager = _native.current_manager()
    if manager.supports(_POLL_ADD):
        return await manager.submit(_POLL_ADD, fd, 0, 0, 0, events)
    await trio.lowlevel.checkpoint_if_cancelled()
    while True:
        p = select.poll()
        p.register(fd, events)
        ready = p.poll(0)
        if ready:
            return int(ready[0][1])
        if events & _POLL_READ_SIDE and events & _POLL_WRITE_SIDE:
            await _wait_either(fd)
        elif events & _POLL_WRITE_SIDE:
            await trio.lowlevel.wait_writable(fd)
        else:
            await trio.lowlevel.wait_readable(fd)


async def _wait_either(fd: int) -> None:
    """Until ``fd`` is readable or writable (the poll fallback)."""
    async with trio.open_nursery() as nursery:

        async def wait(wait_fn: Callable[[int], Awaitable[None]]) -> None:
            await wait_fn(fd)
            nursery.cancel_scope.cancel()

        nursery.start_soon(wait, trio.lowlevel.wait_readable)
        nursery.start_soon(wait, trio.lowlevel.wait_writable)
