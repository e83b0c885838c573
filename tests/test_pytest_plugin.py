"""The pytest plugin: ``pytest --trio-uring`` runs trio tests on io_uring."""

from __future__ import annotations

import pytest

TEST_FILE = """
import trio
import pytest

def backend():
    return trio.lowlevel.current_statistics().io_statistics.backend

def test_plain_trio_run():
    async def main():
        return backend()
    assert trio.run(main) == pytest.expected_backend

@pytest.mark.trio
async def test_pytest_trio():
    assert backend() == pytest.expected_backend
"""

CONFTEST = """
import pytest
def pytest_configure(config):
    pytest.expected_backend = "io_uring" if config.getoption("trio_uring") else "epoll"
"""


@pytest.mark.parametrize("flag", [[], ["--trio-uring"]])
def test_plugin_switches_the_session(
    pytester: pytest.Pytester, flag: list[str]
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(TEST_FILE)
    result = pytester.runpytest_subprocess("-p", "trio", *flag)
    result.assert_outcomes(passed=2)
    if flag:
        result.stdout.fnmatch_lines(["trio-uring: trio runs on io_uring"])


def test_plugin_option_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--trio-uring*", "*--trio-uring-fallback*"])
