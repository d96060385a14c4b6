"""Writing an asset document back into its file: only that document changes."""

from __future__ import annotations

import pytest

from postline.assets.writer import (
    DELETE,
    appended_text,
    digest,
    edited_text,
    removed_text,
    split_documents,
)
from postline.errors import ConfigError

TEXT = """\
# Connections of the team.
kind: EmailConnection
name: A          # the first one
incoming:
  protocol: imap
  host: "imap.example.test"   # the host
  port: 993
  credential: {type: secret, secret: S.password}
---
# B is formatted differently and must stay so
kind: EmailConnection
name: B
outgoing: {protocol: smtp, host: smtp.example.test}
...
---
kind: EmailSource
name: In
connection: A
folders:
    input: INBOX
"""


def test_an_edit_keeps_comments_order_and_the_other_documents():
    new = edited_text(TEXT, kind="EmailConnection", name="A", change={
        "incoming": {"host": "mail.example.test", "port": DELETE,
                     "credential": {"type": "secret", "secret": "S.other"}}})
    before, after = TEXT.split("---\n", 1), new.split("---\n", 1)
    assert after[1] == before[1]                       # B and In byte for byte
    assert after[0] == before[0].replace('"imap.example.test"', '"mail.example.test"').replace(
        "  port: 993\n", "").replace("S.password", "S.other")


def test_a_new_key_goes_last_and_a_list_keeps_its_flow_style():
    text = "kind: Workflow\nname: W\nsource: In\nsinks: [{type: jsonl, path: a.jsonl}]\n"
    new = edited_text(text, kind="Workflow", name="W", change={
        "description": "d", "sinks": [{"type": "jsonl", "path": "b.jsonl"}]})
    assert new.endswith("description: d\n")
    assert "sinks: [{type: jsonl, path: b.jsonl}]" in new


def test_append_and_remove_a_document():
    added = appended_text(TEXT, {"kind": "EmailService", "name": "N", "connection": "A"})
    assert added.startswith(TEXT) and added.endswith("---\nkind: EmailService\nname: N\n"
                                                     "connection: A\n")
    assert appended_text(None, {"kind": "Secret", "name": "S"}) == "kind: Secret\nname: S\n"
    gone = removed_text(TEXT, kind="EmailConnection", name="B")
    assert "name: B" not in gone and "name: A" in gone and "name: In" in gone
    assert len([p for p in split_documents(gone) if p[1].strip()]) == 2


def test_an_asset_that_moved_away_is_said_so(tmp_path):
    with pytest.raises(ConfigError, match="EmailConnection/Z is no longer in this file"):
        edited_text(TEXT, kind="EmailConnection", name="Z", change={"description": "x"})
    path = tmp_path / "a.yaml"
    assert digest(path) == "absent"
    path.write_text(TEXT)
    first = digest(path)
    path.write_text(TEXT + "# more\n")
    assert digest(path) != first


def test_a_value_change_keeps_every_other_byte():
    text = ('kind: EmailSource\nname: In\nconnection: "A"   # quoted\n'
            'stream_name: "in/${mail:subject}"\n'
            'attachments: {blacklist: [{type: "application/x-msdownload"}]}\n'
            "incoming: {protocol: imap, host: h, credential: {type: secret, secret: S.p}}\n")
    new = edited_text(text, kind="EmailSource", name="In", change={
        "connection": "B", "incoming": {"credential": {"secret": "T.p"}}})
    assert new == text.replace('"A"', '"B"').replace("S.p}", "T.p}")
