"""A private PostgreSQL server in one directory, for the dev stack and the tests.

::

    pg = DevPostgres(dir=Path(".devstack/postgres"), port=15432)
    pg.start()            # initdb on first use, then the server; idempotent; returns PostgresInfo
    pg.info().url         # postgresql://postline:postline-pass@127.0.0.1:15432/postline
    pg.running()
    pg.stop()             # fast shutdown (clients are disconnected), waits for the exit

Debian's binaries (``/usr/lib/postgresql/<version>/bin``) refuse to run as root, so as root
the cluster is created and run as the ``postgres`` system user of the package, and the data
directory is owned by it. The server listens on 127.0.0.1 only, with its Unix socket in the
directory; every login needs a password (scram-sha-256). The superuser ``postgres`` gets a
random password kept in ``superuser.password`` (mode 0600); the application role
``postline`` (password ``postline-pass``, like the stack's mailboxes) owns the database
``postline``. ``fsync`` is off: a dev server loses nothing when a process dies, only on a
machine crash, and it makes commits much cheaper on these small machines.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import signal
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from postline.testing import procs
from postline.testing.errors import StackError, StackUnavailable
from postline.testing.ports import HOST, port_listening, wait_until

APP_USER = "postline"
APP_PASSWORD = "postline-pass"   # a throwaway value of a loopback-only dev server
APP_DATABASE = "postline"
SUPERUSER = "postgres"
_BINARIES = "/usr/lib/postgresql/*/bin/postgres"


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` directory (Debian layout), or None."""
    found = sorted(glob.glob(_BINARIES), key=lambda p: int(Path(p).parts[-3])
                   if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def check_installed() -> Path:
    """The ``bin`` directory. Raises StackUnavailable naming the package to install."""
    found = bin_dir()
    if found is None:
        raise StackUnavailable("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/"
                               "postgres); install it with scripts/bootstrap.sh (or: apt-get "
                               "install -y postgresql)")
    return found


def app_url(port: int) -> str:
    """The application role's URL on ``port`` (fixed role, password and database)."""
    return _url(APP_USER, APP_PASSWORD, port, APP_DATABASE)


def _url(user: str, password: str, port: int, database: str) -> str:
    return (f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{HOST}:{port}/"
            f"{quote(database, safe='')}")


@dataclass(frozen=True, kw_only=True)
class PostgresInfo:
    """Where a running dev PostgreSQL listens and how to log in. Passwords stay out of repr."""

    host: str
    port: int
    socket_dir: Path
    database: str
    user: str
    password: str = field(repr=False)
    superuser: str
    superuser_password: str = field(repr=False)
    version: str

    @property
    def url(self) -> str:
        """The application role's URL: what ``POSTLINE_STATE_URL`` is set to."""
        return app_url(self.port)

    @property
    def admin_url(self) -> str:
        """The superuser's URL (tests use it to create roles and databases)."""
        return _url(self.superuser, self.superuser_password, self.port, self.database)


class DevPostgres:
    """One PostgreSQL cluster in ``dir`` (data, socket, password file); see the module doc."""

    def __init__(self, *, dir: Path, port: int, log_file: Path | None = None) -> None:
        self.dir = Path(dir).absolute()
        self.port = port
        self.log_file = log_file or self.dir / "postgres.log"

    # ---- paths ---------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.dir / "run"

    @property
    def pid_file(self) -> Path:
        return self.dir / "postgres.pid"

    @property
    def marker(self) -> str:
        return str(self.data_dir)

    @property
    def _password_file(self) -> Path:
        return self.dir / "superuser.password"

    # ---- state ---------------------------------------------------------------------------
    def pid(self) -> int | None:
        return procs.read_pid(self.pid_file)

    def running(self) -> bool:
        return procs.alive(self.pid(), self.marker)

    def info(self) -> PostgresInfo:
        """Connection details (the server need not run). Raises StackError before initdb."""
        try:
            superuser_password = self._password_file.read_text().strip()
            version = (self.data_dir / "PG_VERSION").read_text().strip()
        except OSError as exc:
            raise StackError(f"no PostgreSQL cluster in {self.dir} yet; start it first") from exc
        return PostgresInfo(host=HOST, port=self.port, socket_dir=self.socket_dir,
                            database=APP_DATABASE, user=APP_USER, password=APP_PASSWORD,
                            superuser=SUPERUSER, superuser_password=superuser_password,
                            version=version)

    # ---- lifecycle -----------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the cluster unless it exists. Raises StackUnavailable/StackError."""
        bindir = check_installed()
        owner = self._owner()
        self._check_dir(owner)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.socket_dir.mkdir(exist_ok=True)
        for path in (self.dir, self.socket_dir):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        if (self.data_dir / "PG_VERSION").exists():
            return
        if not self._password_file.exists():
            self._password_file.write_text(secrets.token_urlsafe(24) + "\n")
        os.chmod(self._password_file, 0o600)
        os.chown(self._password_file, owner.pw_uid, owner.pw_gid)
        rc, out = self._run([str(bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                             "--pwfile", str(self._password_file), "--auth=scram-sha-256",
                             "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"],
                            owner)
        if rc != 0:
            raise StackError(f"initdb in {self.data_dir} failed: {_last(out)}")

    def start(self, *, timeout: float = 30.0) -> PostgresInfo:
        """Prepare, start the server, create the role and database; idempotent.

        Returns once a client can log in. Raises StackError (the log's last error line) when
        the server does not come up, StackUnavailable when PostgreSQL is not installed.
        """
        if self.running():
            return self._ensure_app_role(timeout)
        self.prepare()
        bindir = check_installed()
        owner = self._owner()
        # settings on the command line, so a new port applies without editing postgresql.conf
        cmd = [str(bindir / "postgres"), "-D", str(self.data_dir),
               "-c", f"listen_addresses={HOST}", "-c", f"port={self.port}",
               "-c", f"unix_socket_directories={self.socket_dir}",
               "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200",
               "-c", "log_min_messages=warning"]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    close_fds=True, **_as_user(owner))
        procs._CHILDREN[proc.pid] = proc  # reaped by procs.alive, like the other servers
        self.pid_file.write_text(f"{proc.pid}\n")
        if not wait_until(lambda: port_listening(self.port) or not self.running(),
                          timeout=timeout) or not self.running():
            self.stop()
            raise StackError(f"postgres did not start: {procs.last_line(self.log_file)} "
                             f"(log: {self.log_file})")
        return self._ensure_app_role(timeout)

    def stop(self, *, timeout: float = 15.0) -> bool:
        """Stop the server (fast shutdown). Returns False when it was not running."""
        pid = self.pid()
        if not procs.alive(pid, self.marker):
            return False
        assert pid is not None
        # SIGINT = "fast" shutdown: clients are disconnected (SIGTERM would wait for them)
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return True
            if wait_until(lambda: not procs.alive(pid, self.marker), timeout=timeout):
                return True
        return True

    # ---- internals -----------------------------------------------------------------------
    def _check_dir(self, owner: pwd.struct_passwd) -> None:
        socket_file = self.socket_dir / f".s.PGSQL.{self.port}"
        if len(str(socket_file)) > 107:
            raise StackError(f"directory {self.dir} is too long for PostgreSQL's Unix socket "
                             f"({socket_file}); choose a shorter one")
        for parent in reversed(self.dir.parents):
            st = parent.stat() if parent.exists() else None
            if st is not None and not (st.st_mode & stat.S_IXOTH or st.st_uid == owner.pw_uid):
                raise StackError(f"PostgreSQL runs as user {owner.pw_name}, which cannot enter "
                                 f"{parent}; choose another directory or run: chmod o+x {parent}")

    def _owner(self) -> pwd.struct_passwd:
        # PostgreSQL refuses root; as root run it as the package's system user
        if os.geteuid() != 0:
            return pwd.getpwuid(os.geteuid())
        try:
            return pwd.getpwnam("postgres")
        except KeyError as exc:
            raise StackUnavailable("there is no 'postgres' system user (the postgresql package "
                                   "creates it); install it with scripts/bootstrap.sh") from exc

    def _run(self, cmd: list[str], owner: pwd.struct_passwd) -> tuple[int, str]:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=120, check=False, cwd=self.dir, **_as_user(owner))
        return proc.returncode, proc.stdout + proc.stderr

    def _ensure_app_role(self, timeout: float) -> PostgresInfo:
        import psycopg
        from psycopg import sql

        info = self.info()
        admin = _url(SUPERUSER, info.superuser_password, self.port, "postgres")
        conn = None

        def connected() -> bool:
            nonlocal conn
            try:
                conn = psycopg.connect(admin, connect_timeout=2, autocommit=True)
                return True
            except psycopg.OperationalError:  # "the database system is starting up"
                return not self.running()
        if not wait_until(connected, timeout=timeout, interval=0.05) or conn is None:
            raise StackError(f"postgres on {HOST}:{self.port} does not accept logins: "
                             f"{procs.last_line(self.log_file)} (log: {self.log_file})")
        with conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                (APP_USER,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(APP_USER), sql.Literal(APP_PASSWORD)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                (APP_DATABASE,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(APP_DATABASE), sql.Identifier(APP_USER)))
        return info


def _as_user(owner: pwd.struct_passwd) -> dict:
    if owner.pw_uid == os.geteuid():
        return {}
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": [],
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
                    "HOME": owner.pw_dir}}


def _last(out: str) -> str:
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
