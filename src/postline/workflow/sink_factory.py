"""make_sink: a sink from a Workflow ``sinks`` entry.

Apart from :mod:`postline.workflow.sinks` so that the sink modules (sinks.py, jsonl_sink.py)
import only downwards: the factory imports them all, none of them imports the factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from postline.workflow.jsonl_sink import JsonlSink
from postline.workflow.sinks import DirectorySink, HttpSink, Sink, StdoutSink


def make_sink(config: Any, *, root: Path, ledger: Any = None, project: Any = None) -> Sink:
    """A sink from a Workflow ``sinks`` entry; relative paths are under the project root.
    ``ledger``: the run's ledger (a ``postgresql`` sink without url writes in its
    transactions when it is on PostgreSQL); without one (``postline try``) such a sink
    writes to the StateStore of ``project`` on its own. Returns the sink, not yet opened.
    Raises ConfigError, or ValueError for an unknown type."""
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
    if config.type == "postgresql":
        return _postgresql_sink(config, ledger=ledger, project=project)
    raise ValueError(f"unknown sink type {config.type!r}")


def _postgresql_sink(config: Any, *, ledger: Any, project: Any) -> Sink:
    """A ``postgresql`` sink: on its own ``url``; else in the run's PostgreSQL ledger's
    transactions; else (no ledger on PostgreSQL, ``postline try``) on the StateStore."""
    from postline.workflow.pg_sink import PostgresSink

    if config.url:
        from psycopg.conninfo import make_conninfo

        from postline.assets.kinds.state_store import mask_url

        return PostgresSink(table=config.table, where=mask_url(config.url),
                            conninfo=make_conninfo(config.url, application_name="postline"))
    if not hasattr(ledger, "attach") and project is not None:
        from postline.state.stores import shared_store

        if shared_store(project) is not None:
            from postline.state.postgres import target_of

            target = target_of(project)
            return PostgresSink(table=config.table, conninfo=target.conninfo,
                                where=target.where)
    return PostgresSink(table=config.table, ledger=ledger if hasattr(ledger, "attach")
                        else None)
