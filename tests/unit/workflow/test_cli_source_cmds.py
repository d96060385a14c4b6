"""``postline run`` and ``postline ledger`` as a user sees them (fake mailbox)."""

from __future__ import annotations

import json

import pytest
from wf_support import mail, read_jsonl, write_project

from postline.cli import main


@pytest.fixture
def proj(tmp_path, box, monkeypatch):
    import postline.protocols as protocols

    monkeypatch.setattr(protocols, "open_reader", lambda project, conn: box.reader())
    root = write_project(tmp_path / "proj", source={
        "folders": {"input": "INBOX", "done": "Done", "error": "Err"},
        "filters": {"subject": {"blacklist": ["^spam"]}}})
    for s in ("one", "two", "spam three"):
        box.add(mail(s))
    return root


def test_run_once_prints_summary_and_logs_one_line_per_mail(proj, capsys):
    assert main(["run", str(proj), "--once"]) == 0
    err = capsys.readouterr().err
    assert "postline: 3 mails: 2 done, 0 failed, 1 ignored in" in err
    assert err.count("outcome=") == 3 and "subject='one' outcome=done" in err
    assert "reason='Subject matches blacklist pattern '^spam''" in err or \
        "Subject matches blacklist pattern" in err
    assert len(read_jsonl(proj / "out/mails.jsonl")) == 2


def test_ledger_list_json_and_reset(proj, capsys):
    main(["run", str(proj), "--once"])
    capsys.readouterr()
    assert main(["ledger", "list", str(proj), "Src", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert sorted(e["state"] for e in entries) == ["done", "done", "ignored"]
    assert main(["ledger", "list", str(proj), "Src", "--state", "ignored"]) == 0
    out = capsys.readouterr().out
    assert "spam three" in out and "1 entry" in out
    key = next(e["key"] for e in entries if e["state"] == "ignored")
    # one mistyped key among several: nothing is reset, and the message names it
    assert main(["ledger", "reset", str(proj), "Src", "--id", key, "--id", key + "x"]) == 1
    assert (f"has key '{key}x'; nothing was reset") in capsys.readouterr().err
    assert main(["ledger", "reset", str(proj), "Src", "--id", key]) == 0
    assert "reset 1 entry of source Src" in capsys.readouterr().out
    assert main(["ledger", "reset", str(proj), "Src", "--all"]) == 0
    assert "reset 2 entries" in capsys.readouterr().out


def test_ledger_unknown_source_and_key(proj, capsys):
    assert main(["ledger", "list", str(proj), "Nope"]) == 1
    assert "no EmailSource named 'Nope'" in capsys.readouterr().err
    assert main(["ledger", "reset", str(proj), "Src", "--id", "x/y"]) == 1
    assert "no ledger entry of source Src has key 'x/y'" in capsys.readouterr().err


def test_run_unknown_workflow(proj, capsys):
    assert main(["run", str(proj), "--workflow", "Nope", "--once"]) == 1
    assert "no Workflow named 'Nope' in the project (known: Flow)" in capsys.readouterr().err


def test_ledger_retry_unknown_key_and_nothing_failed(proj, capsys):
    assert main(["ledger", "retry", str(proj), "Src", "--id", "x/y"]) == 1
    assert "no ledger entry of source Src has key 'x/y'" in capsys.readouterr().err
    main(["run", str(proj), "--once"])
    capsys.readouterr()
    assert main(["ledger", "retry", str(proj), "Src", "--all"]) == 0
    assert capsys.readouterr().out.strip() == "no failed entries for source Src"


def test_ledger_prune_keeps_states_whose_mails_stay_in_the_input_folder(proj, capsys):
    main(["run", str(proj), "--once"])          # 2 done (moved to Done), 1 ignored (stays)
    capsys.readouterr()
    assert main(["ledger", "prune", str(proj), "Src", "--older-than", "0s"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "pruned 2 done entries of source Src older than 0s"
    assert err.strip() == ("postline: kept: ignored mails of source Src stay in the input "
                           "folder (folders.ignore): forgetting them would process them again")
    assert main(["ledger", "prune", str(proj), "Src", "--older-than", "1d", "--state",
                 "ignored"]) == 1
    assert "ignored mails of source Src stay in the input folder" in capsys.readouterr().err
    assert main(["ledger", "prune", str(proj), "Src", "--older-than", "soon"]) == 1
    assert "--older-than 'soon': expected an age such as 90d" in capsys.readouterr().err


@pytest.mark.parametrize("text,seconds", [("90d", 90 * 86400), ("12h", 43200), ("30m", 1800),
                                          ("45s", 45), ("2w", 14 * 86400), ("7", 7 * 86400),
                                          ("0.5d", 43200)])
def test_parse_age(text, seconds):
    from postline.cli.ledger_cmds import parse_age

    assert parse_age(text) == seconds
