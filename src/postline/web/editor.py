"""Creating and editing assets from the console's forms (see :mod:`postline.web.forms`).

Saving: the posted form becomes a change of the asset's YAML; the project is validated as
it would be with that change (:meth:`postline.project.Project.reload` with the new text),
and only when the asset has no error left is the file written (atomically), the change
recorded in the audit log, and the asset's page shown. A file that changed on disk since
the form was opened is not overwritten: the page says so and offers to reload.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from postline.assets import writer
from postline.assets.macros import expand_tracked, has_macros
from postline.assets.yamlfiles import YAML_SUFFIXES, find_files, read_documents
from postline.errors import ConfigError, PostlineError, SecretError
from postline.logs import MASK
from postline.web import audit, console, forms, kindforms, rename
from postline.web.guard import client_of
from postline.web.pages import render


@dataclass(frozen=True)
class Spec:
    """A kind's form: its sections (from the asset's raw data), its change, new defaults."""

    sections: Callable[[Mapping[str, Any]], tuple]
    change: Callable[[Mapping[str, list[str]], Mapping[str, Any], Any], dict]
    defaults: Mapping[str, Any]


def _simple(kind: str, sections: tuple) -> Spec:
    fn = kindforms.simple_change(kind, sections)
    return Spec(lambda raw: sections, lambda form, raw, project: fn(form, raw), {})


_SPECS: dict[str, Spec] = {
    "EmailConnection": Spec(lambda raw: forms.CONNECTION,
                            lambda form, raw, project: forms.connection_change(form, raw),
                            forms.NEW_CONNECTION),
    "EmailSource": _simple("EmailSource", kindforms.SOURCE),
    "EmailService": _simple("EmailService", kindforms.SERVICE),
    "Workflow": _simple("Workflow", kindforms.WORKFLOW),
    "Environment": _simple("Environment", kindforms.ENVIRONMENT),
    "StateStore": _simple("StateStore", kindforms.STATE_STORE),
    "Secret": Spec(kindforms.secret_sections,
                   lambda form, raw, project: kindforms.secret_change(project.seal)(form, raw),
                   {}),
}
FORM_KINDS = tuple(_SPECS)


def asset_url(kind: str, name: str) -> str:
    return f"/assets/{quote(kind, safe='')}/{quote(name, safe='')}"


def resolve(project: Any, value: str) -> str:
    """What the macros of ``value`` expand to now: the text, ``***`` for a secret, or
    ``cannot expand: <why>``."""
    try:
        exp = expand_tracked(value, project._loaded.context(strict=False))
        return MASK if exp.sensitive else exp.text
    except SecretError:
        return MASK
    except ConfigError as exc:
        return f"cannot expand: {exc.message}"


def _resolved(project: Any, sections: tuple, values: Mapping[str, Any]) -> dict[str, str]:
    """Field -> what its macros expand to now (a secret's value as ``***``)."""
    out: dict[str, str] = {}
    for f in forms.fields_of(sections):
        value = values.get(f.key)
        if f.macro and isinstance(value, str) and has_macros(value):
            out[f.key] = resolve(project, value)
    return out


def _secret_keys(project: Any) -> list[str]:
    secrets = project._loaded.secrets
    return [f"{a}.{k}" for a in secrets.asset_names() for k in secrets.keys_of(a)]


def _files(project: Any) -> list[str]:
    return [p.relative_to(project.root).as_posix()
            for p in find_files(project.root, skip=(project.state_dir,))]


def form_page(con: Any, request: Request, *, kind: str, name: str | None,
              values: Mapping[str, Any], problems: list | None = None, file: str = "",
              digest: str = "", conflict: str = "", extra: str = "") -> str:
    """HTML body of the form of ``kind`` (``name`` None: a new asset); ``extra`` (HTML)
    goes above the form (the rename preview)."""
    project = con.workspace.project
    raw = project.entry(kind, name).doc.data if name is not None else {}
    sections = _SPECS[kind].sections(raw)
    by_field: dict[str, list[str]] = {}
    general, warnings = [], []
    keys = {f.key for f in forms.fields_of(sections)} | {"file"}
    for p in problems or []:
        key = p.field or ""
        while key and key not in keys:
            key = key.rpartition(".")[0]
        if p.severity == "error" and key:
            by_field.setdefault(key, []).append(str(p))
        elif p.severity == "error":
            general.append(str(p))
        else:
            warnings.append(str(p))
    usage = ""
    if name is not None:
        try:
            usage = console.usage_box(project, project.entry(kind, name))
        except ConfigError:
            pass
    is_new = name is None
    action = f"/new/{quote(kind, safe='')}" if is_new else asset_url(kind, name) + "/edit"

    def port_placeholder(f: forms.Field) -> str:
        key = f"{values.get(f.ports[0], '')}+{values.get(f.ports[1], '')}"
        return str(forms.PORTS_JSON.get(key, ""))

    return render("form.html", kind=kind, name=name, is_new=is_new, sections=sections,
                  values=values, problems=by_field, general=general, warnings=warnings,
                  resolved=_resolved(project, sections, values), usage=usage,
                  action=action, csrf=con.context(request)["csrf"], digest=digest,
                  file=file, files=_files(project), secret_keys=_secret_keys(project),
                  ports=forms.PORTS_JSON, port_placeholder=port_placeholder,
                  conflict=conflict, reload_url=action, extra=extra,
                  asset_names={k: [e.name for e in project.entries(k)]
                               for k in ("EmailConnection", "EmailSource", "EmailService")},
                  cancel_url="/" if is_new else asset_url(kind, name))


def _target(root: Path, shown: str) -> Path:
    """The file a new asset goes to. Raises ConfigError naming what is wrong with it."""
    rel = Path(shown)
    if not shown or rel.is_absolute() or ".." in rel.parts or \
            any(part.startswith(".") for part in rel.parts):
        raise ConfigError(f"file '{shown}': give a path inside the project directory, "
                          "e.g. connections.yaml")
    if not shown.endswith(YAML_SUFFIXES):
        raise ConfigError(f"file '{shown}': must end in .yaml or .yml")
    return root / rel


def _doc_data(path: Path, text: str, kind: str, name: str) -> dict:
    docs, _ = read_documents(path, str(path), text=text)
    for d in docs:
        if isinstance(d.data, dict) and d.data.get("kind") == kind and \
                str(d.data.get("name")) == name:
            return d.data
    return {}


# one save at a time: the check that a file did not change and its writing go together
_WRITING = threading.Lock()


def save(con: Any, request: Request, kind: str, name: str | None,
         form: Mapping[str, list[str]]) -> tuple[str | None, str]:
    """Validate and write the posted form. Returns (URL to go to, '') when saved, else
    (None, the form page again with the problems beside their fields). Raises
    PostlineError when the asset left its file or a value cannot be sealed."""
    with _WRITING:
        return _save(con, request, kind, name, form)


def _save(con: Any, request: Request, kind: str, name: str | None,
          form: Mapping[str, list[str]]) -> tuple[str | None, str]:
    from postline.assets.problems import Problem

    project = con.workspace.project
    spec = _SPECS[kind]
    sections = spec.sections(project.entry(kind, name).doc.data if name is not None else {})

    def to_change(form: Mapping[str, list[str]], raw: Mapping[str, Any]) -> dict:
        return spec.change(form, raw, project)
    posted = {k: v[0] for k, v in form.items() if v}
    values = {f.key: (f.key in form) if f.widget == "checkbox" else posted.get(f.key, "")
              for f in forms.fields_of(sections) if f.widget != "password"}
    if name is None:
        shown = posted.get("file", "").strip() or f"{kind}.yaml"
        again = dict(file=shown)
        try:
            path = _target(project.root, shown)
        except ConfigError as exc:
            return None, form_page(con, request, kind=kind, name=None, values=values,
                                   problems=[Problem(shown, 1, exc.message, None, "file")],
                                   **again)
        raw: dict = {}
        new_name = posted.get("name", "").strip()
        if any(e.name == new_name for e in project.entries(kind)):
            old = project.entry(kind, new_name)
            return None, form_page(con, request, kind=kind, name=None, values=values,
                                   problems=[Problem(shown, 1, f"duplicate name: {kind}/"
                                             f"{new_name} is also defined at {old.location}",
                                             f"{kind}/{new_name}", "name")], **again)
        text = path.read_text(encoding="utf-8") if path.exists() else None
        change = to_change(form, raw)
        new_text = writer.appended_text(text, change)
    else:
        entry = project.entry(kind, name)
        path = entry.doc.path
        again = dict(file=entry.doc.file, digest=posted.get("digest", ""))
        if writer.digest(path) != posted.get("digest"):
            return None, form_page(con, request, kind=kind, name=name, values=values,
                                   conflict=f"{entry.doc.file} changed on disk since this "
                                   "form was opened.", **again)
        text = path.read_text(encoding="utf-8")
        raw = entry.doc.data
        change = to_change(form, raw)
        new_text = writer.edited_text(text, kind=kind, name=name, change=change)
    texts = {path: new_text}
    refs: list = []
    if name is not None and change.get("name") != name:
        try:
            refs = rename.references_to(project, kind, name)
        except ConfigError as exc:
            return None, form_page(con, request, kind=kind, name=name, values=values,
                                   problems=[Problem(entry.doc.file, entry.doc.line, str(exc),
                                                     entry.label, "name")], **again)
        if not posted.get("confirm_rename"):
            return None, form_page(con, request, kind=kind, name=name, values=values, extra=
                                   rename.preview(refs, kind, name, change["name"]), **again)
        texts = rename.renamed_texts(project, refs, change["name"], texts)
    label = f"{kind}/{change['name']}"
    checked = con.workspace.check(texts)
    shown_file = next((p.file for p in checked.problems if p.asset == label), "")
    users = {f"{r.source_kind}/{r.source}" for r in refs}
    mine = [p for p in checked.problems if p.asset == label or
            (p.asset in users and p.severity == "error") or
            (p.asset is None and p.severity == "error" and p.file == shown_file)]
    if any(p.severity == "error" for p in mine) or not any(
            e.kind == kind and e.name == change["name"] for e in checked.entries()):
        return None, form_page(con, request, kind=kind, name=name, values=values,
                               problems=mine or [Problem(str(path), 1, "the asset could "
                                                 "not be read back", label)], **again)
    rename.write_all(texts)
    new_raw = _doc_data(path, texts[path], kind, change["name"])
    action = "create" if name is None else "edit" if not refs and change["name"] == name \
        else f"rename from {name}"
    con.audit.record(client=client_of(request.scope), action=action, asset=label,
                     file=path.relative_to(project.root).as_posix(),
                     changed=audit.changes(raw, new_raw, all_secret=kind == "Secret"),
                     detail=f"{len(refs)} reference(s) updated" if refs else "")
    return asset_url(kind, change["name"]) + "?saved=1", ""


def delete_asset(con: Any, request: Request, kind: str, name: str) -> str:
    """Remove ``kind/name`` from its file; returns what was done. Raises ConfigError when
    it is still used (naming every user) or its file changed."""
    with _WRITING:
        return _delete(con, request, kind, name)


def _delete(con: Any, request: Request, kind: str, name: str) -> str:
    project = con.workspace.project
    entry = project.entry(kind, name)
    users = list(dict.fromkeys(r.source_label for r in project.usage(name, kind)))
    if users:
        raise ConfigError(f"{entry.label} is used by {', '.join(users)}; change or delete "
                          "those first (nothing was deleted)")
    path = entry.doc.path
    new_text = writer.removed_text(path.read_text(encoding="utf-8"), kind=kind, name=name)
    if new_text.strip():
        writer.replace_file(path, new_text)
    else:   # its last asset: the file goes (an empty file would be a project problem)
        path.unlink()
    con.audit.record(client=client_of(request.scope), action="delete", asset=entry.label,
                     file=path.relative_to(project.root).as_posix(),
                     changed=audit.changes(entry.doc.data, None, all_secret=kind == "Secret"))
    return f"deleted {entry.label} from {entry.doc.file}"


def add_routes(app: FastAPI, con: Any) -> None:
    """``/new/{kind}`` and ``/assets/{kind}/{name}/edit``, GET (the form) and POST (save)."""

    async def new_form(request: Request, kind: str) -> Response:
        if not con.authed(request):
            return RedirectResponse("/login?next=" + quote(request.url.path), 303)
        if con.read_only:
            return con.refused(request, "this console is read-only (postline serve "
                               "--read-only)")
        if kind not in _SPECS:
            return con.page(request, "Not found", console.not_found_page(request.url.path),
                            status=404)
        body = await run_in_threadpool(form_page, con, request, kind=kind, name=None,
                                       values=dict(_SPECS[kind].defaults),
                                       file=f"{kind}.yaml")
        return con.page(request, f"New {kind}", body)

    async def edit_form(request: Request, kind: str, name: str) -> Response:
        if not con.authed(request):
            return RedirectResponse("/login?next=" + quote(request.url.path), 303)
        if con.read_only:
            return con.refused(request, "this console is read-only (postline serve "
                               "--read-only)")
        if kind not in _SPECS:
            return con.page(request, "Not found", console.not_found_page(request.url.path),
                            status=404)
        try:
            entry = con.workspace.project.entry(kind, name)
        except ConfigError as exc:
            return con.page(request, "Not found", f"<h1>Not found</h1><p class='err'>"
                            f"{console.escape(str(exc))}</p>", status=404)
        values = forms.values_of(entry.doc.data, _SPECS[kind].sections(entry.doc.data))
        body = await run_in_threadpool(form_page, con, request, kind=kind, name=name,
                                       values=values, file=entry.doc.file,
                                       digest=writer.digest(entry.doc.path),
                                       problems=[p for p in con.workspace.project.problems
                                                 if p.asset == entry.label])
        return con.page(request, f"Edit {kind} {name}", body)

    async def post(request: Request, kind: str, name: str | None = None) -> Response:
        form, refusal = await con.form(request)
        if refusal is not None:
            return refusal
        if kind not in _SPECS:
            return con.page(request, "Not found", console.not_found_page(request.url.path),
                            status=404)
        try:
            url, body = await run_in_threadpool(save, con, request, kind, name, form)
        except PostlineError as exc:   # the file moved away, no key to seal with, ...
            return con.page(request, "Not saved", f"<h1>Not saved</h1><p class='err'>"
                            f"{console.escape(str(exc))}</p><p><a href='{request.url.path}'>"
                            "Reload the form</a></p>", status=409)
        if url is not None:
            return RedirectResponse(url, 303)
        return con.page(request, f"{kind}", body, status=422)

    async def post_new(request: Request, kind: str) -> Response:
        return await post(request, kind)

    async def post_edit(request: Request, kind: str, name: str) -> Response:
        return await post(request, kind, name)

    async def delete(request: Request, kind: str, name: str) -> Response:
        form, refusal = await con.form(request)
        if refusal is not None:
            return refusal
        try:
            said = await run_in_threadpool(delete_asset, con, request, kind, name)
        except ConfigError as exc:
            return con.page(request, "Not deleted", f"<h1>Not deleted</h1><p class='err' "
                            f"role='alert'>{console.escape(str(exc))}</p><p>"
                            f"{console._link(kind, name, text='Back to ' + name)}</p>",
                            status=409)
        return RedirectResponse("/?done=" + quote(said, safe=""), 303)

    async def resolved(request: Request, value: str = "") -> Response:
        if not con.authed(request):
            return Response("log in again", status_code=401)
        if con.read_only:   # no forms there: nothing to preview, no environment to probe
            return Response("", status_code=403)
        text = resolve(con.workspace.project, value[:2000]) if has_macros(value) else ""
        return Response(f"= {text}" if text and not text.startswith("cannot") else text,
                        media_type="text/plain; charset=utf-8",
                        headers={"Cache-Control": "no-store"})

    app.add_api_route("/resolve", resolved, methods=["GET"], include_in_schema=False)
    app.add_api_route("/assets/{kind}/{name}/delete", delete, methods=["POST"],
                      include_in_schema=False)
    app.add_api_route("/new/{kind}", new_form, methods=["GET"], include_in_schema=False)
    app.add_api_route("/new/{kind}", post_new, methods=["POST"], include_in_schema=False)
    app.add_api_route("/assets/{kind}/{name}/edit", edit_form, methods=["GET"],
                      include_in_schema=False)
    app.add_api_route("/assets/{kind}/{name}/edit", post_edit, methods=["POST"],
                      include_in_schema=False)
