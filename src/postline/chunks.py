"""Cutting a list into consecutive pieces: the one chunker every ``IN (...)`` query, fetch
and ``writev`` uses (a second copy would be a second place for an off-by-one)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size`` (none for an empty sequence).
    Raises ValueError when ``size`` is not positive."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, not {size}")
    for i in range(0, len(items), size):
        yield items[i:i + size]
