"""Incremental IMAP rounds against the real Dovecot: what a round asks the server, seen on
the wire through a recording proxy (the connection is plaintext on loopback)."""

from __future__ import annotations

import re
import threading

import pytest
from srchelpers import DropProxy, deliver_many, make_mail, wait_until

from postline.cli import main
from postline.state.ledger import SqliteLedger, ledger_path

pytestmark = pytest.mark.stack


class RecordingProxy(DropProxy):
    """A DropProxy that keeps every command line the client sent."""

    def __init__(self, port: int) -> None:
        self.sent = bytearray()
        super().__init__(port)

    def _accept(self) -> None:  # the same as DropProxy's, with a recording pipe one way
        import socket

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.conns += [client, upstream]
                self.accepted += 1
            threading.Thread(target=self._record, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _record(self, a, b) -> None:
        try:
            while data := a.recv(65536):
                with self.lock:
                    self.sent += data
                b.sendall(data)
        except OSError:
            pass

    def commands(self) -> list[str]:
        """The commands sent since the last call, without their tags."""
        with self.lock:
            text, self.sent = bytes(self.sent), bytearray()
        return [line.split(" ", 1)[1] for line in text.decode("utf-8", "replace").splitlines()
                if " " in line]


def _fetched_uids(commands: list[str]) -> list[int]:
    """The UIDs whose bodies were fetched (UID FETCH <set> (... BODY.PEEK[]))."""
    out: list[int] = []
    for cmd in commands:
        m = re.match(r"UID FETCH (\S+) \(.*BODY\.PEEK\[\]", cmd)
        if not m:
            continue
        for part in m.group(1).split(","):
            lo, _, hi = part.partition(":")
            out += range(int(lo), int(hi or lo) + 1)
    return out


def _searches(commands: list[str]) -> list[str]:
    return [c for c in commands if "SEARCH" in c]


@pytest.fixture
def proxy(mail_stack):
    p = RecordingProxy(mail_stack.ports["imap"])
    yield p
    p.close()


def _project(source_project, proxy, **source):
    source_project.port = proxy.port
    return source_project.write(source=source)


def test_idle_round_over_mails_left_in_place_lists_nothing_and_new_mail_is_fetched_alone(
        source_project, mail_stack, mailbox_user, proxy):
    deliver_many(mail_stack, mailbox_user.email, [make_mail(i) for i in range(300)])
    p = _project(source_project, proxy, folders={"input": "INBOX", "done": ""})
    assert p.run_once().counts["done"] == 300
    first = proxy.commands()
    assert any(s.endswith("SEARCH ALL") for s in _searches(first))   # the first round: full
    # a new run (a new process would do the same: the cursor is in the ledger)
    assert p.run_once().counts["done"] == 0
    idle = proxy.commands()
    assert _searches(idle) == [] and not any("FETCH" in c for c in idle), idle
    assert any(c.startswith("SELECT") for c in idle)
    # 10 new mails: exactly those are fetched
    deliver_many(mail_stack, mailbox_user.email, [make_mail(1000 + i) for i in range(10)])
    assert p.run_once().counts["done"] == 10
    ten = proxy.commands()
    assert _searches(ten) == ["UID SEARCH UID 301:*"]
    assert _fetched_uids(ten) == list(range(301, 311))
    assert len(p.records()) == 310


def test_uidvalidity_change_lists_the_folder_in_full(source_project, mailbox, proxy):
    mails = [make_mail(i) for i in range(3)]
    for raw in mails:
        mailbox.append("Orders", raw)
    p = _project(source_project, proxy, folders={"input": "Orders"})
    assert p.run_once().counts["done"] == 3
    proxy.commands()
    p.run_once()
    assert _searches(proxy.commands()) == []
    c = mailbox.client()
    c.delete_folder("Orders")
    c.logout()
    for raw in mails + [make_mail(9, "new after recreate")]:
        mailbox.append("Orders", raw)
    summary = p.run_once()
    assert summary.counts["done"] == 1 and summary.counts["duplicate"] == 3
    assert any(s.endswith("SEARCH ALL") for s in _searches(proxy.commands()))
    p.run_once()
    assert _searches(proxy.commands()) == []   # incremental again, in the new version


@pytest.mark.parametrize("mode, again", [("manual", 0), ("reset_on_reappear", 1),
                                         ("reprocess_on_change", 0)])
def test_mail_moved_back_is_handled_as_the_reprocess_mode_says(
        mode, again, source_project, mailbox, mail_stack, mailbox_user, proxy):
    mails = [make_mail(i) for i in range(5)]
    deliver_many(mail_stack, mailbox_user.email, mails)
    p = _project(source_project, proxy, folders={"input": "INBOX", "done": "Done"},
                 reprocess=mode)
    assert p.run_once().counts["done"] == 5
    proxy.commands()
    c = mailbox.client()
    c.select_folder("Done")
    c.move(c.search("ALL")[:1], "INBOX")   # an operator moves one mail back
    c.logout()
    summary = p.run_once()
    cmds = proxy.commands()
    assert not any(s.endswith("SEARCH ALL") for s in _searches(cmds))   # incremental
    assert summary.counts["done"] == again
    assert summary.counts["duplicate"] == 1 - again
    assert len(p.records()) == 5 + again
    # a changed copy (same Message-ID) comes: only manual takes it for the same mail
    mailbox.append("INBOX", b"X-Corrected: yes\n" + mails[0])
    assert p.run_once().counts["done"] == (0 if mode == "manual" else 1)


def test_ledger_reset_makes_the_next_round_list_in_full(source_project, mail_stack,
                                                        mailbox_user, proxy):
    deliver_many(mail_stack, mailbox_user.email, [make_mail(i) for i in range(5)])
    p = _project(source_project, proxy, folders={"input": "INBOX", "done": ""})
    assert p.run_once().counts["done"] == 5
    key = p.records()[2]["key"]
    assert main(["ledger", "reset", str(p.root), "Src", "--id", key]) == 0
    proxy.commands()
    # the mail is still in the input folder, below the cursor: a full listing finds it
    assert p.run_once().counts["done"] == 1
    assert any(s.endswith("SEARCH ALL") for s in _searches(proxy.commands()))
    p.run_once()
    assert _searches(proxy.commands()) == []


def test_full_scan_schedule(source_project, mail_stack, mailbox_user, proxy):
    deliver_many(mail_stack, mailbox_user.email, [make_mail(i) for i in range(3)])
    p = _project(source_project, proxy, folders={"input": "INBOX", "done": ""},
                 polling={"interval": 3600, "full_scan": 0})
    p.run_once()
    proxy.commands()
    p.run_once()
    assert any(s.endswith("SEARCH ALL") for s in _searches(proxy.commands()))
    p.write(source={"folders": {"input": "INBOX", "done": ""},
                    "polling": {"interval": 3600, "full_scan": "1d"}})
    p.run_once()   # full_scan_at is fresh: incremental
    assert _searches(proxy.commands()) == []
    # a day later (the last full listing's time moved back by a day and a second)
    led = SqliteLedger(path=ledger_path(p.root / ".postline-state"))
    try:
        st = led.folder_state("Src", "INBOX")
        led.set_folder_state("Src", "INBOX",
                             {"full_scan_at": repr(float(st["full_scan_at"]) - 86401)})
    finally:
        led.close()
    p.run_once()
    assert any(s.endswith("SEARCH ALL") for s in _searches(proxy.commands()))


def test_idle_reconnect_catches_up_incrementally(source_project, mail_stack, mailbox_user,
                                                 mailbox, proxy):
    from postline.workflow.engine import run_workflows

    deliver_many(mail_stack, mailbox_user.email, [make_mail(i) for i in range(20)])
    p = _project(source_project, proxy, folders={"input": "INBOX", "done": ""},
                 polling={"interval": 3600, "idle": True})
    stop = threading.Event()
    t = threading.Thread(target=run_workflows, args=(p.open(),), kwargs={"stop": stop},
                         daemon=True)
    t.start()
    try:
        wait_until(lambda: len(p.records()) == 20, 30, "the first 20 records")
        wait_until(lambda: any(c.startswith("IDLE") for c in proxy.commands()), 15, "IDLE")
        proxy.cut()   # the server goes away; mail arrives while postline is disconnected
        deliver_many(mail_stack, mailbox_user.email, [make_mail(100 + i) for i in range(3)])
        wait_until(lambda: len(p.records()) == 23, 30, "the 3 mails of the catch-up")
    finally:
        stop.set()
        t.join(10)
    assert proxy.accepted >= 2
    after = proxy.commands()
    assert not any(s.endswith("SEARCH ALL") for s in _searches(after)), after
    assert _fetched_uids(after) == [21, 22, 23]
