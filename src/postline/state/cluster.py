"""What ``postline cluster status`` shows: the fleet's instances and who owns which source.

:func:`cluster_status` reads the ``instances`` and ``leases`` tables (and the ledger's
unsettled entries per source) of a project's postgresql StateStore, changing nothing.
Instances whose postline version or assets hash differ from the most common pair among the
live ones are ``flagged``: a fleet that runs two configurations at once is rarely intended
(a rolling upgrade is the exception).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql


@dataclass(frozen=True, kw_only=True)
class InstanceView:
    name: str
    host: str
    pid: int
    version: str
    assets_hash: str
    started: datetime
    last_heartbeat: datetime
    live: bool
    flagged: bool


@dataclass(frozen=True, kw_only=True)
class SourceView:
    source: str
    owner: str | None           # None: nobody holds it now
    lease_expires: datetime | None
    token: int | None
    last_round: datetime | None
    backlog: int                # ledger entries not settled: in flight or awaiting a move


@dataclass(frozen=True, kw_only=True)
class ClusterStatus:
    state_store: str
    where: str
    instances: list[InstanceView]
    sources: list[SourceView]

    def as_dict(self) -> dict[str, Any]:
        def plain(d: dict) -> dict:
            return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in d.items()}
        return {"state_store": self.state_store, "where": self.where,
                "instances": [plain(asdict(i)) for i in self.instances],
                "sources": [plain(asdict(s)) for s in self.sources]}


def cluster_status(project: Any) -> ClusterStatus:
    """The fleet of ``project``'s StateStore. Raises ConfigError (no postgresql StateStore,
    schema not migrated or newer), ConnectError, AuthError."""
    from postline.state.pg_ledger import ensure_schema
    from postline.state.postgres import connect, query_failure, target_of

    target = target_of(project)
    ensure_schema(target, read_only=True)
    store = project.get("StateStore", target.label.split("/", 1)[1])
    s = sql.Identifier(target.schema)
    with connect(target, autocommit=True) as conn:
        try:
            members = conn.execute(sql.SQL(
                "SELECT name, host, pid, version, assets_hash, started_at, heartbeat_at, "
                "heartbeat_at > now() - make_interval(secs => %s) FROM {}.instances "
                "ORDER BY name").format(s), (store.lease_seconds,)).fetchall()
            leases = {r[0]: r for r in conn.execute(sql.SQL(
                "SELECT source, owner, token, expires_at, last_round_at, owner IS NOT NULL "
                "AND expires_at > now() FROM {}.leases").format(s))}
            backlog = dict(conn.execute(sql.SQL(
                "SELECT source, count(*) FROM {}.mails WHERE NOT settled GROUP BY source"
            ).format(s)).fetchall())
        except psycopg.Error as exc:
            raise query_failure(target, exc) from exc
    common = Counter((m[3], m[4]) for m in members if m[7]).most_common(1)
    usual = common[0][0] if common else None
    instances = [InstanceView(name=m[0], host=m[1], pid=m[2], version=m[3], assets_hash=m[4],
                              started=m[5], last_heartbeat=m[6], live=m[7],
                              flagged=bool(m[7] and usual and (m[3], m[4]) != usual))
                 for m in members]
    names = sorted({src.name for src in project.assets("EmailSource")} | set(leases))
    sources = []
    for name in names:
        row = leases.get(name)
        held = bool(row and row[5])
        sources.append(SourceView(source=name, owner=row[1] if held else None,
                                  lease_expires=row[3] if held else None,
                                  token=row[2] if row else None,
                                  last_round=row[4] if row else None,
                                  backlog=int(backlog.get(name, 0))))
    return ClusterStatus(state_store=target.label, where=target.where, instances=instances,
                         sources=sources)
