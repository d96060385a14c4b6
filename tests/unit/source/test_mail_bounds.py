"""Memory and record size bounded whatever the mail's shape (issue 15, item 4): a mail of
a million headers, 300,000 Cc addresses, 50,000 parts or nested 1,000 deep becomes a
record with its subject and a defect naming what was cut, in a small multiple of its size.

Memory is the peak RSS growth of a child process parsing the mail (its VmHWM after, less
its RSS before, the mail already read): generous bounds, no timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_mail import SHAPES

from postline.source.filters import AttachmentRules
from postline.source.limits import (
    MAX_ADDRESSES,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    MAX_PARTS,
    MAX_STORED,
)
from postline.source.parse import parse_mail
from postline.source.record import MailPlace, build_record, validate_record

PLACE = MailPlace(connection="Box", folder="INBOX", folder_version="7", server_id="1")

_CHILD = """
import json, re, sys
from pathlib import Path

def rss(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))

from postline.source.filters import AttachmentRules
from postline.source.parse import parse_mail
from postline.source.record import MailPlace, build_record

raw = Path(sys.argv[1]).read_bytes()
before = rss("VmRSS")
parsed = parse_mail(data=raw, policy=AttachmentRules(load=True), work_dir=Path(sys.argv[2]))
record = build_record(parsed, place=MailPlace(connection="B", folder="I", folder_version="1",
                                              server_id="1"),
                      source="S", stream_name="s", size=len(raw))
line = json.dumps(record)
growth = (rss("VmHWM") - before) * 1024
print(json.dumps({"growth": growth, "size": len(raw), "json": len(line)}))
"""


def record_of(raw: bytes, tmp_path: Path) -> dict:
    parsed = parse_mail(data=raw, policy=AttachmentRules(load=True), work_dir=tmp_path / "w")
    record = build_record(parsed, place=PLACE, source="Src", stream_name="s", size=len(raw))
    validate_record(record)
    return record


@pytest.fixture(scope="module")
def mails(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    out = {}
    for name, make in SHAPES.items():
        out[name] = root / f"{name}.eml"
        out[name].write_bytes(make())
    return out


@pytest.mark.parametrize("shape", list(SHAPES))
def test_peak_memory_is_a_small_multiple_of_the_mail(shape, mails, tmp_path):
    res = subprocess.run([sys.executable, "-c", _CHILD, str(mails[shape]), str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout)
    # before: 20-100x the mail (a 13.9 MB mail of a million headers took 1.1 GB)
    assert got["growth"] <= 6 * got["size"] + (32 << 20), got
    assert got["json"] <= 2 * (1 << 20), got       # the record stays small


def test_200k_headers_keep_the_first_thousand_and_the_subject(mails, tmp_path):
    record = record_of(mails["200k-headers"].read_bytes(), tmp_path)
    assert record["subject"] == "after 200000 headers"
    assert record["from"] == [{"name": "Alice", "address": "alice@example.test"}]
    assert len(record["headers"]) == MAX_HEADERS + 1          # + the Subject after them
    assert record["headers"][-1] == {"name": "Subject", "value": "after 200000 headers"}
    assert (f"200,005 headers in one header block; the first {MAX_HEADERS:,} kept (and "
            "the first Subject, From, To, Cc, Date... after them)") in record["defects"]


def test_300k_cc_addresses_are_cut_with_a_defect(mails, tmp_path):
    record = record_of(mails["300k-cc"].read_bytes(), tmp_path)
    assert record["subject"] == "300000 cc"
    assert len(record["cc"]) == MAX_ADDRESSES
    assert record["cc"][0] == {"name": "", "address": "u0@example.test"}
    assert any(d.startswith("Cc header of ") and d.endswith("only its first 131,072 are read")
               for d in record["defects"])
    assert any(d.startswith("Cc has ") and d.endswith(f"the first {MAX_ADDRESSES:,} are kept")
               for d in record["defects"])
    [cc] = [h for h in record["headers"] if h["name"] == "Cc"]
    assert len(cc["value"]) == MAX_HEADER_VALUE


def test_50k_parts_read_up_to_the_limit_and_store_at_most_200(mails, tmp_path):
    record = record_of(mails["50k-parts"].read_bytes(), tmp_path)
    assert record["subject"] == "50000 parts"
    assert len(record["attachments"]) == MAX_PARTS - 1       # the multipart is a part too
    stored = [a for a in record["attachments"] if a["stored"]]
    assert len(stored) == MAX_STORED
    assert record["attachments"][-1]["skipped_reason"] == (
        f"over the limit of {MAX_STORED} stored attachments per mail")
    assert f"more than {MAX_PARTS:,} MIME parts; the rest is not read" in record["defects"]
    assert len(list((tmp_path / "w").iterdir())) == MAX_STORED


def test_a_mail_nested_1000_deep_keeps_its_subject(mails, tmp_path):
    record = record_of(mails["1000-deep"].read_bytes(), tmp_path)
    assert record["subject"] == "nested 1000 deep"
    assert record["parser"] == "fast"
    assert "MIME parts nested deeper than 40 levels are not read" in record["defects"]
    assert record["defects"][0] == ("nested too deep for the stdlib parser too "
                                    "(RecursionError); read without its deepest parts")


def test_a_mail_nested_60_deep_is_still_read_whole_by_the_stdlib_parser(tmp_path):
    from hostile_mail import deep

    record = record_of(deep(60), tmp_path)
    assert (record["parser"], record["text"]) == ("stdlib", "innermost")
