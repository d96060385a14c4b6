"""Sinks: where records go. Every write is idempotent by ledger key where the medium allows.

* ``directory``: ``<key>.eml`` then ``<key>.json``, each written to a temporary name and
  renamed; a mail whose ``.json`` exists is skipped (the JSON is the commit marker).
* ``jsonl``: one line per record, appended per batch (``jsonl_sink.py``).
* ``stdout`` and ``http``: at least once (a crash between the write and the ledger commit
  repeats the mail); ``http`` sends ``Idempotency-Key: <ledger key>`` so receivers can
  deduplicate.

A mail reaches the sinks all or nothing as far as they allow: when a later sink (or a
retry) fails it, :meth:`Sink.discard` takes back what the earlier ones accepted of it in
the batch not yet committed (``directory`` and ``jsonl``; what was printed or POSTed
stays, hence the Idempotency-Key).
"""

from __future__ import annotations

import abc
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from postline.errors import DeliveryError
from postline.files import FILE_MODE, SafeDir, dir_mode_for
from postline.logs import redact
from postline.protocols.base import RawMessage
from postline.retry import Interrupted, attempts, backoff, retry_after
from postline.source.record import file_key
from postline.source.schedule import Clock
from postline.workflow.commit import sync_path

log = logging.getLogger("postline.sinks")


@dataclass
class Staged:
    """What a sink wrote to the OS for a batch and what makes it durable: ``files`` to
    fdatasync, ``dirs`` to fsync (the commit does that, maybe in another process), and a
    ``token`` handed back to :meth:`Sink.committed` once it is done."""

    files: list[Path] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)
    token: Any = None


class Sink(abc.ABC):
    """One destination of records."""

    label = "sink"

    @property
    def where(self) -> str:
        """``the jsonl sink out/mails.jsonl``: how messages name this sink."""
        path = getattr(self, "path", None)
        return f"the {self.label} sink {path}" if path else f"the {self.label} sink"

    def open(self) -> None:  # noqa: B027 (optional hook)
        """Prepare (create folders, load indexes). Raises PostlineError."""

    @abc.abstractmethod
    def write(self, record: dict[str, Any], raw: RawMessage) -> None:
        """Write one record; raises on failure (the mail then fails or is retried)."""

    def discard(self, key: str) -> None:  # noqa: B027 (optional hook)
        """Take back what :meth:`write` accepted of mail ``key`` since the last
        :meth:`stage` (the mail failed after this sink took it). Raises OSError when that
        cannot be done. By default nothing can be taken back (stdout, HTTP)."""

    def bind_stop(self, clock: Clock, stop: threading.Event) -> None:  # noqa: B027 (optional hook)
        """Pauses inside :meth:`write` (retries) wait on ``clock`` and end early once
        ``stop`` is set. By default the sink never pauses."""

    def flush(self) -> None:
        """Make every write so far durable; called before the ledger commits them."""
        staged = self.stage()
        for f in staged.files:
            sync_path(f, data_only=True)
        for d in staged.dirs:
            sync_path(d, data_only=False)
        self.committed(staged)

    def stage(self) -> Staged:
        """Hand every write so far to the OS; returns what makes it durable. By default
        the writes are already where they go (stdout, HTTP): nothing."""
        return Staged()

    def committed(self, staged: Staged) -> None:  # noqa: B027 (optional hook)
        """``staged`` (from :meth:`stage`) is durable now."""

    def unstage(self, staged: Staged) -> None:  # noqa: B027 (optional hook)
        """The commit of ``staged`` failed: the next :meth:`stage` includes it again."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release resources; never raises."""


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


try:  # ~10x faster than json for records of text; optional. Same output: compact UTF-8.
    import orjson

    def record_line(record: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)   # no copy
        except TypeError:  # what orjson refuses (e.g. huge ints from a processor)
            return (_dumps(record) + "\n").encode("utf-8")
except ImportError:  # pragma: no cover - depends on the installation
    def record_line(record: dict[str, Any]) -> bytes:
        return (_dumps(record) + "\n").encode("utf-8")


class DirectorySink(Sink):
    """``<key>.eml``, ``<key>.json`` (and, through the runner, ``<key>.attachments/``) in
    one directory, created ``mode`` (directories: :func:`dir_mode_for` of it) relative to
    the directory held open (:class:`SafeDir`): an entry that is a symbolic link is refused
    (the mail fails with UnsafePathError), never followed."""

    label = "directory"

    def __init__(self, *, path: Path, keep_eml: bool = True, mode: int = FILE_MODE) -> None:
        self.path = Path(path)
        self.keep_eml = keep_eml
        self.mode = mode
        self.dir_mode = dir_mode_for(mode)
        self._dir: SafeDir | None = None
        self._dirty: list[Path] = []
        self._written: dict[str, list[Path]] = {}   # by key, since the last stage
        self._removed = False   # files were discarded: the directory needs an fsync

    def open(self) -> None:
        if self._dir is None:
            self._dir = SafeDir.open(self.path, mode=self.dir_mode, where=self.where)

    def close(self) -> None:
        if self._dir is not None:
            self._dir.close()
            self._dir = None

    def eml_path(self, key: str) -> Path:
        return self.path / f"{file_key(key)}.eml"

    def attachments_dir(self, key: str) -> Path:
        return self.path / f"{file_key(key)}.attachments"

    def write(self, record: dict[str, Any], raw: RawMessage) -> None:
        """Write the mail's ``.eml`` and ``.json`` (each to a new temporary entry, then
        renamed); skipped when its ``.json`` exists. Raises UnsafePathError (a planted
        link), OSError."""
        self.open()
        d = self._dir
        assert d is not None
        key = record["key"]
        stem = file_key(key)
        if d.kind(f"{stem}.json") is not None:
            return
        written = self._written.setdefault(key, [])
        if self.keep_eml:
            tmp = f".{stem}.eml.tmp"
            d.write_new(tmp, data=raw.data, source=None if raw.data is not None else raw.path,
                        mode=self.mode)
            d.replace(tmp, f"{stem}.eml")
            eml = self.path / f"{stem}.eml"
            self._dirty.append(eml)
            written.append(eml)
        tmp = f".{stem}.json.tmp"
        d.write_new(tmp, data=json.dumps(record, ensure_ascii=False, indent=2).encode("utf-8"),
                    mode=self.mode)
        d.replace(tmp, f"{stem}.json")
        final = self.path / f"{stem}.json"
        self._dirty.append(final)
        written.append(final)

    def discard(self, key: str) -> None:
        """Remove the files written for ``key`` in this batch, the ``.json`` (the commit
        marker) first; the batch's commit then fsyncs the directory, so the removal is
        durable before the ledger says the mail failed."""
        written = self._written.pop(key, [])
        stem = file_key(key)
        if self._dir is None:
            return
        for name in [*(p.name for p in reversed(written)), f".{stem}.json.tmp",
                     f".{stem}.eml.tmp"]:
            self._dir.unlink(name)   # a link itself, never its target
        if written:
            self._removed = True
            gone = set(written)
            self._dirty = [p for p in self._dirty if p not in gone]

    def stage(self) -> Staged:
        self._written.clear()   # from now on the batch's files belong to its commit
        if not self._dirty and not self._removed:
            return Staged()
        dirty, self._dirty, self._removed = self._dirty, [], False
        return Staged(files=dirty, dirs=[self.path])

    def unstage(self, staged: Staged) -> None:
        self._dirty[:0] = staged.files
        self._removed = self._removed or bool(staged.dirs)


_STDOUT_LOCK = threading.Lock()


class StdoutSink(Sink):
    label = "stdout"

    def __init__(self, *, stream=None) -> None:
        self.stream = stream

    def write(self, record: dict[str, Any], raw: RawMessage) -> None:
        out = self.stream or sys.stdout
        with _STDOUT_LOCK:
            out.write(_dumps(record) + "\n")
            out.flush()


# Responses whose Retry-After is followed (RFC 9110 names 503, and RFC 6585 429).
_RETRY_AFTER_STATUSES = (429, 503)


class HttpSink(Sink):
    label = "http"

    def __init__(self, *, url: str, headers: dict[str, str], timeout: float, retries: int,
                 min_backoff: float = 0.5, max_backoff: float = 30.0,
                 ca_file: str | None = None, sleep: Callable[[float], None] = time.sleep,
                 transport=None) -> None:
        """``sleep`` pauses between retries until :meth:`bind_stop` hands the runner's
        clock and stop request over."""
        self.url = url
        self.headers = headers
        self.timeout = timeout
        self.retries = retries
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.ca_file = ca_file
        self._sleep = sleep
        self._clock: Clock | None = None
        self._stop: threading.Event | None = None
        self._transport = transport
        self._client = None

    def bind_stop(self, clock: Clock, stop: threading.Event) -> None:
        self._clock, self._stop = clock, stop

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; True when the run was asked to stop meanwhile."""
        if self._clock is None or self._stop is None:
            self._sleep(seconds)
            return False
        return self._clock.wait(seconds, self._stop)

    def _delay(self, attempt: int, resp) -> float:
        """The pause before retry ``attempt``: the backoff, or longer when a 429/503 said
        ``Retry-After`` (never more than ``max_backoff``)."""
        delay = backoff(attempt, first=self.min_backoff, cap=self.max_backoff)
        if resp is not None and resp.status_code in _RETRY_AFTER_STATUSES:
            now = self._clock.now() if self._clock is not None else time.time()
            asked = retry_after(resp.headers.get("Retry-After"), now=now)
            if asked is not None:
                delay = max(delay, min(asked, self.max_backoff))
        return delay

    def open(self) -> None:
        import httpx

        from postline import tls

        # The same TLS rules as mail connections (TLS 1.2+, system store + ca_file), and no
        # proxy or CA settings taken from the environment behind the project's back.
        self._client = httpx.Client(
            timeout=self.timeout, transport=self._transport, trust_env=False,
            verify=tls.client_context(verify=True, ca_file=self.ca_file))

    def write(self, record: dict[str, Any], raw: RawMessage) -> None:
        """POST ``record`` as JSON (``Idempotency-Key`` = its key), retrying transport errors,
        5xx, 408 and 429 (after the backoff, or the ``Retry-After`` of a 429/503). Raises
        DeliveryError: not retriable for any other 4xx, retriable when the retries ran out
        or a stop request ended the pause before one."""
        import httpx

        if self._client is None:
            self.open()
        body = _dumps(record).encode("utf-8")
        headers = {"Content-Type": "application/json", **self.headers,
                   "Idempotency-Key": record["key"]}
        last = ""
        resp = None
        try:
            # the pause before a retry looks at the last answer (its Retry-After)
            for _ in attempts(self.retries + 1, delay=lambda n: self._delay(n, resp),  # noqa: B023 (reads the latest answer on purpose)
                              pause=self._pause):
                resp = None
                try:
                    resp = self._client.post(self.url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                    continue
                if resp.status_code < 300:
                    return
                last = f"HTTP {resp.status_code}"
                if resp.status_code < 500 and resp.status_code not in (408, 429):
                    raise DeliveryError(f"http sink {_shown_url(self.url)} refused the record: "
                                        f"{last}",
                                        code=resp.status_code,
                                        hint="check the webhook's URL and headers")
        except Interrupted as stopped:
            raise DeliveryError(
                f"http sink {_shown_url(self.url)}: stopped before retry {stopped.attempt} of "
                f"{self.retries} (last: {redact(last)})", retriable=True,
                hint="the run was asked to stop; the next run delivers the mail") from None
        raise DeliveryError(f"http sink {_shown_url(self.url)} failed after "
                            f"{self.retries + 1} attempt(s): {redact(last)}", retriable=True,
                            hint="is the receiver up? the mail is retried or rolled back")

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception as exc:  # noqa: BLE001 - close never raises (Sink contract)
                log.warning("closing %s: %s", self.where, exc)
            self._client = None


def _shown_url(url: str) -> str:
    """``url`` fit for messages: webhook URLs often carry their secret in the user info or
    the query (and may come from a Secret), and these messages reach the ledger and the
    console, not only the log (whose filter would mask them)."""
    parts = urlsplit(url)
    return redact(f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}")
