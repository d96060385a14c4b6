"""Message delta of the Graph test double, as Microsoft documents it and users report it.

What a client sees (https://learn.microsoft.com/en-us/graph/delta-query-messages):

* a *round* is one or more GETs: pages linked by ``@odata.nextLink`` (``$skiptoken``), the
  last one carries ``@odata.deltaLink`` (``$deltatoken``) to start the next round with;
* the first round lists the whole folder; later rounds return messages *created or
  updated* since (a flag change is an update) and ``{"id", "@removed": {"reason":
  "deleted"}}`` for messages deleted or moved out; ``changeType=created|updated|deleted``
  limits a round to one kind;
* the order is not guaranteed, nor that an item comes once. With ``quirks`` on (the
  default) the double does what users meet: the first page of a full round is empty but
  has a nextLink, an item that ends a page starts the next one again, and an incremental
  round replays the last item of the round before;
* ``$deltatoken=latest`` is documented for directory and drive resources only; for messages
  users report it returns the whole folder (microsoftgraph/microsoft-graph-docs#9569),
  and so does the double;
* a sync state the service no longer has answers a 4xx with ``syncStateNotFound``
  (https://learn.microsoft.com/en-us/graph/delta-query-overview): 410 by default,
  :meth:`DeltaEngine.lose` chooses (e.g. 400) and drops every state, so the next page or
  round of any client fails; a changed UIDVALIDITY loses the folder's states too.

State lives in memory (tokens are random keys): the snapshot of the folder at the start
of a round, ``{uid: flags}``, and the items still to page.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, replace
from typing import Any

from imapclient import IMAPClient

from postline.testing.graph_double_store import GraphFault, MailboxStore


@dataclass
class _Round:
    """A round being paged: items still to send, and the state its deltaLink will hold."""

    items: list[tuple[str, int, str]]            # (kind, uid, id): created/updated/deleted
    snapshot: dict[int, tuple[str, ...]]
    ids: dict[int, str]
    folder: str
    uv: str
    incremental: bool
    first: bool = True


@dataclass
class _State:
    folder: str
    uv: str
    snapshot: dict[int, tuple[str, ...]]
    ids: dict[int, str]
    replay: int | None = None                     # uid replayed in the next round


def lost(status: int) -> GraphFault:
    return GraphFault(status, "syncStateNotFound",
                      "The sync state generation is not found or has expired. Start a new "
                      "sync (resyncRequired).")


class DeltaEngine:
    """Delta rounds of every folder of every user of one double."""

    def __init__(self, store: MailboxStore, *, quirks: bool = True) -> None:
        self.store = store
        self.quirks = quirks
        self.lost_status = 410
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self._rounds: dict[str, _Round] = {}

    def lose(self, status: int = 410) -> None:
        """Forget every sync state: the next page or round answers ``status``
        ``syncStateNotFound``."""
        with self._lock:
            self.lost_status = status
            self._states.clear()
            self._rounds.clear()

    # -- one request ----------------------------------------------------------------------

    def page(self, c: IMAPClient, user: str, folder: str, query: dict[str, list[str]],
             size: int) -> tuple[list[dict[str, Any]], str, str]:
        """One page for ``query``: (items, "next" or "delta", token for that link)."""
        if "$skiptoken" in query:
            with self._lock:  # not popped: a page asked for again answers the same
                parked = self._rounds.get(query["$skiptoken"][0])
            if parked is None or parked.folder != folder:
                raise lost(self.lost_status)
            rnd = replace(parked)
            info = c.select_folder(folder, readonly=True)
            if str(info[b"UIDVALIDITY"]) != rnd.uv:
                raise lost(self.lost_status)
        else:
            rnd = self._start(c, user, folder, query)
        kinds = set(query.get("changeType", ["created,updated,deleted"])[0].split(","))
        rnd.items = [i for i in rnd.items if i[0] in kinds]
        if rnd.first and self.quirks and not rnd.incremental and rnd.items:
            # users see an empty first page with a nextLink
            return [], "next", self._park(replace(rnd, first=False))
        page, rest = rnd.items[:size], rnd.items[size:]
        if rest and self.quirks and size > 1:
            rest = [page[-1], *rest]  # the item that ends this page starts the next again
        out = self._items(c, user, rnd, page)
        if rest:
            return out, "next", self._park(replace(rnd, items=rest))
        replay = page[-1][1] if page and self.quirks else None
        token = secrets.token_hex(12)
        with self._lock:
            self._states[token] = _State(folder=folder, uv=rnd.uv, snapshot=rnd.snapshot,
                                         ids=rnd.ids, replay=replay)
        return out, "delta", token

    def _park(self, rnd: _Round) -> str:
        token = secrets.token_hex(12)
        with self._lock:
            self._rounds[token] = rnd
        return token

    def _start(self, c: IMAPClient, user: str, folder: str, query: dict[str, list[str]]
               ) -> _Round:
        info = c.select_folder(folder, readonly=True)
        uv = str(info[b"UIDVALIDITY"])
        now = self._flags(c)
        ids = {uid: self.store.message_id(user, folder, uv, uid) for uid in now}
        token = query.get("$deltatoken", [None])[0]
        if token is None or token == "latest":
            items = [("created", uid, ids[uid]) for uid in sorted(now)]
            return _Round(items=items, snapshot=now, ids=ids, folder=folder, uv=uv,
                          incremental=False)
        with self._lock:
            state = self._states.get(token)
        if state is None or state.folder != folder or state.uv != uv:
            raise lost(self.lost_status)
        items = [("created", u, ids[u]) for u in sorted(now) if u not in state.snapshot]
        items += [("updated", u, ids[u]) for u in sorted(now)
                  if u in state.snapshot and now[u] != state.snapshot[u]]
        present = set(ids.values())   # moved out and back in: present, not removed
        items += [("deleted", u, state.ids[u]) for u in sorted(state.snapshot)
                  if u not in now and state.ids[u] not in present]
        if state.replay is not None and state.replay in now and self.quirks:
            items.append(("updated", state.replay, ids[state.replay]))
        return _Round(items=items, snapshot=now, ids=ids, folder=folder, uv=uv,
                      incremental=True)

    @staticmethod
    def _flags(c: IMAPClient) -> dict[int, tuple[str, ...]]:
        uids = c.search(["ALL"])
        if not uids:
            return {}
        data = c.fetch(uids, ["FLAGS"])
        # \Recent is per IMAP session, not a change of the message
        return {uid: tuple(sorted(n for n in (f.decode() if isinstance(f, bytes) else str(f)
                                              for f in d[b"FLAGS"]) if n != "\\Recent"))
                for uid, d in data.items()}

    def _items(self, c: IMAPClient, user: str, rnd: _Round,
               page: list[tuple[str, int, str]]) -> list[dict[str, Any]]:
        present = sorted({uid for kind, uid, _ in page if kind != "deleted"})
        found = self.store.message_json(c, user, rnd.folder, rnd.uv, present) if present else []
        by_id = {m["id"]: m for m in found}
        out: list[dict[str, Any]] = []
        for kind, _, mid in page:
            if kind == "deleted":
                out.append({"@odata.type": "#microsoft.graph.message", "id": mid,
                            "@removed": {"reason": "deleted"}})
            elif mid in by_id:
                out.append(by_id[mid])
        return out

