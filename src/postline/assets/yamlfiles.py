"""Finding a project's YAML files and reading them into documents with line numbers.

ruamel.yaml's round-trip loader keeps the position of every key and item; we turn each
document into plain Python data (dict/list/str/int/float/bool/None) plus an index from
the path of every key or item to its line, so validation can point at the exact line.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from postline.assets.problems import Problem

YAML_SUFFIXES = (".yaml", ".yml")
# Limits against files made to take `validate` (and every command that loads the project)
# down: ruamel's round-trip loader reads ~0.1-0.2 MB a second here, so a 5 MB file took
# half a minute; and aliases are expanded into copies below, so a nine-level alias bomb
# of a few hundred bytes would become 9^9 values. Asset files are a few KB.
MAX_FILE_BYTES = 64 * 1024      # 0.3-1.3 s of ruamel here, the worst a list of 30,000 "a,"
MAX_VALUES = 100_000          # values of one file, counted with its aliases expanded


class _TooMany(Exception):
    """A document expands to more than MAX_VALUES values."""


@dataclass
class RawDocument:
    """One YAML document of a project file, as plain data with a line index."""

    file: str                       # path as shown to the user
    path: Path                      # absolute path
    index: int                      # position of the document in its file (0-based)
    line: int                       # 1-based line where the document's content starts
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)

    def line_of(self, path: tuple) -> int:
        """Line of the key/item at ``path``, or of its nearest parent that exists."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.line


def find_files(root: Path, *, skip: tuple[Path, ...] = ()) -> list[Path]:
    """Every ``*.yaml``/``*.yml`` under ``root``, sorted; hidden entries and ``skip`` left out."""
    skip_resolved = {p.resolve() for p in skip}
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (here / d).resolve() not in skip_resolved)
        for name in sorted(filenames):
            if name.endswith(YAML_SUFFIXES) and not name.startswith("."):
                found.append(here / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def display_path(root_as_given: str, path: Path, root: Path) -> str:
    """``path`` as the user would write it: their project argument joined with the relative path."""
    return os.path.normpath(os.path.join(root_as_given, path.relative_to(root).as_posix()))


def read_documents(path: Path, shown: str, *, text: str | None = None
                   ) -> tuple[list[RawDocument], list[Problem]]:
    """Parse every document of one file (or ``text`` as if it were that file's content).
    Returns the documents read and any problem met.

    A syntax error stops reading that file (the documents before it are still returned).
    """
    try:
        if text is not None:   # the console checking an edit before it writes it
            raw = text.encode("utf-8")
        else:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_FILE_BYTES + 1)   # (not stat: it may be a pipe or /dev/zero)
        if len(raw) > MAX_FILE_BYTES:
            size = _size_text(path) if text is None else f"{len(raw) / 1e6:.1f} MB, "
            return [], [Problem(shown, 1, f"file is {size}over the limit of "
                                          f"{MAX_FILE_BYTES // 1024} KB for an asset file; "
                                          "split it into several files")]
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return [], [Problem(shown, line, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                                         f"column {column}); save the file as UTF-8")]
    except OSError as exc:
        return [], [Problem(shown, 1, f"cannot read file: {exc.strerror}")]
    docs: list[RawDocument] = []
    budget = [MAX_VALUES]
    start = 1
    try:
        for index, node in enumerate(_loader().load_all(text)):
            if node is None:
                continue
            start = (node.lc.line + 1) if hasattr(node, "lc") else 1
            lines: dict[tuple, int] = {}
            data = _plain(node, (), lines, budget)
            docs.append(RawDocument(shown, path, index, start, data, lines))
    except _TooMany:
        return docs, [Problem(shown, start, f"the file expands to more than {MAX_VALUES:,} "
                                            "values through its aliases (*name); write the "
                                            "values out, or use fewer aliases")]
    except MarkedYAMLError as exc:
        return docs, [Problem(shown, _mark_line(exc), _syntax_message(exc, text))]
    except YAMLError as exc:  # unmarked errors are rare (e.g. reader errors)
        return docs, [Problem(shown, 1, f"YAML error: {str(exc).splitlines()[0]}")]
    return docs, []


def _loader() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def _mark_line(exc: MarkedYAMLError) -> int:
    mark = exc.problem_mark or exc.context_mark
    return mark.line + 1 if mark is not None else 1


_DUPLICATE = re.compile(r'found duplicate key "(.*?)"')


def _syntax_message(exc: MarkedYAMLError, text: str = "") -> str:
    problem = exc.problem or ""
    dup = _DUPLICATE.search(problem)
    if dup:
        # ruamel's own message repeats both values, which may be secrets: name the key only.
        line = _first_key_line(text, dup.group(1), exc)
        first = f" (first at line {line})" if line else ""
        return f"duplicate key '{dup.group(1)}'{first}; each key may appear once"
    context = f" ({exc.context})" if exc.context else ""
    return f"YAML syntax error: {problem}{context}"


def _first_key_line(text: str, key: str, exc: MarkedYAMLError) -> int | None:
    """1-based line of the first ``key`` of the mapping a duplicate-key error is about.

    ruamel marks where the mapping starts and where the duplicate is, not the first key; in
    block style the first one is the earlier line with the key at the duplicate's column.
    None when it cannot be found (flow style): better no line than a wrong one.
    """
    start, dup = exc.context_mark, exc.problem_mark
    if start is None or dup is None:
        return None
    lines = text.splitlines()
    own = re.compile(r"""(['"]?)""" + re.escape(key) + r"""\1\s*:""")
    for i in range(start.line, min(dup.line, len(lines))):
        line = lines[i]
        if line[:dup.column].strip() in ("", "-") and own.match(line, dup.column):
            return i + 1
    return None


def _size_text(path: Path) -> str:
    try:
        return f"{os.stat(path).st_size / 1e6:.1f} MB, "
    except OSError:
        return ""


def _plain(node: Any, path: tuple, lines: dict[tuple, int], budget: list[int]) -> Any:
    """Plain Python data from a ruamel node, recording the line of every key and item.
    ``budget[0]`` is how many values may still be made (an alias is copied each time it is
    used); raises _TooMany past it."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooMany
    if isinstance(node, dict):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            name = str(_scalar(key))
            try:
                lines[path + (name,)] = node.lc.key(key)[0] + 1
            except (AttributeError, KeyError, TypeError):
                pass
            out[name] = _plain(value, path + (name,), lines, budget)
        return out
    if isinstance(node, list):
        items = []
        for i, value in enumerate(node):
            try:
                lines[path + (i,)] = node.lc.item(i)[0] + 1
            except (AttributeError, KeyError, TypeError, IndexError):
                pass
            items.append(_plain(value, path + (i,), lines, budget))
        return items
    return _scalar(node)


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    inner = getattr(value, "value", None)  # TaggedScalar and friends
    return str(inner if inner is not None else value)

