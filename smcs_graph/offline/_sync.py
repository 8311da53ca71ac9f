"""Synchronous forms of the offline jobs' async entry points (`profile_pool`, `evaluate`)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")


def synchronous(run: Callable[_P, Awaitable[_T]]) -> Callable[_P, _T]:
    """`run` (an `a...` coroutine function) on an event loop of its own, for synchronous callers.

    Inside a running loop it refuses, naming the coroutine function to await instead.
    """

    @functools.wraps(run)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run(*args, **kwargs))  # type: ignore[arg-type]
        raise RuntimeError(
            f"{run.__name__.removeprefix('a')}() was called inside a running event loop; "
            f"await {run.__name__}() instead"
        )

    return wrapper
