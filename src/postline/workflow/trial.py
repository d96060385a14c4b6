"""``postline try``: a workflow run on given mails, minus the server and the ledger.

Each mail goes through exactly what a round does to it (``mailjob.prepare`` and
``mailjob.deliver`` with the :class:`MailSettings` the runner builds, see
``engine.mail_settings``): the source's filters, parsing, attachment rules, the stream
name, the processor with its services, and the sinks. What differs, so that trying has no
effects:

* no ledger (no duplicate check against earlier rounds, no entry written) and no server
  action: the folder the mail would go to is reported instead;
* attachments go to a temporary directory and no sink is written, unless ``write_sinks``;
* the services hand out :class:`TrialService`: every ``Send``/``SendAndForget`` is checked
  as the real service checks it and written down, and sent only with ``send``;
* a failing processor is not retried (``failure: retry`` would try it again later).

The processor is watched: what it raised (with the traceback's last frames in its file),
what it changed in the record, and whether it touched the record's key.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import shutil
import tempfile
import threading
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postline.protocols.base import RawMessage, SendResult
from postline.service.message import normalise
from postline.service.mime import new_identity
from postline.service.results import QueuedMail
from postline.source.record import file_key
from postline.source.schedule import Clock
from postline.workflow.batch import INLINE_LIMIT
from postline.workflow.engine import attachments_home, mail_settings, select_workflows, source_of
from postline.workflow.mailjob import JobResult, deliver, prepare
from postline.workflow.processor import Processor, _shown
from postline.workflow.runner import server_action
from postline.workflow.sink_factory import make_sink
from postline.workflow.sinks import Sink
from postline.workflow.trial_mails import MailFile, peek, read_files

TRACE_FRAMES = 3   # the traceback's last frames shown for a failing processor


@dataclass
class Sent:
    """One ``Send``/``SendAndForget`` of the processor, as the service saw it."""

    service: str
    method: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    sent: bool
    message_id: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrialResult:
    """What a round would do with one mail."""

    mail: str                  # the file (or Maildir/mbox entry, or server key) tried
    key: str
    outcome: str               # done | ignored | failed
    reason: str | None
    folder: str                # where the mail would go: a folder, "deleted" or "stays"
    subject: str
    record: dict[str, Any] | None = None   # the record the sinks got (done), else the one
    #                                        handed to the processor (or None: not built)
    changes: dict[str, Any] = field(default_factory=dict)   # what the processor changed
    traceback: list[str] = field(default_factory=list)
    sends: list[Sent] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sends"] = [s.to_json() for s in self.sends]
        return d


class TrialService:
    """An Email Service as a processor sees it in ``postline try``: each message is
    normalised as the real service does (an invalid one raises MessageError into the
    processor, as it would in a round) and written down; ``real`` (with ``--send``) then
    sends it."""

    def __init__(self, *, name: str, default_from: str | None, real: Any | None,
                 sends: list[Sent]) -> None:
        self.name = name
        self._default_from = default_from
        self._real = real
        self._sends = sends

    def __repr__(self) -> str:
        return f"<EmailService {self.name} ({'sending' if self._real else 'not sending'})>"

    def _note(self, method: str, message: Any) -> tuple[Sent, list[str]]:
        """The message written down, and its envelope recipients; raises MessageError."""
        try:
            out = normalise(message, default_from=self._default_from)
        except Exception as exc:
            self._sends.append(Sent(service=self.name, method=method, to=[], cc=[], bcc=[],
                                    subject=str(message.get("Subject", "")) if
                                    isinstance(message, dict) else "", sent=False,
                                    error=str(exc)))
            raise
        sent = Sent(service=self.name, method=method, to=[_addr(a) for a in out.to],
                    cc=[_addr(a) for a in out.cc], bcc=[_addr(a) for a in out.bcc],
                    subject=out.subject, sent=False,
                    message_id=None if self._real else new_identity(out).message_id)
        self._sends.append(sent)
        return sent, [a.addr for a in out.recipients]

    def Send(self, message: Any, *, timeout: float | None = None) -> SendResult:
        """Written down; sent and the server's answer returned only with ``--send``."""
        sent, recipients = self._note("Send", message)
        if self._real is None:
            return SendResult(message_id=sent.message_id or "", accepted=recipients,
                              server_reply="not sent (postline try)")
        try:
            result = self._real.Send(message, timeout=timeout)
        except Exception as exc:
            sent.error = str(exc)
            raise
        sent.sent, sent.message_id = True, result.message_id
        return result

    def SendAndForget(self, message: Any) -> QueuedMail:
        """Written down; queued in the real outbox only with ``--send``."""
        sent, _ = self._note("SendAndForget", message)
        if self._real is None:
            return QueuedMail(id=0, message_id=sent.message_id or "", service=self.name,
                              state="not sent")
        try:
            queued = self._real.SendAndForget(message)
        except Exception as exc:
            sent.error = str(exc)
            raise
        sent.sent, sent.message_id = True, queued.message_id
        return queued

    async def asend(self, message: Any) -> SendResult:
        return self.Send(message)

    async def asend_and_forget(self, message: Any) -> QueuedMail:
        return self.SendAndForget(message)

    send = Send
    send_and_forget = SendAndForget

    def close(self) -> None:
        """Close the real service (its queued mails are sent first); never raises."""
        if self._real is not None:
            self._real.close()


def _addr(a: Any) -> str:
    return f"{a.name} <{a.addr}>" if a.name else a.addr


@dataclass
class _Watch:
    """What the processor did to the mail being tried."""

    before: dict[str, Any] | None = None
    error: BaseException | None = None
    frames: list[str] = field(default_factory=list)
    returned: Any = None
    warnings: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.before, self.error, self.returned = None, None, None
        self.frames, self.warnings = [], []


def _watched(fn: Processor, watch: _Watch) -> Processor:
    """``fn`` that fills ``watch`` as it runs. Wrapped so that the processor module and
    its file (which ``apply`` names in errors) stay ``fn``'s."""
    source = getattr(getattr(fn, "__code__", None), "co_filename", None)
    filename = _shown(source) if source else "?"
    line = getattr(getattr(fn, "__code__", None), "co_firstlineno", "?")

    @functools.wraps(fn)
    def on_message(record: dict[str, Any], ctx: Any) -> Any:
        watch.before = copy.deepcopy(record)
        key = record.get("key")
        try:
            result = fn(record, ctx)
        except BaseException as exc:
            # taken now: on its way up the traceback grows by postline's own frames
            watch.error, watch.frames = exc, _frames(exc, source)
            raise
        watch.returned = result
        if result is not None and not isinstance(result, dict):
            watch.warnings.append(f"on_message ({filename}:{line}) returned a "
                                  f"{type(result).__name__}, not a record: return the "
                                  "record (a dict) or None")
        out = record if result is None else result
        if isinstance(out, dict) and "key" in out and out["key"] != key:
            watch.warnings.append(f"on_message ({filename}:{line}) changed the record's key "
                                  f"to {out['key']!r}; a round keeps the ledger key {key} "
                                  "(put your own id in another field)")
        return result

    return on_message


def _frames(exc: BaseException, source: str | None) -> list[str]:
    """The traceback's last frames below the watcher, as ``File "f", line n, in fn`` plus
    the source line; the innermost frame in the processor file ``source`` is always among
    them (an error deep in a library called by the processor still shows the processor's
    line), with ``...`` for the frames left out between."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    first = max(len(frames) - TRACE_FRAMES, 0)
    mine = max((i for i, f in enumerate(frames) if f.filename == source), default=None)
    chosen: list[int | None] = list(range(first, len(frames)))
    if mine is not None and mine < first:
        chosen = [mine, *([None] if mine + 1 < first else []), *chosen]
    out = []
    for i in chosen:
        if i is None:
            out.append("...")
            continue
        f = frames[i]
        out.append(f'File "{_shown(f.filename)}", line {f.lineno}, in {f.name}')
        if f.line:
            out.append(f"  {f.line}")
    return out


def _changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    if before is None or after is None:
        return {}
    added = {k: v for k, v in after.items() if k not in before}
    changed = {k: v for k, v in after.items() if k in before and before[k] != v
               and k != "key"}
    removed = [k for k in before if k not in after]
    return {k: v for k, v in (("added", added), ("changed", changed), ("removed", removed))
            if v}


class _Capture(Sink):
    """The first sink of a trial: keeps the record the sinks get."""

    label = "trial"

    def __init__(self) -> None:
        self.record: dict[str, Any] | None = None

    def write(self, record: dict[str, Any], raw: RawMessage) -> None:
        self.record = record


class Trial:
    """A workflow of ``project`` ready to try mails on; use ``with``. Raises ConfigError
    (unknown workflow, a processor that does not load) when built."""

    def __init__(self, project: Any, workflow: str, *, write_sinks: bool = False,
                 send: bool = False) -> None:
        [wf] = select_workflows(project, [workflow])
        self.project, self.workflow = project, wf
        self.source, self.conn, self.protocol = source_of(project, wf)
        self.write_sinks = write_sinks
        self.tmp = Path(tempfile.mkdtemp(prefix="postline-try-"))
        self.sends: list[Sent] = []
        self.sinks: list[Sink] = ([make_sink(c, root=Path(project.root), project=project)
                                   for c in wf.sinks]
                                  if write_sinks else [])
        home = (attachments_home(project, wf, self.sinks) if write_sinks
                else lambda key: self.tmp / "attachments" / file_key(key))

        def trial_service(asset: str) -> TrialService:
            model = project.get("EmailService", asset)
            real = None
            if send:
                from postline.service import open_service

                real = open_service(project, asset)
            return TrialService(name=asset, default_from=model.default_from, real=real,
                                sends=self.sends)

        try:
            s = mail_settings(project, wf, source=self.source, conn=self.conn,
                              work_dir=self.tmp / "work", sinks=self.sinks, home=home,
                              service_opener=trial_service)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        (self.tmp / "work").mkdir()
        self.watch = _Watch()
        self.capture = _Capture()
        self.s = dataclasses.replace(
            s, on_failure="rollback", sinks=[self.capture, *self.sinks],
            processor=_watched(s.processor, self.watch) if s.processor else None)
        self._opened: list[Sink] = []

    def __enter__(self) -> Trial:
        try:
            for sink in self.sinks:
                sink.open()
                self._opened.append(sink)
        except BaseException:
            self.close()   # __exit__ does not run when __enter__ raises
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the services (with ``send``, queued mails go out now) and the sinks;
        remove the temporary directory unless attachments were stored there."""
        if self.s.context is not None:
            self.s.context.services.close()
        for sink in self._opened:
            sink.close()
        self._opened = []
        shutil.rmtree(self.tmp / "work", ignore_errors=True)
        shutil.rmtree(self.tmp / "spool", ignore_errors=True)
        if not any((self.tmp / "attachments").glob("*")):
            # nothing worth keeping (else the records' attachment paths point there)
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the mails ------------------------------------------------------------------------

    def files(self, files: list[MailFile]) -> Iterator[tuple[str, RawMessage]]:
        """The mails of ``files`` (see trial_mails.read_files), in the input folder."""
        return read_files(files, connection=self.conn.name, folder=self.source.folders.input)

    def peek(self, n: int) -> Iterator[tuple[str, RawMessage]]:
        """The ``n`` newest mails of the source's input folder, read-only."""
        from postline.protocols import open_reader

        return peek(lambda: open_reader(self.project, self.conn), connection=self.conn.name,
                    folder=self.source.folders.input, n=n, spool_dir=self.tmp / "spool",
                    inline_limit=INLINE_LIMIT)

    def run(self, mails: Iterable[tuple[str, RawMessage]]) -> Iterator[TrialResult]:
        """What a round would do with each of ``mails``, one at a time."""
        for name, raw in mails:
            try:
                yield self.one(name, raw)
            finally:
                raw.discard()

    def one(self, name: str, raw: RawMessage) -> TrialResult:
        """What a round would do with ``raw``. Raises StorageError (disk full) only."""
        self.watch.reset()
        self.capture.record = None
        first_send = len(self.sends)
        prep = prepare(raw, s=self.s)
        if isinstance(prep, JobResult):
            res = prep
        else:
            res = deliver(prep, s=self.s, done=[], stop=threading.Event(), clock=Clock())
            for sink in self.sinks:
                sink.flush()
        state = res.outcome.state
        record = self.capture.record if res.label == "done" else self.watch.before
        out = TrialResult(mail=name, key=res.outcome.key, outcome=res.label,
                          reason=res.outcome.reason, folder=self._folder(state),
                          subject=res.subject, record=record,
                          changes=(_changes(self.watch.before, self.capture.record)
                                   if res.label == "done" else {}),
                          sends=self.sends[first_send:], warnings=list(self.watch.warnings))
        if self.watch.error is not None and res.label == "failed":
            out.traceback = self.watch.frames
        return out

    def _folder(self, state: str) -> str:
        action, target = server_action(self.source, self.protocol, state)
        if action == "move":
            return target
        return "deleted" if action == "delete" else "stays"

    @property
    def attachments_dir(self) -> Path | None:
        """Where the attachments of this trial were stored, unless in the real place."""
        return None if self.write_sinks else self.tmp / "attachments"
