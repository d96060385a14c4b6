"""The four servers of the local mail stack: how each is configured, started, checked and stopped.

Every server keeps its config, state and PID file under the stack directory, so two stacks in two
directories never touch each other, and ``stop`` only ever stops this directory's processes.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from postline.testing import procs
from postline.testing.errors import StackError
from postline.testing.postgres import DevPostgres

RS256_KID = "postline-dev-stack-rs256"
HS256_KID = "postline-dev-stack-hs256"
TENANT = "mytenant"
RESOURCE = "https://mail.example.test"
# what the OAuth server lets clients ask for; Entra-style names so configs look like the real thing
RESOURCE_SCOPES = ("https://mail.example.test/.default", "IMAP.AccessAsUser.All",
                   "POP.AccessAsUser.All", "SMTP.Send", "Mail.Read", "Mail.Send",
                   "https://mail.example.test/IMAP.AccessAsUser.All",
                   "https://mail.example.test/SMTP.Send")


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    """Everything the servers' configs are rendered from."""

    dir: Path
    ports: dict[str, int]
    node: str
    oidc_home: Path
    cc_client_id: str
    cc_client_secret: str
    cc_mailbox: str
    device_client_id: str
    default_user: str
    access_token_ttl: int

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def oidc_issuer(self) -> str:
        return f"https://127.0.0.1:{self.ports['oidc']}/{TENANT}/v2.0"

    @property
    def test_issuer(self) -> str:
        return f"https://127.0.0.1:{self.ports['oidc']}/postline-test-issuer"


def render(template: str, values: dict[str, str]) -> str:
    """The packaged template ``stackfiles/<template>`` with every ``@NAME@`` replaced.

    Raises StackError when a placeholder has no value (a bug in the template or the caller).
    """
    text = resources.files("postline.testing").joinpath(f"stackfiles/{template}").read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z0-9_]+@", text)
    if left:
        raise StackError(f"template {template} has no value for {', '.join(sorted(set(left)))}")
    return text


def _values(cfg: StackConfig) -> dict[str, str]:
    values = {"DIR": str(cfg.dir), "OIDC_ISSUER": cfg.oidc_issuer, "TEST_ISSUER": cfg.test_issuer,
              "INSTANCE": "postline-" + re.sub(r"[^A-Za-z0-9]+", "-", cfg.dir.name).strip("-")
              + "-" + hashlib.sha1(str(cfg.dir).encode()).hexdigest()[:6]}
    values.update({f"PORT_{name.upper()}": str(port) for name, port in cfg.ports.items()})
    return values


def _write(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    os.chmod(path, mode)


class Server:
    """One server process of the stack (subclasses fill in the details)."""

    name = ""
    services: tuple[str, ...] = ()

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg

    @property
    def log_file(self) -> Path:
        return self.cfg.logs / f"{self.name}.log"

    def prepare(self) -> None:
        """Write this server's config files (every start, so port changes apply)."""

    def start(self) -> None:
        """Start the server; returns once it was launched (ports are waited for by the caller)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server if it runs, and wait for its process to exit."""
        procs.terminate(self.pid(), self.marker, cwd=self.cwd)

    def pid(self) -> int | None:
        return procs.read_pid(self.pid_file)

    def running(self) -> bool:
        return procs.alive(self.pid(), self.marker, cwd=self.cwd)

    @property
    def cwd(self) -> Path | None:
        """Working directory the process must have to be ours (None: not checked)."""
        return None

    @property
    def pid_file(self) -> Path:
        return self.cfg.dir / "run" / f"{self.name}.pid"

    @property
    def marker(self) -> str:
        return str(self.cfg.dir)

    def failure(self, what: str) -> StackError:
        return StackError(f"{self.name} {what}: {procs.last_line(self.log_file)} "
                          f"(log: {self.log_file})")


class Dovecot(Server):
    name = "dovecot"
    services = ("imap", "imaps", "pop3", "pop3s", "lmtp")

    @property
    def conf(self) -> Path:
        return self.cfg.dir / "dovecot" / "dovecot.conf"

    @property
    def pid_file(self) -> Path:
        return self.cfg.dir / "dovecot" / "run" / "master.pid"

    @property
    def marker(self) -> str:
        return str(self.conf)

    def prepare(self) -> None:
        d = self.cfg.dir
        values = _values(self.cfg)
        _write(self.conf, render("dovecot.conf.tmpl", values))
        _write(d / "dovecot" / "dovecot-oauth2.conf.ext", render("dovecot-oauth2.conf.ext", values))
        keys = d / "dovecot" / "oauth2-keys" / "default"
        # read by Dovecot's auth process, which runs as the dovecot user
        _write(keys / "RS256" / RS256_KID, (d / "tls" / "oidc-signing.pub.pem").read_bytes())
        secret = (d / "tls" / "test-issuer.hs256").read_bytes()
        _write(keys / "HS256" / HS256_KID, base64.b64encode(secret), 0o640)
        os.chown(keys / "HS256" / HS256_KID, 0, grp.getgrnam("dovecot").gr_gid)
        for sub in (keys.parent, keys, keys / "RS256", keys / "HS256"):
            os.chmod(sub, 0o755)
        mail = d / "mail"
        mail.mkdir(exist_ok=True)
        os.chown(mail, pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
        os.chmod(mail, 0o700)

    def start(self) -> None:
        rc, out = procs.run(["dovecot", "-c", str(self.conf)])
        if rc != 0:
            line = out.strip().splitlines()[-1] if out.strip() else procs.last_line(self.log_file)
            raise StackError(f"dovecot did not start: {line} (log: {self.log_file})")



class Postfix(Server):
    name = "postfix"
    services = ("smtp", "smtps")

    @property
    def conf_dir(self) -> Path:
        return self.cfg.dir / "postfix" / "conf"

    @property
    def pid_file(self) -> Path:
        return self.cfg.dir / "postfix" / "queue" / "pid" / "master.pid"

    @property
    def marker(self) -> str:
        return "postfix/sbin/master"

    @property
    def cwd(self) -> Path | None:
        # the master's command line does not name its config; its working dir is our queue
        return self.cfg.dir / "postfix" / "queue"

    def prepare(self) -> None:
        values = _values(self.cfg)
        old = time.time() - 60
        for name, template in (("main.cf", "postfix-main.cf"), ("master.cf", "postfix-master.cf")):
            _write(self.conf_dir / name, render(template, values))
            # Postfix waits (up to 2 s) until a freshly written main.cf is a few seconds old
            os.utime(self.conf_dir / name, (old, old))
        # The queue tree as post-install(1) would create it (see /etc/postfix/postfix-files).
        # Creating it here and leaving a "quick-start" file lets `postfix start` skip its
        # integrity scan, which takes 1.5 s of a 1.7 s start.
        owner = pwd.getpwnam("postfix").pw_uid
        postdrop = grp.getgrnam("postdrop").gr_gid
        queue = self.cfg.dir / "postfix" / "queue"
        layout = {queue: (0, 0, 0o755), queue / "pid": (0, 0, 0o755),
                  self.cfg.dir / "postfix" / "data": (owner, 0, 0o700),
                  queue / "maildrop": (owner, postdrop, 0o730),
                  queue / "public": (owner, postdrop, 0o710)}
        for sub in ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold",
                    "incoming", "private", "saved", "trace"):
            layout[queue / sub] = (owner, 0, 0o700)
        for path, (uid, gid, mode) in layout.items():
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        (queue / "quick-start").touch()
        self.cfg.logs.mkdir(exist_ok=True)

    def start(self) -> None:
        rc, out = procs.run(["postfix", "-c", str(self.conf_dir), "start"], tty=True)
        if rc != 0:
            lines = [ln for ln in out.strip().splitlines() if ln.strip()]
            line = lines[-1] if lines else "no output"
            if "startup failed" in line:
                line = procs.last_line(self.log_file)
            raise StackError(f"postfix did not start: {line} (log: {self.log_file}; check the "
                             f"config with: script -qc 'postfix -c {self.conf_dir} check' /dev/null)")



class SmtpSink(Server):
    name = "smtp-sink"
    services = ("smtp_sink",)

    @property
    def marker(self) -> str:
        return f"smtp-sink -u nobody -4 127.0.0.1:{self.cfg.ports['smtp_sink']} 256"

    def start(self) -> None:
        port = self.cfg.ports["smtp_sink"]
        # -u is required as root; 256 = listen backlog for benchmarks with many sessions
        procs.spawn(["smtp-sink", "-u", "nobody", "-4", f"127.0.0.1:{port}", "256"],
                    log_file=self.log_file, pid_file=self.pid_file)


class OidcServer(Server):
    name = "oidc"
    services = ("oidc",)

    @property
    def home(self) -> Path:
        return self.cfg.dir / "oidc"

    @property
    def marker(self) -> str:
        return str(self.home / "oidc_server.mjs")

    def prepare(self) -> None:
        cfg, home = self.cfg, self.home
        _write(home / "oidc_server.mjs", render("oidc_server.mjs", {}))
        # ES modules resolve packages next to the script, not via NODE_PATH: link the cache in
        link = home / "node_modules"
        target = cfg.oidc_home / "node_modules"
        if link.is_symlink() or link.exists():
            if link.is_symlink() and Path(os.readlink(link)) == target:
                target = None  # type: ignore[assignment]
            elif link.is_symlink():
                link.unlink()
            else:
                shutil.rmtree(link)
        if target is not None:
            link.symlink_to(target, target_is_directory=True)
        config = {
            "host": "127.0.0.1", "port": cfg.ports["oidc"], "tenant": TENANT,
            "cert_file": str(cfg.dir / "tls" / "server.pem"),
            "key_file": str(cfg.dir / "tls" / "server.key"),
            "jwk_file": str(cfg.dir / "tls" / "oidc-signing.jwk.json"),
            "cc_client_id": cfg.cc_client_id, "cc_client_secret": cfg.cc_client_secret,
            "cc_mailbox": cfg.cc_mailbox, "device_client_id": cfg.device_client_id,
            "default_user": cfg.default_user, "access_token_ttl": cfg.access_token_ttl,
            "resource": RESOURCE, "resource_scopes": list(RESOURCE_SCOPES),
            "cookie_key": secrets.token_hex(16),
        }
        _write(home / "config.json", json.dumps(config, indent=2), 0o600)

    def start(self) -> None:
        procs.spawn([self.cfg.node, str(self.home / "oidc_server.mjs"),
                     str(self.home / "config.json")],
                    log_file=self.log_file, pid_file=self.pid_file, cwd=self.home)


class Postgres(Server):
    """PostgreSQL for StateStore assets (see :mod:`postline.testing.postgres`)."""

    name = "postgres"
    services = ("postgres",)

    @property
    def server(self) -> DevPostgres:
        return DevPostgres(dir=self.cfg.dir / "postgres", port=self.cfg.ports["postgres"],
                           log_file=self.log_file)

    @property
    def pid_file(self) -> Path:
        return self.server.pid_file

    @property
    def marker(self) -> str:
        return self.server.marker

    def prepare(self) -> None:
        self.server.prepare()

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


# the order of start (after oidc, which is slowest); Postgres last, since its start also
# waits for it to accept logins and creates the role and database
SERVERS = (Dovecot, Postfix, SmtpSink, OidcServer, Postgres)
