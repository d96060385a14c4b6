"""``postline test-connection``: connect step by step and report what happened.

:func:`diagnose` returns one :class:`DirectionReport` per configured direction, each with
the timed steps the adapters recorded (DNS, TCP, TLS, greeting, STARTTLS, capabilities,
authentication, and for incoming the folder list), the server's notable capabilities, and
-- when a step failed -- the error in plain words and the likely fix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from postline.errors import PostlineError
from postline.protocols import endpoint_of, open_reader, open_sender
from postline.protocols.capability_names import ImapCapability, Pop3Capability, SmtpExtension
from postline.trace import Step, Trace

# The capabilities worth showing, per protocol (name shown -> how to find it).
_NOTABLE: dict[str, tuple[str, ...]] = {
    "imap": tuple(c.value for c in ImapCapability),
    "pop3": tuple(c.value for c in Pop3Capability if c != Pop3Capability.SASL),
    "smtp": tuple(c.value for c in SmtpExtension if c != SmtpExtension.AUTH)}


@dataclass
class DirectionReport:
    """The outcome of testing one direction of a connection."""

    direction: str
    protocol: str = ""
    host: str = ""
    port: int = 0
    security: str = ""
    verify_identity: bool = True
    steps: list[Step] = field(default_factory=list)
    ok: bool = False
    error: str | None = None
    hint: str | None = None
    features: dict[str, Any] = field(default_factory=dict)
    folders: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "protocol": self.protocol, "host": self.host,
                "port": self.port, "security": self.security,
                "check_server_identity": self.verify_identity, "ok": self.ok,
                "error": self.error, "hint": self.hint, "features": self.features,
                "folders": self.folders, "steps": [s.as_dict() for s in self.steps]}


def features_of(protocol: str, steps: list[Step]) -> dict[str, Any]:
    """Notable capabilities and AUTH mechanisms, from every capabilities step (before and
    after STARTTLS and login: STARTTLS is only offered before, MOVE often only after)."""
    found = [s.data for s in steps if s.name == "capabilities" and s.ok]
    if not found:
        return {}
    if protocol == "imap":
        caps = {c for d in found for c in d.get("capabilities", [])}
        out: dict[str, Any] = {name: name in caps for name in _NOTABLE["imap"]}
        out["AUTH"] = sorted(c[5:] for c in caps if c.startswith("AUTH="))
        return out
    merged: dict[str, Any] = {}
    for d in found:
        merged.update(d.get("capabilities" if protocol == "pop3" else "extensions", {}))
    out = {name: name in merged for name in _NOTABLE[protocol]}
    if protocol == "pop3":
        out["AUTH"] = sorted(merged.get("SASL", [])) + (["USER"] if "USER" in merged else [])
    else:
        if str(merged.get("SIZE", "")).isdigit():
            out["SIZE"] = int(merged["SIZE"]) or True
        out["AUTH"] = sorted(str(merged.get("AUTH", "")).split())
    return out


def _fail(report: DirectionReport, exc: PostlineError, trace: Trace) -> None:
    report.ok = False
    report.error = exc.message
    report.hint = exc.hint
    if not any(not s.ok for s in trace.steps):  # failed before any step (credentials ...)
        trace.steps.append(Step(name="credentials", ok=False, detail=str(exc)))


def _incoming(project: Any, conn: Any, report: DirectionReport, trace: Trace) -> None:
    with open_reader(project, conn, trace=trace) as reader:
        with trace.step("folders") as st:
            folders = reader.list_folders()
            report.folders = [f.name for f in folders]
            shown = ", ".join(report.folders[:8]) + (" ..." if len(folders) > 8 else "")
            st.detail = f"{len(folders)} folder(s): {shown}"


def _outgoing(project: Any, conn: Any, trace: Trace) -> None:
    async def run() -> None:
        sender = open_sender(project, conn, max_connections=1, trace=trace)
        try:
            await sender.connect()
        finally:
            await sender.close()

    asyncio.run(run())


def _microsoft365(project: Any, conn: Any, trace_factory: Callable[[str], Trace] = lambda _: Trace()
                  ) -> DirectionReport:
    """One report for Graph (it serves both directions): token, mailbox, folders."""
    from urllib.parse import urlsplit

    m = conn.microsoft365
    url = urlsplit(m.graph_url)
    report = DirectionReport(direction="microsoft365", protocol="graph",
                             host=url.hostname or "", port=url.port or 443, security="tls",
                             verify_identity=m.check_server_identity)
    trace = trace_factory("microsoft365")
    try:
        _incoming(project, conn, report, trace)
        report.ok = True
    except PostlineError as exc:
        _fail(report, exc, trace)
    report.steps = trace.steps
    report.features = {"mailbox": m.mailbox or "/me", "credential": m.credential.type}
    return report


def diagnose(project: Any, connection: Any, *, directions: list[str] | None = None,
             trace_factory: Callable[[str], Trace] = lambda _: Trace()
             ) -> list[DirectionReport]:
    """Test each configured direction (or just ``directions``). Never raises for a failed
    connection -- failures are in the reports; raises ConfigError for an unknown direction.
    A microsoft365 connection gets one report (direction ``microsoft365``): token,
    mailbox and folder list through Microsoft Graph, whatever ``directions`` says.
    ``trace_factory(direction)`` makes the trace of each direction (the console's reports
    each step as it ends)."""
    conn = project.get("EmailConnection", connection) if isinstance(connection, str) \
        else connection
    if conn.type == "microsoft365":
        return [_microsoft365(project, conn, trace_factory)]
    wanted = directions or [d for d in ("incoming", "outgoing") if conn.endpoint(d)]
    reports = []
    for direction in wanted:
        ep = endpoint_of(conn, direction)
        report = DirectionReport(direction=direction, protocol=ep.protocol, host=ep.host,
                                 port=ep.effective_port, security=ep.security,
                                 verify_identity=ep.verify_identity)
        trace = trace_factory(direction)
        try:
            if direction == "incoming":
                _incoming(project, conn, report, trace)
            else:
                _outgoing(project, conn, trace)
            report.ok = True
        except PostlineError as exc:
            _fail(report, exc, trace)
        report.steps = trace.steps
        report.features = features_of(ep.protocol, trace.steps)
        reports.append(report)
    return reports
