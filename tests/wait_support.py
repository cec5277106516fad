"""Waiting on a condition, never on a clock: a test that sleeps a fixed time either waits longer
than it needs or, on a loaded machine, not long enough (a flaky test).  `wait_for` polls the
condition until it holds and fails, naming what never came, once `timeout` has passed."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 10.0, *, step: float = 0.02,
             failure: str | Callable[[], str] = "the condition never held") -> T:
    """The first truthy value of `condition()`, asked every `step` s until `timeout` has passed;
    then AssertionError with `failure` (a callable is asked only then, e.g. for a log's tail)."""
    value = wait_until(condition, timeout, step)
    if not value:
        raise AssertionError(f"{failure() if callable(failure) else failure} (waited {timeout} s)")
    return value


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, step: float = 0.1) -> T:
    """`wait_for` that gives the last value back instead of failing, for a caller that asserts
    with a message of its own (`assert wait_until(...), what_was_seen`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


async def wait_for_async(condition: Callable[[], T | Awaitable[T]], timeout: float = 10.0, *, step: float = 0.001,
                         failure: str | Callable[[], str] = "the condition never held") -> T:
    """`wait_for` inside an event loop: the loop runs on while the condition does not hold.  The
    condition may be a coroutine function (a store read)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{failure() if callable(failure) else failure} (waited {timeout} s)")
        await asyncio.sleep(step)
