"""What a long-running ``postline run`` is doing, over HTTP: ``postline run --status ADDR``.

=====================  ======================================================================
``GET /metrics``       Prometheus text format (prometheus-client): mails per outcome,
                       processing time, backlog, rounds, reconnects, connected/up, last
                       activity, and the ledger's entries per state
``GET /healthz``       liveness: 200 ``ok``; 503 with one line per problem when a workflow
                       stopped on an error or showed no sign of life for ``stall_after``
                       seconds (a healthy loop beats at least every two seconds, also while
                       it idles or waits to reconnect)
``GET /readyz``        readiness: 200 when every workflow is connected to its mailbox, 503
                       (with the reason, e.g. the connection error) otherwise
``GET /status``        JSON: per workflow its state, since when, last round, backlog,
                       counts, last error, and the ledger's counts
=====================  ======================================================================

:class:`RunStatus` is an :class:`~postline.workflow.events.Events` observer (fed by the
workflow threads, cheap, no I/O); :class:`StatusServer` serves it from a daemon thread of
the standard library's threading HTTP server: a handful of scrapes a minute need nothing
more, and it adds no event loop to the runner's process. Nothing here needs a token: it
binds to 127.0.0.1 unless told otherwise, and it shows no mail content and no secret
(error texts go through :func:`postline.logs.redact`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from postline.errors import ConfigError
from postline.logs import redact
from postline.version import __version__
from postline.workflow.events import Events, MailEvent

# No *_created series: each counter would get a second, constant series per label set that
# no dashboard of ours uses (the process start is in /status).
disable_created_metrics()

OUTCOMES = ("done", "failed", "ignored", "duplicate", "moved", "interrupted")
LEDGER_STATES = ("acquired", "done", "failed", "ignored")


@dataclass
class WorkflowState:
    source: str
    state: str = "starting"          # starting | connected | reconnecting | stopped | failed
    #                                  | elsewhere (a fleet: another instance reads it)
    since: float = 0.0
    last_activity: float = 0.0
    last_round: float | None = None
    backlog: int = 0
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    owned: bool | None = None        # a fleet: holds the source's lease (None: no fleet)
    token: int | None = None


class RunStatus(Events):
    """The state of every workflow of one run, as metrics, health and JSON.

    ``sources`` maps workflow name -> source name; ``ledger_counts(source)`` (optional)
    gives the ledger's entries per state for ``/metrics`` and ``/status``.
    """

    def __init__(self, sources: dict[str, str], *, clock: Callable[[], float] = time.time,
                 stall_after: float = 600.0,
                 ledger_counts: Callable[[str], dict[str, int]] | None = None) -> None:
        self.clock = clock
        self.stall_after = stall_after
        self.ledger_counts = ledger_counts
        self.started = clock()
        self._lock = threading.Lock()
        self.workflows = {name: WorkflowState(source=src, since=self.started,
                                              last_activity=self.started)
                          for name, src in sources.items()}
        r = self.registry = CollectorRegistry(auto_describe=True)
        Gauge("postline_info", "postline version", ["version"], registry=r).labels(
            __version__).set(1)
        self.m_mails = Counter("postline_mails", "mails handled, by outcome",
                               ["workflow", "outcome"], registry=r)
        self.m_seconds = Histogram(
            "postline_mail_processing_seconds", "time to turn one mail into a committed "
            "record", ["workflow"], registry=r,
            buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
        self.m_backlog = Gauge("postline_backlog_mails", "mails left in the current round",
                               ["workflow"], registry=r)
        self.m_rounds = Counter("postline_rounds", "polling rounds finished", ["workflow"],
                                registry=r)
        self.m_reconnects = Counter("postline_reconnects", "connections lost (or disk "
                                    "errors) that made the workflow wait and try again",
                                    ["workflow"], registry=r)
        self.m_last_round = Gauge("postline_last_round_timestamp_seconds", "end of the last "
                                  "polling round (Unix time; the start of the run until the "
                                  "first round ends, so that an alert on its age also "
                                  "fires when no round ever ends)", ["workflow"], registry=r)
        self.m_connected = Gauge("postline_workflow_connected", "1 while the mailbox is "
                                 "connected", ["workflow"], registry=r)
        self.fleet_info: dict[str, Any] | None = None
        self.m_live = Gauge("postline_fleet_instances_live", "a fleet: live instances "
                            "(this one included)", registry=r)
        self.m_differing = Gauge("postline_fleet_instances_differing", "a fleet: live "
                                 "instances whose postline version or assets differ from "
                                 "this one's", registry=r)
        self.m_owned = Gauge("postline_source_lease_owned", "a fleet: 1 while this "
                             "instance holds the lease of the workflow's source",
                             ["workflow"], registry=r)
        self.m_token = Gauge("postline_source_lease_token", "a fleet: the fencing token this "
                             "instance holds for the workflow's source (0: none)",
                             ["workflow"], registry=r)
        self.m_up = Gauge("postline_workflow_up", "1 while the workflow runs, 0 once it "
                          "stopped (on request or on an error)", ["workflow"], registry=r)
        r.register(_Live(self))
        for name in self.workflows:
            self.m_up.labels(name).set(1)
            self.m_connected.labels(name).set(0)
            self.m_backlog.labels(name).set(0)
            self.m_last_round.labels(name).set(self.started)
            for o in OUTCOMES:
                self.m_mails.labels(name, o)
            self.m_rounds.labels(name)
            self.m_reconnects.labels(name)

    # -- Events ------------------------------------------------------------------------------

    def _set(self, workflow: str, **changes: Any) -> WorkflowState:
        now = self.clock()
        with self._lock:
            w = self.workflows[workflow]
            if "state" in changes and changes["state"] != w.state:
                w.since = now
            for k, v in changes.items():
                setattr(w, k, v)
            w.last_activity = now
            return w

    def backlog(self, workflow: str, count: int) -> None:
        self._set(workflow, backlog=count)
        self.m_backlog.labels(workflow).set(count)

    def mail(self, event: MailEvent) -> None:
        with self._lock:
            w = self.workflows[event.workflow]
            w.counts[event.label] = w.counts.get(event.label, 0) + 1
            w.backlog = max(0, w.backlog - 1)
            w.last_activity = self.clock()
            left = w.backlog
        self.m_mails.labels(event.workflow, event.label).inc()
        if event.label != "moved":
            self.m_seconds.labels(event.workflow).observe(event.ms / 1000.0)
        self.m_backlog.labels(event.workflow).set(left)

    def connected(self, workflow: str) -> None:
        self._set(workflow, state="connected", error=None)
        self.m_connected.labels(workflow).set(1)

    def disconnected(self, workflow: str, reason: str, retry_in: float) -> None:
        self._set(workflow, state="reconnecting",
                  error=f"{redact(reason)} (next try in {retry_in:.0f}s)")
        self.m_connected.labels(workflow).set(0)
        self.m_reconnects.labels(workflow).inc()

    def round_done(self, workflow: str) -> None:
        now = self.clock()
        self._set(workflow, last_round=now, backlog=0)
        self.m_rounds.labels(workflow).inc()
        self.m_last_round.labels(workflow).set(now)
        self.m_backlog.labels(workflow).set(0)

    def alive(self, workflow: str) -> None:
        self._set(workflow)

    def fleet(self, *, instance: str, live: int, differing: list[str]) -> None:
        with self._lock:
            self.fleet_info = {"instance": instance, "live_instances": live,
                               "differing_instances": list(differing)}
        self.m_live.set(live)
        self.m_differing.set(len(differing))

    def lease(self, workflow: str, *, owned: bool, token: int | None = None) -> None:
        # a source another instance of the fleet reads is neither stuck nor unready here
        with self._lock:
            w = self.workflows.get(workflow)
            if w is None:
                return
            w.owned, w.token = owned, token
            if not owned and w.state in ("starting", "stopped"):
                w.state = "elsewhere"
            w.last_activity = self.clock()
        self.m_owned.labels(workflow).set(1 if owned else 0)
        self.m_token.labels(workflow).set(token or 0)

    def stopped(self, workflow: str, error: str | None) -> None:
        self._set(workflow, state="failed" if error else "stopped",
                  error=redact(error) if error else None)
        self.m_connected.labels(workflow).set(0)
        self.m_up.labels(workflow).set(0)

    # -- views -------------------------------------------------------------------------------

    def health(self) -> tuple[bool, list[str]]:
        """Liveness: (ok, one line per problem)."""
        now = self.clock()
        problems = []
        with self._lock:
            for name, w in self.workflows.items():
                if w.state == "failed":
                    problems.append(f"workflow {name} stopped on an error: {w.error}")
                elif w.state != "stopped" and now - w.last_activity > self.stall_after:
                    problems.append(f"workflow {name}: no sign of life for "
                                    f"{now - w.last_activity:.0f}s (stuck in state {w.state}; "
                                    f"limit {self.stall_after:.0f}s)")
        return not problems, problems

    def readiness(self) -> tuple[bool, list[str]]:
        """Readiness: every workflow connected. (ok, one line per workflow that is not)."""
        with self._lock:
            problems = [f"workflow {name}: {w.state}" + (f": {w.error}" if w.error else "")
                        for name, w in self.workflows.items()
                        if w.state not in ("connected", "elsewhere")]
        return not problems, problems

    def snapshot(self) -> dict[str, Any]:
        """The JSON of ``/status``."""
        def iso(t: float | None) -> str | None:
            return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

        with self._lock:
            flows = {name: {"source": w.source, "state": w.state, "since": iso(w.since),
                            "last_activity": iso(w.last_activity),
                            "last_round": iso(w.last_round), "backlog": w.backlog,
                            "counts": dict(w.counts), "error": w.error,
                            **({"lease": {"owned": w.owned, "token": w.token}}
                               if w.owned is not None else {})}
                     for name, w in self.workflows.items()}
        for flow in flows.values():
            flow["ledger"] = self._ledger(flow["source"])
        ok, problems = self.health()
        return {"version": __version__, "started": iso(self.started), "healthy": ok,
                "problems": problems, "workflows": flows,
                **({"fleet": self.fleet_info} if self.fleet_info is not None else {})}

    def _ledger(self, source: str) -> dict[str, int] | None:
        if self.ledger_counts is None:
            return None
        try:
            return dict(self.ledger_counts(source))
        except Exception:  # noqa: BLE001 - a busy or missing ledger must not break a scrape
            return None

    def metrics_text(self) -> bytes:
        return generate_latest(self.registry)


class _Live:
    """Metrics computed at scrape time: last activity and the ledger's counts."""

    def __init__(self, status: RunStatus) -> None:
        self.status = status

    def describe(self):
        return []

    def collect(self):
        s = self.status
        act = GaugeMetricFamily("postline_last_activity_timestamp_seconds", "last sign of "
                                "life of the workflow's loop (Unix time)", labels=["workflow"])
        led = GaugeMetricFamily("postline_ledger_entries", "the ledger's entries of the "
                                "workflow's source, by state", labels=["workflow", "state"])
        with s._lock:
            flows = [(n, w.source, w.last_activity) for n, w in s.workflows.items()]
        for name, source, last in flows:
            act.add_metric([name], last)
            counts = s._ledger(source)
            if counts is not None:
                for state in LEDGER_STATES:
                    led.add_metric([name, state], counts.get(state, 0))
        yield act
        if s.ledger_counts is not None:
            yield led


class LedgerCounts:
    """``counts(source)`` of the ledger at ``path``, opened read-only on first use (the run
    creates it) and closed by :meth:`close`."""

    def __init__(self, path, *, opener=None) -> None:
        self.path = path
        self._opener = opener     # () -> Ledger, instead of the SQLite file (a StateStore)
        self._ledger = None
        self._lock = threading.Lock()

    def __call__(self, source: str) -> dict[str, int]:
        from postline.state.ledger import SqliteLedger

        with self._lock:
            if self._ledger is None:
                self._ledger = (self._opener() if self._opener is not None
                                else SqliteLedger(path=self.path, read_only=True))
        return self._ledger.counts(source)

    def close(self) -> None:
        with self._lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None


def parse_address(text: str) -> tuple[str, int]:
    """``PORT``, ``:PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); host defaults
    to 127.0.0.1. Raises ConfigError."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--status {text!r}: expected PORT or HOST:PORT (e.g. 9464 or "
                          "0.0.0.0:9464; 0 picks a free port)")
    return host, int(port)


class StatusServer:
    """Serves a RunStatus on ``host:port`` from a daemon thread."""

    def __init__(self, status: RunStatus, host: str = "127.0.0.1", port: int = 0) -> None:
        self.status = status
        handler = type("Handler", (_Handler,), {"status": status})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(f"--status {host}:{port}: cannot listen there: "
                              f"{exc.strerror or exc}",
                              hint="pick another port, or 0 for a free one") from exc
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="status-http",
                                        daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    status: RunStatus
    server_version = f"postline/{__version__}"

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/metrics":
            return self._send(200, self.status.metrics_text(), CONTENT_TYPE_LATEST)
        if path in ("/healthz", "/readyz"):
            ok, problems = (self.status.health() if path == "/healthz"
                            else self.status.readiness())
            body = "ok\n" if ok else "".join(p + "\n" for p in problems)
            return self._send(200 if ok else 503, body.encode(), "text/plain; charset=utf-8")
        if path in ("/status", "/"):
            body = json.dumps(self.status.snapshot(), indent=2, ensure_ascii=False) + "\n"
            return self._send(200, body.encode(), "application/json")
        self._send(404, b"not found: try /metrics, /healthz, /readyz or /status\n",
                   "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # scrapes are not news; the run's own log stays one line per mail
