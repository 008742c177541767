"""A bounded wait for something another process does on its own time (no fixed sleeps)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(check: Callable[[], T], within: float = 10.0, what: str = "condition") -> T:
    """Return ``check()`` as soon as it is truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    delay = 0.005
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


async def eventually_async(check: Callable[[], Awaitable[bool]], within: float = 10.0, what: str = "condition") -> None:
    """Like :func:`eventually`, for a check that has to await (e.g. ask the gateway)."""
    deadline = time.monotonic() + within
    delay = 0.01
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


def wait_until(check: Callable[[], T], within: float = 10.0, what: str = "condition") -> T:
    """:func:`eventually` for synchronous code (fixtures): bounded polling, no fixed sleep."""
    deadline = time.monotonic() + within
    delay = 0.005
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
