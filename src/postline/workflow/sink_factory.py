"""make_sink: a sink from a Workflow ``sinks`` entry.

Apart from :mod:`postline.workflow.sinks` so that the sink modules (sinks.py, jsonl_sink.py)
import only downwards: the factory imports them all, none of them imports the factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from postline.workflow.jsonl_sink import JsonlSink
from postline.workflow.sinks import DirectorySink, HttpSink, Sink, StdoutSink


def make_sink(config: Any, *, root: Path) -> Sink:
    """A sink from a Workflow ``sinks`` entry; relative paths are under the project root.
    Returns the sink, not yet opened. Raises ValueError for an unknown type."""
    def resolve(p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else root / path

    if config.type == "directory":
        return DirectorySink(path=resolve(config.path), keep_eml=config.keep_eml,
                             mode=int(config.mode, 8))
    if config.type == "jsonl":
        return JsonlSink(path=resolve(config.path), mode=int(config.mode, 8))
    if config.type == "stdout":
        return StdoutSink()
    if config.type == "http":
        return HttpSink(url=config.url, headers=dict(config.headers), timeout=config.timeout,
                        retries=config.retries, min_backoff=config.min_backoff,
                        max_backoff=config.max_backoff,
                        ca_file=str(resolve(config.ca_file)) if config.ca_file else None)
    raise ValueError(f"unknown sink type {config.type!r}")
