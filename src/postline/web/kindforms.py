"""The forms of EmailSource, EmailService, Workflow, Environment, StateStore and Secret: their main
fields (the rest stays as written in the YAML, untouched by a save). Secret values are
write-only: typed in, sealed with the project's public key on the server, never shown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from postline.assets.writer import DELETE
from postline.errors import ConfigError
from postline.web.forms import Field, Section

_NAME = Section(legend="Name & Description", fields=(
    Field(key="name", label="Name", help="no spaces: letters, digits, '_', '-', '.'"),
    Field(key="description", label="Description", widget="textarea"),
))

SERVICE = (_NAME, Section(legend="Sending", fields=(
    Field(key="connection", label="Connection", datalist="assets-EmailConnection",
          help="an EmailConnection with an outgoing server (or Microsoft 365)"),
    Field(key="default_from", label="Default From", macro=True,
          help="used when a message has no From, e.g. Reports <reports@example.com>"),
    Field(key="send_queue_size", label="Send queue size", value="int", help="default 100"),
    Field(key="max_connections", label="Max connections", value="int", help="default 4"),
)), Section(legend="Throttle", fields=(
    Field(key="throttle.max_messages", label="Max messages", value="int",
          help="empty: no throttle"),
    Field(key="throttle.per", label="Per", widget="select",
          options=(("minute", "minute"), ("second", "second"), ("hour", "hour"))),
)))

SOURCE = (_NAME, Section(legend="Mailbox", fields=(
    Field(key="connection", label="Connection", datalist="assets-EmailConnection",
          help="an EmailConnection with an incoming server (or Microsoft 365)"),
    Field(key="stream_name", label="Stream name",
          help="e.g. inbox/${mail:received}/${mail:subject}"),
)), Section(legend="Folders", fields=(
    Field(key="folders.input", label="Input folder", help="default INBOX"),
    Field(key="folders.done", label="Done folder"),
    Field(key="folders.error", label="Error folder"),
    Field(key="folders.ignore", label="Ignore folder"),
)), Section(legend="Polling", fields=(
    Field(key="polling.interval", label="Interval", value="number",
          help="seconds between polls"),
    Field(key="polling.full_scan", label="Full scan",
          help="how often a round lists the whole folder: 1d (default), 12h, 30m, seconds; "
               "0: every round"),
    Field(key="batch_size", label="Batch size", value="int"),
)))

WORKFLOW = (_NAME, Section(legend="Pipeline", fields=(
    Field(key="source", label="Source", datalist="assets-EmailSource"),
    Field(key="processor", label="Processor", help="a Python file, e.g. processors/tag.py"),
    Field(key="services", label="Services", widget="textarea", value="kv",
          help="one per line: Alias: EmailService (ctx.services.Alias)"),
    Field(key="attachments_dir", label="Attachments directory"),
    Field(key="records_file", label="Records file (JSONL sink)", only_new=True,
          help="a new workflow's first sink; more sinks in the YAML"),
)))

STATE_STORE = (_NAME, Section(legend="Shared state", fields=(
    Field(key="type", label="Type", widget="select",
          options=(("sqlite", "SQLite (this host)"), ("postgresql", "PostgreSQL (a fleet)"))),
    Field(key="url", label="URL", macro=True, when={"type": ("postgresql",)},
          help="postgresql://host:port/database (POSTLINE_STATE_URL overrides it)"),
    Field(key="password", label="Password", datalist="secret-keys",
          when={"type": ("postgresql",)},
          help="a key of a Secret asset (SecretAsset.key), or the password inside the URL"),
    Field(key="schema", label="Schema", when={"type": ("postgresql",)},
          help="default postline"),
    Field(key="lease_seconds", label="Lease seconds", value="int",
          when={"type": ("postgresql",)}, help="default 30"),
    Field(key="heartbeat_seconds", label="Heartbeat seconds", value="number",
          when={"type": ("postgresql",)}, help="default a third of the lease"),
)),)

ENVIRONMENT = (_NAME, Section(legend="Variables", fields=(
    Field(key="variables", label="Variables", widget="textarea", value="kv",
          help="one per line: NAME: value (macros allowed); ${lay:NAME} reads them"),
)))


def secret_sections(raw: Mapping[str, Any]) -> tuple[Section, ...]:
    """The Secret form: a write-only field per key, and one to add a key."""
    values = raw.get("values") if isinstance(raw.get("values"), Mapping) else {}
    keys = []
    for key, stored in values.items():
        source = str(stored).partition(":")[0]
        where = "stored sealed" if source == "sealed" else f"read from {stored}"
        keys.append(Field(key=f"values.{key}", label=str(key), widget="password",
                          help=f"{where}; type a new value to replace it (empty: keep)"))
        keys.append(Field(key=f"remove.{key}", label=f"Remove {key}", widget="checkbox",
                          checked=False))
    return (_NAME, Section(legend="Values (write-only)", fields=(
        *keys,
        Field(key="new_key", label="New key", help="letters, digits, '_', '-'"),
        Field(key="new_value", label="New value", widget="password",
              help="sealed on the server with the project's public key; or env:NAME, "
                   "file:/path"),
    )))


def _text(form: Mapping[str, list[str]], key: str) -> str:
    return (form.get(key) or [""])[0].strip()


def _typed(f: Field, text: str) -> Any:
    if not text:
        return DELETE
    if f.value == "int" and text.lstrip("-").isdigit():
        return int(text)
    if f.value == "number":
        try:
            return int(text) if text.lstrip("-").isdigit() else float(text)
        except ValueError:
            return text    # validation names the field
    if f.value == "kv":
        out: dict[str, Any] = {}
        for line in text.splitlines():
            if line.strip():
                k, _, v = line.partition(":")
                out[k.strip()] = v.strip()
        return out
    return text


def _put(change: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = change
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


def simple_change(kind: str, sections: tuple[Section, ...]):
    """A change function for the plain forms above: each field to its key, empty removes."""
    def change_of(form: Mapping[str, list[str]], raw: Mapping[str, Any]) -> dict[str, Any]:
        change: dict[str, Any] = {"kind": kind, "name": _text(form, "name")}
        for s in sections:
            for f in s.fields:
                if f.key == "name":
                    continue
                if f.only_new:
                    continue
                value = _typed(f, _text(form, f.key) if f.widget != "textarea"
                               else (form.get(f.key) or [""])[0])
                if f.value == "kv" and isinstance(value, dict):
                    old = raw.get(f.key) if isinstance(raw.get(f.key), Mapping) else {}
                    value = {**{k: DELETE for k in old if k not in value}, **value}
                _put(change, f.key, value)
        throttle = change.get("throttle")
        if isinstance(throttle, dict) and throttle.get("max_messages") is DELETE:
            change["throttle"] = DELETE
        if kind == "Workflow" and not raw:
            path = _text(form, "records_file") or "out/records.jsonl"
            change["sinks"] = [{"type": "jsonl", "path": path}]
        return change
    return change_of


def secret_change(seal):
    """The change function of the Secret form; ``seal(text)`` seals a typed value."""
    def change_of(form: Mapping[str, list[str]], raw: Mapping[str, Any]) -> dict[str, Any]:
        change: dict[str, Any] = {"kind": "Secret", "name": _text(form, "name"),
                                  "description": _text(form, "description") or DELETE}
        values: dict[str, Any] = {}
        old = raw.get("values") if isinstance(raw.get("values"), Mapping) else {}
        for key in old:
            if form.get(f"remove.{key}"):
                values[key] = DELETE
            elif (typed := (form.get(f"values.{key}") or [""])[0]):
                values[key] = _stored(typed, seal)
        new_key = _text(form, "new_key")
        new_value = (form.get("new_value") or [""])[0]
        if new_key and new_value:
            values[new_key] = _stored(new_value, seal)
        elif new_key or new_value:
            raise ConfigError("give both the new key and its value (or neither)")
        change["values"] = values
        return change
    return change_of


def _stored(typed: str, seal) -> str:
    """``env:NAME`` and ``file:/path`` as typed; any other value sealed."""
    source, sep, rest = typed.partition(":")
    if sep and source in ("env", "file") and rest.strip() and "\n" not in typed:
        return typed.strip()
    return seal(typed)
