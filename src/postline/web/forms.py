"""The console's asset forms: which fields, labelled how, shown when, and how the posted
values become a change to the asset's YAML (:mod:`postline.assets.writer`).

A form is a list of :class:`Section` (a fieldset) of :class:`Field`; ``when`` makes a field
or section appear only while selects have given values (``console.js`` applies it; the
server ignores the fields that do not apply, so the page works without JavaScript too).
The EmailConnection form follows the seed's sections and labels exactly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from postline.assets.kinds.connection import DEFAULT_PORTS
from postline.assets.writer import DELETE


@dataclass(frozen=True, kw_only=True)
class Field:
    """One input: ``key`` is its dotted path in the asset (and its HTML id and name)."""

    key: str
    label: str
    widget: str = "text"                 # text | select | checkbox | port | textarea
    options: tuple[tuple[str, str], ...] = ()
    when: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    macro: bool = False                  # "macro supported": the resolved value is shown
    help: str = ""
    ports: tuple[str, str] | None = None  # (protocol field, security field) of a port
    list_of: bool = False                 # a list typed as words separated by spaces
    datalist: str = ""                    # id of suggestions (Secret keys ...)
    value: str = "str"                    # str | int | number | kv (key: value lines)
    only_new: bool = False                # shown for a new asset only
    checked: bool = True                  # a checkbox's state when the key is not written


@dataclass(frozen=True, kw_only=True)
class Section:
    legend: str
    fields: tuple[Field, ...]
    when: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


SECURITY = (("tls", "SSL/TLS"), ("starttls", "STARTTLS"), ("none", "None (plaintext)"))
CREDENTIALS = (("none", "None"), ("oauth_client_credentials", "OAuth (Client Credentials)"),
               ("oauth_device_flow", "OAuth (Device Flow)"), ("secret", "Secret"))
OAUTH = ("oauth_client_credentials", "oauth_device_flow")
PORTS_JSON = {f"{p}+{s}": n for (p, s), n in DEFAULT_PORTS.items()}


def _credential_fields(prefix: str, when: Mapping[str, tuple[str, ...]],
                       choices: tuple[tuple[str, str], ...]) -> tuple[Field, ...]:
    ctype = f"{prefix}.credential.type"

    def w(*types: str) -> dict[str, tuple[str, ...]]:
        return {**when, ctype: types}

    return (
        Field(key=ctype, label="Credential type", widget="select", options=choices, when=when),
        Field(key=f"{prefix}.credential.authority", label="Authority", when=w(*OAUTH),
              help="the URL of the party that issues the token"),
        Field(key=f"{prefix}.credential.client_id", label="Client ID", when=w(*OAUTH)),
        Field(key=f"{prefix}.credential.scopes", label="Scopes", when=w(*OAUTH), list_of=True,
              help="separated by spaces"),
        Field(key=f"{prefix}.credential.client_secret", label="Client secret",
              when=w("oauth_client_credentials"), datalist="secret-keys",
              help="a key of a Secret asset: SecretAsset.key"),
        Field(key=f"{prefix}.credential.secret", label="Secret", when=w("secret"),
              datalist="secret-keys", help="the password: a key of a Secret asset, "
              "SecretAsset.key"),
    )


def _direction(name: str, legend: str, protocols: tuple[tuple[str, str], ...]) -> Section:
    standard = {"type": ("standard",)}
    on = {**standard, f"{name}.protocol": tuple(p for p, _ in protocols if p != "none")}
    hint = "e.g. my.name@domain.com"
    return Section(legend=legend, when=standard, fields=(
        Field(key=f"{name}.protocol", label=f"{legend.split()[0]} mail server protocol",
              widget="select", options=protocols, when=standard),
        Field(key=f"{name}.user", label="User", macro=True, when=on, help=hint),
        Field(key=f"{name}.host", label="Host", macro=True, when=on,
              help="e.g. " + ("my-host.domain.com" if name == "incoming" else "smtp.domain.com")),
        Field(key=f"{name}.port", label="Port", widget="port", macro=True, when=on,
              ports=(f"{name}.protocol", f"{name}.security"),
              help="empty: the default for the protocol and security"),
        Field(key=f"{name}.security", label="Connection security", widget="select",
              options=SECURITY, when=on),
        Field(key=f"{name}.check_server_identity", label="Check server identity",
              widget="checkbox", when={**on, f"{name}.security": ("tls", "starttls")}),
        *_credential_fields(name, on, CREDENTIALS),
    ))


M365 = {"type": ("microsoft365",)}
CONNECTION = (
    Section(legend="Name & Description", fields=(
        Field(key="name", label="Name", help="no spaces: letters, digits, '_', '-', '.'"),
        Field(key="description", label="Description", widget="textarea"),
    )),
    Section(legend="Email Connection Type", fields=(
        Field(key="type", label="Email Connection Type", widget="select",
              options=(("standard", "Standard"), ("microsoft365", "Microsoft 365"))),
    )),
    _direction("incoming", "Incoming mail server",
               (("imap", "IMAP"), ("pop3", "POP3"), ("none", "No incoming emails"))),
    _direction("outgoing", "Outgoing mail server",
               (("smtp", "SMTP"), ("none", "No outgoing emails"))),
    Section(legend="Microsoft 365", when=M365, fields=(
        Field(key="microsoft365.mailbox", label="Mailbox", macro=True, when=M365,
              help="the user whose mail is read and sent, e.g. reports@contoso.com"),
        *_credential_fields("microsoft365", M365, tuple(c for c in CREDENTIALS
                                                        if c[0] in OAUTH)),
    )),
)

NEW_CONNECTION = {"type": "standard", "incoming.protocol": "imap", "incoming.security": "tls",
                  "incoming.credential.type": "secret", "outgoing.protocol": "smtp",
                  "outgoing.security": "starttls", "outgoing.credential.type": "secret",
                  "microsoft365.credential.type": "oauth_device_flow"}


def fields_of(sections: tuple[Section, ...]) -> list[Field]:
    return [f for s in sections for f in s.fields]


def values_of(raw: Mapping[str, Any], sections: tuple[Section, ...]) -> dict[str, Any]:
    """The form's values from an asset's raw YAML data (macros as typed, not expanded)."""
    out: dict[str, Any] = {}
    for f in fields_of(sections):
        node: Any = raw
        for part in f.key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if f.widget == "checkbox":
            out[f.key] = f.checked if node is None else node is not False
        elif f.widget == "password":
            continue   # write-only: a secret is never shown back
        elif isinstance(node, Mapping):
            out[f.key] = "\n".join(f"{k}: {v}" for k, v in node.items())
        elif isinstance(node, list):
            out[f.key] = " ".join(str(v) for v in node)
        elif node is not None:
            out[f.key] = node if isinstance(node, str) else str(node).lower() \
                if isinstance(node, bool) else str(node)
    return out


def _get(form: Mapping[str, list[str]], key: str) -> str:
    return (form.get(key) or [""])[0].strip()


def _has(raw: Mapping[str, Any], key: str) -> bool:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def connection_change(form: Mapping[str, list[str]], raw: Mapping[str, Any]) -> dict[str, Any]:
    """The change to an EmailConnection's YAML from its posted form; ``raw`` is the asset as
    it is on disk ({} for a new one). Keys the form does not show are left alone."""
    change: dict[str, Any] = {"kind": "EmailConnection", "name": _get(form, "name")}
    change["description"] = _get(form, "description") or DELETE
    ctype = _get(form, "type") or "standard"
    change["type"] = ctype if ctype != "standard" or _has(raw, "type") or not raw \
        else DELETE
    if ctype == "standard":
        change["microsoft365"] = DELETE
        for d in ("incoming", "outgoing"):
            protocol = _get(form, f"{d}.protocol") or "none"
            if protocol == "none":
                change[d] = {"protocol": "none"}
                continue
            ep: dict[str, Any] = {"protocol": protocol}
            for k in ("host", "user"):
                ep[k] = _get(form, f"{d}.{k}") or DELETE
            port = _get(form, f"{d}.port")
            ep["port"] = int(port) if port.isdigit() else (port or DELETE)
            security = _get(form, f"{d}.security") or "tls"
            ep["security"] = security
            checked = bool(form.get(f"{d}.check_server_identity"))
            if security == "none":
                ep["check_server_identity"] = DELETE
            elif checked:
                ep["check_server_identity"] = True if _has(raw, f"{d}.check_server_identity") \
                    else DELETE
            else:
                ep["check_server_identity"] = False
            ep["credential"] = _credential(form, d)
            change[d] = ep
    else:
        change["incoming"] = change["outgoing"] = DELETE
        change["microsoft365"] = {"mailbox": _get(form, "microsoft365.mailbox") or DELETE,
                                  "credential": _credential(form, "microsoft365")}
    return change


def _credential(form: Mapping[str, list[str]], prefix: str) -> dict[str, Any]:
    ctype = _get(form, f"{prefix}.credential.type") or "none"
    out: dict[str, Any] = {"type": ctype}
    keys = {"authority": OAUTH, "client_id": OAUTH, "scopes": OAUTH,
            "client_secret": ("oauth_client_credentials",), "secret": ("secret",)}
    for key, types in keys.items():
        value = _get(form, f"{prefix}.credential.{key}")
        if ctype not in types or not value:
            out[key] = DELETE
        elif key == "scopes":
            out[key] = [s for s in re.split(r"[\s,]+", value) if s]
        else:
            out[key] = value
    return out
