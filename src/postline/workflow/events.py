"""What a running workflow tells its observers: the CLI's progress bar and summary, the
status endpoint (workflow/status.py). Every hook defaults to doing nothing, is called from
the workflow's own thread, and must return quickly (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class MailEvent:
    workflow: str
    key: str
    subject: str
    label: str             # done | failed | ignored | duplicate | moved | interrupted
    reason: str | None
    ms: float


class Events:
    """Callbacks of one run (defaults: do nothing)."""

    def backlog(self, workflow: str, count: int) -> None:
        """A round found ``count`` mails to work on."""

    def mail(self, event: MailEvent) -> None:
        """One mail is committed (or ignored, or moved)."""

    def connected(self, workflow: str) -> None:
        """The source's mailbox is connected and logged in."""

    def disconnected(self, workflow: str, reason: str, retry_in: float) -> None:
        """The connection was lost (or the disk is full); the next try is in ``retry_in``
        seconds."""

    def round_done(self, workflow: str) -> None:
        """A polling round worked through the input folder (or reached its timeout)."""

    def alive(self, workflow: str) -> None:
        """The workflow is waiting for the next round (at least every two seconds)."""

    def stopped(self, workflow: str, error: str | None) -> None:
        """The workflow's loop ended: on request (``error`` None) or on a fatal error."""

    def lease(self, workflow: str, *, owned: bool, token: int | None = None) -> None:
        """A fleet (a postgresql StateStore): whether this instance holds the lease of the
        workflow's source now, and its fencing token (every heartbeat)."""

    def fleet(self, *, instance: str, live: int, differing: list[str]) -> None:
        """A fleet, every heartbeat: this instance's name, how many instances are live and
        the names of those whose postline version or assets differ from this one's."""


class Broadcast(Events):
    """Every hook called on each of ``targets``, in order."""

    def __init__(self, targets: Iterable[Events]) -> None:
        self.targets = list(targets)

    def backlog(self, workflow: str, count: int) -> None:
        for t in self.targets:
            t.backlog(workflow, count)

    def mail(self, event: MailEvent) -> None:
        for t in self.targets:
            t.mail(event)

    def connected(self, workflow: str) -> None:
        for t in self.targets:
            t.connected(workflow)

    def disconnected(self, workflow: str, reason: str, retry_in: float) -> None:
        for t in self.targets:
            t.disconnected(workflow, reason, retry_in)

    def round_done(self, workflow: str) -> None:
        for t in self.targets:
            t.round_done(workflow)

    def alive(self, workflow: str) -> None:
        for t in self.targets:
            t.alive(workflow)

    def stopped(self, workflow: str, error: str | None) -> None:
        for t in self.targets:
            t.stopped(workflow, error)

    def lease(self, workflow: str, *, owned: bool, token: int | None = None) -> None:
        for t in self.targets:
            t.lease(workflow, owned=owned, token=token)

    def fleet(self, *, instance: str, live: int, differing: list[str]) -> None:
        for t in self.targets:
            t.fleet(instance=instance, live=live, differing=differing)
