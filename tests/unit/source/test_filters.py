"""From/Subject filters and attachment rules, table-driven against SPEC section 5."""

from __future__ import annotations

import pytest

from postline.assets.kinds.source import Attachments, Filters
from postline.source.filters import AttachmentRules, MailFilter

ALICE = [{"name": "Alice", "address": "alice@example.test"}]
SPAM = [{"name": "", "address": "promo@spam.test"}]


@pytest.mark.parametrize("cfg, senders, subject, ignored", [
    ({}, ALICE, "anything", False),                                           # no filters
    ({"from": {"blacklist": ["spam\\.test"]}}, SPAM, "x", True),              # blacklist hit
    ({"from": {"blacklist": ["spam\\.test"]}}, ALICE, "x", False),            # only blacklist
    ({"from": {"whitelist": ["@example\\.test$"]}}, ALICE, "x", False),       # whitelist hit
    ({"from": {"whitelist": ["@example\\.test$"]}}, SPAM, "x", True),         # only whitelist
    ({"from": {"blacklist": ["alice"], "whitelist": ["alice"]}}, ALICE, "x", True),  # black first
    ({"from": {"whitelist": ["^Alice <"]}}, ALICE, "x", False),               # name <address>
    ({"subject": {"whitelist": ["invoice"]}}, ALICE, "Your INVOICE", False),  # case-insensitive
    ({"subject": {"blacklist": ["^re:"]}}, ALICE, "Re: hi", True),
    ({"from": {"whitelist": ["alice"]}, "subject": {"blacklist": ["urgent"]}},
     ALICE, "URGENT", True),                                                  # AND: subject says no
    ({"from": {"whitelist": ["alice"]}, "subject": {"whitelist": ["report"]}},
     SPAM, "report", True),                                                   # AND: from says no
    ({"from": {"whitelist": ["alice"]}, "subject": {"whitelist": ["report"]}},
     ALICE, "weekly report", False),
    ({"from": {"whitelist": ["."]}}, [], "no from header", True),             # empty From
])
def test_mail_filter(cfg, senders, subject, ignored):
    f = MailFilter.from_config(Filters.model_validate(cfg))
    reason = f.reason_to_ignore(senders=senders, subject=subject)
    assert (reason is not None) == ignored, reason


def test_filter_reason_names_header_and_pattern():
    f = MailFilter.from_config(Filters.model_validate({"from": {"blacklist": ["spam"]}}))
    assert f.reason_to_ignore(senders=SPAM, subject="") == \
        "From matches blacklist pattern 'spam'"


def test_invalid_regex_is_a_validation_error():
    with pytest.raises(ValueError, match="invalid regular expression"):
        Filters.model_validate({"subject": {"whitelist": ["(unclosed"]}})


KB = 1024


@pytest.mark.parametrize("cfg, ctype, size, stored_total, skipped", [
    ({"load": True}, "application/pdf", 10 * KB, 0, None),
    ({"load": True, "blacklist": [{"type": "application/x-.*"}]},
     "application/x-msdownload", 1, 0, "blacklisted"),
    ({"load": True, "blacklist": [{"type": "video/.*", "max_kb": 100}]}, "video/mp4", 50 * KB, 0,
     None),                                                   # blacklist row with a limit: small ok
    ({"load": True, "blacklist": [{"type": "video/.*", "max_kb": 100}]}, "video/mp4", 200 * KB, 0,
     "blacklist limit"),
    ({"load": True, "whitelist": [{"type": "application/pdf"}]}, "image/png", 1, 0,
     "no whitelist row"),
    ({"load": True, "whitelist": [{"type": "application/pdf", "max_kb": 5}]},
     "application/pdf", 6 * KB, 0, "whitelist limit"),
    ({"load": True, "whitelist": [{"type": "image/.*"}]}, "IMAGE/PNG", 1, 0, None),
    ({"load": True, "max_total_kb": 10, "whitelist": [{"type": ".*", "max_kb": 100}]},
     "image/png", 6 * KB, 5 * KB, "total cap"),               # the total cap wins
    ({"load": True, "max_total_kb": 10}, "image/png", 5 * KB, 5 * KB, None),
    ({"load": True, "whitelist": [{"type": "pdf"}]}, "application/pdf", 1, 0,
     "no whitelist row"),                                     # full match, not search
])
def test_attachment_rules(cfg, ctype, size, stored_total, skipped):
    rules = AttachmentRules.from_config(Attachments.model_validate(cfg))
    reason = rules.type_reason(ctype) or rules.size_reason(ctype, size, stored_total)
    if skipped is None:
        assert reason is None
    else:
        assert reason is not None and skipped in reason


def test_attachments_not_loaded_are_listed_with_reason(tmp_path):
    from email.message import EmailMessage

    from postline.source.parse import parse_mail
    from postline.source.record import MailPlace, build_record

    m = EmailMessage()
    m["Subject"] = "x"
    m["From"] = "a@example.test"
    m.set_content("t")
    m.add_attachment(b"12345", maintype="application", subtype="pdf", filename="a.pdf")
    m.add_attachment(b"x" * 3000, maintype="image", subtype="png", filename="b.png")
    for cfg, expect in [({}, ["not loaded", "not loaded"]),
                        ({"load": True, "max_total_kb": 2}, [None, "total cap"])]:
        rules = AttachmentRules.from_config(Attachments.model_validate(cfg))
        parsed = parse_mail(data=m.as_bytes(), policy=rules, work_dir=tmp_path / str(len(cfg)))
        rec = build_record(parsed, place=MailPlace(connection="c", folder="I", folder_version="1",
                                                   server_id="1"), source="s", stream_name="",
                           size=1)
        reasons = [a["skipped_reason"] for a in rec["attachments"]]
        assert [r if r is None else next(e for e in expect if e and e in r) for r in reasons] \
            == expect
        assert [a["stored"] for a in rec["attachments"]] == [e is None for e in expect]
        assert [a["size"] for a in rec["attachments"]] == [5, 3000]
