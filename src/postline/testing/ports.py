"""Port layout of the local mail stack, and waiting for ports (never sleeping blindly)."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping

HOST = "127.0.0.1"

# Offsets from the base port: base 10000 gives imap 10143, imaps 10993, ..., oidc 18443.
# Mirrors the well-known ports so a user can guess them; a second stack just takes another base.
PORT_OFFSETS: dict[str, int] = {
    "imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995, "lmtp": 24,
    "smtp": 587, "smtps": 465, "smtp_sink": 28, "oidc": 8443, "postgres": 5432,
}
SERVICES = tuple(PORT_OFFSETS)
DEFAULT_BASE_PORT = 10000

DESCRIPTIONS: dict[str, str] = {
    "imap": "Dovecot IMAP, plaintext + STARTTLS",
    "imaps": "Dovecot IMAP, implicit TLS",
    "pop3": "Dovecot POP3, plaintext + STLS",
    "pop3s": "Dovecot POP3, implicit TLS",
    "lmtp": "Dovecot LMTP (delivery into mailboxes)",
    "smtp": "Postfix submission, plaintext + STARTTLS, AUTH",
    "smtps": "Postfix submission, implicit TLS, AUTH",
    "smtp_sink": "Postfix smtp-sink (accepts and discards; benchmarks)",
    "oidc": "oidc-provider, HTTPS",
    "postgres": "PostgreSQL (StateStore), role postline / postline-pass, database postline",
}


def ports_from_base(base: int) -> dict[str, int]:
    """The fixed port of every service for ``base``. Raises ValueError when out of range."""
    if not 1024 <= base <= 65535 - max(PORT_OFFSETS.values()):
        raise ValueError(f"base port {base} is out of range: use 1024..{65535 - 8443}")
    return {name: base + off for name, off in PORT_OFFSETS.items()}


def free_ports(count: int = len(SERVICES)) -> dict[str, int]:
    """Distinct free ports on 127.0.0.1 for the first ``count`` services, chosen by the kernel.

    All sockets are held open until every port is chosen, so no two services get the same one.
    """
    socks = []
    try:
        for _ in range(min(count, len(SERVICES))):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return {name: s.getsockname()[1] for name, s in zip(SERVICES, socks, strict=False)}
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """One free port on 127.0.0.1, chosen by the kernel."""
    return next(iter(free_ports(1).values()))


def port_open(port: int, host: str = HOST, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listening_ports() -> set[int] | None:
    """Ports with a TCP socket in LISTEN state on 127.0.0.1 or any address (from /proc/net/tcp).

    Returns None where /proc is not available. Used instead of connecting, because a probe
    connection makes Dovecot fork a login process that can delay its shutdown by seconds.
    """
    found: set[int] = set()
    try:
        with open("/proc/net/tcp") as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                addr, port = fields[1].split(":")
                if fields[3] == "0A" and addr in ("0100007F", "00000000"):
                    found.add(int(port, 16))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return found


def port_listening(port: int) -> bool:
    """True when something listens on 127.0.0.1:``port`` (without connecting, where possible)."""
    listening = listening_ports()
    return port_open(port) if listening is None else port in listening


def busy_ports(ports: Mapping[str, int]) -> dict[str, int]:
    """The subset of ``ports`` that something already listens on."""
    return {name: p for name, p in ports.items() if port_listening(p) or port_open(p)}


def wait_until(condition, *, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds passed. Returns the last
    result as a bool (:func:`postline.testing.waits.poll`)."""
    from postline.testing.waits import poll

    return bool(poll(condition, timeout=timeout, interval=interval))


def wait_ports(ports: Iterable[int], *, open_: bool, timeout: float) -> list[int]:
    """Wait until every port is open (``open_``) or closed. Returns the ports that are not."""
    pending = list(ports)

    def done() -> bool:
        listening = listening_ports()
        if listening is None:
            pending[:] = [p for p in pending if port_open(p) != open_]
        else:
            pending[:] = [p for p in pending if (p in listening) != open_]
        return not pending

    wait_until(done, timeout=timeout)
    return pending
