"""Writing one asset document into a project file, leaving the rest of the file alone.

The console's forms produce a *change*: a nested mapping of the keys a form manages, where
:data:`DELETE` removes a key. :func:`edited_text` applies it to one document of a file with
ruamel.yaml's round-trip loader (comments, key order and quoting of that document kept) and
splices the result back between the other documents' text, which stays byte for byte as it
was. :func:`appended_text` adds a new document at the end of a file (or a new file).
When a change only replaces values, the new values are written where the old ones stood
and every other byte of the document stays too. Keys the form does not manage (``ca_file``,
timeouts, anything a person added) are never touched. Nothing here writes; :func:`replace_file` does, atomically.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from postline.errors import ConfigError

DELETE = object()   # a change value that removes the key
_SEPARATOR = re.compile(r"^(---|\.\.\.)(\s.*)?$")
ABSENT = "absent"   # the digest of a file that does not exist


def digest(path: Path) -> str:
    """A short fingerprint of ``path``'s bytes, or ``"absent"``; compared before saving so a
    file changed on disk since a form was opened is not overwritten."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    except FileNotFoundError:
        return ABSENT


def _yaml(indent: int = 2, block_seq_indent: int = 0) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096          # never re-wrap a long line a person wrote
    yaml.indent(mapping=indent, sequence=indent + block_seq_indent, offset=block_seq_indent)
    return yaml


def split_documents(text: str) -> list[tuple[str, str]]:
    """``text`` cut at its ``---`` lines: ``[(separator line or '', body), ...]``."""
    parts: list[tuple[str, str]] = []
    sep, body = "", []
    for line in text.splitlines(keepends=True):
        if _SEPARATOR.match(line.rstrip("\r\n")) and line.startswith("---"):
            parts.append((sep, "".join(body)))
            sep, body = line, []
        else:
            body.append(line)
    parts.append((sep, "".join(body)))
    return parts


def _is_document(body: str) -> bool:
    """Whether ``body`` holds a YAML document (not only comments and blank lines)."""
    return any(ln.strip() and not ln.lstrip().startswith("#") for ln in body.splitlines())


def apply_change(node: Any, change: Mapping[str, Any]) -> None:
    """Apply ``change`` to the round-trip mapping ``node`` in place (see module doc)."""
    for key, value in change.items():
        if value is DELETE:
            if key in node:
                del node[key]
        elif isinstance(value, Mapping):
            if not isinstance(node.get(key), CommentedMap):
                node[key] = CommentedMap()
            apply_change(node[key], value)
            if not node[key]:
                del node[key]
        elif isinstance(value, list):
            if list(node.get(key) or []) != value:
                old = node.get(key)
                seq = CommentedSeq(value)
                if isinstance(old, CommentedSeq) and old.fa.flow_style():
                    seq.fa.set_flow_style()
                node[key] = seq
        elif key not in node or node[key] != value or type(node[key]) is not type(value):
            node[key] = value


def _token_end(line: str, col: int, flow: bool) -> int:
    """Index just past the scalar token starting at ``col`` (quoted or plain)."""
    quote = line[col:col + 1]
    if quote in ("'", '"'):
        i = col + 1
        while i < len(line):
            if quote == "'" and line.startswith("''", i):
                i += 2
            elif quote == '"' and line[i] == "\\":
                i += 2
            elif line[i] == quote:
                return i + 1
            else:
                i += 1
        return -1   # a quoted scalar that goes on over lines: not edited in place
    stop = re.search(r"\s#" + (r"|[,}\]]" if flow else ""), line[col:])
    end = col + stop.start() if stop else len(line)
    return len(line[:end].rstrip())


def _token(value: Any, quote: str) -> str | None:
    """``value`` written as a YAML scalar (in ``quote`` style when the old one was quoted),
    or None when it is not a plain one-line scalar."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str) or "\n" in value:
        return None
    if quote == '"':
        return json.dumps(value, ensure_ascii=False)
    if quote == "'":
        return "'" + value.replace("'", "''") + "'"
    return value


def _in_place(body: str, data: Any, change: Mapping[str, Any]) -> str | None:
    """``body`` with ``change`` made by replacing scalar tokens where they stand, or None
    when the change is more than that (a key added or removed, a list): the caller dumps."""
    edits: list[tuple[int, int, Any]] = []

    def walk(node: Any, ch: Mapping[str, Any]) -> bool:
        for key, value in ch.items():
            if value is DELETE:
                if key in node:
                    return False
            elif isinstance(value, Mapping):
                if not isinstance(node.get(key), CommentedMap) or not walk(node[key], value):
                    return False
            elif isinstance(value, list) or key not in node or \
                    isinstance(node[key], (CommentedMap, CommentedSeq)):
                if list(node.get(key) or []) != value or not isinstance(value, list):
                    return False
            elif node[key] != value or type(node[key]) is not type(value):
                line, col = node.lc.value(key)
                edits.append((line, col, value, node.fa.flow_style()))
        return True

    if not walk(data, change):
        return None
    lines = body.splitlines(keepends=True)
    for line_no, col, value, flow in sorted(edits, reverse=True):
        line = lines[line_no]
        end = _token_end(line, col, flow)
        quote = line[col] if line[col:col + 1] in ("'", '"') else ""
        new = _token(value, quote)
        if end < 0 or new is None:
            return None
        lines[line_no] = line[:col] + new + line[end:]
    out = "".join(lines)
    try:   # checked: the text read back must be what the change asked for
        expected = _yaml().load(body)
        apply_change(expected, change)
        if _yaml().load(out) != expected:
            return None
    except YAMLError:
        return None
    return out


def edited_text(text: str, *, kind: str, name: str, change: Mapping[str, Any]) -> str:
    """``text`` with ``change`` applied to its document ``kind``/``name``.

    Raises ConfigError when the file cannot be parsed or holds no such document.
    """
    parts = split_documents(text)
    for i, (sep, body) in enumerate(parts):
        if not _is_document(body):
            continue
        try:
            _, indent, seq_indent = load_yaml_guess_indent(body)
            yaml = _yaml(indent or 2, seq_indent or 0)   # keeps quotes as written
            data = yaml.load(body)
        except YAMLError as exc:
            raise ConfigError(f"cannot parse the file: {str(exc).splitlines()[0]}",
                              hint="fix it first; see 'postline validate'") from None
        if isinstance(data, dict) and data.get("kind") == kind and str(data.get("name")) == name:
            in_place = _in_place(body, data, change)
            if in_place is not None:   # only values changed: every other byte stays
                parts[i] = (sep, in_place)
                return "".join(s + b for s, b in parts)
            apply_change(data, change)
            out = io.StringIO()
            yaml.dump(data, out)
            new_body = out.getvalue()
            if body.endswith("\n\n") and not new_body.endswith("\n\n"):
                new_body += "\n"    # keep the blank line before the next '---'
            parts[i] = (sep, new_body)
            return "".join(s + b for s, b in parts)
    raise ConfigError(f"{kind}/{name} is no longer in this file",
                      hint="reload the page: the file changed on disk")


def removed_text(text: str, *, kind: str, name: str) -> str:
    """``text`` without its document ``kind``/``name`` (and that document's separator).
    Raises ConfigError when it is not there."""
    parts = split_documents(text)
    for i, (_, body) in enumerate(parts):
        if not _is_document(body):
            continue
        data = _yaml().load(body)
        if isinstance(data, dict) and data.get("kind") == kind and str(data.get("name")) == name:
            del parts[i]
            if parts and i == 0:
                parts[0] = ("", parts[0][1])
            return "".join(s + b for s, b in parts)
    raise ConfigError(f"{kind}/{name} is no longer in this file",
                      hint="reload the page: the file changed on disk")


def appended_text(text: str | None, document: Mapping[str, Any]) -> str:
    """``text`` (None: a new file) with ``document`` added as its last YAML document."""
    out = io.StringIO()
    doc = CommentedMap()
    apply_change(doc, document)
    _yaml().dump(doc, out)
    if not text or not _is_document(text):
        return (text or "") + out.getvalue()
    return text + ("" if text.endswith("\n") else "\n") + "---\n" + out.getvalue()


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file renamed over it), keeping
    the file's mode. Raises OSError."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
