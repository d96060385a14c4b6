"""Macros: every form, the resolution order, errors, and run-time prefixes."""

from __future__ import annotations

import datetime as dt

import pytest
from asset_helpers import messages

from postline.assets.datefmt import DatePatternError, format_date
from postline.assets.macros import MacroContext, MacroError, Resolved, expand, expand_tracked
from postline.errors import SecretError

T = dt.datetime(2024, 3, 5, 14, 7, 9, 123456, tzinfo=dt.UTC)
CTX = MacroContext(handlers={"env": {"A": "env-a", "WHICH": "A", "EMPTY": "", "B": "env-b"}.get,
                             "lay": {"A": "lay-a", "X": "lay-x"}.get},
                   now=lambda: T)


@pytest.mark.parametrize("template, expected", [
    ("plain", "plain"),
    ("${env:A}", "env-a"),
    ("${A}", "lay-a"),                       # bare: a later layer (lay) wins over env
    ("${B}", "env-b"),                       # only env has it
    ("${lay:X}/${env:A}", "lay-x/env-a"),
    ("${env:${env:WHICH}}", "env-a"),        # nesting: inner gives the name
    ("${env:NOPE:-fallback}", "fallback"),
    ("${env:NOPE:-}", ""),
    ("${env:EMPTY:-used when empty}", "used when empty"),
    ("${env:EMPTY}", ""),
    ("${NOPE:-${ALSO_NOPE:-deep}}", "deep"),  # nested defaults
    ("${NOPE:-x${lay:X}y}", "xlay-xy"),
    ("$${env:A}", "${env:A}"),               # escape
    ("a $$ b } c", "a $$ b } c"),
    ("${date:yyyy-MM-dd}", "2024-03-05"),
    ("${date:%Y%m%d}", "20240305"),
    ("${date:yyyy-MM-dd'T'HH:mm:ss.SSSX}", "2024-03-05T14:07:09.123Z"),
])
def test_expand(template, expected):
    assert expand(template, CTX) == expected


@pytest.mark.parametrize("template, message", [
    ("${env:A", "unterminated macro '${env:A' (missing '}'; write $${ for a literal ${)"),
    ("x ${NOPE:-${A}", "unterminated macro"),
    ("${env:NOPE}", "undefined macro ${env:NOPE}: environment variable NOPE is not set "
                    "(give a default with ${env:NOPE:-value})"),
    ("${NOPE}", "undefined macro ${NOPE}: not set in the environment, an Environment asset "
                "or a Secret"),
    ("${lay:NOPE}", "undefined macro ${lay:NOPE}: no Environment asset defines it"),
    ("${NOPE:-${ALSO}}", "undefined macro ${ALSO}"),
    ("${foo:x}", "unknown macro prefix 'foo' in '${foo:x}' (known: date, env, lay, mail)"),
    ("${}", "empty macro name in '${}'"),
    ("${env:}", "'${env:}' names no variable after 'env:'"),
    ("${date:qq}", "unknown letter 'q' in date pattern 'qq'"),
])
def test_expand_errors(template, message):
    with pytest.raises(MacroError) as info:
        expand(template, CTX)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_mail_prefix_is_kept_at_load_time_and_expanded_at_run_time():
    loaded = expand("orders/${mail:from}/${env:A} $${literal}", CTX)
    assert loaded == "orders/${mail:from}/env-a $${literal}"   # escape kept for the 2nd pass
    run = CTX.with_prefix("mail", {"from": "bob@example.test"})
    assert expand(loaded, run) == "orders/bob@example.test/env-a ${literal}"


def test_mail_prefix_with_a_callable_and_a_default():
    run = CTX.with_prefix("mail", lambda key: {"subject": "Hi"}.get(key))
    assert expand("${mail:subject}-${mail:folder:-INBOX}", run) == "Hi-INBOX"


def test_deferring_date_for_templates():
    tracked = expand_tracked("${date:yyyy}-${env:A}", CTX.deferring("date"))
    assert (tracked.text, tracked.deferred) == ("${date:yyyy}-env-a", True)


def test_sensitive_values_and_sources_are_tracked():
    ctx = CTX.with_prefix("sec", lambda k: Resolved("s3cret!", True, ("Secret", "S", k)))
    out = expand_tracked("user:${sec:pw}", ctx)
    assert (out.text, out.sensitive, out.sources) == ("user:s3cret!", True,
                                                      (("Secret", "S", "pw"),))
    assert not expand_tracked("${env:A}", ctx).sensitive


def test_values_containing_macro_syntax_are_not_expanded_again():
    ctx = MacroContext(handlers={"env": {"V": "${env:V}"}.get})
    assert expand("${env:V}", ctx) == "${env:V}"


def test_date_patterns():
    assert format_date("EEE, d MMM yyyy hh:mm a Z", T) == "Tue, 5 Mar 2024 02:07 PM +0000"
    assert format_date("yyMMdd'_'HHmm", T) == "240305_1407"
    assert format_date("'it''s' yyyy", T) == "it's 2024"
    with pytest.raises(DatePatternError, match="unclosed quote"):
        format_date("'open", T)


# -- through the loader -------------------------------------------------------------------

CONN = """
kind: EmailConnection
name: Mailbox
description: {description}
incoming:
  host: {host}
  port: {port}
  user: {user}
"""


def conn(description="d", host="h", port="993", user="u"):
    return CONN.format(description=description, host=host, port=port, user=user)


def test_int_field_given_as_macro(load):
    p = load({"c.yaml": conn(port="${PORT}"),
              "e.yaml": "kind: Environment\nname: E\nvariables: {PORT: 10993}\n"})
    assert p.get("EmailConnection", "Mailbox").incoming.port == 10993


def test_macro_giving_a_bad_port_is_a_type_error(load):
    p = load({"c.yaml": conn(port="${env:P}")}, environ={"P": "abc"})
    assert messages(p) == ["c.yaml:6: EmailConnection/Mailbox: incoming.port: expected an "
                           "integer, got 'abc'"]


def test_undefined_macro_names_file_line_and_field(load):
    p = load({"c.yaml": conn(host="${env:IMAP_HOST}", user="${NOPE}")}, environ={})
    assert messages(p) == [
        "c.yaml:5: EmailConnection/Mailbox: incoming.host: undefined macro ${env:IMAP_HOST}: "
        "environment variable IMAP_HOST is not set (give a default with "
        "${env:IMAP_HOST:-value})",
        "c.yaml:7: EmailConnection/Mailbox: incoming.user: undefined macro ${NOPE}: not set in "
        "the environment, an Environment asset or a Secret (give a default with ${NOPE:-value})"]


def test_unterminated_macro_in_a_file(load):
    p = load({"c.yaml": conn(host="'${env:H'")}, environ={})
    assert messages(p) == ["c.yaml:5: EmailConnection/Mailbox: incoming.host: unterminated "
                           "macro '${env:H' (missing '}'; write $${ for a literal ${)"]


def test_resolution_order_env_then_environments_then_secrets(load):
    files = {"c.yaml": conn(host="${HOST}", user="${USER_NAME}", description="${ONLY_ENV}"),
             "a.yaml": "kind: Environment\nname: A\nvariables: {HOST: from-a, USER_NAME: a}\n",
             "b.yaml": "kind: Environment\nname: B\nvariables: {HOST: from-b}\n",
             "s.yaml": "kind: Secret\nname: S\nvalues: {USER_NAME: env:SECRET_USER}\n"}
    p = load(files, environ={"HOST": "from-env", "ONLY_ENV": "e", "SECRET_USER": "from-secret"})
    c = p.get("EmailConnection", "Mailbox")
    assert (c.incoming.host, c.incoming.user, c.description) == ("from-b", "from-secret", "e")
    assert ("incoming", "user") in p.entry("EmailConnection", "Mailbox").sensitive


def test_lay_picks_one_asset_and_values_expand_macros(load):
    files = {"c.yaml": conn(host="${lay:A.HOST}", user="${lay:USER_NAME}"),
             "a.yaml": "kind: Environment\nname: A\nvariables:\n  HOST: a\n"
                       "  USER_NAME: ${env:LOGNAME:-nobody}@example.test\n",
             "b.yaml": "kind: Environment\nname: B\nvariables: {HOST: b}\n"}
    c = load(files, environ={"LOGNAME": "alice"}).get("EmailConnection", "Mailbox")
    assert (c.incoming.host, c.incoming.user) == ("a", "alice@example.test")


def test_environment_cycle_is_an_error(load):
    p = load({"c.yaml": conn(host="${lay:A}"),
              "e.yaml": "kind: Environment\nname: E\nvariables: {A: '${lay:B}', B: '${lay:A}'}\n"})
    assert any("macro cycle between Environment variables: E.A -> E.B -> E.A" in m
               for m in messages(p))


def test_sec_forms_and_ambiguity(load):
    files = {"c.yaml": conn(host="${sec:S1.k}", user="${sec:only}", description="${sec:k}"),
             "s.yaml": "kind: Secret\nname: S1\nvalues: {k: env:K1, only: env:O}\n---\n"
                       "kind: Secret\nname: S2\nvalues: {k: env:K2}\n"}
    p = load(files, environ={"K1": "k-one", "K2": "k-two", "O": "the-only"})
    assert messages(p) == ["c.yaml:3: EmailConnection/Mailbox: description: secret key 'k' is "
                           "in several Secret assets (S1, S2); write ${sec:S1.k}"]
    e = p.entry("EmailConnection", "Mailbox")
    assert p.find("Mailbox").model is None and e.sensitive >= {("incoming", "host")}


def test_secret_values_are_not_macro_expanded(load):
    p = load({"s.yaml": "kind: Secret\nname: S\nvalues: {k: 'env:${X}'}\n"})
    assert p.errors == [] and p.get("Secret", "S").values == {"k": "env:${X}"}


def test_sealed_secret_in_macro_validates_without_private_key_and_fails_on_use(load, tmp_path):
    from postline.assets.secrets import create_key_pair, seal
    root = tmp_path / "keyed"
    root.mkdir()
    created = create_key_pair(root, key_file=tmp_path / "k.key", environ={})
    sealed = seal(bytes.fromhex(_pub_hex(root)), "smtp-user")
    files = {"c.yaml": conn(user="${sec:S.user}"),
             "s.yaml": f"kind: Secret\nname: S\nvalues: {{user: '{sealed}'}}\n",
             "postline.pub": (root / "postline.pub").read_text()}
    p = load(files, environ={"HOME": str(tmp_path / "nohome")})
    assert p.errors == []
    with pytest.raises(SecretError, match=r"cannot decrypt secret S.user: no private key at "):
        p.get("EmailConnection", "Mailbox")
    p2 = load(files, environ={"POSTLINE_KEY_FILE": str(created.private_file)})
    assert p2.get("EmailConnection", "Mailbox").incoming.user == "smtp-user"


def _pub_hex(root) -> str:
    from postline.assets.secrets import read_public_key
    return read_public_key(root).hex()


def test_project_macro_context_for_run_time(load):
    p = load({"e.yaml": "kind: Environment\nname: E\nvariables: {A: a}\n"})
    ctx = p.macro_context().with_prefix("mail", {"subject": "Hi"})
    assert expand("${lay:A}-${mail:subject}-${mail:from:-nobody}", ctx) == "a-Hi-nobody"


def test_mail_macros_survive_loading(load):
    p = load({"e.yaml": "kind: Environment\nname: E\nvariables: {T: 'x/${mail:folder}/$${y}'}\n"})
    assert p.get("Environment", "E").variables["T"] == "x/${mail:folder}/$${y}"
