"""The EmailConnection form's posted values -> the change to its YAML (no server)."""

from __future__ import annotations

from postline.assets.writer import DELETE
from postline.web import forms


def _form(**values: str) -> dict[str, list[str]]:
    return {k.replace("__", "."): [v] for k, v in values.items()}


def test_every_label_of_the_issue_is_on_the_form():
    labels = {f.label for f in forms.fields_of(forms.CONNECTION)}
    assert {"Name", "Description", "Email Connection Type", "Incoming mail server protocol",
            "Outgoing mail server protocol", "User", "Host", "Port", "Connection security",
            "Check server identity", "Credential type", "Authority", "Client ID", "Scopes",
            "Client secret", "Secret", "Mailbox"} <= labels
    legends = [s.legend for s in forms.CONNECTION]
    assert "Incoming mail server" in legends and "Outgoing mail server" in legends
    m365 = next(s for s in forms.CONNECTION if s.legend == "Microsoft 365")
    ctype = next(f for f in m365.fields if f.label == "Credential type")
    assert [v for v, _ in ctype.options] == ["oauth_client_credentials", "oauth_device_flow"]


def test_a_new_standard_connection():
    change = forms.connection_change(_form(
        name="Mail", type="standard", incoming__protocol="imap", incoming__host="h",
        incoming__port="", incoming__security="tls",
        incoming__check_server_identity="true", incoming__credential__type="oauth_device_flow",
        incoming__credential__authority="https://login.example/t",
        incoming__credential__client_id="app", incoming__credential__scopes="a b,c",
        incoming__credential__secret="ignored", outgoing__protocol="none"), {})
    assert change["type"] == "standard" and change["microsoft365"] is DELETE
    assert change["description"] is DELETE
    inc = change["incoming"]
    assert inc["port"] is DELETE and inc["check_server_identity"] is DELETE
    assert inc["credential"]["scopes"] == ["a", "b", "c"]
    assert inc["credential"]["secret"] is DELETE and inc["credential"]["client_secret"] is DELETE
    assert change["outgoing"] == {"protocol": "none"}


def test_an_edit_keeps_what_was_written_and_turns_identity_checks_off():
    raw = {"kind": "EmailConnection", "name": "Mail",
           "incoming": {"protocol": "imap", "check_server_identity": True}}
    change = forms.connection_change(_form(
        name="Mail", type="standard", incoming__protocol="imap", incoming__host="h",
        incoming__port="${env:PORT}", incoming__security="starttls",
        incoming__check_server_identity="true", incoming__credential__type="none",
        outgoing__protocol="smtp", outgoing__host="s", outgoing__security="tls",
        outgoing__credential__type="secret", outgoing__credential__secret="S.p"), raw)
    assert "type" in change and change["type"] is DELETE       # standard stays implicit
    assert change["incoming"]["check_server_identity"] is True  # it was written: kept
    assert change["incoming"]["port"] == "${env:PORT}"
    assert change["outgoing"]["check_server_identity"] is False  # unchecked
    assert change["outgoing"]["credential"] == {
        "type": "secret", "authority": DELETE, "client_id": DELETE, "scopes": DELETE,
        "client_secret": DELETE, "secret": "S.p"}


def test_microsoft365_drops_the_servers():
    change = forms.connection_change(_form(
        name="M", type="microsoft365", microsoft365__mailbox="r@contoso.test",
        microsoft365__credential__type="oauth_client_credentials",
        microsoft365__credential__client_secret="S.cs"), {})
    assert change["incoming"] is DELETE and change["outgoing"] is DELETE
    assert change["microsoft365"]["mailbox"] == "r@contoso.test"
    assert change["microsoft365"]["credential"]["client_secret"] == "S.cs"


def test_values_of_an_asset_for_its_form():
    raw = {"name": "Mail", "incoming": {"protocol": "imap", "port": 993,
                                        "check_server_identity": False,
                                        "credential": {"type": "oauth_device_flow",
                                                       "scopes": ["a", "b"]}}}
    values = forms.values_of(raw, forms.CONNECTION)
    assert values["incoming.port"] == "993" and values["incoming.credential.scopes"] == "a b"
    assert values["incoming.check_server_identity"] is False
    assert values["outgoing.check_server_identity"] is True    # not written: the default
