"""A header block that runs straight into the body (no empty line, as old mailers write
it) keeps its body through the whole source, with the defect in the record."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

CORPUS = Path(__file__).resolve().parents[2] / "corpus"


def test_body_after_headers_without_an_empty_line_is_kept(source_project, mailbox):
    raw = (CORPUS / "no_blank_line_after_headers.eml").read_bytes()
    mailbox.append("INBOX", raw)
    p = source_project.write(source={"folders": {"input": "INBOX", "done": "Done"}},
                             workflow={"sinks": [{"type": "jsonl", "path": "out/mails.jsonl"},
                                                 {"type": "directory", "path": "out/mails"}]})
    summary = p.run_once()
    assert summary.counts["done"] == 1 and not summary.errors
    [record] = p.records()
    assert record["subject"] == "Report from the old mailer"
    assert record["text"] == ("The nightly job finished.\nTotals: 42 rows\n"
                              "  (indented, still the body)\n\nRegards, the old mailer\n")
    assert "Totals" not in {h["name"] for h in record["headers"]}
    assert record["defects"] == ["no empty line between the headers and the body; the body "
                                 "starts at b'The nightly job finished.'"]
    assert mailbox.subjects("Done") == ["Report from the old mailer"]
