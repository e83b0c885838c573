"""Routing trio's and anyio's file and path APIs to :mod:`trio_uring._file`.

Where to hook: every async file object trio hands out is a
``trio._file_io.AsyncIOWrapper`` (from ``trio.open_file``, ``trio.wrap_file``
and ``trio.Path.open``, whichever reference to them user code holds), and
every anyio one an ``anyio.AsyncFile``.  So the file *methods* are hooked on
those two classes, which catches files however they were made: a class
attribute is looked up at call time.  ``AsyncIOWrapper`` makes its methods
in ``__getattr__`` (only for names the wrapped object has); we put a
descriptor per method name on the class that, in a trio run on io_uring and
for a real, seekable :mod:`io` file, returns the native engine's method, and
otherwise defers to trio's own ``__getattr__`` (exact trio behaviour: the
same generated, cached thread wrappers, AttributeError for a missing name,
``dir()`` unchanged).  anyio's methods are plain methods: each is replaced
by one that takes the native engine or calls the original.

The *open* functions are module attributes (``trio.open_file``,
``anyio.open_file``) and path methods are class attributes of ``trio.Path``
and ``anyio.Path``: those are replaced by functions that open on the ring
when the current trio run uses io_uring and call the original otherwise.
Code that imported ``open_file`` by name before the hooks went in keeps
trio's function: its open runs in a thread, its I/O is still native.

``install()`` is idempotent and is called when a UringIOManager is built,
so anyio is hooked once it is imported (it is by then, for anyio code).
Nothing is hooked for a trio run on epoll: every hook first checks
``uring_manager()`` (one attribute chain and a type check) and otherwise
runs the original, unchanged.
"""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from . import _file
from ._file import NativeFile, engine_for, open_native, uring_manager

_ENGINE = "_trio_uring_engine"
_trio_done = False
_anyio_done = False
_PathTypes = (str, bytes, os.PathLike)


def install() -> None:
    """Hook trio (once) and anyio (once it is imported).

    A trio or anyio whose internals moved (names this module relies on are
    gone) is not hooked: a RuntimeWarning says so, and files keep working
    on threads.
    """
    global _trio_done, _anyio_done
    if not _trio_done:
        _trio_done = True
        _guarded(_hook_trio, "trio")
    if not _anyio_done and "anyio" in sys.modules:
        _anyio_done = True
        _guarded(_hook_anyio, "anyio")


def _guarded(hook: Callable[[], None], name: str) -> None:
    try:
        hook()
    except Exception as exc:  # pragma: no cover - depends on the version
        warnings.warn(
            f"trio-uring cannot hook {name}'s file API ({exc!r}); its files "
            f"use worker threads. Please report this with your {name} version.",
            RuntimeWarning,
            stacklevel=3,
        )


def _engine(holder: Any, f: Any) -> NativeFile | None:
    """The live engine of an async file object, made on first use."""
    if uring_manager() is None:
        return None
    d = holder.__dict__
    eng = d.get(_ENGINE)
    if eng is None:
        eng = d[_ENGINE] = engine_for(f) or False
    if eng is False or eng.dead:
        return None
    return eng  # type: ignore[no-any-return]


# ---------------------------------------------------------------- trio
def _hook_trio() -> None:
    import trio
    import trio._file_io as fio_module

    fio: Any = fio_module

    wrapper_cls = fio.AsyncIOWrapper
    orig_getattr = wrapper_cls.__getattr__
    orig_dir = wrapper_cls.__dir__
    orig_anext = wrapper_cls.__anext__
    orig_aclose = wrapper_cls.aclose
    names = frozenset(fio._FILE_ASYNC_METHODS)

    class Method:
        """Non-data descriptor: the engine's method, else trio's own."""

        def __init__(self, name: str) -> None:
            self.name = name

        def __get__(self, obj: Any, objtype: Any = None) -> Any:
            if obj is None:
                return self
            eng = _engine(obj, obj._wrapped)
            if eng is None or not hasattr(obj._wrapped, self.name):
                return orig_getattr(obj, self.name)
            # Cached like trio's own: the instance attribute wins from now
            # on.  The engine's methods take the thread path themselves when
            # they cannot go native (another run, a dead engine...).
            meth = obj.__dict__[self.name] = getattr(eng, self.name)
            return meth

    for name in names:
        if name not in wrapper_cls.__dict__ and hasattr(NativeFile, name):
            setattr(wrapper_cls, name, Method(name))

    def __dir__(self: Any) -> Any:
        wrapped = self._wrapped
        return [a for a in orig_dir(self) if a not in names or hasattr(wrapped, a)]

    async def __anext__(self: Any) -> Any:
        eng = _engine(self, self._wrapped)
        if eng is None:
            return await orig_anext(self)
        line = await eng.readline()
        if line:
            return line
        raise StopAsyncIteration

    async def aclose(self: Any) -> None:
        eng = _engine(self, self._wrapped)
        if eng is None:
            await orig_aclose(self)
            return
        await eng.aclose()

    __anext__.__doc__ = orig_anext.__doc__
    aclose.__doc__ = orig_aclose.__doc__
    wrapper_cls.__dir__ = __dir__
    wrapper_cls.__anext__ = __anext__
    wrapper_cls.aclose = aclose

    orig_open_file = fio.open_file

    async def open_file(
        file: Any,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        closefd: bool = True,
        opener: Any = None,
    ) -> Any:
        if opener is None and isinstance(file, _PathTypes) and uring_manager():
            f = await open_native(
                file, mode, buffering, encoding, errors, newline, closefd
            )
            return wrapper_cls(f)
        return await orig_open_file(
            file, mode, buffering, encoding, errors, newline, closefd, opener
        )

    open_file.__doc__ = orig_open_file.__doc__
    open_file.__qualname__ = open_file.__name__ = "open_file"
    open_file.__module__ = orig_open_file.__module__
    fio.open_file = open_file
    trio.open_file = open_file
    _hook_paths(
        trio.Path, lambda self: self._wrapped_cls(self), lambda _, f: wrapper_cls(f)
    )


# ---------------------------------------------------------------- anyio
def _hook_anyio() -> None:
    import anyio
    import anyio._core._fileio as afio_module

    afio: Any = afio_module

    file_cls = afio.AsyncFile

    def hook(name: str) -> None:
        orig = file_cls.__dict__[name]

        async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            eng = _engine(self, self._fp)
            if eng is None or kwargs:
                return await orig(self, *args, **kwargs)
            return await getattr(eng, name)(*args)

        method.__name__ = method.__qualname__ = name
        method.__doc__ = orig.__doc__
        method.__wrapped__ = orig  # type: ignore[attr-defined]
        setattr(file_cls, name, method)

    for name in (
        "read", "read1", "readline", "readlines", "readinto", "readinto1",
        "write", "writelines", "truncate", "seek", "tell", "flush", "aclose",
    ):  # fmt: skip
        if name in file_cls.__dict__:
            hook(name)

    orig_open_file = afio.open_file

    async def open_file(
        file: Any,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        closefd: bool = True,
        opener: Any = None,
        **kwargs: Any,
    ) -> Any:
        if opener is None and isinstance(file, _PathTypes) and uring_manager():
            f = await open_native(
                file, mode, buffering, encoding, errors, newline, closefd
            )
            return file_cls(f, **kwargs)
        return await orig_open_file(
            file, mode, buffering, encoding, errors, newline, closefd, opener,
            **kwargs,
        )  # fmt: skip

    open_file.__doc__ = orig_open_file.__doc__
    open_file.__module__ = orig_open_file.__module__
    afio.open_file = open_file
    anyio.open_file = open_file

    def make_file(path: Any, f: Any) -> Any:
        # an anyio.Path with its own thread limiter hands it to its files
        # (anyio >= 4.?): native ops use no thread, the fallbacks do
        limiter = getattr(path, "_limiter", None)
        return file_cls(f) if limiter is None else file_cls(f, limiter=limiter)

    _hook_paths(anyio.Path, lambda self: self._path, make_file)


# ---------------------------------------------------------------- paths
_FALLBACK: Any = object()


def _hook_paths(
    cls: Any,
    pathlib_of: Callable[[Any], Any],
    make_file: Callable[[Any, Any], Any],
) -> None:
    """Replace the path methods of ``cls`` (trio.Path or anyio.Path)."""

    async def stat(self: Any, *, follow_symlinks: bool = True) -> Any:
        return await _file.stat(pathlib_of(self), follow_symlinks)

    async def lstat(self: Any) -> Any:
        return await _file.stat(pathlib_of(self), False)

    def tester(check: Callable[[int], bool], follow: bool) -> Any:
        async def test(self: Any, *, follow_symlinks: bool = follow) -> Any:
            r = await _file.check_mode(pathlib_of(self), check, follow_symlinks)
            return _FALLBACK if r is None else r

        return test

    async def unlink(self: Any, missing_ok: bool = False) -> None:
        await _file.unlink(pathlib_of(self), missing_ok)

    async def rmdir(self: Any) -> None:
        await _file.rmdir(pathlib_of(self))

    async def rename(self: Any, target: Any) -> Any:
        await _file.rename(pathlib_of(self), target)
        limiter = getattr(self, "_limiter", None)  # anyio.Path's thread limiter
        if limiter is None:
            return type(self)(target)
        return type(self)(target, limiter=limiter)

    async def mkdir(
        self: Any, mode: int = 0o777, parents: bool = False, exist_ok: bool = False
    ) -> None:
        await _file.mkdir(pathlib_of(self), mode, parents, exist_ok)

    async def symlink_to(
        self: Any, target: Any, target_is_directory: bool = False
    ) -> None:
        await _file.symlink_to(pathlib_of(self), target)

    async def hardlink_to(self: Any, target: Any) -> None:
        await _file.hardlink_to(pathlib_of(self), target)

    async def touch(self: Any, mode: int = 0o666, exist_ok: bool = True) -> Any:
        done = await _file.touch(pathlib_of(self), mode, exist_ok)
        return None if done else _FALLBACK

    async def read_bytes(self: Any) -> bytes:
        return await _file.read_bytes(pathlib_of(self))

    async def read_text(
        self: Any,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> str:
        p = pathlib_of(self)
        _file.encode_text("", encoding, errors, newline)  # argument errors first
        return _file.decode_text(await _file.read_bytes(p), encoding, errors, newline)

    async def write_bytes(self: Any, data: Any) -> int:
        return await _file.write_bytes(pathlib_of(self), data)

    async def write_text(
        self: Any,
        data: str,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> int:
        if not isinstance(data, str):
            return _FALLBACK
        raw = _file.encode_text(data, encoding, errors, newline)
        await _file.write_bytes(pathlib_of(self), raw)
        return len(data)

    async def open(
        self: Any,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:
        f = await open_native(
            pathlib_of(self), mode, buffering, encoding, errors, newline
        )
        return make_file(self, f)

    natives: dict[str, Any] = {
        "stat": stat,
        "lstat": lstat,
        "exists": tester(_file.exists, True),
        "is_dir": tester(_file.is_dir, True),
        "is_file": tester(_file.is_file, True),
        "is_symlink": tester(_file.is_symlink, False),
        "unlink": unlink,
        "rmdir": rmdir,
        "rename": rename,
        "replace": rename,
        "mkdir": mkdir,
        "symlink_to": symlink_to,
        "hardlink_to": hardlink_to,
        "touch": touch,
        "read_bytes": read_bytes,
        "read_text": read_text,
        "write_bytes": write_bytes,
        "write_text": write_text,
        "open": open,
    }
    for name, native in natives.items():
        orig = cls.__dict__.get(name)
        if orig is None or not callable(orig):
            continue
        setattr(cls, name, _path_method(name, orig, native))


def _accepted(fn: Any) -> tuple[int, frozenset[str]]:
    """(how many positional arguments, which keywords) ``fn`` takes after
    self: a call the original would reject goes to the original, so the
    error is its own (e.g. ``exists(follow_symlinks=...)`` before 3.12)."""
    try:
        params = list(inspect.signature(fn).parameters.values())[1:]
    except (TypeError, ValueError):  # pragma: no cover - no signature
        return 0, frozenset()
    positional = sum(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params
    )
    keywords = frozenset(
        p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )
    return positional, keywords


def _path_method(name: str, orig: Any, native: Any) -> Any:
    n_positional, keywords = _accepted(orig)

    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if (
            uring_manager() is not None
            and len(args) <= n_positional
            and (not kwargs or keywords.issuperset(kwargs))
        ):
            try:
                coro = native(self, *args, **kwargs)
            except TypeError:  # arguments we do not handle: the original decides
                coro = None
            if coro is not None:
                result = await coro
                if result is not _FALLBACK:
                    return result
        return await orig(self, *args, **kwargs)

    method.__name__ = name
    method.__qualname__ = getattr(orig, "__qualname__", name)
    method.__doc__ = orig.__doc__
    method.__wrapped__ = orig  # type: ignore[attr-defined]
    return method
