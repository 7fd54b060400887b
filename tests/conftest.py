"""Shared test plumbing: `async def` tests run on a fresh event loop, as the daemon runs."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from rrd.worker import install_child_watcher


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    install_child_watcher()
    asyncio.run(pyfuncitem.obj(**arguments))
    return True
