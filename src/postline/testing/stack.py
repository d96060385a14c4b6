"""The local mail stack: Dovecot, Postfix, smtp-sink, oidc-provider and PostgreSQL on 127.0.0.1.

::

    stack = Stack(dir=Path(".devstack"))                 # random free ports
    stack = Stack(dir=Path(".devstack"), base_port=10000) # imap 10143, smtp 10587, ...
    stack = Stack(dir=..., postgres=False)               # the mail servers only (the tests' own
                                                         # PostgreSQL starts when one asks for it)
    info = stack.start()     # idempotent; returns StackInfo (see postline.testing.info)
    stack.status()           # StackStatus: which server runs, which port answers
    stack.stop()             # stops only the processes started from this directory

Everything (configs, certificates, mailboxes, logs, PID files) lives in the stack directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from postline.testing import certs, install
from postline.testing import postgres as pg
from postline.testing.errors import StackError
from postline.testing.info import STATE_FILE, StackInfo
from postline.testing.ports import (
    HOST,
    busy_ports,
    free_ports,
    listening_ports,
    port_open,
    ports_from_base,
    wait_ports,
)
from postline.testing.servers import (
    HS256_KID,
    RESOURCE,
    RS256_KID,
    SERVERS,
    TENANT,
    Server,
    StackConfig,
)

CC_CLIENT_ID = "cc-client"
CC_CLIENT_SECRET = "cc-secret"  # a throwaway value of a loopback-only test server
DEVICE_CLIENT_ID = "device-client"
CC_MAILBOX = "svc@example.test"
DEFAULT_USER = "alice@example.test"
MAIL_SCOPES = (f"{RESOURCE}/.default",)
_SOCKET_PATH_MAX = 107


@dataclass(frozen=True, kw_only=True)
class ServerState:
    """One server: whether its process runs and which of its ports answer."""

    name: str
    pid: int | None
    running: bool
    ports: dict[str, int]
    open_ports: tuple[str, ...]

    @property
    def healthy(self) -> bool:
        return self.running and len(self.open_ports) == len(self.ports)


@dataclass(frozen=True, kw_only=True)
class StackStatus:
    """What runs in a stack directory (``info`` is None when it was never started)."""

    dir: Path
    info: StackInfo | None
    servers: tuple[ServerState, ...]

    @property
    def running(self) -> bool:
        """True when every server runs and answers on all its ports."""
        return bool(self.servers) and all(s.healthy for s in self.servers)

    @property
    def anything_running(self) -> bool:
        return any(s.running for s in self.servers)


def check_dir(stack_dir: Path) -> None:
    """Check that Dovecot and Postfix can use ``stack_dir``. Raises StackError saying why not."""
    text = str(stack_dir)
    if any(ch.isspace() or ch in "\"'#;" for ch in text):
        raise StackError(f"stack dir {text!r} has spaces or quotes, which the server configs "
                         "cannot hold; choose a plain path with --dir")
    if len(text) + len("/dovecot/run/token-login/tokenlogin") > _SOCKET_PATH_MAX:
        raise StackError(f"stack dir {text} is too long for Dovecot's Unix sockets (max about "
                         f"{_SOCKET_PATH_MAX - 36} characters); choose a shorter --dir")
    nobody = pwd.getpwnam("nobody").pw_uid
    for parent in reversed(stack_dir.parents):
        st = parent.stat()
        if not (st.st_mode & stat.S_IXOTH or st.st_uid == nobody):
            raise StackError(f"Dovecot reads mail as user nobody, which cannot enter {parent}; "
                             f"choose another --dir or run: chmod o+x {parent}")


class Stack:
    """A local mail stack in one directory. Keyword-only; see the module docstring."""

    def __init__(self, *, dir: Path, ports: dict[str, int] | None = None,
                 base_port: int | None = None, cache_dir: Path | None = None,
                 access_token_ttl: int = 3600, cc_mailbox: str = CC_MAILBOX,
                 postgres: bool = True) -> None:
        self.dir = Path(dir).expanduser().absolute()
        if ports is not None and base_port is not None:
            raise ValueError("give ports or base_port, not both")
        self._ports = dict(ports) if ports else (ports_from_base(base_port) if base_port else None)
        self.cache_dir = cache_dir or install.default_cache_dir(os.environ)
        self.access_token_ttl = access_token_ttl
        self.cc_mailbox = cc_mailbox
        self.postgres = postgres

    # ---- public API --------------------------------------------------------------------
    def start(self, *, timeout: float = 20.0) -> StackInfo:
        """Start every server, or return the running stack's info when it already runs.

        Waits until every port answers. Raises StackUnavailable when a component is not
        installed, StackError when a server fails to start (after stopping the others).
        """
        node = install.check_can_run(self.cache_dir)
        if self.postgres:
            pg.check_installed()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir = self.dir.resolve()
        check_dir(self.dir)
        with self._lock():
            current = self.status()
            if current.running and current.info is not None and (
                    not self.postgres or "postgres" in current.info.ports):
                return current.info
            if current.anything_running:  # half-dead from a crash (or no PostgreSQL): start clean
                self._stop_servers(current.info)
            ports = dict(self._ports or free_ports())
            if not self.postgres:
                ports.pop("postgres", None)
            elif "postgres" not in ports:
                taken = set(ports.values())
                ports["postgres"] = next(p for p in free_ports().values() if p not in taken)
            busy = busy_ports(ports)
            if busy:
                name, port = next(iter(busy.items()))
                raise StackError(f"port {port} ({name}) on {HOST} is already in use; stop what "
                                 "listens there or choose another --base-port")
            info = self._prepare(ports, node)
            servers = self._servers(info, node)
            started: list[Server] = []
            try:
                # node takes longest to come up, so it goes first and the rest start meanwhile
                for server in sorted(servers, key=lambda s: s.name != "oidc"):
                    server.start()
                    started.append(server)
                for server in servers:
                    self._wait_ready(server, info, timeout)
            except BaseException:
                for server in reversed(started):
                    server.stop()
                raise
            return info

    def stop(self, *, timeout: float = 10.0) -> bool:
        """Stop the servers of this directory. Returns False when nothing was running.

        Raises StackError when a port stays open after ``timeout`` seconds.
        """
        if not self.dir.exists():
            return False
        with self._lock():
            status = self.status()
            if not status.anything_running:
                return False
            self._stop_servers(status.info)
            if status.info:
                left = wait_ports(status.info.ports.values(), open_=False, timeout=timeout)
                if left:
                    raise StackError(f"ports {left} still open after stopping the stack in "
                                     f"{self.dir}; see {self.dir}/logs/")
            return True

    def status(self) -> StackStatus:
        """Which servers of this directory run and answer (no side effects)."""
        info = StackInfo.load(self.dir)
        if info is None:
            return StackStatus(dir=self.dir, info=None, servers=())
        states = []
        listening = listening_ports()
        for server in self._servers(info, ""):
            ports = {name: info.ports[name] for name in server.services}
            states.append(ServerState(
                name=server.name, pid=server.pid(), running=server.running(), ports=ports,
                open_ports=tuple(n for n, p in ports.items()
                                 if (p in listening if listening is not None else port_open(p)))))
        return StackStatus(dir=self.dir, info=info, servers=tuple(states))

    # ---- internals ---------------------------------------------------------------------
    @contextmanager
    def _lock(self) -> Iterator[None]:
        # one start/stop at a time per directory (two terminals, or parallel test sessions)
        with open(self.dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _config(self, info: StackInfo, node: str) -> StackConfig:
        return StackConfig(
            dir=self.dir, ports=info.ports, node=node,
            oidc_home=install.oidc_home(self.cache_dir), cc_client_id=info.cc_client_id,
            cc_client_secret=info.cc_client_secret, cc_mailbox=info.cc_mailbox,
            device_client_id=info.device_client_id, default_user=DEFAULT_USER,
            access_token_ttl=info.access_token_ttl)

    def _servers(self, info: StackInfo, node: str) -> list[Server]:
        cfg = self._config(info, node)
        # a stack started without PostgreSQL (or by an older postline) has no port for it
        return [cls(cfg) for cls in SERVERS if all(s in info.ports for s in cls.services)]

    def _stop_servers(self, info: StackInfo | None) -> None:
        if info is None:
            return
        errors = []
        for server in reversed(self._servers(info, "")):
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{server.name}: {exc}")
        if errors:
            raise StackError(f"could not stop everything in {self.dir}: {'; '.join(errors)}")

    def _prepare(self, ports: dict[str, int], node: str) -> StackInfo:
        tls = certs.ensure_tls(self.dir / "tls")
        certs.ensure_signing_key(jwk_file=self.dir / "tls" / "oidc-signing.jwk.json",
                                 public_pem_file=self.dir / "tls" / "oidc-signing.pub.pem",
                                 kid=RS256_KID)
        hs256 = self.dir / "tls" / "test-issuer.hs256"
        certs.ensure_hmac_secret(hs256)
        authority = f"https://{HOST}:{ports['oidc']}/{TENANT}"
        info = StackInfo(
            host=HOST, ports=dict(ports), dir=self.dir, ca_file=tls.ca_file,
            ca_key_file=tls.ca_key_file, oidc_issuer=f"{authority}/v2.0",
            oidc_authority=authority, cc_client_id=CC_CLIENT_ID,
            cc_client_secret=CC_CLIENT_SECRET, cc_mailbox=self.cc_mailbox,
            device_client_id=DEVICE_CLIENT_ID, mail_scopes=MAIL_SCOPES,
            test_issuer=f"https://{HOST}:{ports['oidc']}/postline-test-issuer",
            hs256_key_file=hs256, hs256_kid=HS256_KID, access_token_ttl=self.access_token_ttl,
            postgres_url=pg.app_url(ports["postgres"]) if "postgres" in ports else None)
        for sub in ("logs", "run"):
            (self.dir / sub).mkdir(exist_ok=True)
        os.chmod(self.dir, 0o755)
        for server in self._servers(info, node):
            server.prepare()
        state = self.dir / STATE_FILE
        state.write_text(json.dumps(info.to_json(), indent=2) + "\n")
        os.chmod(state, 0o600)
        return info

    def _wait_ready(self, server: Server, info: StackInfo, timeout: float) -> None:
        ports = [info.ports[name] for name in server.services]
        deadline = time.monotonic() + timeout
        while True:
            left = wait_ports(ports, open_=True, timeout=0.05)
            if not left:
                return
            if not server.running():
                raise server.failure("exited during start")
            if time.monotonic() >= deadline:
                raise server.failure(f"did not open port(s) {left} within {timeout:.0f} s")
