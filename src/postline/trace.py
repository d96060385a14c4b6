"""A step-by-step record of one connection attempt, for ``postline test-connection``.

Adapters call :meth:`Trace.step` around each phase (DNS, TCP, TLS, greeting, STARTTLS,
capabilities, authentication). Normal runs pass no trace (a :class:`NullTrace`); the
diagnosis passes a real one and reads the steps afterwards, including the one that failed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Step:
    """One phase: its name, whether it passed, how long it took, what it found."""

    name: str
    ok: bool = True
    seconds: float = 0.0
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.name, "ok": self.ok, "seconds": round(self.seconds, 4),
                "detail": self.detail, **({"data": self.data} if self.data else {})}


class Trace:
    """Collects :class:`Step` objects in order."""

    detailed = True   # worth collecting details that cost time (certificate facts)

    def __init__(self) -> None:
        self.steps: list[Step] = []

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[Step]:
        """Time the block as step ``name``; an exception marks it failed and propagates."""
        st = Step(name=name, detail=detail)
        self.steps.append(st)
        start = time.perf_counter()
        try:
            yield st
        except BaseException as exc:
            st.ok = False
            st.detail = str(exc)
            raise
        finally:
            st.seconds = time.perf_counter() - start


class NullTrace(Trace):
    """A trace that keeps nothing (the default outside diagnosis)."""

    detailed = False

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[Step]:
        yield Step(name=name, detail=detail)


NULL_TRACE = NullTrace()
