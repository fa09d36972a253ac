"""Forcing the page-start race in the browser tests: a page's load is held while the test
writes (it sets ``window.__written``), and a change-event stream the page asks for after that
load is held until the write, so it opens after it (as a page that loaded before opening its
stream would)."""

from __future__ import annotations

from collections.abc import Callable


def stream_held_after(page, order: list[str], load: str) -> Callable:
    """A route handler for the page's ``/events``: notes "stream" in ``order``; a stream asked
    for once ``load`` is in ``order`` goes on only after the test's write."""

    def hold(route) -> None:
        order.append("stream")
        if load in order:
            page.wait_for_function("() => window.__written === true", timeout=30_000)
        route.continue_()

    return hold
