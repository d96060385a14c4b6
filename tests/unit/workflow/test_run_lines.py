"""What ``postline run`` prints about ignored mails and at the end (issue 13): a regex in an
ignore reason reads as written in the YAML, once escaped; the summary says "1 mail"."""

from __future__ import annotations

import pytest
from wf_support import mail, write_project

from postline.cli import main

SPAM = r"(?i)^\[spam\]"   # in YAML: "(?i)^\\[spam\\]" (double-quoted) or '(?i)^\[spam\]'


@pytest.fixture
def proj(tmp_path, box, monkeypatch):
    import postline.protocols as protocols

    monkeypatch.setattr(protocols, "open_reader", lambda project, conn: box.reader())
    return write_project(tmp_path / "proj", source={
        "folders": {"input": "INBOX", "done": "Done", "ignore": "Ignored"},
        "filters": {"subject": {"blacklist": [SPAM]}}})


def test_an_ignore_reason_shows_the_regex_as_written(proj, box, capsys):
    box.add(mail("[SPAM] You won a prize"))
    assert main(["run", str(proj), "--once"]) == 0
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "outcome=ignored" in line)
    assert line.endswith(r""" reason="Subject matches blacklist pattern '(?i)^\[spam\]'" """
                         .rstrip())
    assert "\\\\" not in line
    assert "postline: 1 mail: 0 done, 0 failed, 1 ignored in " in err
    assert "mails/s" not in err   # a run this short has no meaningful rate
    assert main(["ledger", "list", str(proj), "Src", "--json"]) == 0
    import json

    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["reason"] == "Subject matches blacklist pattern '" + SPAM + "'"
