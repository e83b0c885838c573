"""pytest plugin: ``pytest --trio-uring`` runs every trio test on io_uring.

Registered through the ``pytest11`` entry point, so it is active wherever
trio-uring is installed; without the option it does nothing.  It works for
anything that goes through ``trio.run`` (pytest-trio, anyio's pytest plugin
with the trio backend, trio's own test suite).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trio-uring")
    group.addoption(
        "--trio-uring",
        action="store_true",
        default=False,
        help="run every trio.run of this session on io_uring (trio_uring.install())",
    )
    group.addoption(
        "--trio-uring-fallback",
        action="store_true",
        default=False,
        help="with --trio-uring: fall back to epoll (with a warning) where "
        "io_uring is unavailable, instead of failing",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("trio_uring"):
        import trio_uring

        fallback = "epoll" if config.getoption("trio_uring_fallback") else None
        trio_uring.install(fallback=fallback)


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.getoption("trio_uring"):
        import trio_uring

        trio_uring.uninstall()


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.getoption("trio_uring"):
        import trio_uring

        if trio_uring.is_available():
            return "trio-uring: trio runs on io_uring"
        return f"trio-uring: io_uring unavailable: {trio_uring.unavailable_reason()}"
    return None
