"""A process-wide budget for the memory of image decodes.

An image is checked from its header and its compressed data, never decoded, except when it
is larger than the model needs: then it is decoded once to be downscaled (`fit_image`).
A PNG, WebP or GIF must be decoded whole, at up to 4 bytes per pixel: a 6000x6000 image of
11 KB costs 144 MB or more while it is downscaled. Each such decode reserves what it will hold from
a budget of `VLMQ_DECODE_MEMORY_MB` per process and waits for room; one larger than the
whole budget runs when nothing else is decoding. Requests that carry many large images,
from however many threads, then cost the process a bounded amount of memory, and a
request that waits too long for room gets `503` with `Retry-After` (nothing was queued).
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from services.core.errors import ServiceUnavailableError

# Bytes per pixel a decode holds at its peak: Pillow keeps RGB and RGBA in 4 bytes, and a
# 1-bit or palette image (1 byte) is converted before it is reduced.
BYTES_PER_PIXEL = 5
# glibc's mallopt parameter, and the size from which allocations are mapped on their own.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20
# How long a decode waits for room before its request gets a 503.
WAIT_S = 30.0


class DecodeBudget:
    """Memory reserved by the decodes running in this process, within a total."""

    def __init__(self, total_bytes: int) -> None:
        self.total = max(1, total_bytes)
        self.reserved = 0
        self.condition = threading.Condition()

    @contextmanager
    def reserve(self, size: int, timeout_s: float = WAIT_S) -> Iterator[None]:
        """Hold `size` bytes of the budget for the block; waits for room (a decode larger
        than the budget waits for it all), a 503 after `timeout_s`."""
        size = min(size, self.total)
        deadline = time.monotonic() + timeout_s
        with self.condition:
            while self.reserved + size > self.total:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServiceUnavailableError(
                        "the API is busy decoding other large images; retry shortly",
                        code="decode_capacity_exceeded",
                        retry_after_s=1,
                    )
                self.condition.wait(left)
            self.reserved += size
        try:
            yield
        finally:
            with self.condition:
                self.reserved -= size
                self.condition.notify_all()


def decode_budget(total_bytes: int) -> DecodeBudget:
    """The process-wide budget (one per configured total)."""
    with _BUDGETS_LOCK:
        if not _BUDGETS:
            map_large_allocations()
        return _BUDGETS.setdefault(total_bytes, DecodeBudget(total_bytes))


def map_large_allocations() -> None:
    """Have glibc map every allocation of `MMAP_THRESHOLD` or more on its own, so that
    freeing it returns it to the system at once.

    By default glibc raises that threshold after the first large free, up to 32 MiB: a
    decoded image's 16 MiB blocks then come from per-thread heaps that keep them, and the
    process grows by a decode's size for every thread that ever decoded one. Without glibc
    (another libc), nothing changes.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass


def decoded_bytes(width: int, height: int) -> int:
    """About what decoding a `width` x `height` image whole holds at its peak."""
    return width * height * BYTES_PER_PIXEL


_BUDGETS: dict[int, DecodeBudget] = {}
_BUDGETS_LOCK = threading.Lock()
