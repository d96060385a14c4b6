"""``--log-format json`` / ``POSTLINE_LOG_FORMAT``: one JSON object per line, secrets masked."""

from __future__ import annotations

import json
import logging

import pytest

from postline.cli import main, project_cmds
from postline.errors import ConfigError
from postline.logs import json_line, register_secret, say, setup_logging


@pytest.fixture(autouse=True)
def back_to_text():
    yield
    setup_logging(0, "text")


def _fail(msg):
    def handler(_args):
        raise ConfigError(msg)
    return handler


def test_errors_of_the_cli_are_json_lines(capsys, monkeypatch):
    monkeypatch.setattr(project_cmds, "cmd_validate", _fail("connection Box: port: expected a "
                                                              "number"))
    assert main(["--log-format", "json", "validate", "."]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    obj = json.loads(err[0])
    assert obj["level"] == "ERROR" and obj["logger"] == "postline"
    assert obj["msg"] == "postline: error: connection Box: port: expected a number"
    assert obj["ts"].endswith("Z") and len(obj["ts"]) == len("2026-12-02T07:00:00.000Z")


def test_the_option_after_the_command_and_the_environment_variable_work_too(capsys,
                                                                            monkeypatch):
    monkeypatch.setattr(project_cmds, "cmd_validate", _fail("nope"))
    assert main(["validate", ".", "--log-format", "json"]) == 1
    assert json.loads(capsys.readouterr().err)["msg"] == "postline: error: nope"
    monkeypatch.setenv("POSTLINE_LOG_FORMAT", "JSON")
    assert main(["validate", "."]) == 1
    assert json.loads(capsys.readouterr().err)["msg"] == "postline: error: nope"
    assert main(["--log-format", "text", "validate", "."]) == 1   # the option wins
    assert capsys.readouterr().err == "postline: error: nope\n"


def test_an_unknown_format_in_the_environment_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.setenv("POSTLINE_LOG_FORMAT", "xml")
    assert main(["validate", "."]) == 2
    assert capsys.readouterr().err == ("postline: error: POSTLINE_LOG_FORMAT='xml': expected "
                                       "text or json\n")


def test_log_records_carry_their_fields_and_mask_secrets(capsys):
    register_secret("s3cr3t-json-value")
    setup_logging(1, "json")
    logging.getLogger("postline.mail").info(
        "workflow=%s key=%s outcome=%s", "Flow", "Box/INBOX/1/2", "failed",
        extra={"fields": {"workflow": "Flow", "key": "Box/INBOX/1/2", "outcome": "failed",
                          "ms": 12.5, "reason": "sink said s3cr3t-json-value", "msg": "x"}})
    line = capsys.readouterr().err.strip()
    obj = json.loads(line)
    assert obj["msg"] == "workflow=Flow key=Box/INBOX/1/2 outcome=failed"   # not overridden
    assert obj["outcome"] == "failed" and obj["ms"] == 12.5 and obj["level"] == "INFO"
    assert obj["reason"] == "sink said ***" and "s3cr3t-json-value" not in line


def test_exceptions_are_one_json_line_with_the_traceback_in_a_field(capsys):
    setup_logging(0, "json")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("postline.workflow").exception("workflow Flow crashed")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["msg"] == "workflow Flow crashed" and "ValueError: boom" in obj["exc"]


def test_say_is_plain_in_text_mode_and_json_with_fields_in_json_mode(capsys):
    setup_logging(0, "text")
    say("postline: 3 mails", summary={"done": 3})
    assert capsys.readouterr().err == "postline: 3 mails\n"
    setup_logging(0, "json")
    say("postline: 3 mails\nsecond line", summary={"done": 3})
    obj = json.loads(capsys.readouterr().err)
    assert obj["msg"] == "postline: 3 mails second line" and obj["summary"] == {"done": 3}


def test_json_line_keeps_non_ascii_readable():
    line = json_line(ts=0, level="INFO", logger="postline.mail", msg="Müller ✓",
                     fields={"subject": "請求書"})
    assert "Müller ✓" in line and "請求書" in line
    assert json.loads(line)["ts"] == "1970-01-01T00:00:00.000Z"
