"""Waiting for an event in a test: poll a condition until it holds, with a deadline.

A fixed sleep is either too short on a loaded machine (a flaky test) or too long everywhere (a
slow suite); polling returns as soon as the thing has happened and fails with a message saying
what never did. The deadline is generous on purpose: it only matters when the test fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "the condition",
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """Call ``predicate`` until it returns something truthy and return that; AssertionError
    naming ``message`` (called then, if callable, to describe the state reached) and the last
    value once ``timeout`` seconds have passed. ``sleep`` waits ``interval`` seconds between
    calls."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            raise AssertionError(f"waited {timeout:g} s for {what}; last value: {value!r}")
        sleep(interval)
