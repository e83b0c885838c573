"""Shared test configuration (pytester for the pytest plugin tests) and
fixtures."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable

import pytest

pytest_plugins = ["pytester"]

CyclesAfter = Callable[[int, Callable[[], Awaitable[object]]], Awaitable[int]]


async def _cycles_after(n: int, body: Callable[[], Awaitable[object]]) -> int:
    gc.collect()
    gc.disable()
    try:
        for _ in range(n):
            await body()
        return gc.collect()
    finally:
        gc.enable()


@pytest.fixture
def cycles_after() -> CyclesAfter:
    """``await cycles_after(n, body)``: run ``await body()`` n times with the
    cyclic GC off; how many objects were left in reference cycles."""
    return _cycles_after
