"""``postline run`` as one member of a fleet: the sources of a project with a postgresql
StateStore are shared by every instance that runs it (docs/cluster.md).

Every heartbeat the coordinator (the thread that calls :func:`run_fleet`):

1. records this instance's heartbeat and counts the live instances;
2. renews the lease of every source it runs; a lease it lost (expired while this process
   was frozen or cut off from the database, or taken) stops that source's runner at once
   (its token is dropped first, so any write it still tries is refused) and says why;
3. gives back sources above its fair share (``ceil(sources / live instances)``): the
   runner stops after its batch commits, then the lease is released;
4. takes free or expired sources up to its share, each with a new fencing token, and
   starts a runner for each.

On stop (SIGTERM, Ctrl-C) every runner finishes its batch, then every lease is released at
once so the others take over without waiting for expiry. Without a database for longer than
a lease, the runners stop (their leases are gone: never unfenced) and start again when it is
back. No flock is taken: the lease is the lock.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postline.errors import PostlineError, StorageError, os_error_message
from postline.state.leases import Holdings, Leases
from postline.state.pg_ledger import Fenced
from postline.version import __version__
from postline.workflow.events import Broadcast, Events

log = logging.getLogger("postline.fleet")


def default_instance_name() -> str:
    """``host:pid``: unique on a machine, readable in ``cluster status``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def assets_hash(project: Any) -> str:
    """A short hash of the project's asset files (their names and bytes): instances that
    run different configurations are told apart by it."""
    root = Path(project.root)
    state = Path(project.state_dir).resolve()
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.y*ml")):
        if state in path.resolve().parents:
            continue
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass
class _Running:
    workflow: Any
    token: int
    stop: threading.Event
    thread: threading.Thread
    release_when_done: bool = False
    fenced: bool = False
    runners: list[Any] = field(default_factory=list)


class _RoundNotes(Events):
    """Notes each finished round on the lease (``cluster status``: last round)."""

    def __init__(self, leases: Leases, holdings: Holdings, sources: dict[str, str]) -> None:
        self.leases, self.holdings, self.sources = leases, holdings, sources

    def round_done(self, workflow: str) -> None:
        source = self.sources.get(workflow)
        token = self.holdings.token(source) if source else None
        if token is not None:
            try:
                self.leases.round_done(source, token)
            except StorageError:
                pass   # a note for the status; the next round writes it again


def run_fleet(project: Any, *, chosen: list[Any], store: Any, instance: str | None,
              once: bool, stop: threading.Event, counting: Events, summary: Any,
              build: Any) -> None:
    """Run ``chosen`` workflows as a member of the fleet until ``stop`` (with ``once``: one
    round of every source this instance can lease now, then return). ``build(workflow,
    stop, ledger, events)`` makes a runner. Fatal errors of a workflow go into
    ``summary.errors``. Raises ConfigError, ConnectError, AuthError (the StateStore cannot
    be used: nothing was touched)."""
    from postline.state.pg_ledger import open_pg_ledger
    from postline.state.postgres import open_pool, target_of

    name = instance or default_instance_name()
    # the pool's own warnings repeat every reconnect attempt; ours says it once a heartbeat
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    holdings = Holdings(owner=name)
    ledger = open_pg_ledger(project, fence=holdings)    # migrates the schema first
    target = target_of(project)
    pool = open_pool(target, max_size=2, name="postline-leases")
    leases = Leases(pool=pool, schema=target.schema, owner=name,
                    lease_seconds=store.lease_seconds)
    by_source = {wf.source: wf for wf in chosen}
    events = Broadcast([counting, _RoundNotes(leases, holdings,
                                              {wf.name: wf.source for wf in chosen})])
    running: dict[str, _Running] = {}
    built: list[Any] = []
    flagged: set[str] = set()
    failed: set[str] = set()           # a fatal error here: not taken again by this one
    took_once: list[bool] = []

    def start(wf: Any, token: int) -> None:
        own_stop = threading.Event()
        entry = _Running(workflow=wf, token=token, stop=own_stop, thread=None)  # type: ignore
        try:
            runner = build(wf, own_stop, ledger, events)
        except PostlineError as exc:
            summary.errors[wf.name] = str(exc)
            failed.add(wf.source)
            leases.release(wf.source, token)
            holdings.set(wf.source, None)
            return
        built.append(runner)
        if runner.s.context is not None:
            runner.s.context.services.open_all()

        def work() -> None:
            try:
                runner.run(once=once)
            except Fenced as exc:
                entry.fenced = True
                log.warning("%s; stopped its runner, taking part again as a new owner", exc)
            except PostlineError as exc:
                summary.errors[wf.name] = str(exc)
                failed.add(wf.source)
            except OSError as exc:
                summary.errors[wf.name] = os_error_message(exc)
                failed.add(wf.source)
            except BaseException as exc:  # noqa: BLE001 - a thread must not end unreported
                summary.errors[wf.name] = f"{type(exc).__name__}: {exc}"
                failed.add(wf.source)
                log.exception("workflow %s crashed", wf.name)
            finally:
                counting.stopped(wf.name, summary.errors.get(wf.name))

        entry.thread = threading.Thread(target=work, name=f"workflow-{wf.name}", daemon=True)
        running[wf.source] = entry
        log.info("instance %s: took source %s (token %d)", name, wf.source, token)
        entry.thread.start()

    def lose(source: str, why: str) -> None:
        entry = running[source]
        holdings.set(source, None)     # first: any write it still tries is refused
        entry.stop.set()
        entry.release_when_done = False
        log.warning("instance %s: source %s (token %d): %s; stopping its runner", name,
                    source, entry.token, why)

    def reap() -> None:
        for source, entry in list(running.items()):
            if entry.thread.is_alive():
                continue
            del running[source]
            token = holdings.token(source)
            holdings.set(source, None)
            if token is not None:
                try:
                    leases.release(source, token)
                except StorageError:
                    pass   # it expires by itself

    def tick() -> None:
        reap()
        live = leases.beat()
        counting.fleet(instance=name, live=live,
                       differing=_flag_strangers(leases, name, flagged))
        for source, entry in list(running.items()):
            if holdings.token(source) is None:
                continue
            if not leases.renew(source, entry.token):
                lose(source, "lost the lease (it expired or another instance took it: "
                             "this process was frozen or cut off)")
        if once and took_once:
            return      # --once: one pass of taking, then only renewing until done
        took_once.append(True)
        share = len(by_source) if once else math.ceil(len(by_source) / max(live, 1))
        floor = len(by_source) // max(live, 1)
        held = [s for s in running if holdings.token(s) is not None]
        for source in held[share:]:
            if not running[source].stop.is_set():
                log.info("instance %s: giving source %s back (%d live instances, share %d)",
                         name, source, live, share)
                running[source].stop.set()
        # ceil() alone can leave a new instance with nothing (4 sources, 3 instances: 2,
        # 2, 0) or wait long for its share: while a newly joined live instance holds less
        # than floor(), those above floor() give the extra sources back (each after its
        # batch) and nobody takes more than floor(); the newcomer takes them next heartbeat
        starving = not once and _others_below(leases, name, floor, beat)
        if starving:
            keeping = [s for s in held if not running[s].stop.is_set()]
            for source in keeping[floor:]:
                log.info("instance %s: giving source %s back (a new instance holds fewer "
                         "than %d)", name, source, floor)
                running[source].stop.set()
            share = min(share, floor)
        for wf in chosen:   # /status, /metrics: who reads what, per heartbeat
            token = holdings.token(wf.source)
            counting.lease(wf.name, owned=token is not None, token=token)
        free = [s for s in by_source if s not in running and s not in failed]
        random.shuffle(free)
        for source in free:
            if len(running) >= share:
                break
            token = leases.acquire(source)
            if token is not None:
                holdings.set(source, token)
                start(by_source[source], token)

    leases.join(host=socket.gethostname(), pid=os.getpid(), version=__version__,
                assets_hash=assets_hash(project))
    beat = store.heartbeat
    last_ok = time.monotonic()
    try:
        while not stop.is_set():
            try:
                tick()
                last_ok = time.monotonic()
            except StorageError as exc:
                log.warning("instance %s: the StateStore is not answering (%s)", name, exc)
                if time.monotonic() - last_ok >= store.lease_seconds:
                    for source in list(running):
                        if holdings.token(source) is not None:
                            lose(source, "no lease renewal for longer than the lease "
                                         "(database unreachable)")
            if once and took_once and not any(e.thread.is_alive()
                                              for e in running.values()):
                break
            stop.wait(beat)
    finally:
        for entry in running.values():
            entry.stop.set()
        for entry in running.values():
            while entry.thread.is_alive():
                entry.thread.join(0.2)
        for source in list(running):
            token = holdings.token(source)
            holdings.set(source, None)
            if token is not None:
                try:
                    leases.release(source, token)
                except StorageError:
                    pass
        for runner in built:
            if runner.s.context is not None:
                runner.s.context.services.close()
        try:
            leases.leave()
        except StorageError:
            pass
        pool.close()
        ledger.close()


def _others_below(leases: Leases, me: str, floor: int, beat: float) -> bool:
    """Whether a live instance other than ``me`` that joined in the last five heartbeats
    holds fewer than ``floor`` sources. (An older one that still holds fewer cannot take
    more, e.g. it runs other workflows: waiting for it would leave sources unread.)"""
    if floor <= 0:
        return False
    counts: dict[str | None, int] = {}
    for row in leases.rows():
        if row.held:
            counts[row.owner] = counts.get(row.owner, 0) + 1
    return any(counts.get(m.name, 0) < floor for m in leases.members()
               if m.live and m.name != me and
               (m.heartbeat_at - m.started_at).total_seconds() < 5 * beat)


def _flag_strangers(leases: Leases, me: str, flagged: set[str]) -> list[str]:
    """The live instances whose postline version or assets differ from this one's; each is
    logged once."""
    members = {m.name: m for m in leases.members() if m.live}
    mine = members.get(me)
    if mine is None:
        return []
    differing = [m.name for m in members.values() if m.name != me and
                 (m.version, m.assets_hash) != (mine.version, mine.assets_hash)]
    for m in members.values():
        if m.name in flagged or m.name not in differing:
            continue
        flagged.add(m.name)
        log.warning("instance %s runs postline %s with assets %s, this one (%s) postline "
                    "%s with assets %s: the fleet runs two configurations (intended only "
                    "during a rolling upgrade)", m.name, m.version, m.assets_hash, me,
                    mine.version, mine.assets_hash)
    return differing
