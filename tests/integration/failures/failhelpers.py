"""Helpers of the end-to-end failure tests: run the CLI as a user would, build projects.

Every test here is black-box: it writes a project, runs ``python -m postline ...`` in a
subprocess (a fresh process, so no secret registered by another test can mask a leak, and
resource limits apply to postline alone) and asserts on what the user sees: the exit
status, the one line on stderr, and what happened to the mail.
"""

from __future__ import annotations

import imaplib
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

# A value that must never appear anywhere in postline's output.
WRONG_PASSWORD = "Wr0ng-Pa55-q7Zx"

LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from postline.cli import main
sys.exit(main(sys.argv[2:]))
"""


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    @property
    def error(self) -> str:
        """The one ``postline: error: ...`` line (asserts there is exactly one)."""
        errors = [line for line in self.lines if line.startswith("postline: error: ")]
        assert len(errors) == 1, f"expected one error line, got:\n{self.err}"
        return errors[0]

    def assert_clean(self, *secrets: str) -> None:
        """No traceback, and none of ``secrets`` in stdout or stderr."""
        assert "Traceback" not in self.err, self.err
        for secret in secrets:
            assert secret not in self.out and secret not in self.err, "secret leaked"


def cli(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        stdin: str | bytes | None = None, fsize_limit: int | None = None,
        timeout: float = 60) -> Result:
    """Run ``postline ARGV`` in a subprocess; ``fsize_limit`` caps the size of any file it
    writes (RLIMIT_FSIZE: a write past it fails like a full disk)."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("POSTLINE_", "QA_"))}
    full_env.update(env or {})
    if fsize_limit is None:
        cmd = [sys.executable, "-m", "postline", *argv]
    else:
        cmd = [sys.executable, "-c", LIMITED, str(fsize_limit), *argv]
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, input=data, capture_output=True,
                          timeout=timeout)
    return Result(proc.returncode, proc.stdout.decode(errors="replace"),
                  proc.stderr.decode(errors="replace"))


def write_project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def _flow(mapping: dict) -> str:
    return json.dumps(mapping)  # JSON is YAML flow style


class StackProject:
    """A project against the test stack: connection ``Mail`` (IMAPS in, SMTP+STARTTLS out),
    source ``In``, service ``Out`` (one attempt), workflow ``W`` (JSONL + directory sinks).
    The password comes from ``env:QA_MAIL_PASSWORD`` (``self.env``)."""

    def __init__(self, root: Path, stack, user, *, incoming: dict | None = None,
                 outgoing: dict | None = None, sinks: list[dict] | None = None,
                 password: str | None = None) -> None:
        self.root, self.stack, self.user = root, stack, user
        self.env = {"QA_MAIL_PASSWORD": password if password is not None else user.password,
                    "POSTLINE_STATE_DIR": str(root / ".postline-state")}
        common = {"host": stack.host, "user": user.email, "ca_file": str(stack.ca_file),
                  "connect_timeout": 3, "read_timeout": 5,
                  "credential": {"type": "secret", "secret": "MailSecrets.password"}}
        inc = {"protocol": "imap", "security": "tls", "port": stack.ports["imaps"], **common}
        out = {"protocol": "smtp", "security": "starttls", "port": stack.ports["smtp"],
               **common}
        inc.update(incoming or {})
        out.update(outgoing or {})
        self.sinks = sinks if sinks is not None else [
            {"type": "jsonl", "path": "out/records.jsonl"},
            {"type": "directory", "path": "out/mails"}]
        write_project(root, {
            "secrets.yaml": """
                kind: Secret
                name: MailSecrets
                values:
                  password: env:QA_MAIL_PASSWORD
                """,
            "connection.yaml": f"""
                kind: EmailConnection
                name: Mail
                incoming: {_flow(inc)}
                outgoing: {_flow(out)}
                """,
            "source.yaml": """
                kind: EmailSource
                name: In
                connection: Mail
                folders: {input: INBOX, done: Done, error: Errors, ignore: Ignored}
                polling: {interval: 30, idle: false}
                """,
            "service.yaml": f"""
                kind: EmailService
                name: Out
                connection: Mail
                default_from: {user.email}
                retry: {{max_attempts: 1, min_backoff: 0.1, max_backoff: 0.1}}
                """,
            "workflow.yaml": f"""
                kind: Workflow
                name: W
                source: In
                sinks: {json.dumps(self.sinks)}
                """,
        })

    def cli(self, *argv: str, **kw) -> Result:
        env = {**self.env, **kw.pop("env", {})}
        return cli(*argv, cwd=self.root, env=env, **kw)

    def message(self, subject: str = "hello") -> str:
        return json.dumps({"To": [{"Address": self.user.email}], "Subject": subject,
                           "Body": "body of " + subject})

    def deliver(self, subject: str) -> None:
        raw = (f"From: sender@example.test\r\nTo: {self.user.email}\r\n"
               f"Subject: {subject}\r\nMessage-ID: <{subject.replace(' ', '-')}@qa.test>\r\n"
               f"\r\nbody of {subject}\r\n").encode()
        self.stack.deliver(self.user.email, raw)

    def subjects(self, folder: str) -> list[str]:
        """Subjects of the mails in ``folder`` (empty when the folder does not exist)."""
        imap = imaplib.IMAP4_SSL(self.stack.host, self.stack.ports["imaps"],
                                 ssl_context=self.stack.ssl_context())
        try:
            imap.login(self.user.email, self.user.password)
            typ, _ = imap.select(folder, readonly=True)
            if typ != "OK":
                return []
            _, data = imap.uid("SEARCH", None, "ALL")
            out = []
            for uid in data[0].split():
                _, parts = imap.uid("FETCH", uid, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                header = parts[0][1].decode().strip()
                out.append(header.partition(":")[2].strip())
            return out
        finally:
            imap.logout()
