"""One log line per build step: what happened, to what, and how long it took."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("ensemble.recipes")


@contextmanager
def timed(label: str) -> Iterator[dict]:
    """Log ``label: <detail> (<seconds>s)`` when the block ends without an exception.

    The block may put a ``detail`` string into the yielded dict; ``seconds`` is set on exit
    so callers can record it too.
    """
    info: dict = {"detail": ""}
    start = time.perf_counter()
    yield info
    info["seconds"] = round(time.perf_counter() - start, 2)
    detail = f": {info['detail']}" if info["detail"] else ""
    log.info("%s%s (%.1fs)", label, detail, info["seconds"])


def megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB"
