"""Starting and stopping the stack's processes by PID, and reading their logs.

Only processes this stack started are ever signalled: a PID is used only while its command line
still contains a marker of this stack (its config path or port), so a recycled PID of some other
program is left alone.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import tempfile
from pathlib import Path

from postline.testing.ports import wait_until

# Popen objects of servers started from this Python process: kept so they are reaped (no zombies
# that would still look alive) and never garbage-collected while running.
_CHILDREN: dict[int, subprocess.Popen] = {}


def run(cmd: list[str], *, tty: bool = False, timeout: float = 30.0) -> tuple[int, str]:
    """Run ``cmd`` and return (exit status, combined output).

    ``tty=True`` runs it under ``script`` because Postfix writes its errors only to a terminal
    (or syslog); under a pipe it would just exit 1 without saying why.
    """
    if tty:
        cmd = ["script", "-qec", shlex.join(cmd), "/dev/null"]
    # a file, not a pipe: daemons keep the inherited pipe open and communicate() would hang
    with tempfile.TemporaryFile() as out:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
        out.seek(0)
        text = out.read().decode(errors="replace").replace("\r\n", "\n")
    return proc.returncode, text


def spawn(cmd: list[str], *, log_file: Path, pid_file: Path, cwd: Path | None = None) -> int:
    """Start a long-running server in its own session, output to ``log_file``. Returns its PID."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=cwd, start_new_session=True, close_fds=True)
    _CHILDREN[proc.pid] = proc
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def read_pid(pid_file: Path) -> int | None:
    """The PID in ``pid_file`` (Postfix pads it with spaces), or None."""
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        del _CHILDREN[pid]


def alive(pid: int | None, marker: str, *, cwd: Path | None = None) -> bool:
    """True when ``pid`` runs (not a zombie), its command line contains ``marker`` and, if
    given, its working directory is ``cwd``."""
    if not pid:
        return False
    _reap(pid)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if cwd is not None and Path(os.readlink(f"/proc/{pid}/cwd")) != cwd:
            return False
    except (OSError, IndexError):
        return False
    return state != "Z" and marker in cmdline


def terminate(pid: int | None, marker: str, *, cwd: Path | None = None,
              timeout: float = 5.0) -> None:
    """SIGTERM ``pid`` if it is still ours, wait for it to exit, SIGKILL after ``timeout``."""
    if not alive(pid, marker, cwd=cwd):
        return
    assert pid is not None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_until(lambda: not alive(pid, marker, cwd=cwd), timeout=timeout):
            return


def last_line(log_file: Path, *, containing: tuple[str, ...] = ("rror", "atal", "panic")) -> str:
    """The last log line with one of ``containing`` (else the last line), for one-line errors."""
    try:
        lines = [ln.strip() for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    for ln in reversed(lines[-200:]):
        if any(word in ln for word in containing):
            return ln
    return lines[-1] if lines else "log is empty"
