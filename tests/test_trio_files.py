"""trio.open_file / wrap_file / Path on io_uring: same results, no threads.

Most tests are differential: one scenario runs under ``trio.run`` (epoll:
trio's thread path) and under ``trio_uring.run`` (the native path), each in
a fresh copy of a directory it works in, and the two lists of observations
(results, positions, exceptions as type and message, the files left behind)
must be equal.  On io_uring, ``trio.to_thread.run_sync`` must not be called.
"""

from __future__ import annotations

import errno
import gc
import io
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_uring
from trio_uring import _file

Scenario = Callable[[list[Any]], Awaitable[None]]


@pytest.fixture
def thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    orig = trio.to_thread.run_sync

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn)
        return await orig(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counting)
    # trio.Path's methods call the run_sync they imported.
    monkeypatch.setattr(trio._path, "run_sync", counting)
    return calls


def snapshot(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = "dir"
        elif not p.is_file():
            out[rel] = stat.S_IFMT(p.stat().st_mode)
        else:
            out[rel] = p.read_bytes()
    return out


def run_both(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    thread_calls: list[Any],
    scenario: Scenario,
    setup: Callable[[Path], None] = lambda d: None,
    threads_allowed: int = 0,
) -> list[Any]:
    results = []
    for name, runner in (("thread", trio.run), ("uring", trio_uring.run)):
        d = tmp_path / name
        d.mkdir()
        setup(d)
        monkeypatch.chdir(d)
        obs: list[Any] = []

        async def main(obs: list[Any] = obs) -> None:
            try:
                await scenario(obs)
            except Exception as exc:  # the scenario's own failure is data too
                obs.append(("raised", type(exc).__name__, str(exc)))

        thread_calls.clear()
        runner(main)
        if name == "uring":
            assert len(thread_calls) <= threads_allowed, thread_calls
        else:
            assert thread_calls  # the baseline really used threads
        results.append((obs, snapshot(d)))
    assert results[0] == results[1]
    return results[1][0]


async def catch(obs: list[Any], coro: Awaitable[Any]) -> None:
    try:
        obs.append(await coro)
    except Exception as exc:
        obs.append((type(exc).__name__, str(exc), getattr(exc, "errno", None)))


def write(d: Path, name: str, data: bytes) -> None:
    (d / name).write_bytes(data)


TEXT = "héllo\nwörld\r\nthird\rfourth\n\nlast line without end"
DATA = TEXT.encode()


# ------------------------------------------------------------ binary files
def test_binary_reads_positions(tmp_path, monkeypatch, thread_calls):  # type: ignore[no-untyped-def]
    async def scenario(obs: list[Any]) -> None:
        async with await trio.open_file("f", "rb") as f:
            obs += [f.name, f.mode, f.closed, type(f.wrapped).__name__]
            obs.append(await f.read(3))
            obs.append(await f.tell())
            obs.append(await f.readline())
            obs.append(await f.tell())
            obs.append(await f.read1(4))
            obs.append(await f.peek(1) != b"")
            obs.append(await f.tell())
            buf = bytearray(5)
            obs.append((await f.readinto(buf), bytes(buf)))
            obs.append(await f.readline(3))
            obs.append(await f.seek(-4, os.SEEK_END))
            obs.append(await f.read())
            obs.append(await f.read())
            obs.append(await f.read(10))
            obs.append(await f.seek(0))
            obs.append(await f.readlines())
            await f.seek(2)
            obs.append([line async for line in f])
            await f.seek(1)
            obs.append(await f.readall())
        obs.append(f.closed)
        await catch(obs, f.read())

    run_both(tmp_path, monkeypatch, thread_calls, scenario,
             lambda d: write(d, "f", DATA * 3))  # fmt: skip


def test_big_reads(tmp_path, monkeypatch, thread_calls):  # type: ignore[no-untyped-def]
    # Reads above 128 KiB go straight into the returned bytes object.
    big = os.urandom(3 << 20) + b"\nend"

    async def scenario(obs: list[Any]) -> None:
        async with await trio.open_file("big", "rb") as f:
            obs.append(await f.read() == big)
            await f.seek(100)
            data = await f.read(1 << 20)
            obs.append((len(data), data == big[100 : 100 + (1 << 20)]))
            await f.seek(-200_000, os.SEEK_END)
            data = await f.read(1 << 20)  # short: end of file
            obs.append((len(data), data == big[-200_000:]))
            obs.append(await f.read(1 << 20))
            await f.seek(5)
            buf = bytearray(300_000)
            obs.append((await f.readinto(buf), bytes(buf) == big[5:300_005]))
        obs.append(await trio.Path("big").read_bytes() == big)
        async with await trio.open_file("big", "r", encoding="latin-1") as f:
            obs.append(
                await f.read()
                == big.decode("latin-1").replace("\r\n", "\n").replace("\r", "\n")
            )

    run_both(tmp_path, monkeypatch, thread_calls, scenario,
             lambda d: write(d, "big", big))  # fmt: skip


def test_binary_writes(tmp_path, monkeypatch, thread_calls):  # type: ignore[no-untyped-def]
    async def scenario(obs: list[Any]) -> None:
        async with await trio.open_file("w", "wb") as f:
            obs.append(await f.write(b"hello "))
            obs.append(await f.write(memoryview(b"world\n")))
            obs.append(await f.tell())
            await f.writelines([b"a\n", bytearray(b"b\n")])
            await f.flush()
            obs.append(await f.truncate(5))
            obs.append(await f.tell())
            obs.append(await f.write(b"!"))
            await catch(obs, f.read())
        async with await trio.open_file("w", "ab") as f:
            obs.append(await f.tell())
            await f.seek(0)
            obs.append(await f.write(b"appended"))
            # (tell() here differs by design: Python's buffered writer
            # reports seek position + pending bytes; the native write is
            # already at the end of the file.)
        async with await trio.open_file("w", "r+b") as f:
            obs.append(await f.read(2))
            obs.append(await f.write(b"XY"))
            obs.append(await f.read())
            await f.seek(0)
            obs.append(await f.read())
            obs.append(await f.truncate())
        async with await trio.open_file("w", "w+b") as f:
            await f.write(b"line1\nline2\n")
            await f.seek(0)
            obs.append(await f.readline())
            await f.write(b"X")
            await f.seek(0)
            obs.append(await f.read())
        async with await trio.open_file("raw", "wb", buffering=0) as f:
            obs.append(type(f.wrapped).__name__)
            obs.append(await f.write(b"unbuffered"))
        async with await trio.open_file("raw", "rb", buffering=0) as f:
            obs.append(await f.read(4))
            obs.append(await f.readall())
            obs.append(hasattr(f, "read1"))
        async with await trio.open_file("x", "xb") as f:
            await f.write(b"x")
        await catch(obs, trio.open_file("x", "xb"))

    # one thread call: the error of read() on a write-only file
    run_both(tmp_path, monkeypatch, thread_calls, scenario, threads_allowed=1)


def test_open_errors(tmp_path, monkeypatch, thread_calls):  # type: ignore[no-untyped-def]
    def setup(d: Path) -> None:
        (d / "dir").mkdir()
        write(d, "ro", b"data")
        write(d, "secret", b"")
        (d / "secret").chmod(0)

    async def scenario(obs: list[Any]) -> None:
        await catch(obs, trio.open_file("missing"))
        await catch(obs, trio.open_file("dir"))
        await catch(obs, trio.open_file("dir", "wb"))
        await catch(obs, trio.open_file("ro", "rw"))
        await catch(obs, trio.open_file("ro", "rb", encoding="utf-8"))
        await catch(obs, trio.open_file("ro", "r", closefd=False))
        await catch(obs, trio.open_file("ro\0x"))
        if os.geteuid() != 0:
            await catch(obs, trio.open_file("secret"))
        async with await trio.open_file("ro", "rb") as f:
            await catch(obs, f.write(b"x"))
            await catch(obs, f.truncate(0))
        async with await trio.open_file("wo", "wb") as f:
            await catch(obs, f.read())
            await catch(obs, f.readline())
        async with await trio.open_file("wo", "w") as f:
            await catch(obs, f.read())
            await catch(obs, f.write(b"bytes"))
            await catch(obs, f.write("é" * 2))
        await f.aclose()
        await catch(obs, f.write("x"))
        await catch(obs, f.seek(0))
        await catch(obs, f.tell())
        await catch(obs, f.flush())

    run_both(tmp_path, monkeypatch, thread_calls, scenario, setup,
             threads_allowed=20)  # fmt: skip


# -------------------------------------------------------------- text files
@pytest.mark.parametrize(
    ("encoding", "errors"),
    [("utf-8", None), ("latin-1", None), ("utf-8", "surrogateescape")],
)
@pytest.mark.parametrize("newline", [None, "", "\n", "\r", "\r\n"])
def test_text_reads(tmp_path, monkeypatch, thread_calls, newline, encoding, errors):  # type: ignore[no-untyped-def]
    data = DATA + (b"\xff\xfe bad utf-8\n" if errors else b"")

    async def scenario(obs: list[Any]) -> None:
        async with await trio.open_file(
            "t", newline=newline, encoding=encoding, errors=errors
        ) as f:
            obs += [f.name, f.mode, f.encoding, type(f.wrapped).__name__]
            obs.append(await f.readline())
            pos = await f.tell()
            obs.append(pos)
            obs.append(await f.readline(3))
            obs.append(await f.readline())
            obs.append(await f.tell())
            obs.append(await f.seek(pos))
            obs.append(await f.readline())
            obs.append(await f.readlines())
            obs.append(await f.readline())
            obs.append(await f.read())
            await f.seek(0)
            obs.append([line async for line in f])
            await f.seek(0)
            obs.append(await f.read())
            await f.seek(0)
            obs.append(await f.read(7))
            obs.append(await f.tell())
            obs.append(await f.read(1))
            obs.append(await f.read(0))

    run_both(tmp_path, monkeypatch, thread_calls, scenario,
             lambda d: write(d, "t", data))  # fmt: skip


@pytest.mark.parametrize("newline", [None, "", "\n", "\r\n"])
def test_lines_across_chunk_boundaries(tmp_path, monkeypatch, thread_calls, newline):  # type: ignore[no-untyped-def]
    # CR LF pairs straddling the 8 KiB read size, a line longer than several
    # chunks, multibyte characters cut by the chunk edge.
    data = b"x" * 8191 + b"\r\n" + "é".encode() * 9000 + b"\rtail\n" + b"y" * 8190
    data += b"\r\r\n\n" + "€".encode() * 3000 + b"\r"

    async def scenario(obs: list[Any]) -> None:
        async with await trio.open_file("t", newline=newline) as f:
            lines = []
            while line := await f.readline():
                # tell() values are opaque where Python's decoder holds state
                # (see docs/native_files.rst); they must seek back right.
                pos = await f.tell()
                nxt = await f.readline()
                await f.seek(pos)
                assert await f.readline() == nxt
                await f.seek(pos)
                lines.append((len(line), line[-2:]))
            obs.append(lines)
        async with await trio.open_file("t", "rb") as f:
            obs.append([len(line) async for line in f])
            await f.seek(8190)
            obs.append(await f.readline())
            obs.append(await f.readline(5))

    run_both(tmp_path, monkeypatch, thread_calls, scenario,
             lambda d: write(d, "t", data))  # fmt: skip


@pytest.mark.parametrize("newline", [None, "", "\n", "\r", "\r\n"])
def test_text_writes(tmp_path, monkeypatch, thread_calls, newline):  # type: ignore[no-untyped-def]
    async def scenario(obs: list[Any]) -> None:
        async with await trio.open_file("t", "w+", newline=newline) as f:
            obs.append(await f.write("a\nb\r\nc\rd"))
            await f.writelines(["é\n", "€\n"])
            obs.append(await f.tell())
            await f.seek(0)
            obs.append(await f.read())
        async with await trio.open_file("t", "a", encoding="latin-1") as f:
            obs.append(await f.write("ÿ\n"))
        async with await trio.open_file("t", "rb") as f:
            obs.append(await f.read())

    run_both(tmp_path, monkeypatch, thread_calls, scenario)


def test_text_read_sizes_multibyte(tmp_path, monkeypatch, thread_calls):  # type: ignore[no-untyped-def]
    text = ("a€\r\n𝄞b\rc" * 50) + "\r"

    async def scenario(obs: list[Any]) -> None:
        for n in (1, 2, 3, 5, 8):
            async with await trio.open_file("t") as f:
                parts = []
                while part := await f.read(n):
                    parts.append(part)
                    if len(parts) % 7 == 0:  # tell/seek round trip
                        pos = await f.tell()
                        nxt = await f.read(3)
                        await f.seek(pos)
                        assert await f.read(3) == nxt
                        await f.seek(pos)
                obs.append(parts)
        async with await trio.open_file("t", encoding="ascii", errors="strict") as f:
            await catch(obs, f.read())

    run_both(tmp_path, monkeypatch, thread_calls, scenario,
             lambda d: write(d, "t", text.encode()), threads_allowed=0)  # fmt: skip


def test_text_other_codec_uses_threads(tmp_path, monkeypatch, thread_calls):  # type: ignore[no-untyped-def]
    async def scenario(obs: list[Any]) -> None:
        async with await trio.open_file("t", "w", encoding="utf-16") as f:
            await f.write("héllo\nwörld\n")
        async with await trio.open_file("t", encoding="utf-16") as f:
            obs.append(await f.readline())
            obs.append(await f.tell())
            obs.append(await f.read())

    run_both(tmp_path, monkeypatch, thread_calls, scenario, threads_allowed=10)


# ----------------------------------------------------------------- wrap_file
def test_wrap_file(tmp_path, monkeypatch, thread_calls):  # type: ignore[no-untyped-def]
    async def scenario(obs: list[Any]) -> None:
        raw = open("f", "rb")  # noqa: SIM115
        f = trio.wrap_file(raw)
        obs.append(f.wrapped is raw)
        obs.append(await f.read(4))
        obs.append(await f.readline())
        obs.append(raw.tell())
        obs.append(raw.read(2))  # synchronous use after async reads: same position
        await f.aclose()
        obs.append(raw.closed)
        sio = trio.wrap_file(io.BytesIO(b"in memory\n"))
        obs.append(await sio.readline())
        obs.append(sorted(a for a in dir(sio) if a in ("peek", "read1", "getvalue")))

    run_both(tmp_path, monkeypatch, thread_calls, scenario,
             lambda d: write(d, "f", DATA), threads_allowed=1)  # fmt: skip


def test_open_file_argument_forms(tmp_path, monkeypatch, thread_calls):  # type: ignore[no-untyped-def]
    async def scenario(obs: list[Any]) -> None:
        async with await trio.open_file(b"f", "rb") as f:
            obs.append((f.name, await f.read(3)))
        async with await trio.open_file(Path("f"), "rb", buffering=16) as f:
            obs.append((str(f.name), await f.readline()))
        fd = os.open("f", os.O_RDONLY)
        async with await trio.open_file(fd, "rb") as f:  # an fd: opened as given
            obs.append((f.name == fd, await f.read(2)))

        def opener(path: str, flags: int) -> int:
            return os.open(path, flags)

        async with await trio.open_file("f", "rb", opener=opener) as f:
            obs.append(await f.read(2))

    # The fd and opener forms open in a thread (io.open itself), then go native.
    run_both(tmp_path, monkeypatch, thread_calls, scenario,
             lambda d: write(d, "f", DATA), threads_allowed=2)  # fmt: skip


def test_wrap_file_with_buffered_data_stays_on_threads(tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "f").write_bytes(DATA)

    async def main() -> None:
        raw = open(tmp_path / "f", "rb")  # noqa: SIM115
        raw.read(2)  # Python's buffer now holds the rest of the file
        f = trio.wrap_file(raw)
        assert await f.read(3) == DATA[2:5]
        assert "_trio_uring_engine" in f.__dict__
        assert f.__dict__["_trio_uring_engine"] is False
        await f.aclose()

    trio_uring.run(main)


def test_non_seekable_uses_threads(tmp_path):  # type: ignore[no-untyped-def]
    async def main() -> None:
        r, w = os.pipe()
        os.write(w, b"line\nrest")
        os.close(w)
        f = trio.wrap_file(os.fdopen(r, "rb"))
        assert await f.readline() == b"line\n"
        assert await f.read() == b"rest"
        assert f.__dict__["_trio_uring_engine"] is False
        await f.aclose()

    trio_uring.run(main)


def test_epoll_run_unchanged(tmp_path, thread_calls):  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with await trio.open_file(tmp_path / "x", "wb") as f:
            await f.write(b"x")
            assert "_trio_uring_engine" not in f.__dict__

    trio_uring._file_hooks.install()
    trio.run(main)
    assert thread_calls


# ----------------------------------------------------------------- paths
def test_path_methods(tmp_path, monkeypatch, thread_calls):  # type: ignore[no-untyped-def]
    def setup(d: Path) -> None:
        write(d, "f", DATA)
        (d / "dir").mkdir()
        os.mkfifo(d / "fifo")

    async def scenario(obs: list[Any]) -> None:
        P = trio.Path
        st = await P("f").stat()
        obs.append((st.st_size, stat.S_IFMT(st.st_mode), st.st_nlink))
        for name in ("f", "dir", "missing", "f/sub"):
            p = P(name)
            obs.append((await p.exists(), await p.is_file(), await p.is_dir(),
                        await p.is_symlink()))  # fmt: skip
        await catch(obs, P("missing").stat())
        await catch(obs, P("f").exists(follow_symlinks=False))  # 3.12+ only
        await catch(obs, P("f").read_text("utf-8", "strict", "\n"))  # 3.13+ only
        await catch(obs, P("f").stat(bogus=1))
        await catch(obs, P("missing").lstat())
        obs.append(await P("f").read_bytes())
        obs.append(await P("f").read_text())
        obs.append(await P("f").read_text(encoding="latin-1"))
        await catch(obs, P("dir").read_bytes())
        await catch(obs, P("missing").read_text())
        obs.append(await P("g").write_bytes(b"bytes"))
        obs.append(await P("h").write_text("a\nb", newline="\r\n"))
        await catch(obs, P("h").write_text(b"x"))  # type: ignore[arg-type]
        await catch(obs, P("h").write_bytes("x"))  # type: ignore[arg-type]
        obs.append(str(await P("g").rename("g2")))
        obs.append(str(await P("g2").replace("h")))
        await catch(obs, P("g").rename("g3"))
        await P("new/a/b").mkdir(parents=True)
        await P("new/a/b").mkdir(exist_ok=True)
        await catch(obs, P("new/a/b").mkdir())
        await catch(obs, P("f").mkdir(exist_ok=True))
        await catch(obs, P("x/y").mkdir())
        await P("new/a/b").rmdir()
        await catch(obs, P("new").rmdir())
        await P("link").symlink_to("f")
        obs.append(await P("link").is_symlink())
        obs.append((await P("link").lstat()).st_size == len("f"))
        await P("hard").hardlink_to("f")
        obs.append((await P("f").stat()).st_nlink)
        await P("touched").touch()
        await P("touched").touch()
        await catch(obs, P("touched").touch(exist_ok=False))
        await P("dir").touch()  # pathlib's own code (utime), as for the FIFO:
        await P("fifo").touch()  # opening it for writing would block
        await P("hard").unlink()
        await catch(obs, P("hard").unlink())
        await P("hard").unlink(missing_ok=True)
        async with await P("f").open("rb") as f:
            obs.append(await f.read(4))
        async with await P("o").open("w", newline="\r\n") as f:
            await f.write("x\ny\n")

    # pathlib's own code, by design: touch of the directory and the FIFO,
    # write_text(bytes) (its TypeError), stat(bogus=1), and before 3.12/3.13
    # exists(follow_symlinks=...) and read_text(newline) (their TypeErrors).
    run_both(tmp_path, monkeypatch, thread_calls, scenario, setup, threads_allowed=6)


# ----------------------------------------------------------------- cancellation
def test_cancel_before_submit(tmp_path):  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with await trio.open_file(tmp_path / "f", "w+b") as f:
            await f.write(b"abc")
            await f.seek(1)
            for call in (
                lambda: f.write(b"zzz"), lambda: f.read(1), lambda: f.readline(),
                lambda: f.seek(0), lambda: f.truncate(0), lambda: f.read(),
            ):  # fmt: skip
                with trio.CancelScope() as cs:
                    cs.cancel()
                    await call()
                assert cs.cancelled_caught
            assert await f.tell() == 1
            await f.seek(0)
            assert await f.read() == b"abc"

    trio_uring.run(main)


def test_cancel_racing_writes_and_reads(tmp_path):  # type: ignore[no-untyped-def]
    """Cancel before submission (the scope is cancelled before the call:
    always Cancelled, nothing written), in flight and racing completion (the
    canceller runs 0, 1 or 2 checkpoints after the call starts; either
    outcome is allowed, since a small buffered write may finish inline): a
    write that raised Cancelled is not in the file, one that returned is; a
    read that raised Cancelled did not move the position."""

    async def cancel_after(k: int, cs: trio.CancelScope) -> None:
        for _ in range(k):
            await trio.lowlevel.checkpoint()
        cs.cancel()

    def arm(i: int, cs: trio.CancelScope, nursery: trio.Nursery) -> None:
        if i % 4 == 3:
            cs.cancel()  # before submission
        else:
            nursery.start_soon(cancel_after, i % 4, cs)

    async def main() -> None:
        confirmed = bytearray()
        outcomes = {"done": 0, "cancelled": 0}
        presubmit_reads_cancelled = 0
        async with await trio.open_file(tmp_path / "f", "w+b") as f:
            for i in range(600):
                chunk = bytes([65 + i % 26]) * 65536
                done = False
                with trio.CancelScope() as cs:
                    async with trio.open_nursery() as nursery:
                        arm(i, cs, nursery)
                        await f.write(chunk)
                        done = True
                if i % 4 == 3:
                    assert not done, i
                if done:
                    confirmed += chunk
                outcomes["done" if done else "cancelled"] += 1
                assert await f.tell() == len(confirmed)
            await f.seek(0)
            assert await f.read() == bytes(confirmed)
            await f.seek(0)
            pos = 0
            for i in range(600):
                got = None
                with trio.CancelScope() as cs:
                    async with trio.open_nursery() as nursery:
                        arm(i, cs, nursery)
                        got = await f.read(65536)
                if i % 4 == 3:
                    assert got is None, i
                    presubmit_reads_cancelled += 1
                if got is not None:
                    assert got == bytes(confirmed[pos : pos + 65536])
                    pos += len(got)
                assert await f.tell() == pos
        stats = trio.lowlevel.current_statistics().io_statistics.submitted
        assert outcomes["done"], (outcomes, stats)
        assert outcomes["cancelled"] >= 150, (outcomes, stats)
        assert presubmit_reads_cancelled == 150

    trio_uring.run(main)


def test_cancelled_write_did_not_happen(tmp_path):  # type: ignore[no-untyped-def]
    """Checks on the contract itself: every cancel outcome is consistent."""

    async def main() -> None:
        async with await trio.open_file(tmp_path / "f", "w+b") as f:
            expect = bytearray()
            for i in range(300):
                chunk = bytes([97 + i % 26]) * 4096
                done = False
                with trio.CancelScope() as cs:
                    trio.lowlevel.current_trio_token().run_sync_soon(cs.cancel)
                    if i % 2:
                        cs.cancel()
                    await f.write(chunk)
                    done = True
                if done:
                    expect += chunk
                assert await f.tell() == len(expect)
            await f.seek(0)
            assert await f.read() == bytes(expect)

    trio_uring.run(main)


def test_aclose_while_other_tasks_read(tmp_path):  # type: ignore[no-untyped-def]
    """aclose while reads are pending or being submitted: each read returns
    data or fails with ClosedResourceError (in flight: notify_closing) or
    ValueError (closed before it started); nothing hangs, the fd is closed."""
    (tmp_path / "big").write_bytes(os.urandom(4 << 20))

    async def main() -> None:
        outcomes: list[str] = []
        for _ in range(20):
            f = await trio.open_file(tmp_path / "big", "rb")
            fd = f.fileno()

            async def reader(f: Any = f) -> None:
                try:
                    while True:
                        await f.seek(0)
                        await f.read(1 << 20)
                        outcomes.append("data")
                except (trio.ClosedResourceError, ValueError) as exc:
                    outcomes.append(type(exc).__name__)

            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(reader)
                for _ in range(3):
                    await trio.lowlevel.checkpoint()
                await f.aclose()
            with pytest.raises(OSError, match="Bad file descriptor"):
                os.fstat(fd)
        assert "data" in outcomes
        assert "ValueError" in outcomes

    trio_uring.run(main)


def test_aclose_shielded_and_closes_fd(tmp_path):  # type: ignore[no-untyped-def]
    async def main() -> None:
        f = await trio.open_file(tmp_path / "f", "wb")
        fd = f.fileno()
        await f.write(b"x")
        with trio.CancelScope() as cs:
            cs.cancel()
            await f.aclose()
        assert f.closed
        with pytest.raises(OSError, match="Bad file descriptor") as info:
            os.fstat(fd)
        assert info.value.errno == errno.EBADF
        st = trio.lowlevel.current_statistics().io_statistics
        assert st.submitted.get("CLOSE", 0) >= 1

    trio_uring.run(main)


def test_ring_ops_used(tmp_path):  # type: ignore[no-untyped-def]
    async def main() -> None:
        p = trio.Path(tmp_path / "f")
        await p.write_bytes(b"x\ny\n")
        async with await trio.open_file(p) as f:
            assert [line async for line in f] == ["x\n", "y\n"]
        await p.stat()
        await p.unlink()
        sub = trio.lowlevel.current_statistics().io_statistics.submitted
        for op in ("OPENAT", "READ", "WRITE", "CLOSE", "STATX", "UNLINKAT"):
            assert sub.get(op), (op, sub)

    trio_uring.run(main)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_unclosed_file_is_collected(tmp_path):  # type: ignore[no-untyped-def]
    async def main() -> None:
        f = await trio.open_file(tmp_path / "f", "wb")
        await f.write(b"x")
        fd = f.fileno()
        del f
        gc.collect()
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)

    trio_uring.run(main)


def test_engine_for_rejects_foreign_objects() -> None:
    assert _file.engine_for(io.BytesIO(b"x")) is None
    assert _file.engine_for(object()) is None
