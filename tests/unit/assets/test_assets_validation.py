"""Validation messages: one line each, with file, line, asset, field path and a fix."""

from __future__ import annotations

from asset_helpers import SECRETS, messages

from postline.assets.kinds.connection import DEFAULT_PORTS, EmailConnection


def conn(body: str) -> str:
    return "kind: EmailConnection\nname: Mailbox\n" + body


def errors_of(load, body: str, environ=None) -> list[str]:
    p = load({"c.yaml": conn(body), "s.yaml": SECRETS}, environ=environ)
    return [m for m, pr in zip(messages(p), p.problems, strict=False) if pr.severity == "error"]


def test_unknown_key_suggests_nearest(load):
    assert errors_of(load, "incoming:\n  hots: x\n  host: h\n") == [
        "c.yaml:4: EmailConnection/Mailbox: incoming.hots: unknown key 'hots' "
        "(did you mean 'host'?)"]


def test_unknown_top_level_key_without_close_match_lists_valid_keys(load):
    (msg,) = errors_of(load, "incoming: {host: h}\nzzz: 1\n")
    assert msg.startswith("c.yaml:4: EmailConnection/Mailbox: zzz: unknown key 'zzz' (valid keys: ")
    assert "incoming" in msg and "microsoft365" in msg


def test_unknown_key_inside_credential_uses_that_type_s_keys(load):
    assert errors_of(load, "incoming:\n  host: h\n  credential:\n    type: secret\n"
                           "    secert: MailSecrets.password\n") == [
        "c.yaml:7: EmailConnection/Mailbox: incoming.credential.secert: unknown key 'secert' "
        "(did you mean 'secret'?)",
        "c.yaml:5: EmailConnection/Mailbox: incoming.credential.secret: missing (this field "
        "is required)"][::-1]


def test_field_of_another_credential_type_says_where_it_belongs(load):
    assert errors_of(load, "incoming:\n  host: h\n  credential:\n    type: secret\n"
                           "    secret: MailSecrets.password\n    client_id: abc\n") == [
        "c.yaml:8: EmailConnection/Mailbox: incoming.credential.client_id: 'client_id' is not "
        "used with type: secret (it belongs to type: oauth_client_credentials / "
        "oauth_device_flow)"]


def test_credential_type_typo(load):
    assert errors_of(load, "incoming:\n  host: h\n  credential: {type: secrets}\n") == [
        "c.yaml:5: EmailConnection/Mailbox: incoming.credential.type: 'secrets' is not allowed "
        "here; expected one of: none, secret, oauth_client_credentials, oauth_device_flow "
        "(did you mean 'secret'?)"]


def test_credential_without_type(load):
    assert errors_of(load, "incoming:\n  host: h\n  credential: {secret: A.b}\n") == [
        "c.yaml:5: EmailConnection/Mailbox: incoming.credential.type: missing (one of: none, "
        "secret, oauth_client_credentials, oauth_device_flow)"]


def test_wrong_types(load):
    assert errors_of(load, "incoming:\n  host: h\n  port: abc\n  check_server_identity: maybe\n"
                           "  read_timeout: [1]\n") == [
        "c.yaml:5: EmailConnection/Mailbox: incoming.port: expected an integer, got 'abc'",
        "c.yaml:6: EmailConnection/Mailbox: incoming.check_server_identity: expected true or "
        "false, got 'maybe'",
        "c.yaml:7: EmailConnection/Mailbox: incoming.read_timeout: expected a number, got a list"]


def test_port_range_and_literal_choices(load):
    assert errors_of(load, "incoming:\n  protocol: imapp\n  host: h\n  port: 0\n"
                           "  security: ssl\n") == [
        "c.yaml:4: EmailConnection/Mailbox: incoming.protocol: expected one of 'imap', 'pop3', "
        "'none', got 'imapp' (did you mean 'imap'?)",
        "c.yaml:6: EmailConnection/Mailbox: incoming.port: must be >= 1, got 0",
        "c.yaml:7: EmailConnection/Mailbox: incoming.security: expected one of 'none', "
        "'starttls', 'tls', got 'ssl'"]


def test_missing_host_points_at_the_direction(load):
    assert errors_of(load, "incoming:\n  protocol: pop3\n") == [
        "c.yaml:3: EmailConnection/Mailbox: incoming.host: is required when protocol is pop3"]


def test_at_least_one_direction(load):
    assert errors_of(load, "incoming: {protocol: none}\noutgoing: {protocol: none}\n") == [
        "c.yaml:1: EmailConnection/Mailbox: at least one of incoming or outgoing must have a "
        "protocol other than none"]


def test_microsoft365_rules(load):
    assert errors_of(load, "type: microsoft365\nmicrosoft365:\n  credential:\n"
                           "    type: secret\n") == [
        "c.yaml:6: EmailConnection/Mailbox: microsoft365.credential.type: 'secret' is not "
        "allowed here; expected one of: oauth_client_credentials, oauth_device_flow"]
    cc = ("  credential:\n    type: oauth_client_credentials\n    authority: https://a/t\n"
          "    client_id: c\n    scopes: [s]\n    client_secret: MailSecrets.password\n")
    assert errors_of(load, "type: microsoft365\nmicrosoft365:\n" + cc) == [
        "c.yaml:4: EmailConnection/Mailbox: microsoft365.mailbox: is required with "
        "oauth_client_credentials (an app-only token has no user of its own)"]
    assert errors_of(load, "type: microsoft365\nincoming: {host: h}\nmicrosoft365:\n"
                           "  mailbox: m@x\n" + cc) == [
        "c.yaml:4: EmailConnection/Mailbox: incoming: is not used with type: microsoft365 "
        "(put mailbox and credential under microsoft365)"]
    assert errors_of(load, "type: microsoft365\n") == [
        "c.yaml:1: EmailConnection/Mailbox: microsoft365: is required with type: microsoft365 "
        "(mailbox and credential)"]
    assert errors_of(load, "incoming: {host: h}\nmicrosoft365:\n  mailbox: m@x\n" + cc) == [
        "c.yaml:4: EmailConnection/Mailbox: microsoft365: is only allowed with type: "
        "microsoft365 (type is standard)"]


def test_empty_scopes(load):
    assert errors_of(load, "incoming:\n  host: h\n  credential:\n    type: oauth_device_flow\n"
                           "    authority: https://a\n    client_id: c\n    scopes: []\n") == [
        "c.yaml:9: EmailConnection/Mailbox: incoming.credential.scopes: needs at least 1 item(s)"]


def test_every_error_of_the_project_in_one_run(load):
    p = load({"a.yaml": conn("incoming: {hots: h}\n") + "---\nkind: Nope\nname: n\n",
              "b.yaml": "kind: Environment\nname: E\nvariables: {'bad key': x}\nextra: 1\n",
              "c.yaml": "kind: Secret\nname: S\nvalues: {k: ${nope}}\n"})
    assert len(p.errors) == 5, messages(p)


def test_reference_to_missing_secret_asset_and_key(load):
    body = "incoming:\n  host: h\n  credential: {type: secret, secret: MailSecret.password}\n"
    assert errors_of(load, body) == [
        "c.yaml:5: EmailConnection/Mailbox: incoming.credential.secret: no Secret named "
        "'MailSecret' (did you mean 'MailSecrets'?)"]
    body = "incoming:\n  host: h\n  credential: {type: secret, secret: MailSecrets.pasword}\n"
    assert errors_of(load, body) == [
        "c.yaml:5: EmailConnection/Mailbox: incoming.credential.secret: Secret 'MailSecrets' "
        "has no key 'pasword' (did you mean 'password'?); set it with 'postline secret set "
        "PROJECT MailSecrets pasword'"]


def test_reference_to_a_name_of_another_kind(load):
    p = load({"c.yaml": conn("incoming:\n  host: h\n  credential: {type: secret, secret: "
                             "Dev.password}\n"),
              "e.yaml": "kind: Environment\nname: Dev\n"})
    assert messages(p) == ["c.yaml:5: EmailConnection/Mailbox: incoming.credential.secret: no "
                           "Secret named 'Dev' (Dev is a Environment)"]


def test_broken_reference_reported_together_with_other_errors(load):
    body = ("incoming:\n  host: h\n  port: x\n  credential: {type: secret, secret: "
            "Nope.password}\n")
    assert len(errors_of(load, body)) == 2


def test_secret_ref_syntax(load):
    assert errors_of(load, "incoming:\n  host: h\n  credential: {type: secret, secret: "
                           "password}\n") == [
        "c.yaml:5: EmailConnection/Mailbox: incoming.credential.secret: must name a key of a "
        "Secret asset as SecretAsset.key"]


def test_plaintext_secret_refused_without_echo(load):
    p = load({"s.yaml": "kind: Secret\nname: S\nvalues:\n  pw: hunter2-plain\n  n: 12345678\n"})
    out = messages(p)
    assert out == [
        "s.yaml:4: Secret/S: values.pw: must be sealed:<...> (run 'postline secret set'), "
        "env:NAME or file:/path; plaintext secrets are not allowed",
        "s.yaml:5: Secret/S: values.n: must be sealed:<...> (run 'postline secret set'), "
        "env:NAME or file:/path; plaintext secrets are not allowed"]
    assert not any("hunter2" in m or "12345678" in m for m in out)


def test_secret_key_names(load):
    p = load({"s.yaml": "kind: Secret\nname: S\nvalues:\n  'a b': env:X\n  c: 'env:'\n"})
    assert messages(p) == [
        "s.yaml:4: Secret/S: values.a b: invalid key name 'a b' (use letters, digits, '_', "
        "'-')",
        "s.yaml:5: Secret/S: values.c: env: needs a value after the colon"]


# -- defaults and warnings ---------------------------------------------------------------

def test_port_defaults_follow_protocol_and_security():
    for (protocol, security), port in DEFAULT_PORTS.items():
        direction = "outgoing" if protocol == "smtp" else "incoming"
        c = EmailConnection.model_validate({
            "kind": "EmailConnection", "name": "c",
            direction: {"protocol": protocol, "host": "h", "security": security}})
        ep = getattr(c, direction)
        assert (ep.effective_port, ep.port_is_default) == (port, True)
        assert ep.shown_defaults()["port"] == (port, f"default for {protocol} + {security}")
    assert DEFAULT_PORTS[("smtp", "starttls")] == 587 and DEFAULT_PORTS[("imap", "tls")] == 993


def test_check_server_identity_defaults_to_true():
    c = EmailConnection.model_validate({"kind": "EmailConnection", "name": "c",
                                        "incoming": {"host": "h"}})
    assert c.incoming.verify_identity is True
    assert c.incoming.shown_defaults()["check_server_identity"] == (True, "default")


def warnings_of(load, body: str) -> list[str]:
    p = load({"c.yaml": conn(body), "s.yaml": SECRETS})
    assert p.errors == []
    return [m for m, pr in zip(messages(p), p.problems, strict=False) if pr.severity == "warning"]


def test_warnings_for_contradicting_ports(load):
    assert warnings_of(load, "incoming: {host: h, security: tls, port: 143}\n") == [
        "c.yaml:3: warning: EmailConnection/Mailbox: incoming.port: port 143 is normally "
        "plaintext or STARTTLS but security is tls; did you mean security: starttls, or port 993?"]
    assert warnings_of(load, "outgoing: {host: h, security: starttls, port: 465}\n") == [
        "c.yaml:3: warning: EmailConnection/Mailbox: outgoing.port: port 465 normally speaks "
        "implicit TLS but security is starttls; did you mean security: tls, or port 587?"]
    assert warnings_of(load, "incoming: {host: h, security: tls, port: 10993}\n") == []


def test_warnings_for_server_identity(load):
    assert warnings_of(load, "incoming: {host: localhost, security: none, "
                             "check_server_identity: true}\n") == [
        "c.yaml:3: warning: EmailConnection/Mailbox: incoming.check_server_identity: "
        "check_server_identity has no effect with security: none (nothing is encrypted)"]
    (w,) = warnings_of(load, "incoming: {host: h, check_server_identity: false}\n")
    assert "encrypted but the server is not verified" in w


def test_warning_for_credentials_in_clear_text(load):
    (w,) = warnings_of(load, "incoming:\n  host: mail.example.com\n  security: none\n"
                             "  credential: {type: secret, secret: MailSecrets.password}\n")
    assert w.startswith("c.yaml:5: warning: EmailConnection/Mailbox: incoming.security: "
                        "credentials would cross the network unencrypted to mail.example.com")


def test_warnings_do_not_fail_validation(project_dir):
    from postline.project import open_project
    root = project_dir({"c.yaml": conn("incoming: {host: h, security: tls, port: 143}\n")})
    assert len(open_project(root, environ={}).warnings) == 1


def test_ca_file_relative_to_project(load):
    p = load({"c.yaml": conn("incoming: {host: h, ca_file: certs/ca.pem}\n")})
    assert p.get("EmailConnection", "Mailbox").incoming.ca_file == str(p.root / "certs/ca.pem")
