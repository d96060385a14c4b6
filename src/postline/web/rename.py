"""Renaming an asset from its form: every reference to it changes too, or nothing does.

:func:`references_to` lists what will change (the Asset Usage list); :func:`renamed_texts`
computes the new text of every file concerned. A reference made through a macro
(``${...}``) cannot be rewritten safely, so such a rename is refused, naming it.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from postline.assets import writer
from postline.errors import ConfigError


def references_to(project: Any, kind: str, name: str) -> list[Any]:
    """The references to ``kind/name``. Raises ConfigError naming one made by a macro."""
    refs = project.usage(name, kind)
    for r in refs:
        if r.via_macro or "[" in r.field:
            raise ConfigError(f"{r.source_label} refers to {kind}/{name} in {r.field} "
                              f"({r.file}:{r.line}) in a way the console cannot rewrite"
                              + (" (through a macro)" if r.via_macro else ""),
                              hint="rename it by hand in the YAML")
    return refs


def renamed_texts(project: Any, refs: list[Any], new: str,
                  texts: dict[Path, str]) -> dict[Path, str]:
    """``texts`` (path -> text, the renamed asset's own file already edited) plus every file
    whose references to the old name now say ``new``."""
    out = dict(texts)
    for r in refs:
        entry = project.entry(r.source_kind, r.source)
        path = entry.doc.path
        text = out.get(path) if path in out else path.read_text(encoding="utf-8")
        change: dict[str, Any] = {}
        node = change
        *parents, last = r.field.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = f"{new}.{r.key}" if r.key else new
        change.update({"kind": r.source_kind, "name": r.source})
        out[path] = writer.edited_text(text, kind=r.source_kind, name=r.source, change=change)
    return out


def write_all(texts: dict[Path, str]) -> None:
    """Write every file, or (when one write fails) put back those already written.
    Raises OSError."""
    before = {p: (p.read_text(encoding="utf-8") if p.exists() else None) for p in texts}
    written: list[Path] = []
    try:
        for path, text in texts.items():
            writer.replace_file(path, text)
            written.append(path)
    except OSError:
        for path in written:
            old = before[path]
            if old is None:
                path.unlink(missing_ok=True)
            else:
                writer.replace_file(path, old)
        raise


def preview(refs: list[Any], kind: str, old: str, new: str) -> str:
    """HTML: what the rename will change, and the box to confirm it (inside the form)."""
    rows = "".join(
        f"<tr><td>{escape(r.source_label)}</td><td><code>{escape(r.field)}</code></td>"
        f"<td><code>{escape(r.target_text)}</code> → <code>"
        f"{escape(f'{new}.{r.key}' if r.key else new)}</code></td>"
        f"<td><code>{escape(f'{r.file}:{r.line}')}</code></td></tr>" for r in refs)
    table = ("<div class='wide'><table><thead><tr><th>Asset</th><th>Field</th><th>Change"
             f"</th><th>Location</th></tr></thead><tbody>{rows}</tbody></table></div>"
             if refs else "<p class='muted'>Nothing refers to it.</p>")
    return (f"<div class='conflict rename'><b>Renaming {escape(kind)}/{escape(old)} to "
            f"{escape(new)}</b> changes these references too (all of them or none):{table}"
            "<p><input type='checkbox' id='confirm_rename' name='confirm_rename' value='yes'"
            " style='width:auto'> <label for='confirm_rename'>Rename and update "
            f"{len(refs)} reference(s)</label></p></div>")
