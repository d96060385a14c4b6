"""Build runners from a project and run them, one thread per workflow.

``run_workflows(project, once=True)`` is what ``postline run`` calls; tests call it too,
with a fake ``reader_factory`` and clock.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postline.errors import Busy, ConfigError, PostlineError, os_error_message
from postline.files import FILE_MODE
from postline.protocols.base import MailboxReader
from postline.source.filters import AttachmentRules, MailFilter
from postline.source.record import file_key
from postline.source.schedule import Clock
from postline.state.ledger import Ledger
from postline.state.locks import ProcessLock
from postline.state.stores import open_ledger, shared_store
from postline.workflow.events import Broadcast, Events, MailEvent
from postline.workflow.mailjob import MailSettings
from postline.workflow.processor import Context, Services, load_processor
from postline.workflow.runner import WorkflowRunner, clean_work_dir
from postline.workflow.sink_factory import make_sink
from postline.workflow.sinks import DirectorySink, Sink

log = logging.getLogger("postline.workflow")

ReaderFactory = Callable[[Any], MailboxReader]   # connection model -> reader


# shorter runs get no mails/s in the summary line
MIN_RATE_SECONDS = 1.0


@dataclass
class Summary:
    """What ``postline run`` prints at exit."""

    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def mails(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "moved")

    def line(self) -> str:
        parts = [f"{self.counts.get(k, 0)} {k}" for k in ("done", "failed", "ignored")]
        for extra in ("duplicate", "interrupted"):
            if self.counts.get(extra):
                parts.append(f"{self.counts[extra]} {extra}")
        noun = "mail" if self.mails == 1 else "mails"
        text = f"{self.mails} {noun}: {', '.join(parts)} in {self.seconds:.1f}s"
        # a rate of a run shorter than a second (or of one mail) measures start-up, not speed
        if self.seconds >= MIN_RATE_SECONDS and self.mails > 1:
            rate = self.mails / self.seconds
            text += f" ({rate:.1f} mails/s)" if rate < 10 else f" ({rate:.0f} mails/s)"
        return text


class _Counting(Events):
    """Counts outcomes into the summary."""

    def __init__(self, summary: Summary) -> None:
        self.summary = summary
        self.lock = threading.Lock()

    def mail(self, event: MailEvent) -> None:
        with self.lock:
            self.summary.counts[event.label] += 1


def _stream_namer(project: Any, template: str) -> Callable[[dict[str, str]], str]:
    from postline.assets.macros import MacroContext, expand

    base = project.macro_context() if hasattr(project, "macro_context") else MacroContext()
    single = re.fullmatch(r"\$\{mail:([a-z_]+)\}", template)
    if single:  # the default "${mail:key}" and the like: no macro engine per mail
        field_name = single.group(1)

        def plain(macros: dict[str, str]) -> str:
            if field_name in macros:
                return macros[field_name]
            return expand(template, base.with_prefix("mail", macros))

        return plain

    def name(macros: dict[str, str]) -> str:
        return expand(template, base.with_prefix("mail", macros))

    return name


def _resolve(root: Path, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else root / path


def source_of(project: Any, workflow: Any) -> tuple[Any, Any, str]:
    """The EmailSource and EmailConnection models ``workflow`` reads, and the protocol it
    reads them with (``imap``, ``pop3`` or ``graph``). Raises ConfigError."""
    source = project.get("EmailSource", workflow.source)
    conn = project.get("EmailConnection", source.connection)
    if conn.type == "standard" and (conn.incoming is None or not conn.incoming.enabled):
        raise ConfigError(f"source {source.name}: connection {conn.name} has no incoming "
                          "IMAP or POP3 side", hint="add incoming: {protocol: imap, ...}")
    protocol = "graph" if conn.type == "microsoft365" else conn.incoming.protocol
    return source, conn, protocol


def attachments_home(project: Any, workflow: Any, sinks: list[Sink]
                     ) -> Callable[[str], Path]:
    """Where the stored attachments of the mail with a given ledger key go: the workflow's
    ``attachments_dir``, else beside the first directory sink's records, else the state
    directory."""
    root, state_dir = Path(project.root), Path(project.state_dir)
    first_dir = next((s for s in sinks if isinstance(s, DirectorySink)), None)
    if workflow.attachments_dir:
        att_root = _resolve(root, workflow.attachments_dir)

        def home(key: str) -> Path:
            return att_root / file_key(key)
        return home
    if first_dir is not None:
        return first_dir.attachments_dir

    def fallback(key: str) -> Path:
        return state_dir / "attachments" / workflow.name / file_key(key)
    return fallback


def attachments_mode(workflow: Any, sinks: list[Sink]) -> int:
    """The file mode of stored attachments: beside the first directory sink's records they
    are as private as those records (its ``mode``), elsewhere FILE_MODE."""
    first_dir = next((s for s in sinks if isinstance(s, DirectorySink)), None)
    if workflow.attachments_dir or first_dir is None:
        return FILE_MODE
    return first_dir.mode


def mail_settings(project: Any, workflow: Any, *, source: Any, conn: Any, work_dir: Path,
                  sinks: list[Sink], home: Callable[[str], Path],
                  service_opener: Callable[[str], Any] | None = None) -> MailSettings:
    """What one mail of ``workflow`` goes through (filters, attachment rules, stream
    name, processor with its services, ``sinks``): shared by the runner and by
    ``postline try``. ``service_opener`` maps an EmailService name to the object
    ``ctx.services`` hands out (default: the running service). Raises ConfigError (a
    processor that cannot be loaded)."""
    processor = None
    if workflow.processor:
        processor = load_processor(_resolve(Path(project.root), workflow.processor),
                                   workflow=workflow.name)
    if service_opener is None:
        def service_opener(asset: str) -> Any:
            from postline.service import open_service

            return open_service(project, asset)
    context = Context(services=Services(workflow.services, service_opener),
                      log=logging.getLogger(f"postline.processor.{workflow.name}"),
                      source=source, workflow=workflow.name)
    f = source.failure
    return MailSettings(
        source=source.name, connection=conn.name,
        stream_name=_stream_namer(project, source.stream_name),
        mail_filter=MailFilter.from_config(source.filters),
        attachments=AttachmentRules.from_config(source.attachments),
        reprocess=source.reprocess, on_failure=f.on_failure, max_retries=f.max_retries,
        min_backoff=f.min_backoff, max_backoff=f.max_backoff, work_dir=work_dir,
        attachments_home=home, sinks=sinks, processor=processor, context=context,
        file_mode=attachments_mode(workflow, sinks))


def build_runner(project: Any, workflow: Any, *, stop: threading.Event, ledger: Ledger,
                 reader_factory: ReaderFactory | None = None, clock: Clock | None = None,
                 events: Events | None = None, service_opener=None,
                 committer_factory=None) -> WorkflowRunner:
    """A runner for the Workflow model ``workflow`` (``committer_factory``: see
    WorkflowRunner). Raises ConfigError."""
    source, conn, protocol = source_of(project, workflow)
    work_dir = Path(project.state_dir) / "work" / workflow.name
    clean_work_dir(work_dir)
    sinks = [make_sink(cfg, root=Path(project.root), ledger=ledger) for cfg in workflow.sinks]
    settings = mail_settings(project, workflow, source=source, conn=conn, work_dir=work_dir,
                             sinks=sinks, home=attachments_home(project, workflow, sinks),
                             service_opener=service_opener)
    if reader_factory is None:
        from postline.protocols import open_reader

        def reader_factory(c: Any) -> MailboxReader:
            return open_reader(project, c)
    return WorkflowRunner(name=workflow.name, source=source, settings=settings, ledger=ledger,
                          reader_factory=lambda: reader_factory(conn),
                          protocol=protocol, stop=stop, clock=clock,
                          events=events, committer_factory=committer_factory)


def select_workflows(project: Any, names: list[str] | None) -> list[Any]:
    """The Workflow models to run: ``names`` or all. Raises ConfigError."""
    all_wf = project.assets("Workflow")
    if names:
        by_name = {w.name: w for w in all_wf}
        missing = [n for n in names if n not in by_name]
        if missing:
            known = ", ".join(sorted(by_name)) or "none"
            raise ConfigError(f"no Workflow named {missing[0]!r} in the project (known: {known})")
        chosen = [by_name[n] for n in names]
    else:
        chosen = list(all_wf)
    if not chosen:
        raise ConfigError("the project has no Workflow asset",
                          hint="add one: kind: Workflow, source: ..., sinks: [...]")
    sources: dict[str, str] = {}
    for w in chosen:
        if w.source in sources:
            raise ConfigError(f"workflows {sources[w.source]} and {w.name} both read source "
                              f"{w.source}; each mail would be taken twice",
                              hint="give each workflow its own EmailSource")
        sources[w.source] = w.name
    return chosen


def source_lock(state_dir: Path, source: str) -> ProcessLock:
    """The lock that makes one process the only reader of ``source`` in ``state_dir``."""
    return ProcessLock(Path(state_dir) / "locks" / f"source-{file_key(source)}.lock")


def lock_sources(project: Any, workflows: list[Any]) -> list[ProcessLock]:
    """Hold the source lock of every workflow, or raise Busy naming the holder (and hold
    none): two processes reading one source with one ledger would each deliver every mail,
    and each would empty the other's scratch directory at start."""
    held: list[ProcessLock] = []
    for wf in workflows:
        lock = source_lock(project.state_dir, wf.source)
        if not lock.try_acquire():
            for other in held:
                other.release()
            holder = lock.holder()
            who = holder.describe() if holder else "another process"
            raise Busy(f"source {wf.source} (workflow {wf.name}) is already being read by "
                       f"another postline run: {who}; state {project.state_dir}",
                       hint="one process per source: stop that one first, or pick other "
                            "workflows with --workflow")
        held.append(lock)
    return held


def run_workflows(project: Any, *, names: list[str] | None = None, once: bool = False,
                  stop: threading.Event | None = None, events: Events | None = None,
                  reader_factory: ReaderFactory | None = None, clock: Clock | None = None,
                  service_opener=None, instance: str | None = None) -> Summary:
    """Run the workflows until ``stop`` (or one round each with ``once``).

    Returns the summary; fatal errors of a workflow are in ``summary.errors`` (the others
    go on). Raises ConfigError when the workflows cannot be built at all, Busy when
    another process already reads one of their sources with this state directory. With a
    postgresql StateStore this process is one member of a fleet named ``instance``
    (default host:pid) and runs the sources it leases (workflow/fleet.py).
    """
    stop = stop or threading.Event()
    summary = Summary()
    counting = Broadcast([_Counting(summary), *([events] if events else [])])
    chosen = select_workflows(project, names)
    store = shared_store(project)
    if store is not None:   # a fleet: leases on PostgreSQL instead of flocks
        from postline.workflow.fleet import run_fleet

        def build(wf: Any, own_stop: threading.Event, ledger: Ledger, evs: Events
                  ) -> WorkflowRunner:
            return build_runner(project, wf, stop=own_stop, ledger=ledger,
                                reader_factory=reader_factory, clock=clock, events=evs,
                                service_opener=service_opener)
        t0 = time.perf_counter()
        try:
            run_fleet(project, chosen=chosen, store=store, instance=instance, once=once,
                      stop=stop, counting=counting, summary=summary, build=build)
        finally:
            summary.seconds = time.perf_counter() - t0
        return summary
    locks = lock_sources(project, chosen)
    ledger: Ledger | None = None
    runners: list[WorkflowRunner] = []
    t0 = time.perf_counter()
    try:
        ledger = open_ledger(project)
        for wf in chosen:
            runners.append(build_runner(project, wf, stop=stop, ledger=ledger,
                                        reader_factory=reader_factory, clock=clock,
                                        events=counting, service_opener=service_opener))
        for runner in runners:
            if runner.s.context is not None:
                # now, not on the processor's first call: mails queued before this start
                # are delivered even when no new mail comes in
                runner.s.context.services.open_all()

        def work(runner: WorkflowRunner) -> None:
            try:
                runner.run(once=once)
            except PostlineError as exc:
                summary.errors[runner.name] = str(exc)   # printed by the caller
                log.debug("workflow %s stopped: %s", runner.name, exc)
            except OSError as exc:
                summary.errors[runner.name] = os_error_message(exc)
                log.debug("workflow %s stopped", runner.name, exc_info=True)
            except BaseException as exc:  # noqa: BLE001 - a thread must not end unreported
                # (SystemExit and the like would end this thread silently: exit status 0)
                summary.errors[runner.name] = f"{type(exc).__name__}: {exc}"
                log.exception("workflow %s crashed", runner.name)
            finally:
                counting.stopped(runner.name, summary.errors.get(runner.name))

        threads = [threading.Thread(target=work, args=(r,), name=f"workflow-{r.name}",
                                    daemon=True) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    finally:
        # the Email Services of the processors once every workflow has ended: workflows
        # share them (one per project and name), so one that ends early must not close
        # them for the others (their queued SendAndForget mails are sent by close())
        for runner in runners:
            if runner.s.context is not None:
                runner.s.context.services.close()
        summary.seconds = time.perf_counter() - t0
        if ledger is not None:
            ledger.close()
        for lock in locks:
            lock.release()
    return summary
