"""``postline run`` as a fleet: several processes share a project's sources through leases
on the tests' real PostgreSQL, against the real Dovecot of the mail stack."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pytest

from postline.testing.info import MailUser

pytestmark = [pytest.mark.stack, pytest.mark.postgres]


def _mail(box: int, i: int) -> bytes:
    m = EmailMessage()
    m["From"] = "zoe@example.test"
    m["To"] = "reader@example.test"
    m["Subject"] = f"box {box} mail {i}"
    m["Message-ID"] = f"<fleet-{box}-{i}-{time.time_ns()}@example.test>"
    m.set_content(f"mail {i} of box {box}\n")
    return m.as_bytes()


def _deliver(stack, user: MailUser, mails: list[bytes]) -> None:
    with smtplib.LMTP(stack.host, stack.ports["lmtp"], timeout=30) as lmtp:
        for raw in mails:
            lmtp.sendmail("stack@example.test", [user.email], raw)


def _count(stack, user: MailUser, folder: str) -> int:
    from imapclient import IMAPClient

    c = IMAPClient(stack.host, port=stack.ports["imap"], ssl=False, timeout=10)
    try:
        c.login(user.email, user.password)
        if not c.folder_exists(folder):
            return 0
        return c.select_folder(folder, readonly=True)[b"EXISTS"]
    finally:
        c.logout()


class Fleet:
    """A project of ``n`` mailboxes (one source and workflow each, JSONL sinks) with a
    postgresql StateStore, and the ``postline run`` processes started on it."""

    def __init__(self, root: Path, stack, pg_url: str, schema: str, n: int, *,
                 lease: int = 3, slow: float = 0.02) -> None:
        self.root, self.stack, self.schema = root, stack, schema
        self.users = [MailUser.fresh(f"fleet{i}") for i in range(n)]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.env.pop("POSTLINE_STATE_URL", None)
        docs: list[dict] = [{"kind": "StateStore", "name": "Shared", "type": "postgresql",
                             "url": pg_url, "schema": schema, "lease_seconds": lease,
                             "heartbeat_seconds": lease / 3, "connect_timeout": 2}]
        values = {}
        for i, user in enumerate(self.users):
            self.env[f"FLEET_PW_{i}"] = user.password
            values[f"pw{i}"] = f"env:FLEET_PW_{i}"
            docs += [
                {"kind": "EmailConnection", "name": f"Box{i}",
                 "incoming": {"protocol": "imap", "host": stack.host,
                              "port": stack.ports["imap"], "security": "none",
                              "user": user.email, "connect_timeout": 5, "read_timeout": 10,
                              "credential": {"type": "secret", "secret": f"Creds.pw{i}"}}},
                {"kind": "EmailSource", "name": f"Src{i}", "connection": f"Box{i}",
                 "polling": {"interval": 1}, "batch_size": 10,
                 "folders": {"input": "INBOX", "done": "Done"}},
                {"kind": "Workflow", "name": f"Flow{i}", "source": f"Src{i}",
                 "processor": "slow.py",
                 "sinks": [{"type": "jsonl", "path": f"out/box{i}.jsonl"},
                           {"type": "postgresql", "table": f"{schema}.rows"}]}]
        docs.insert(0, {"kind": "Secret", "name": "Creds", "values": values})
        root.mkdir(parents=True, exist_ok=True)
        # a few ms per mail: an instance killed or frozen is caught in the middle of a batch
        (root / "slow.py").write_text("import time\n\ndef on_message(message, ctx):\n"
                                      f"    time.sleep({slow})\n")
        (root / "project.yaml").write_text("\n---\n".join(json.dumps(d) for d in docs))
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "postline", "run", str(self.root),
                                 "--instance", name], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def leases(self, conn) -> dict[str, tuple[str | None, int, bool]]:
        rows = conn.execute(f"SELECT source, owner, token, owner IS NOT NULL AND expires_at "
                            f"> now() FROM {self.schema}.leases").fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def records(self) -> list[dict]:
        out = []
        for path in sorted((self.root / "out").glob("*.jsonl")):
            out += [json.loads(line) for line in path.read_text().splitlines() if line]
        return out

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def fleet(tmp_path, mail_stack, pg_url, schema):
    made: list[Fleet] = []

    def make(n: int, **kw) -> Fleet:
        f = Fleet(tmp_path / "proj", mail_stack, pg_url, schema, n, **kw)
        made.append(f)
        return f
    yield make
    for f in made:
        f.stop_all()


def test_three_instances_share_six_mailboxes_through_a_kill_and_a_freeze(fleet, pg_url,
                                                                         mail_stack):
    per_box = 80
    f = fleet(6, lease=3)
    samples = []
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for name in ("a", "b", "c"):
            f.start(name)

        def spread() -> bool:
            try:
                held = [v for v in f.leases(conn).values() if v[2]]
            except psycopg.errors.UndefinedTable:
                return False
            samples.append(held)
            by_owner: dict[str, int] = {}
            for owner, _, _ in held:
                by_owner[owner] = by_owner.get(owner, 0) + 1
            return sorted(by_owner.values()) == [2, 2, 2]      # ceil(6 / 3) each
        wait_for(spread, 60, "six sources spread evenly over three instances")
        for i, user in enumerate(f.users):
            _deliver(mail_stack, user, [_mail(i, k) for k in range(per_box)])

        # one instance killed mid-batch, another frozen past its lease
        wait_for(lambda: len(f.records()) >= 60, 60, "some mails done")
        assert len(f.records()) < 6 * per_box
        os.kill(f.procs["a"].pid, signal.SIGKILL)
        os.kill(f.procs["b"].pid, signal.SIGSTOP)
        wait_for(lambda: {o for o, _, h in f.leases(conn).values() if h} == {"c"} and
                 sum(h for _, _, h in f.leases(conn).values()) == 6, 60,
                 "instance c to hold every source")
        tokens_c = {s: t for s, (o, t, _) in f.leases(conn).items()}
        os.kill(f.procs["b"].pid, signal.SIGCONT)   # wakes with stale tokens: refused

        def drained() -> bool:
            return all(_count(mail_stack, u, "INBOX") == 0 for u in f.users) and \
                len(f.records()) >= 6 * per_box
        wait_for(drained, 180, "every mailbox drained")
        f.stop_all()
        assert f.procs["b"].returncode == 0 and f.procs["c"].returncode == 0
        # SIGTERM released the leases at once
        assert not any(h for _, _, h in f.leases(conn).values())
        assert all(t >= tokens_c[s] for s, (_, t, _) in f.leases(conn).items())

        rows = conn.execute(f"SELECT count(*), count(DISTINCT key), count(DISTINCT source) "
                            f"FROM {f.schema}.rows").fetchone()
        assert rows == (6 * per_box, 6 * per_box, 6)           # the postgresql sink: once
    keys = [r["key"] for r in f.records()]
    assert len(keys) == len(set(keys)) == 6 * per_box            # every mail exactly once
    for u in f.users:
        assert _count(mail_stack, u, "INBOX") == 0
        assert _count(mail_stack, u, "Done") == per_box          # none moved twice
    assert "no longer holds its lease" in (f.root / "b.log").read_text() or \
        "lost the lease" in (f.root / "b.log").read_text()


def test_a_postgresql_sink_with_its_own_url_is_idempotent_on_key(tmp_path, mail_stack,
                                                                  pg_url, schema):
    import postline
    from postline.workflow.engine import run_workflows

    user = MailUser.fresh("pgsink")
    _deliver(mail_stack, user, [_mail(0, k) for k in range(5)])
    docs = [{"kind": "Secret", "name": "Creds", "values": {"pw": "env:PGSINK_PW"}},
            {"kind": "EmailConnection", "name": "Box",
             "incoming": {"protocol": "imap", "host": mail_stack.host,
                          "port": mail_stack.ports["imap"], "security": "none",
                          "user": user.email,
                          "credential": {"type": "secret", "secret": "Creds.pw"}}},
            {"kind": "EmailSource", "name": "Src", "connection": "Box",
             "folders": {"input": "INBOX", "done": "Done"}},
            {"kind": "Workflow", "name": "Flow", "source": "Src",
             "sinks": [{"type": "postgresql", "table": f"{schema}.rows", "url": pg_url}]}]
    (tmp_path / "p.yaml").write_text("\n---\n".join(json.dumps(d) for d in docs))
    project = postline.open_project(tmp_path, environ={"PGSINK_PW": user.password})
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        summary = run_workflows(project, once=True)        # the ledger: SQLite
        assert summary.counts["done"] == 5 and not summary.errors
        row = conn.execute(f"SELECT source, subject, received IS NOT NULL, "
                           f"record->>'key' = key FROM {schema}.rows ORDER BY subject "
                           f"LIMIT 1").fetchone()
        assert row == ("Src", "box 0 mail 0", True, True)
        # the same mails written again (a crash between the sink and the ledger's commit
        # brings them back with the same keys): no second row
        from psycopg.conninfo import make_conninfo

        from postline.workflow.pg_sink import PostgresSink

        records = [r for (r,) in conn.execute(f"SELECT record FROM {schema}.rows")]
        sink = PostgresSink(table=f"{schema}.rows", conninfo=make_conninfo(pg_url))
        sink.open()
        for r in records:
            sink.write(r, None)
        sink.stage()
        sink.close()
        assert conn.execute(f"SELECT count(*) FROM {schema}.rows").fetchone() == (5,)


def test_postgresql_restarted_and_away_past_the_lease(tmp_path, mail_stack, schema):
    """Instances pause while the database is away (no mail moved or written without it),
    lose their leases past lease_seconds, and take the sources again when it is back:
    nothing lost, nothing twice."""
    import shutil
    import tempfile

    from postline.testing.ports import free_port
    from postline.testing.postgres import DevPostgres

    # as the pg_server fixture: a directory the 'postgres' user can enter (when root)
    parent = Path(tempfile.mkdtemp(prefix="postline-pg-"))
    os.chmod(parent, 0o755)
    server = DevPostgres(dir=parent / "postgres", port=free_port())
    info = server.start()
    f = Fleet(tmp_path / "proj", mail_stack, info.url, schema, 2, lease=3, slow=0.01)
    try:
        per_box = 60
        for name in ("a", "b"):
            f.start(name)
        with psycopg.connect(info.url, autocommit=True) as conn:
            wait_for(lambda: _owners(f, conn) == {"a", "b"}, 60, "a source owned by each")
        for i, user in enumerate(f.users):
            _deliver(mail_stack, user, [_mail(i, k) for k in range(per_box // 2)])
        wait_for(lambda: len(f.records()) >= 10, 60, "some mails done")
        server.stop()                                   # away for longer than the lease
        wait_for(lambda: all("database unreachable" in (f.root / f"{n}.log").read_text()
                             for n in ("a", "b")), 60, "both instances to give up the leases")
        for i, user in enumerate(f.users):              # mail keeps coming meanwhile
            _deliver(mail_stack, user, [_mail(i, k) for k in range(per_box // 2, per_box)])
        server.start()
        wait_for(lambda: all(_count(mail_stack, u, "INBOX") == 0 for u in f.users) and
                 len(f.records()) >= 2 * per_box, 120, "every mailbox drained")
        assert all(p.poll() is None for p in f.procs.values())    # paused, never exited
        f.stop_all()
        keys = [r["key"] for r in f.records()]
        assert len(keys) == len(set(keys)) == 2 * per_box
        for u in f.users:
            assert _count(mail_stack, u, "Done") == per_box
    finally:
        f.stop_all()
        server.stop()
        shutil.rmtree(parent, ignore_errors=True)


def _owners(f: Fleet, conn) -> set[str]:
    try:
        return {o for o, _, h in f.leases(conn).values() if h}
    except psycopg.errors.UndefinedTable:
        return set()


def test_run_with_a_wrong_password_exits_1_without_touching_a_mailbox(tmp_path, mail_stack,
                                                                      pg_server, schema):
    bad = pg_server.url.replace("postline-pass", "wrong-pass")
    assert bad != pg_server.url
    f = Fleet(tmp_path / "proj", mail_stack, bad, schema, 1)
    _deliver(mail_stack, f.users[0], [_mail(0, 1)])
    proc = subprocess.run([sys.executable, "-m", "postline", "run", str(f.root), "--once"],
                          env=f.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "StateStore/Shared: PostgreSQL refused the password" in \
        lines[0] and "wrong-pass" not in proc.stderr
    assert _count(mail_stack, f.users[0], "INBOX") == 1


def test_instances_joining_and_leaving_rebalance_and_never_share_a_source(fleet, pg_url,
                                                                          mail_stack):
    f = fleet(4, lease=3)
    per_box = 40
    with psycopg.connect(pg_url, autocommit=True) as conn:
        def shares() -> list[int]:
            try:
                held = [o for o, _, h in f.leases(conn).values() if h]
            except psycopg.errors.UndefinedTable:
                return []
            return sorted(held.count(o) for o in set(held))

        f.start("a")
        wait_for(lambda: shares() == [4], 60, "a to hold all four sources")
        for i, user in enumerate(f.users):
            _deliver(mail_stack, user, [_mail(i, k) for k in range(per_box // 2)])
        f.start("b")
        wait_for(lambda: shares() == [2, 2], 60, "a and b to hold two each")
        f.start("c")
        wait_for(lambda: shares() == [1, 1, 2], 60, "a, b and c to share four sources")
        f.procs["a"].send_signal(signal.SIGTERM)     # leaves: its leases released at once
        assert f.procs["a"].wait(timeout=60) == 0
        wait_for(lambda: shares() == [2, 2], 60, "b and c to take a's sources")
        for i, user in enumerate(f.users):
            _deliver(mail_stack, user, [_mail(i, k) for k in range(per_box // 2, per_box)])
        wait_for(lambda: all(_count(mail_stack, u, "INBOX") == 0 for u in f.users) and
                 len(f.records()) >= 4 * per_box, 120, "every mailbox drained")
        f.stop_all()
    keys = [r["key"] for r in f.records()]
    assert len(keys) == len(set(keys)) == 4 * per_box
    # each process logged the sources it took; a source taken by two processes at once
    # would show in the lease table as two live owners, which its primary key forbids, and
    # in the sinks as a mail written twice, which the keys above rule out


def test_run_once_ledger_commands_and_the_console_use_the_state_store(
        tmp_path, mail_stack, pg_url, schema, capsys, monkeypatch):
    import postline
    from postline.cli import main
    from postline.web.console import ledger_page

    f = Fleet(tmp_path / "proj", mail_stack, pg_url, schema, 1, slow=0)
    _deliver(mail_stack, f.users[0], [_mail(0, k) for k in range(3)])
    for key, value in f.env.items():
        if key.startswith("FLEET_PW_"):
            monkeypatch.setenv(key, value)
    assert main(["run", str(f.root), "--once"]) == 0
    assert not (f.root / ".postline-state" / "ledger.sqlite3").exists()   # no SQLite
    capsys.readouterr()
    assert main(["ledger", "list", str(f.root), "Src0", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["state"] for e in entries] == ["done"] * 3 and all(e["settled"] for e in entries)
    page = ledger_page(postline.open_project(f.root), "Src0")
    assert "box 0 mail 2" in page and entries[0]["key"] in page
    assert main(["ledger", "prune", str(f.root), "Src0", "--older-than", "0m"]) == 0
    assert "pruned 3 done entries of source Src0" in capsys.readouterr().out
    assert main(["ledger", "list", str(f.root), "Src0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    with psycopg.connect(pg_url) as conn:       # the run left the fleet tidy
        assert conn.execute(f"SELECT count(*) FROM {schema}.instances").fetchone() == (0,)
        assert conn.execute(f"SELECT count(*) FROM {schema}.leases WHERE owner IS NOT NULL"
                            ).fetchone() == (0,)
