"""``postline run --status``: a long-running run shows what it does over HTTP, against the
local stack's Dovecot."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from srchelpers import deliver_many, make_mail, wait_until

pytestmark = [pytest.mark.stack]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_health_and_status_of_a_running_workflow(source_project, mailbox, mail_stack,
                                                         mailbox_user):
    deliver_many(mail_stack, mailbox_user.email, [make_mail(i, f"status {i}")
                                                  for i in range(3)])
    p = source_project.write(source={"folders": {"input": "INBOX", "done": "Done"}})
    env = {**os.environ, **source_project.environ}
    proc = subprocess.Popen([sys.executable, "-m", "postline", "run", str(p.root),
                             "--status", "127.0.0.1:0"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
        m = re.match(r"postline: status at (http://127\.0\.0\.1:\d+/) \(metrics, healthz, "
                     r"readyz, status\)$", first.strip())
        assert m, first
        base = m.group(1)
        wait_until(lambda: _get(base + "readyz")[0] == 200, 30, "the workflow to connect")
        assert _get(base + "healthz") == (200, "ok\n")

        def three_done():
            text = _get(base + "metrics")[1]
            return 'postline_mails_total{outcome="done",workflow="Flow"} 3.0' in text and text
        metrics = wait_until(three_done, 30, "three mails in /metrics")
        assert 'postline_ledger_entries{state="done",workflow="Flow"} 3.0' in metrics
        assert 'postline_workflow_up{workflow="Flow"} 1.0' in metrics
        # a mail that arrives later (IDLE) is counted too
        mailbox.append("INBOX", make_mail(9, "status late"))
        wait_until(lambda: 'outcome="done",workflow="Flow"} 4.0' in _get(base + "metrics")[1],
                   30, "the late mail in /metrics")
        status = json.loads(_get(base + "status")[1])
        flow = status["workflows"]["Flow"]
        assert flow["state"] == "connected" and flow["counts"] == {"done": 4}
        assert flow["ledger"]["done"] == 4 and status["healthy"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-1000:]
    assert mailbox.count("Done") == 4


def test_status_shows_a_refused_login_before_the_run_exits(source_project, mail_stack,
                                                           mailbox_user):
    p = source_project.write()
    env = {**os.environ, **source_project.environ, "IT_PASSWORD": "wrong-password-x"}
    res = subprocess.run([sys.executable, "-m", "postline", "run", str(p.root), "--status",
                          "127.0.0.1:0", "--once"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("postline: status at http://127.0.0.1:")
    assert lines[-1].startswith("postline: error: workflow Flow: ") and len(lines) == 2
    assert "wrong-password-x" not in res.stderr
