"""The status endpoint of ``postline run --status``: metrics, health, readiness, JSON."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from postline.errors import ConfigError
from postline.logs import register_secret
from postline.workflow.events import Broadcast, Events, MailEvent
from postline.workflow.status import RunStatus, StatusServer, parse_address


class Clock:
    def __init__(self) -> None:
        self.t = 1_764_658_800.0

    def __call__(self) -> float:
        return self.t


def _mail(label: str, ms: float = 12.0, workflow: str = "Invoices") -> MailEvent:
    return MailEvent(workflow=workflow, key="Box/INBOX/1/1", subject="s", label=label,
                     reason=None, ms=ms)


def _status(clock=None, **kw) -> RunStatus:
    return RunStatus({"Invoices": "InvoiceBox", "Orders": "OrderBox"},
                     clock=clock or Clock(), **kw)


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def test_metrics_count_outcomes_backlog_rounds_and_ledger_states():
    s = _status(ledger_counts=lambda src: {"done": 7, "failed": 1} if src == "InvoiceBox"
                else {})
    s.connected("Invoices")
    s.backlog("Invoices", 3)
    s.mail(_mail("done"))
    s.mail(_mail("failed", ms=2500))
    text = s.metrics_text().decode()
    assert 'postline_mails_total{outcome="done",workflow="Invoices"} 1.0' in text
    assert 'postline_mails_total{outcome="failed",workflow="Invoices"} 1.0' in text
    assert 'postline_mails_total{outcome="done",workflow="Orders"} 0.0' in text  # pre-made
    assert 'postline_backlog_mails{workflow="Invoices"} 1.0' in text
    assert 'postline_mail_processing_seconds_bucket{le="5.0",workflow="Invoices"} 2.0' in text
    assert 'postline_mail_processing_seconds_bucket{le="1.0",workflow="Invoices"} 1.0' in text
    assert 'postline_workflow_connected{workflow="Invoices"} 1.0' in text
    assert 'postline_workflow_connected{workflow="Orders"} 0.0' in text
    assert 'postline_ledger_entries{state="failed",workflow="Invoices"} 1.0' in text
    assert 'postline_ledger_entries{state="acquired",workflow="Orders"} 0.0' in text
    assert 'postline_info{version="' in text
    s.round_done("Invoices")
    text = s.metrics_text().decode()
    assert 'postline_rounds_total{workflow="Invoices"} 1.0' in text
    assert 'postline_backlog_mails{workflow="Invoices"} 0.0' in text
    assert 'postline_last_round_timestamp_seconds{workflow="Invoices"} 1.7646588e+09' in text


def test_health_fails_on_a_stopped_workflow_and_on_a_stall_but_not_on_a_clean_stop():
    clock = Clock()
    s = _status(clock, stall_after=600)
    s.connected("Invoices")
    s.connected("Orders")
    assert s.health() == (True, [])
    clock.t += 500
    s.alive("Invoices")
    clock.t += 200                      # Orders silent for 700 s, Invoices for 200 s
    ok, problems = s.health()
    assert not ok and problems == ["workflow Orders: no sign of life for 700s (stuck in "
                                   "state connected; limit 600s)"]
    s.stopped("Orders", None)           # asked to stop: not a problem
    assert s.health() == (True, [])
    s.stopped("Invoices", "login refused by the server")
    assert s.health() == (False, ["workflow Invoices stopped on an error: login refused by "
                                  "the server"])


def test_readiness_says_which_workflow_is_not_connected_and_why():
    s = _status()
    s.connected("Invoices")
    assert s.readiness() == (False, ["workflow Orders: starting"])
    s.connected("Orders")
    assert s.readiness() == (True, [])
    s.disconnected("Orders", "connection lost: server closed the connection", 4.0)
    assert s.readiness() == (False, ["workflow Orders: reconnecting: connection lost: server "
                                     "closed the connection (next try in 4s)"])
    assert 'postline_reconnects_total{workflow="Orders"} 1.0' in s.metrics_text().decode()


def test_errors_are_redacted():
    register_secret("hunter2-status-secret")
    s = _status()
    s.disconnected("Orders", "AUTH failed for hunter2-status-secret", 1)
    s.stopped("Invoices", "bad token hunter2-status-secret")
    dumped = json.dumps(s.snapshot()) + "".join(s.readiness()[1]) + "".join(s.health()[1])
    assert "hunter2-status-secret" not in dumped and "***" in dumped


def test_snapshot_is_plain_json_and_survives_a_broken_ledger():
    def broken(src):
        raise RuntimeError("database is locked")

    s = _status(ledger_counts=broken)
    s.connected("Invoices")
    s.mail(_mail("ignored", ms=0.1))
    snap = json.loads(json.dumps(s.snapshot()))
    inv = snap["workflows"]["Invoices"]
    assert inv["state"] == "connected" and inv["counts"] == {"ignored": 1}
    assert inv["source"] == "InvoiceBox" and inv["ledger"] is None
    assert inv["since"].endswith("Z") and snap["healthy"] is True
    assert "postline_ledger_entries{" not in s.metrics_text().decode()


def test_server_serves_every_route_with_the_right_status_codes():
    s = _status()
    server = StatusServer(s, "127.0.0.1", 0).start()
    try:
        base = server.url
        assert base.startswith("http://127.0.0.1:")
        code, ctype, body = _get(base + "metrics")
        assert code == 200 and ctype.startswith("text/plain") and "postline_mails_total" in body
        assert _get(base + "healthz")[::2] == (200, "ok\n")
        code, _, body = _get(base + "readyz")
        assert code == 503 and "workflow Invoices: starting" in body
        s.connected("Invoices")
        s.connected("Orders")
        assert _get(base + "readyz")[0] == 200
        code, ctype, body = _get(base + "status")
        assert code == 200 and ctype == "application/json"
        assert json.loads(body)["workflows"]["Orders"]["state"] == "connected"
        s.stopped("Orders", "certificate not trusted")
        code, _, body = _get(base + "healthz")
        assert code == 503 and body == ("workflow Orders stopped on an error: certificate not "
                                        "trusted\n")
        code, _, body = _get(base + "nope")
        assert code == 404 and "/metrics" in body
    finally:
        server.close()


def test_a_port_in_use_is_one_clear_line():
    s = _status()
    first = StatusServer(s, "127.0.0.1", 0).start()
    try:
        with pytest.raises(ConfigError) as err:
            StatusServer(s, "127.0.0.1", first.port)
        assert f"--status 127.0.0.1:{first.port}: cannot listen there" in str(err.value)
    finally:
        first.close()


@pytest.mark.parametrize("text,expected", [
    ("9464", ("127.0.0.1", 9464)), (":9464", ("127.0.0.1", 9464)),
    ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9", ("::1", 9)), ("0", ("127.0.0.1", 0))])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "abc", "1:99999", "localhost:x"])
def test_parse_address_rejects_with_an_example(text):
    with pytest.raises(ConfigError, match="expected PORT or HOST:PORT"):
        parse_address(text)


def test_broadcast_reaches_every_target_in_order():
    seen = []

    class Rec(Events):
        def __init__(self, tag):
            self.tag = tag

        def connected(self, w):
            seen.append((self.tag, "connected", w))

        def stopped(self, w, e):
            seen.append((self.tag, "stopped", w, e))

    b = Broadcast([Rec(1), Rec(2)])
    b.connected("A")
    b.backlog("A", 3)      # the defaults do nothing
    b.stopped("A", None)
    assert seen == [(1, "connected", "A"), (2, "connected", "A"), (1, "stopped", "A", None),
                    (2, "stopped", "A", None)]


def test_the_shipped_alert_rules_use_only_metrics_postline_serves():
    import re
    from pathlib import Path

    from ruamel.yaml import YAML

    path = Path(__file__).parents[3] / "examples" / "monitoring" / "postline-alerts.yml"
    rules = [r for g in YAML(typ="safe").load(path.read_text())["groups"] for r in g["rules"]]
    assert len(rules) >= 5 and all(r["alert"] and r["expr"] for r in rules)
    s = _status(ledger_counts=lambda src: {})
    s.mail(_mail("done"))
    served = set(re.findall(r"^(postline_\w+?)(?:\{| )", s.metrics_text().decode(), re.M))
    used = {m for r in rules for m in re.findall(r"\bpostline_\w+", r["expr"])}
    assert used and used <= served, used - served
