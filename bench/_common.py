"""Shared helpers of the source benchmarks: a stack, a fresh mailbox, a project, mails."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from postline.testing.info import MailUser, StackInfo  # noqa: E402
from postline.testing.stack import Stack  # noqa: E402

WORDS = ("invoice order report delivery payment status weekly summary alert customer "
         "Grüße Rechnung Übersicht éclair naïve 日本 отчёт").split()


def start_stack(stack_dir: str | None) -> StackInfo:
    """Start (or reuse) the local stack in ``stack_dir`` (default: <repo>/.devstack)."""
    path = Path(stack_dir) if stack_dir else ROOT / ".devstack"
    return Stack(dir=path).start()


def fresh_user(info: StackInfo, prefix: str) -> MailUser:
    """A new mailbox whose Maildir exists (one LMTP delivery creates it; that mail is
    removed again so the mailbox starts empty)."""
    user = MailUser.fresh(prefix)
    info.deliver(user.email, b"From: x@example.test\r\nSubject: init\r\n\r\ninit\r\n")
    import imaplib

    with imaplib.IMAP4(info.host, info.ports["imap"]) as imap:
        imap.login(user.email, user.password)
        imap.select("INBOX")
        imap.uid("STORE", "1:*", "+FLAGS.SILENT", r"(\Deleted)")
        imap.expunge()
        imap.logout()
    return user


def fill_maildir(info: StackInfo, user: MailUser, mails: list[bytes]) -> None:
    """Write ``mails`` straight into the user's Maildir/new (seconds, not minutes of LMTP);
    Dovecot indexes them on the next SELECT. Files get the owner of the Maildir."""
    maildir = info.mailbox_path(user.email)
    new = maildir / "new"
    st = maildir.stat()
    stamp = int(time.time())
    for i, raw in enumerate(mails):
        name = new / f"{stamp}.M{i}P{os.getpid()}.bench,S={len(raw)}"
        tmp = maildir / "tmp" / name.name
        tmp.write_bytes(raw)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.rename(tmp, name)


def text(rng: random.Random, size: int) -> str:
    out, n = [], 0
    while n < size:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w.encode()) + 1
        if rng.random() < 0.08:
            out.append("\n")
    return " ".join(out)


def generate(n: int, *, seed: int = 7) -> list[bytes]:
    """``n`` mails: 80% ~5 KB plain, 17% ~50 KB with an HTML alternative, 3% with a 1 MB
    attachment; UTF-8 subjects."""
    rng = random.Random(seed)
    mails = []
    for i in range(n):
        m = EmailMessage()
        m["From"] = f"Sender {i % 37} <sender{i % 37}@example.test>"
        m["To"] = "bench@example.test"
        m["Subject"] = f"{rng.choice(WORDS)} {rng.choice(WORDS)} #{i} — Grüße"
        m["Date"] = "Wed, 01 May 2024 12:00:00 +0000"
        m["Message-ID"] = f"<bench-{i}@example.test>"
        r = rng.random()
        if r < 0.80:
            m.set_content(text(rng, 5000))
        elif r < 0.97:
            body = text(rng, 25000)
            m.set_content(body)
            m.add_alternative(f"<html><body><p>{body}</p></body></html>", subtype="html")
        else:
            m.set_content(text(rng, 2000))
            m.add_attachment(rng.randbytes(1024 * 1024), maintype="application",
                             subtype="octet-stream", filename=f"daten-{i}.bin")
        mails.append(m.as_bytes())
    return mails


def write_project(root: Path, info: StackInfo, user: MailUser, *, idle: bool = True,
                  load: bool = True, sinks: list | None = None) -> Path:
    """A project reading ``user``'s INBOX (mails stay; no done folder) into a JSONL sink."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    docs = [
        {"kind": "Secret", "name": "Creds", "values": {"password": "env:BENCH_PASSWORD"}},
        {"kind": "EmailConnection", "name": "Bench",
         "incoming": {"protocol": "imap", "host": info.host, "port": info.ports["imap"],
                      "security": "starttls", "ca_file": str(info.ca_file), "user": user.email,
                      "credential": {"type": "secret", "secret": "Creds.password"}}},
        {"kind": "EmailSource", "name": "BenchInbox", "connection": "Bench",
         "attachments": {"load": load}, "polling": {"interval": 3600, "idle": idle}},
        {"kind": "Workflow", "name": "BenchFlow", "source": "BenchInbox",
         "sinks": sinks or [{"type": "jsonl", "path": "out/mails.jsonl"}],
         "attachments_dir": "out/attachments"},
    ]
    (root / "project.yaml").write_text("\n---\n".join(json.dumps(d) for d in docs))
    return root


def postline_env(user: MailUser, state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["BENCH_PASSWORD"] = user.password
    env["POSTLINE_STATE_DIR"] = str(state_dir)
    return env


def run_postline(project: Path, user: MailUser, *, args: tuple[str, ...] = ("--once",)
                 ) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``postline run PROJECT --once`` in a fresh process; returns (seconds, result)."""
    state = project / ".state"
    shutil.rmtree(state, ignore_errors=True)
    cmd = [sys.executable, "-m", "postline", "run", str(project), *args]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=postline_env(user, state), capture_output=True, text=True)
    return time.perf_counter() - t0, res
