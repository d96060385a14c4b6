"""The command line as a new user meets it (issue 13, section 3): usage errors, usage lines,
help texts, ``ledger list``, ``show``, ``send`` with several problems, the summary line,
``dev-stack env`` and the demo project's description."""

from __future__ import annotations

import argparse
import io
import json
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from postline.cli import build_parser, main
from postline.cli.stack_cmds import env_vars
from postline.state.ledger import Outcome, Place, SqliteLedger, ledger_path
from postline.workflow.engine import Summary

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("POSTLINE_KEY_FILE", "POSTLINE_STATE_DIR", "POSTLINE_DEMO_PASSWORD",
                 "DEMO_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    ca = tmp_path / "stack-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("POSTLINE_STACK_CA_FILE", str(ca))


@pytest.fixture
def local(tmp_path) -> Path:
    """A copy of examples/local (its state directory must not land in the repository)."""
    return Path(shutil.copytree(EXAMPLES / "local", tmp_path / "local"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    assert (info.value.code, out) == (2, "")
    return err


# -- usage errors and usage lines ------------------------------------------------------

def test_a_missing_argument_is_one_line_with_exit_2(capsys):
    assert usage_error(capsys, "send") == (
        "postline send: error: the following arguments are required: [PROJECT] SERVICE, "
        "--message/-m; see 'postline send --help'\n")


@pytest.mark.parametrize("group, what", [("ledger", "ACTION"), ("outbox", "ACTION"),
                                         ("keys", "COMMAND"), ("dev-stack", "ACTION")])
def test_a_group_without_its_action_is_one_line_with_exit_2(capsys, group, what):
    assert usage_error(capsys, group) == (
        f"postline {group}: error: the following arguments are required: {what}; see "
        f"'postline {group} --help'\n")


def test_an_unknown_option_names_the_subcommand(capsys):
    assert usage_error(capsys, "ledger", "list", ".", "Inbox", "--bogus") == (
        "postline ledger list: error: unrecognized arguments: --bogus; see 'postline ledger "
        "list --help'\n")


def test_a_misspelt_command_or_choice_is_suggested(capsys):
    err = usage_error(capsys, "valiate")
    assert err.startswith("postline: error: argument COMMAND: invalid choice: 'valiate' (did "
                          "you mean 'validate'? choose from validate, assets, ")
    assert err.count("\n") == 1
    assert usage_error(capsys, "ledger", "list", ".", "Inbox", "--state", "faild") == (
        "postline ledger list: error: argument --state: invalid choice: 'faild' (did you mean "
        "'failed'? choose from acquired, done, failed, ignored); see 'postline ledger list "
        "--help'\n")


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


PARSERS = list(_parsers(build_parser()))


@pytest.mark.parametrize("path, parser", PARSERS, ids=lambda p: " ".join(p)
                         if isinstance(p, tuple) else "")
def test_every_option_and_argument_has_help_text(path, parser):
    missing = [a.option_strings or a.dest for a in parser._actions
               if a.help is None and not isinstance(a, argparse._SubParsersAction)]
    assert missing == []


@pytest.mark.parametrize("argv, shape", [
    ("send", "[PROJECT] SERVICE\n"), ("outbox list", "[PROJECT] SERVICE\n"),
    ("outbox retry", "[PROJECT] SERVICE\n"), ("ledger list", "[PROJECT] SOURCE\n"),
    ("ledger reset", "[PROJECT] SOURCE\n"), ("ledger retry", "[PROJECT] SOURCE\n"),
    ("ledger prune", "[PROJECT] SOURCE\n"), ("show", "PROJECT NAME\n"),
    ("secret set", "PROJECT ASSET KEY\n"), ("validate", "[PROJECT]\n"),
])
def test_usage_lines_show_the_real_shape(argv, shape):
    parser = dict(PARSERS)[tuple(argv.split())]
    usage = parser.format_usage()
    assert usage.endswith(" " + shape), usage
    assert "[[PROJECT]" not in usage and "SERVICE ..." not in usage


def test_ledger_list_help_explains_state_and_limit(capsys):
    with pytest.raises(SystemExit):
        main(["ledger", "list", "--help"])
    out = capsys.readouterr().out
    assert "only entries in this state" in out and "at most N entries (default: all)" in out


# -- ledger list -----------------------------------------------------------------------

def _ledger(project_root: Path) -> None:
    ledger = SqliteLedger(path=ledger_path(project_root / ".postline-state"))
    try:
        places = [Place(key=f"LocalMail/INBOX/7/{i}", connection="LocalMail", folder="INBOX",
                        folder_version="7", server_id=str(i)) for i in (1, 2)]
        ledger.acquire("Inbox", places)
        ledger.finish("Inbox", [
            Outcome(key="LocalMail/INBOX/7/1", state="done", subject="Rechnung 42"),
            Outcome(key="LocalMail/INBOX/7/2", state="ignored", subject="[SPAM] prize",
                    reason="Subject matches blacklist pattern '(?i)^\\[spam\\]'")])
    finally:
        ledger.close()


def test_ledger_list_prints_a_table_like_the_other_list_commands(capsys, local):
    _ledger(local)
    code, out, err = run(capsys, "ledger", "list", str(local), "Inbox")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Ledger of Inbox"
    assert lines[1].startswith("┏━") and "┃ key " in lines[2] and "┃ state " in lines[2]
    assert "┃ tries " in lines[2] and "┃ reason " in lines[2]
    row = next(line for line in lines if "LocalMail/INBOX/7/2" in line)
    assert "│ ignored " in row and "│ [SPAM] prize " in row
    assert "Subject matches blacklist pattern '(?i)^\\[spam\\]'" in row  # as written in YAML
    assert lines[-1] == "2 entries"
    code, out, _ = run(capsys, "ledger", "list", str(local), "Inbox", "--state", "done",
                       "--json")
    assert code == 0
    assert [(e["key"], e["state"]) for e in json.loads(out)] == [("LocalMail/INBOX/7/1",
                                                                  "done")]
    code, out, _ = run(capsys, "ledger", "list", str(local), "Inbox", "--state", "failed")
    assert (code, out) == (0, "no entries for source Inbox in state failed\n")


# -- show ------------------------------------------------------------------------------

def test_show_prints_yaml_key_names_and_the_throttle_limit(capsys, local):
    code, out, _ = run(capsys, "show", str(local), "Inbox")
    assert code == 0
    assert "\nfilters:\n  from: (default)\n    blacklist: [] (default)\n" in out
    assert "from_" not in out
    assert ("\nthrottle: (default)\n  max_streams: null (default: no limit)\n"
            "  per: minute (default)\n") in out
    code, out, _ = run(capsys, "show", str(local), "Inbox", "--json")
    data = json.loads(out)
    assert "from" in data["asset"]["filters"] and "from_" not in data["asset"]["filters"]
    assert data["notes"]["throttle.max_streams"] == "default: no limit"


def test_show_says_a_service_has_no_throttle_and_shows_a_set_one(capsys, local):
    code, out, _ = run(capsys, "show", str(local), "Notify")
    assert code == 0 and "\nthrottle: null (default: no limit)\n" in out
    service = local / "service.yaml"
    service.write_text(service.read_text().replace(
        "# throttle: {max_messages: 12, per: minute}", "throttle: {max_messages: 12, per: minute}"))
    code, out, _ = run(capsys, "show", str(local), "Notify")
    assert "\nthrottle:\n  max_messages: 12\n  per: minute\n" in out


def test_the_demo_connection_describes_the_demo_mailbox(capsys, local, monkeypatch):
    monkeypatch.setenv("DEMO_USER", "demo1733@example.test")
    code, out, _ = run(capsys, "show", str(local), "LocalMail")
    assert "\ndescription: Mailbox of demo1733@example.test on the local dev stack" in out
    monkeypatch.delenv("DEMO_USER")
    code, out, _ = run(capsys, "assets", str(local))
    assert "Mailbox of alice@example.test on the local dev stack" in out
    assert "Alice's mailbox" not in out


# -- send: every problem of a message at once ------------------------------------------

def test_send_reports_every_problem_of_a_message(capsys, local, monkeypatch):
    message = {"Form": "me@example.test", "To": [{"Adress": "ann@example.test"}],
               "Subject": "two\nlines", "Attachments": [{"Content": "%%"}],
               "Priority": "urgent"}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(message)))
    code, out, err = run(capsys, "send", str(local), "Notify", "--message", "-")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "postline: error: unknown key Form; did you mean From?",
        "postline: error: unknown key To[0].Adress; did you mean Address?",
        "postline: error: Subject contains a line break (CR/LF); header values must be one "
        "line, line breaks would inject headers",
        "postline: error: Attachments[0].Content is not valid base64",
        "postline: error: Priority must be high, normal or low, got 'urgent'",
        "postline: error: 5 problems; nothing was sent"]


def test_send_json_lists_every_problem(capsys, local, monkeypatch):
    message = {"To": [], "Subject": "x", "Priority": "soon", "Bcc": "not-a-list"}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(message)))
    code, out, _ = run(capsys, "send", str(local), "Notify", "--message", "-", "--json")
    assert code == 1
    data = json.loads(out)
    assert [p["field"] for p in data["problems"]] == ["Bcc", "Priority"]
    assert data["error"].startswith("2 problems in the message: Bcc must be a list")


def test_one_problem_is_reported_as_before(capsys, local, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO('{"To": [], "Subject": "x"}'))
    code, _, err = run(capsys, "send", str(local), "Notify", "--message", "-")
    assert (code, err) == (1, "postline: error: no recipient: give at least one of To, Cc, "
                              "Bcc (or ToList, CcList, BccList)\n")


# -- the summary line of run ----------------------------------------------------------

@pytest.mark.parametrize("counts, seconds, line", [
    ({"done": 1}, 0.3, "1 mail: 1 done, 0 failed, 0 ignored in 0.3s"),
    ({"done": 3, "ignored": 1}, 0.3, "4 mails: 3 done, 0 failed, 1 ignored in 0.3s"),
    ({"done": 1}, 4.0, "1 mail: 1 done, 0 failed, 0 ignored in 4.0s"),
    ({"done": 6}, 4.0, "6 mails: 6 done, 0 failed, 0 ignored in 4.0s (1.5 mails/s)"),
    ({"done": 210, "failed": 1, "ignored": 3}, 2.1,
     "214 mails: 210 done, 1 failed, 3 ignored in 2.1s (102 mails/s)"),
    ({}, 0.1, "0 mails: 0 done, 0 failed, 0 ignored in 0.1s"),
])
def test_summary_line(counts, seconds, line):
    assert Summary(counts=Counter(counts), seconds=seconds).line() == line


# -- dev-stack env -----------------------------------------------------------------------

def _info(tmp_path: Path):
    return SimpleNamespace(
        dir=tmp_path / "stack", host="127.0.0.1", ports={"imaps": 10993},
        ca_file=tmp_path / "stack" / "tls" / "ca.pem", oidc_authority="https://a",
        oidc_issuer="https://i", cc_client_id="c", cc_client_secret="s", cc_mailbox="m",
        device_client_id="d", mail_scopes=("x",), password=lambda user: "alice-pass")


def test_dev_stack_env_exports_the_demo_key_file_when_there_is_one(tmp_path):
    info = _info(tmp_path)
    (tmp_path / "stack").mkdir()
    assert "POSTLINE_KEY_FILE" not in env_vars(info)
    (tmp_path / "stack" / "demo.key").write_text("# key\n")
    assert env_vars(info)["POSTLINE_KEY_FILE"] == str(tmp_path / "stack" / "demo.key")
    assert env_vars(info)["POSTLINE_STACK_IMAPS_PORT"] == "10993"
