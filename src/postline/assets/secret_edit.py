"""Writing one sealed value into a Secret asset's YAML file, leaving every other line alone.

We locate the asset and its ``values`` with ruamel.yaml's round-trip loader (exact lines
and columns), then edit only the line(s) concerned in the text. Dumping the whole file
back through ruamel would re-indent documents and re-wrap lines it did not need to touch,
and the promise here is that the rest of the file stays byte for byte as it was. The
result is parsed again and checked before it replaces the file (atomically).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from postline.assets.kinds.base import NAME_PATTERN
from postline.assets.writer import replace_file
from postline.assets.yamlfiles import find_files
from postline.errors import ConfigError

DEFAULT_FILE = "secrets.yaml"
_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass(frozen=True)
class Written:
    path: Path
    line: int        # 1-based line of the key
    created: bool    # the asset did not exist before


def set_sealed(root: Path, asset: str, key: str, sealed: str, *,
               skip: tuple[Path, ...] = ()) -> Written:
    """Store ``key: sealed`` in Secret ``asset`` (created in secrets.yaml if missing).

    Raises ConfigError when names are invalid, a file cannot be parsed, or the asset's
    ``values`` is written in a form we will not edit (flow style, multi-line value).
    """
    if not re.match(NAME_PATTERN, asset):
        raise ConfigError(f"invalid asset name '{asset}' (letters, digits, '_', '-', '.')")
    if not _KEY.match(key):
        raise ConfigError(f"invalid secret key '{key}' (letters, digits, '_', '-')")
    found = _find(root, asset, skip)
    if found is None:
        return _append_new(root / DEFAULT_FILE, asset, key, sealed)
    path, text, doc = found
    new_text, line = _edit(text, doc, key, sealed, path)
    _check(new_text, asset, key, sealed, path)
    replace_file(path, new_text)
    return Written(path, line, False)


def _find(root: Path, asset: str, skip: tuple[Path, ...]):
    yaml = YAML(typ="rt")
    hits = []
    for path in find_files(root, skip=skip):
        text = path.read_text(encoding="utf-8")
        try:
            docs = list(yaml.load_all(text))
        except YAMLError as exc:
            raise ConfigError(f"cannot parse {path}: {str(exc).splitlines()[0]}",
                              hint="fix it first; see 'postline validate'") from None
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "Secret" and doc.get("name") == asset:
                hits.append((path, text, doc))
    if len(hits) > 1:
        raise ConfigError(f"Secret/{asset} is defined more than once",
                          hint="run 'postline validate'")
    return hits[0] if hits else None


def _end_of_scalar(line: str, col: int) -> int:
    """Index just past the scalar starting at ``col`` (quoted or plain) on ``line``."""
    quote = line[col:col + 1]
    if quote in ("'", '"'):
        i = col + 1
        while i < len(line):
            if quote == "'" and line.startswith("''", i):
                i += 2
                continue
            if quote == '"' and line[i] == "\\":
                i += 2
                continue
            if line[i] == quote:
                return i + 1
            i += 1
        return len(line)
    m = re.search(r"\s#", line[col:])
    end = col + m.start() if m else len(line)
    return len(line[:end].rstrip()) if end > col else end


def _edit(text: str, doc, key: str, sealed: str, path: Path) -> tuple[str, int]:
    lines = text.splitlines(keepends=True)
    nl = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    values = doc.get("values")
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{path}: values of Secret/{doc['name']} is not a mapping")
    if isinstance(values, dict) and values.fa.flow_style() and values:
        raise ConfigError(f"{path}:{values.lc.line + 1}: values is written in flow style "
                          "({...}); write it as one 'key: value' per line and retry")
    if isinstance(values, dict) and key in values:
        (kl, _), (vl, vc) = values.lc.key(key), values.lc.value(key)
        if vl != kl or isinstance(values[key], (dict, list)) or "\n" in str(values[key]):
            raise ConfigError(f"{path}:{kl + 1}: {key} has a multi-line value; "
                              "put it on one line and retry")
        old = lines[vl]
        end = _end_of_scalar(old.rstrip("\r\n"), vc)
        lines[vl] = old[:vc] + sealed + old[end:]
        return "".join(lines), vl + 1
    if isinstance(values, dict) and values:
        last = list(values)[-1]
        indent = values.lc.key(list(values)[0])[1]
        after = values.lc.value(last)[0] if not isinstance(values[last], (dict, list)) \
            else _last_line(values[last])
        lines.insert(after + 1, " " * indent + f"{key}: {sealed}{nl}")
        return "".join(lines), after + 2
    # no ``values`` yet, or an empty one: (re)write the ``values:`` line, add the entry
    doc_indent = doc.lc.key("kind")[1] if "kind" in doc else 0
    if "values" in doc:
        kl, kc = doc.lc.key("values")
        comment = re.search(r"\s+#.*$", lines[kl].rstrip("\r\n"))
        lines[kl] = " " * kc + "values:" + (comment.group(0) if comment else "") + nl
        lines.insert(kl + 1, " " * (kc + 2) + f"{key}: {sealed}{nl}")
        return "".join(lines), kl + 2
    at = _doc_end(lines, _last_line(doc))
    if at > 0 and not lines[at - 1].endswith("\n"):
        lines[at - 1] += nl
    lines[at:at] = [" " * doc_indent + f"values:{nl}",
                    " " * (doc_indent + 2) + f"{key}: {sealed}{nl}"]
    return "".join(lines), at + 2


def _last_line(node) -> int:
    """The last line (0-based) holding a key or item of ``node``."""
    last = node.lc.line
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for k, v in items:
        pos = node.lc.value(k) if isinstance(node, dict) else node.lc.item(k)
        last = max(last, pos[0])
        if isinstance(v, (dict, list)):
            last = max(last, _last_line(v))
        elif isinstance(v, str) and "\n" in v:
            last = max(last, pos[0] + v.count("\n"))
    return last


def _doc_end(lines: list[str], last: int) -> int:
    """Index to insert at, just after the document's content that ends at line ``last``."""
    i = last + 1
    while i < len(lines) and not lines[i].startswith(("---", "...")) and (
            lines[i].startswith((" ", "\t"))):
        i += 1  # continuation lines of a block scalar
    return i


def _append_new(path: Path, asset: str, key: str, sealed: str) -> Written:
    block = f"kind: Secret\nname: {asset}\nvalues:\n  {key}: {sealed}\n"
    if path.exists():
        text = path.read_text(encoding="utf-8")
        sep = ("" if text.endswith("\n") or not text else "\n") + ("---\n" if text.strip() else "")
        new_text = text + sep + block
    else:
        new_text = ("# Secret assets: values are sealed to the project's public key\n"
                    "# (postline.pub); only the private key can read them.\n" + block)
    _check(new_text, asset, key, sealed, path)
    replace_file(path, new_text)
    return Written(path, new_text.count("\n"), True)


def _check(text: str, asset: str, key: str, sealed: str, path: Path) -> None:
    try:
        docs = list(YAML(typ="safe").load_all(text))
    except YAMLError:
        docs = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "Secret" and doc.get("name") == asset \
                and isinstance(doc.get("values"), dict) and doc["values"].get(key) == sealed:
            return
    raise ConfigError(f"could not update {path} safely; add this line under values: of "
                      f"Secret/{asset} by hand: {key}: {sealed}")
