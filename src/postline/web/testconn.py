""""Test connection" on a connection page: the steps of ``postline test-connection``, each
shown as it ends. The page is streamed (chunked HTML): a row per step as the adapter
finishes it (step, time, result, details), then per direction the outcome and, for a
failure, the fix -- no JavaScript needed to watch it happen."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.responses import StreamingResponse

from postline.errors import PostlineError
from postline.trace import Step, Trace
from postline.web.pages import HEADERS, render

log = logging.getLogger("postline.web")
_MARK = "\x00body\x00"


class LiveTrace(Trace):
    """A trace that also hands every step to ``on_step(direction, step)`` when it ends."""

    def __init__(self, *, direction: str, on_step: Callable[[str, Step], None]) -> None:
        super().__init__()
        self.direction, self._on_step = direction, on_step

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[Step]:
        st: Step | None = None
        try:
            with super().step(name, detail) as st:
                yield st
        finally:
            if st is not None:
                self._on_step(self.direction, st)


def _row(direction: str, st: Step) -> str:
    return render("test_step.html", direction=direction, s=st)


async def _steps(project: Any, name: str) -> AsyncIterator[str]:
    from postline.protocols.diagnose import diagnose

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    shown: set[int] = set()

    def on_step(direction: str, st: Step) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("step", direction, st))

    def run() -> None:
        try:
            reports = diagnose(project, name, trace_factory=lambda d: LiveTrace(
                direction=d, on_step=on_step))
            loop.call_soon_threadsafe(queue.put_nowait, ("done", reports, ""))
        except PostlineError as exc:
            loop.call_soon_threadsafe(queue.put_nowait, ("done", [], str(exc)))
        except Exception as exc:   # the page must end whatever happened; the log has it
            log.exception("test connection %s", name)
            loop.call_soon_threadsafe(queue.put_nowait, ("done", [], f"the test stopped on "
                                                         f"{type(exc).__name__}: {exc}"))

    worker = loop.run_in_executor(None, run)
    while True:
        item = await queue.get()
        if item[0] == "step":
            shown.add(id(item[2]))
            yield _row(item[1], item[2])
            continue
        _, reports, error = item
        for r in reports:   # steps recorded without ending (credentials that failed first)
            for st in r.steps:
                if id(st) not in shown:
                    yield _row(r.direction, st)
        yield "</tbody></table></div>" + render("test_result.html", reports=reports,
                                                 error=error)
        break
    await worker


def response(project: Any, name: str, *, context: dict[str, Any]) -> StreamingResponse:
    """The streamed page of "Test connection" for connection ``name`` (which exists)."""
    shell = render("base.html", title=f"Test connection {name}", body=_MARK, **context)
    head, tail = shell.split(_MARK)

    async def body() -> AsyncIterator[bytes]:
        yield (head + render("test_connection.html", name=name)).encode()
        async for part in _steps(project, name):
            yield part.encode()
        yield tail.encode()

    return StreamingResponse(body(), media_type="text/html; charset=utf-8",
                             headers={**HEADERS, "X-Accel-Buffering": "no"})
