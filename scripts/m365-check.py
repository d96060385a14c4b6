#!/usr/bin/env python3
"""Check on your own Microsoft 365 tenant what postline's Graph test double assumes.

    .venv/bin/python scripts/m365-check.py PROJECT CONNECTION [--folder inbox]
                     [--write] [--send-to ADDRESS --bcc-to ADDRESS]

Uses the connection's credentials exactly as postline does (``postline login`` first for
device flow). By default it only *reads*: it lists folders, runs one delta round of
``--folder`` and one incremental round after it, asks for ``$deltatoken=latest``, sends a
made-up delta token, downloads one message's ``$value`` twice and asks for a mailbox that
does not exist. ``--write`` also creates a folder twice (the second answer is what postline
must recognise) and deletes it again. ``--send-to``/``--bcc-to`` send one small MIME mail
with a ``Bcc:`` header: look at the received mail's headers to see whether Exchange kept
it. Each line says what was seen and which Microsoft document it is compared with; the
summary goes to docs/microsoft365.md ("What only a real tenant can confirm").
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
import uuid
from collections import Counter
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

DOCS = {
    "delta": "https://learn.microsoft.com/en-us/graph/delta-query-messages",
    "overview": "https://learn.microsoft.com/en-us/graph/delta-query-overview",
    "hidden": "https://learn.microsoft.com/en-us/graph/api/mailfolder-list-childfolders",
    "mime": "https://learn.microsoft.com/en-us/graph/outlook-get-mime-message",
    "errors": "https://learn.microsoft.com/en-us/graph/errors",
    "send": "https://learn.microsoft.com/en-us/graph/outlook-send-mime-message",
    "purge": "https://learn.microsoft.com/en-us/graph/api/message-permanentdelete",
}


def say(check: str, seen: str, doc: str) -> None:
    print(f"{check:<30} {seen}\n{'':<30} compare: {DOCS[doc]}")


def code_of(resp) -> str:
    from postline.protocols.graph_http import graph_error_of

    code, message = graph_error_of(resp.content)
    return f"HTTP {resp.status_code} {code} {message[:80]}".strip()


def delta_round(s, url: str) -> tuple[Counter, str | None]:
    """Follow one round: counts of pages, empty pages, items, duplicates, removed."""
    c: Counter = Counter()
    seen: set[str] = set()
    while url:
        resp = s.request("GET", url, headers={"Prefer": "odata.maxpagesize=100"},
                         what="delta")
        if resp.status_code != 200:
            c["error " + code_of(resp)] += 1
            return c, None
        page = resp.json()
        c["pages"] += 1
        c["empty pages with nextLink"] += not page["value"] and "@odata.nextLink" in page
        for item in page["value"]:
            c["@removed" if "@removed" in item else "items"] += 1
            c["same id again"] += item["id"] in seen
            seen.add(item["id"])
        if "@odata.deltaLink" in page:
            return c, page["@odata.deltaLink"]
        url = page.get("@odata.nextLink")
    return c, None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project")
    ap.add_argument("connection")
    ap.add_argument("--folder", default="inbox")
    ap.add_argument("--write", action="store_true", help="create and delete a test folder")
    ap.add_argument("--send-to")
    ap.add_argument("--bcc-to")
    args = ap.parse_args()

    import postline
    from postline.protocols.graph import GraphReader, graph_session, permanent_delete_supported

    project = postline.open_project(args.project)
    conn = project.get("EmailConnection", args.connection)
    s = graph_session(project, conn)
    reader = GraphReader(session=s)
    reader.connect()
    print(f"mailbox {reader.mailbox} via {s.base_url}\n")

    plain = s.request("GET", "/mailFolders?$top=100&$select=id,displayName", what="folders")
    hidden = s.request("GET", "/mailFolders?$top=100&$select=id,displayName,isHidden"
                              "&includeHiddenFolders=true", what="folders")
    say("hidden top folders", f"{len(hidden.json().get('value', []))} with "
        f"includeHiddenFolders, {len(plain.json().get('value', []))} without", "hidden")

    fid = reader.folder_id(args.folder)
    start = f"/mailFolders/{fid}/messages/delta?$select=id,isRead"
    first, link = delta_round(s, start)
    say("delta, full round", dict(first).__repr__(), "delta")
    if link:
        again, _ = delta_round(s, link)
        say("delta, next round at once", f"{dict(again)} (items here are replays)", "delta")
    latest, _ = delta_round(s, f"{start}&$deltatoken=latest")
    say("$deltatoken=latest", f"{dict(latest)} (as many items as the full round: not "
        "supported for messages)", "overview")
    bogus = s.request("GET", f"{start}&$deltatoken={uuid.uuid4().hex}", what="bogus delta")
    say("made-up delta token", code_of(bogus), "overview")

    refs, _ = reader.list_messages(args.folder)
    if refs:
        path = f"/messages/{refs[0].id}/$value"
        as_json = s.request("GET", path, headers={"Accept": "application/json"}, what="$value")
        hashes = []
        for _ in range(2):
            resp = s.request("GET", path, headers={"Accept": "*/*"}, what="$value")
            hashes.append(hashlib.sha256(resp.content).hexdigest()[:12])
        say("$value", f"Accept json: {code_of(as_json)}; Accept */*: "
            f"{resp.headers.get('content-type')}; two downloads "
            f"{'identical' if hashes[0] == hashes[1] else 'DIFFER'}", "mime")
    nobody = f"postline-check-{uuid.uuid4().hex[:8]}@{(reader.mailbox.split('@') + ['x'])[1]}"
    s2 = type(s)(graph_url=s.base_url, mailbox=nobody, provider=s._provider,
                 ca_file=conn.microsoft365.ca_file, verify=s.verify)
    say("a mailbox that does not exist", code_of(s2.request(
        "GET", "/mailFolders/inbox?$select=id", what="nobody")), "errors")
    say("permanentDelete", "offered" if permanent_delete_supported(s.base_url) else
        "not offered here: postline moves to Deleted Items", "purge")

    if args.write:
        name = f"postline-check-{uuid.uuid4().hex[:8]}"
        made = s.request("POST", "/mailFolders", json_body={"displayName": name}, what="create")
        twice = s.request("POST", "/mailFolders", json_body={"displayName": name}, what="again")
        say("creating an existing folder", code_of(twice), "errors")
        if made.status_code in (200, 201):
            s.request("DELETE", f"/mailFolders/{made.json()['id']}", what="delete")
    if args.send_to and args.bcc_to:
        m = EmailMessage()
        m["From"], m["To"], m["Bcc"] = reader.mailbox, args.send_to, args.bcc_to
        m["Subject"] = f"postline m365-check {uuid.uuid4().hex[:8]}"
        m.set_content("Look at this mail's headers: is there a Bcc: line?\n")
        resp = s.request("POST", "/sendMail", content=base64.b64encode(m.as_bytes()),
                         headers={"Content-Type": "text/plain"}, what="sendMail")
        say("MIME sendMail with Bcc:", f"{code_of(resp)}; now look for a Bcc header in "
            f"the mail {args.send_to} received", "send")
    reader.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
