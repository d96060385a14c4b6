import base64

from postline.auth import sasl


def test_plain_has_nul_separators():
    assert sasl.plain("bob@example.test", "pässword") == "\0bob@example.test\0pässword".encode()


def test_xoauth2_format():
    assert sasl.xoauth2("u@x", "tok") == b"user=u@x\x01auth=Bearer tok\x01\x01"


def test_oauthbearer_gs2_header_escapes_comma_and_equals():
    assert sasl.gs2_header("a,b=c@x") == "n,a=a=2Cb=3Dc@x,"
    assert sasl.gs2_header(None) == "n,,"
    out = sasl.oauthbearer("u@x", "tok", host="h", port=993)
    assert out == b"n,a=u@x,\x01host=h\x01port=993\x01auth=Bearer tok\x01\x01"


def test_b64_of_empty_is_equals_sign():
    assert sasl.b64(b"") == b"="
    assert sasl.b64(b"ab") == b"YWI="


def test_decode_error_challenge_base64_json():
    raw = base64.b64encode(b'{"status":"401","schemes":"bearer","scope":"mail"}')
    f = sasl.decode_error_challenge(raw)
    assert (f.status, f.schemes, f.scope) == ("401", "bearer", "mail")
    assert f.describe() == "status 401, scope needed: mail"


def test_decode_error_challenge_tolerates_garbage():
    assert sasl.decode_error_challenge(b"%%%not base64").raw
    assert sasl.decode_error_challenge("").describe() == "no details"
    assert sasl.decode_error_challenge(b'{"status":"invalid_token"}').status == "invalid_token"


def test_xoauth2_preferred_over_oauthbearer():
    assert sasl.choose_oauth_mechanism({"PLAIN", "OAUTHBEARER", "XOAUTH2"}) == "XOAUTH2"
    assert sasl.choose_oauth_mechanism({"oauthbearer"}) == "OAUTHBEARER"
    assert sasl.choose_oauth_mechanism({"PLAIN"}) is None
