"""EmailSource settings checked when the project loads: stream-name macros, settings that
have no effect."""

from __future__ import annotations

import datetime as dt

from asset_helpers import CONN, SECRETS, messages

POP3 = CONN.replace("name: Mailbox", "name: Pop").replace("protocol: imap", "protocol: pop3")


def source(body: str, connection: str = "Mailbox") -> str:
    return f"kind: EmailSource\nname: Src\nconnection: {connection}\n" + body


def problems_of(load, body: str, connection: str = "Mailbox", severity: str = "error"):
    p = load({"c.yaml": CONN, "p.yaml": POP3, "s.yaml": SECRETS,
              "src.yaml": source(body, connection)}, environ={})
    return [m for m, pr in zip(messages(p), p.problems, strict=False)
            if pr.severity == severity and m.startswith("src.yaml")]


def test_a_mistyped_mail_macro_is_refused_when_the_project_loads(load):
    assert problems_of(load, 'stream_name: "in/${mail:subjct}"\n') == [
        "src.yaml:4: EmailSource/Src: stream_name: unknown macro ${mail:subjct} (did you "
        "mean 'subject'?); a mail gives: folder, from, subject, received, date, key, "
        "message_id, id"]
    assert problems_of(load, 'stream_name: "in/${date:qqq}/${mail:key}"\n') == [
        "src.yaml:4: EmailSource/Src: stream_name: unknown letter 'q' in date pattern 'qqq' "
        "(quote literal text: 'T')"]
    assert problems_of(load, 'stream_name: "${mail:folder}/${mail:from}/${mail:received}/'
                             '${mail:date}/${mail:message_id}/${mail:id}/${mail:key}"\n') == []


def test_date_macros_of_a_stream_name_are_expanded_per_mail_not_at_load(load):
    from postline.workflow.engine import _stream_namer

    p = load({"c.yaml": CONN, "s.yaml": SECRETS,
              "src.yaml": source('stream_name: "${date:yyyy-MM-dd}/${mail:subject}"\n')},
             environ={})
    template = p.get("EmailSource", "Src").stream_name
    assert template == "${date:yyyy-MM-dd}/${mail:subject}"      # kept as written
    name = _stream_namer(p, template)({"subject": "hi"})
    assert name == f"{dt.datetime.now(dt.UTC):%Y-%m-%d}/hi"


def test_attachment_rules_without_load_are_a_warning(load):
    assert problems_of(load, "attachments: {max_total_kb: 10, whitelist: [{type: "
                             "text/csv}]}\n", severity="warning") == [
        "src.yaml:4: warning: EmailSource/Src: attachments.max_total_kb: has no effect while "
        "attachments.load is false (attachments are listed in the record but not loaded)",
        "src.yaml:4: warning: EmailSource/Src: attachments.whitelist: has no effect while "
        "attachments.load is false (attachments are listed in the record but not loaded)"]
    assert problems_of(load, "attachments: {load: true, max_total_kb: 10}\n",
                       severity="warning") == []


def test_folders_of_a_pop3_source_are_a_warning(load):
    assert problems_of(load, "folders: {input: Other, done: Done}\n", connection="Pop",
                       severity="warning") == [
        "src.yaml:4: warning: EmailSource/Src: folders.done: is not used: Pop reads POP3, "
        "which has no folders (use pop3.done: delete or keep)",
        "src.yaml:4: warning: EmailSource/Src: folders.input: is not used: Pop reads POP3, "
        "which has only the INBOX"]
    assert problems_of(load, "folders: {done: Done}\n", severity="warning") == []


def test_idle_given_with_cron_is_a_warning(load):
    (w,) = problems_of(load, 'polling: {cron: "0 6 * * *", idle: true}\n', severity="warning")
    assert "polling.idle: with idle: true new mail is read as soon as it arrives" in w
    assert problems_of(load, 'polling: {cron: "0 6 * * *"}\n', severity="warning") == []


def test_full_scan_takes_seconds_or_a_duration(load):
    for text, seconds in (("3600", 3600), ("90s", 90), ("30m", 1800), ("12h", 43200),
                          ("1d", 86400), ("1w", 604800), ("0", 0)):
        p = load({"c.yaml": CONN, "s.yaml": SECRETS,
                  "src.yaml": source(f"polling: {{full_scan: {text}}}\n")}, environ={})
        assert p.get("EmailSource", "Src").polling.full_scan == seconds
    p = load({"c.yaml": CONN, "s.yaml": SECRETS, "src.yaml": source("")}, environ={})
    assert p.get("EmailSource", "Src").polling.full_scan == 86400   # once a day
    (err,) = problems_of(load, "polling: {full_scan: 1y}\n")
    assert err.startswith("src.yaml:4: EmailSource/Src: polling.full_scan: expected seconds "
                          "or a duration such as 30m, 12h, 1d or 1w (0: every round), not "
                          "'1y'"), err
