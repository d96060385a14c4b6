"""How ``postline.cli.main`` reports failures: one line on stderr, a traceback only with -vv."""

from __future__ import annotations

import errno

import pytest

from postline.cli import main, project_cmds
from postline.errors import ConfigError, StorageError, os_error_message
from postline.logs import register_secret


def failing(exc: BaseException):
    def handler(_args):
        raise exc
    return handler


def run(capsys, monkeypatch, exc, *flags):
    monkeypatch.setattr(project_cmds, "cmd_validate", failing(exc))
    code = main(["validate", ".", *flags])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("exc, line", [
    (OSError(errno.ENOSPC, "No space left on device", "/var/out/records.jsonl"),
     "postline: error: /var/out/records.jsonl: no space left on device (ENOSPC); free some "
     "disk space, then run again"),
    (PermissionError(errno.EACCES, "Permission denied", "/etc/postline/state"),
     "postline: error: /etc/postline/state: permission denied (EACCES); check the owner and "
     "mode of that path (and of its directories) for the user running postline"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/out"),
     "postline: error: /x/out: no such file or directory (ENOENT); check the path"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"),
     "postline: error: /a -> /b: Invalid cross-device link (EXDEV)"),
])
def test_os_errors_are_one_line(capsys, monkeypatch, exc, line):
    code, out, err = run(capsys, monkeypatch, exc)
    assert (code, out, err) == (1, "", line + "\n")


def test_os_error_traceback_only_with_vv(capsys, monkeypatch):
    exc = OSError(errno.ENOSPC, "No space left on device", "/full")
    code, _, err = run(capsys, monkeypatch, exc, "-vv")
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == ("postline: error: /full: no space left on device (ENOSPC); "
                                    "free some disk space, then run again")


def test_unexpected_exception_is_one_line_with_a_pointer_to_vv(capsys, monkeypatch):
    code, _, err = run(capsys, monkeypatch, RuntimeError("boom\nsecond line"))
    assert (code, err) == (1, "postline: error: unexpected RuntimeError: boom (run with -vv for "
                              "the traceback)\n")
    code, _, err = run(capsys, monkeypatch, RuntimeError("boom"), "-vv")
    assert "Traceback" in err and err.endswith("postline: error: unexpected RuntimeError: boom\n")


def test_postline_errors_never_print_a_traceback(capsys, monkeypatch):
    code, _, err = run(capsys, monkeypatch, ConfigError("bad thing", hint="fix it"), "-vv")
    assert (code, err) == (1, "postline: error: bad thing (fix it)\n")


def test_error_lines_are_masked_and_single(capsys, monkeypatch):
    register_secret("Sup3r-Secret-Value-42")
    exc = ConfigError("server said: 535 auth failed for Sup3r-Secret-Value-42\r\nmore")
    code, _, err = run(capsys, monkeypatch, exc)
    assert code == 1
    assert err == "postline: error: server said: 535 auth failed for *** more\n"


def test_storage_error_words():
    err = StorageError.from_os_error(OSError(errno.EFBIG, "File too large", "/o/m.eml"),
                                     what="writing the directory sink")
    assert str(err) == ("writing the directory sink /o/m.eml: file too large for this file "
                        "system or process limit (EFBIG); check 'ulimit -f' and the file "
                        "system, then run again")
    assert err.retriable
    assert os_error_message(OSError("no errno")) == "no errno"
