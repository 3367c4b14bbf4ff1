"""What a piece of work leaves to the cyclic collector: the objects reference counting could not free."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def cyclic_garbage(work: Callable[[], Awaitable[T]]) -> tuple[T, list[str]]:
    """Run ``work`` with the collector off, then collect: its result and the sorted type names of what
    only the collector could free (empty when every object was freed by reference counting)."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        result = await work()
        await asyncio.sleep(0.05)
        gc.collect()
        return result, sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
