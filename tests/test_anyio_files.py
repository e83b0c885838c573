"""anyio.open_file / wrap_file / Path on anyio's trio backend over io_uring.

Differential, as tests/test_trio_files.py: the same scenario under
``anyio.run(backend="trio")`` on epoll (anyio's worker threads) and inside
``trio_uring.installed()`` (native), with equal observations and no worker
thread on io_uring.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_uring

anyio = pytest.importorskip("anyio")

# anyio < 4.1 on trio >= 0.23 warns from its own thread path (the baseline).
pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")

Scenario = Callable[[list[Any]], Awaitable[None]]


@pytest.fixture
def thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    for module in (trio.to_thread, anyio.to_thread):
        orig = module.run_sync

        async def counting(fn: Any, *args: Any, _orig: Any = orig, **kw: Any) -> Any:
            calls.append(fn)
            return await _orig(fn, *args, **kw)

        monkeypatch.setattr(module, "run_sync", counting)
    return calls


def run_both(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    thread_calls: list[Any],
    scenario: Scenario,
    threads_allowed: int = 0,
) -> None:
    results = []
    for name in ("thread", "uring"):
        d = tmp_path / name
        d.mkdir()
        (d / "f").write_bytes(b"first\r\nsecond\nthird")
        monkeypatch.chdir(d)
        obs: list[Any] = []

        async def main(obs: list[Any] = obs) -> None:
            try:
                await scenario(obs)
            except Exception as exc:
                obs.append(("raised", type(exc).__name__, str(exc)))

        thread_calls.clear()
        if name == "uring":
            with trio_uring.installed():
                anyio.run(main, backend="trio")
            assert len(thread_calls) <= threads_allowed, thread_calls
        else:
            anyio.run(main, backend="trio")
            assert thread_calls
        files = {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}
        results.append((obs, files))
    assert results[0] == results[1]


async def catch(obs: list[Any], coro: Awaitable[Any]) -> None:
    try:
        obs.append(await coro)
    except Exception as exc:
        obs.append((type(exc).__name__, str(exc)))


def test_anyio_open_file(tmp_path, monkeypatch, thread_calls):  # type: ignore[no-untyped-def]
    async def scenario(obs: list[Any]) -> None:
        async with await anyio.open_file("f", "rb") as f:
            obs.append(type(f.wrapped).__name__)
            obs.append(await f.read(3))
            obs.append(await f.readline())
            obs.append(await f.tell())
            obs.append(await f.seek(0))
            obs.append([line async for line in f])
            await f.seek(1)
            obs.append(await f.readlines())
            await f.seek(0)
            obs.append(await f.read1(2))
            buf = bytearray(4)
            obs.append((await f.readinto(buf), bytes(buf)))
        async with await anyio.open_file("f") as f:
            obs.append([line async for line in f])
            await f.seek(0)
            obs.append(await f.read())
        async with await anyio.open_file("g", "w+", newline="") as f:
            obs.append(await f.write("a\nb\r\n"))
            await f.writelines(["c\n"])
            await f.flush()
            obs.append(await f.truncate(4))
            await f.seek(0)
            obs.append(await f.read())
        raw = open("f", "rb")  # noqa: SIM115
        w = anyio.wrap_file(raw)
        obs.append(await w.read(2))
        await w.aclose()
        obs.append(raw.closed)
        await catch(obs, anyio.open_file("missing"))
        await catch(obs, anyio.open_file("."))

    run_both(tmp_path, monkeypatch, thread_calls, scenario)


def test_anyio_path(tmp_path, monkeypatch, thread_calls):  # type: ignore[no-untyped-def]
    async def scenario(obs: list[Any]) -> None:
        P = anyio.Path
        obs.append((await P("f").stat()).st_size)
        obs.append([await P("f").exists(), await P("nope").exists()])
        obs.append([await P("f").is_file(), await P(".").is_dir()])
        obs.append(await P("f").read_bytes())
        obs.append(await P("f").read_text())
        obs.append(await P("h").write_text("x\ny", newline="\r\n"))
        obs.append(await P("b").write_bytes(b"bin"))
        obs.append(str(await P("b").rename("b2")))
        obs.append(type(await P("b2").replace("b3")).__name__)
        await P("d/e").mkdir(parents=True)
        await P("d/e").rmdir()
        await P("d").rmdir()
        await P("t").touch()
        await P("l").symlink_to("f")
        obs.append(await P("l").is_symlink())
        await P("l").unlink()
        await catch(obs, P("l").unlink())
        async with await P("f").open("rb") as f:
            obs.append(await f.read())

    run_both(tmp_path, monkeypatch, thread_calls, scenario)


def test_anyio_on_asyncio_unchanged(tmp_path):  # type: ignore[no-untyped-def]
    async def main() -> None:
        p = anyio.Path(tmp_path / "x")
        await p.write_bytes(b"abc")
        async with await anyio.open_file(p, "rb") as f:
            assert await f.read() == b"abc"

    with trio_uring.installed():
        anyio.run(main, backend="asyncio")
    assert os.path.exists(tmp_path / "x")


def test_anyio_path_limiter_carried(tmp_path, monkeypatch, thread_calls):  # type: ignore[no-untyped-def]
    # anyio.Path(..., limiter=L) hands L to the files it opens and the paths
    # rename/replace return (newer anyio); the native ops keep doing that.
    import inspect

    if "limiter" not in inspect.signature(anyio.Path.__init__).parameters:
        pytest.skip("this anyio's Path takes no limiter")

    async def scenario(obs: list[Any]) -> None:
        limiter = anyio.CapacityLimiter(1)
        path = anyio.Path("f", limiter=limiter)
        f = await path.open("rb")
        obs.append(f.limiter is limiter)
        obs.append(await f.read())
        await f.aclose()
        moved = await path.rename("g")
        obs.append((moved.limiter is limiter, str(moved)))
        back = await moved.replace("f")
        obs.append((back.limiter is limiter, str(back)))
        plain = await anyio.Path("f").rename("h")
        obs.append(plain.limiter is None)

    run_both(tmp_path, monkeypatch, thread_calls, scenario)
