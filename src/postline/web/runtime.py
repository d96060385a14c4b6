"""The console's runtime view: what a ``postline run --status`` reports (per workflow its
state, last round, backlog, counts, rate and last error) and per Email Service its outbox,
rendered as an HTML fragment that ``console.js`` fetches again every two seconds."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from postline.web.pages import render


def fetch_status(url: str | None, *, timeout: float = 2.0) -> tuple[dict | None, str]:
    """(the ``/status`` JSON, '') or (None, why it could not be read)."""
    import httpx

    if not url:
        return None, ("no run to show: start 'postline run PROJECT --status 127.0.0.1:9108' "
                      "and 'postline serve PROJECT --status-url http://127.0.0.1:9108/status'")
    try:
        r = httpx.get(url, timeout=timeout)
        r.raise_for_status()
        return r.json(), ""
    except (httpx.HTTPError, ValueError) as exc:
        return None, f"cannot read {url}: {type(exc).__name__}: {exc}"


def _rate(flow: dict, started: str | None) -> str:
    """Mails handled per minute since the run started."""
    try:
        since = datetime.fromisoformat((started or "").replace("Z", "+00:00")).timestamp()
    except ValueError:
        return ""
    minutes = max((time.time() - since) / 60, 1 / 60)
    n = sum(flow.get("counts", {}).values())
    return f"{n / minutes:.1f}/min"


def outboxes(project: Any) -> list[dict[str, Any]]:
    """Per EmailService: its outbox counts (empty when nothing was queued)."""
    from postline.state.outbox import Outbox, outbox_path
    from postline.state.stores import open_outbox, shared_store

    path = outbox_path(project.state_dir)
    names = [e.name for e in project.entries("EmailService")]
    if shared_store(project) is None and not path.exists():
        return [{"name": n, "counts": {}} for n in names]
    outbox = (open_outbox(project) if shared_store(project) is not None
              else Outbox(path, read_only=True))
    try:
        return [{"name": n, "counts": outbox.counts(n)} for n in names]
    finally:
        outbox.close()


def fleet(project: Any) -> tuple[dict[str, Any] | None, str]:
    """(the fleet's instances and source owners as ``postline cluster status --json`` gives
    them, '') for a project on a postgresql StateStore; (None, '') without one; (None, why)
    when the database cannot be read."""
    from postline.errors import PostlineError
    from postline.state.stores import shared_store

    if shared_store(project) is None:
        return None, ""
    from postline.state.cluster import cluster_status

    try:
        return cluster_status(project).as_dict(), ""
    except PostlineError as exc:
        return None, str(exc)


def fragment(project: Any, status_url: str | None) -> str:
    """The live part of ``/runtime`` (HTML): the run behind ``status_url`` and, on a
    postgresql StateStore, every instance of the fleet and who owns which source."""
    status, why = fetch_status(status_url)
    cluster, cluster_why = fleet(project)
    if cluster is not None and why and not status_url:
        why = ""   # the fleet below says what runs where
    flows = []
    for name, flow in ((status or {}).get("workflows") or {}).items():
        flows.append({"name": name, **flow, "rate": _rate(flow, status.get("started"))})
    return render("runtime_live.html", status=status, why=why, flows=flows,
                  services=outboxes(project), now=time.strftime("%H:%M:%S"),
                  cluster=cluster, cluster_why=cluster_why)


def page(project: Any, status_url: str | None) -> str:
    """HTML body of ``/runtime``."""
    return render("runtime.html", live=fragment(project, status_url), url=status_url or "")
