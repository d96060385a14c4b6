"""Every malformed mail of tests/corpus/ becomes a schema-valid record with the expected
key fields (each .eml has a .json beside it). Checked on both delivery paths: in memory
and spooled to a file (mmap)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from postline.source.filters import AttachmentRules
from postline.source.parse import parse_mail
from postline.source.record import MailPlace, build_record, validate_record

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
CASES = sorted(p.stem for p in CORPUS.glob("*.eml"))
PLACE = MailPlace(connection="Box", folder="INBOX", folder_version="7", server_id="1")


def record_of(path: Path, work: Path, *, spooled: bool) -> dict:
    raw = path.read_bytes()
    kw = {"path": path} if spooled else {"data": raw}
    parsed = parse_mail(policy=AttachmentRules(load=True), work_dir=work, **kw)
    record = build_record(parsed, place=PLACE, source="Src", stream_name="s", size=len(raw))
    validate_record(record)
    return record


def test_corpus_is_not_empty():
    assert len(CASES) >= 12


@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spooled"])
@pytest.mark.parametrize("case", CASES)
def test_corpus_case(case, spooled, tmp_path):
    expected = json.loads((CORPUS / f"{case}.json").read_text(encoding="utf-8"))
    record = record_of(CORPUS / f"{case}.eml", tmp_path / "work", spooled=spooled)
    for field in ("subject", "date", "received", "from", "to", "reply_to", "parser",
                  "defects", "text", "html"):
        if field in expected:
            assert record[field] == expected[field], field
    if "text_contains" in expected:
        assert expected["text_contains"] in record["text"]
    for want in expected.get("defects_contain", []):
        assert any(want in d for d in record["defects"]), (want, record["defects"])
    for want in expected.get("headers_contain", []):
        assert want in record["headers"]
    if "header_count" in expected:
        assert len(record["headers"]) == expected["header_count"]
    if "attachments" in expected:
        got = record["attachments"]
        assert len(got) == len(expected["attachments"])
        for g, want in zip(got, expected["attachments"], strict=False):
            for k, v in want.items():
                assert g[k] == v, (k, g)
            assert g["stored"] is True
