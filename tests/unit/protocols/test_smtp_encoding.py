import pytest

from postline.errors import MessageError
from postline.protocols.smtp import _check_address
from postline.protocols.smtp_session import encode_body


def test_body_gets_crlf_and_dot_stuffing_and_terminator():
    assert encode_body(b"a\n.b\r\n..c\rd") == b"a\r\n..b\r\n...c\r\nd\r\n.\r\n"


def test_body_already_crlf_terminated_is_not_doubled():
    assert encode_body(b"x\r\n") == b"x\r\n.\r\n"


@pytest.mark.parametrize("addr", ["a@b\r\nRCPT TO:<evil@x>", "a>@b", " a@b", "a@b\0"])
def test_envelope_injection_refused(addr):
    with pytest.raises(MessageError, match="not allowed in an SMTP envelope"):
        _check_address(addr, "recipient")


def test_null_sender_allowed():
    assert _check_address("", "sender") == b""


@pytest.mark.parametrize("raw,expected", [
    (b"", b"\r\n.\r\n"),
    (b"a\r\nb", b"a\r\nb\r\n.\r\n"),
    (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
    (b"a\rb", b"a\r\nb\r\n.\r\n"),
    (b".\r\n", b"..\r\n.\r\n"),
    (b"x\r\n.\r\n", b"x\r\n..\r\n.\r\n"),
    (b"x\r\r\ny", b"x\r\n\r\ny\r\n.\r\n"),
])
def test_fast_paths_match_the_rules(raw, expected):
    assert encode_body(raw) == expected
