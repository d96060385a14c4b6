"""Workflow: one EmailSource, an optional Python processor, one or more sinks.

::

    kind: Workflow
    name: InvoicesToDisk
    source: Invoices
    processor: processors/invoices.py      # optional; defines on_message(message, ctx)
    services: {Notify: AlertsService}      # ctx.services.Notify -> EmailService AlertsService
    attachments_dir: out/attachments       # optional; see docs/source.md
    sinks:
      - {type: directory, path: out/mails}          # mode: "0600" (files; dirs 0700)
      - {type: jsonl, path: out/mails.jsonl, mode: "0640"}
      - {type: stdout}
      - {type: http, url: "https://hooks.example.com/mail", headers: {X-Token: "${sec:Hook.token}"},
         timeout: 10, retries: 3}
      - {type: postgresql, table: mails}            # url: optional (default: the StateStore's
                                                    # database, in the ledger's transaction)
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from postline.assets.kinds.base import AssetModel, ProjectPath, Ref, register_kind

_STRICT = ConfigDict(extra="forbid", frozen=True)


def _file_mode(value: object) -> str:
    """A file sink's ``mode``: octal digits in quotes, the owner's read and write kept,
    nobody else's write (records and attachments are the senders' data)."""
    if not isinstance(value, str):
        raise ValueError(f'write the mode in quotes as octal digits, e.g. mode: "0640" '
                         f"(got {value!r})")
    text = value.strip()
    if not text.isdigit() or len(text) > 4 or any(c in "89" for c in text):
        raise ValueError(f'mode {value!r} is not an octal file mode such as "0600" or "0640"')
    mode = int(text, 8)
    if mode & 0o600 != 0o600 or mode & ~0o644:
        raise ValueError(f"mode {value!r} must give the owner read and write and others at "
                         'most read (e.g. "0600", "0640", "0644")')
    return f"{mode:04o}"


class DirectorySink(BaseModel):
    """Per mail: ``<key>.json`` (record), ``<key>.eml`` (original), attachment files."""

    model_config = _STRICT
    type: Literal["directory"]
    path: str = Field(min_length=1)
    keep_eml: bool = True
    mode: str = "0600"   # of files; directories get the same plus search (0700, 0750)

    _mode = field_validator("mode", mode="before")(_file_mode)


class JsonlSink(BaseModel):
    """One JSON record per line, appended and fsynced; idempotent by ledger key."""

    model_config = _STRICT
    type: Literal["jsonl"]
    path: str = Field(min_length=1)
    mode: str = "0600"   # of the file and its .keys index

    _mode = field_validator("mode", mode="before")(_file_mode)


class StdoutSink(BaseModel):
    model_config = _STRICT
    type: Literal["stdout"]


class HttpSink(BaseModel):
    """POST the record as JSON; retried with backoff on 5xx, 429 and connection errors."""

    model_config = _STRICT
    type: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=10.0, gt=0)
    retries: int = Field(default=3, ge=0)
    min_backoff: float = Field(default=0.5, ge=0)
    max_backoff: float = Field(default=30.0, ge=0)
    ca_file: str | None = None


class PostgresqlSink(BaseModel):
    """One row per record in ``table`` (created if missing); without ``url`` in the
    StateStore's database, in the ledger's transaction (exactly once)."""

    model_config = _STRICT
    type: Literal["postgresql"]
    table: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$")
    url: str | None = Field(default=None, pattern=r"^postgres(ql)?://")


Sink = Annotated[DirectorySink | JsonlSink | StdoutSink | HttpSink | PostgresqlSink,
                 Field(discriminator="type")]


@register_kind
class Workflow(AssetModel):
    kind: Literal["Workflow"]
    source: Annotated[str, Ref("EmailSource")]
    processor: ProjectPath | None = None
    services: dict[str, Annotated[str, Ref("EmailService")]] = Field(default_factory=dict)
    sinks: list[Sink] = Field(min_length=1)
    attachments_dir: str | None = None

    @field_validator("processor")
    @classmethod
    def _processor_loads(cls, processor: str | None) -> str | None:
        # Checked at validation time so a typo or a syntax error shows up in
        # `postline validate`, not hours later when the first mail arrives. Only an absolute
        # path (resolved against the project root by the loader) can be checked here. A
        # field validator, not a model validator: it runs (and reports) even when another
        # field of the Workflow is wrong, so one pass lists every problem.
        if not processor or not Path(processor).is_absolute():
            return processor
        path = Path(processor)
        if not path.is_file():
            raise ValueError(f"processor file {path} not found")
        try:
            code = path.read_bytes()
            compile(code, str(path), "exec")
        except SyntaxError as exc:
            raise ValueError(f"{path}:{exc.lineno}: syntax error in the processor: "
                             f"{exc.msg}") from None
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the processor {path}: {exc}") from None
        if not _binds_on_message(ast.parse(code, str(path))):
            raise ValueError(f"{path}: defines no on_message(message, ctx) function")
        return processor


def _binds_on_message(tree: ast.Module) -> bool:
    """Whether the module may define ``on_message``, read without running it: a def, an
    assignment or an import of that name anywhere, or a ``*`` import (cannot be told)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == "on_message":
                return True
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            if node.id == "on_message":
                return True
        elif isinstance(node, ast.alias) and (node.asname or node.name) in ("on_message", "*"):
            return True
    return False
