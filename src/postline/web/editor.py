"""Creating and editing assets from the console's forms (see :mod:`postline.web.forms`).

Saving: the posted form becomes a change of the asset's YAML; the project is validated as
it would be with that change (:meth:`postline.project.Project.reload` with the new text),
and only when the asset has no error left is the file written (atomically), the change
recorded in the audit log, and the asset's page shown. A file that changed on disk since
the form was opened is not overwritten: the page says so and offers to reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from postline.assets import writer
from postline.assets.macros import expand_tracked, has_macros
from postline.assets.yamlfiles import YAML_SUFFIXES, find_files, read_documents
from postline.errors import ConfigError, SecretError
from postline.logs import MASK
from postline.web import audit, console, forms
from postline.web.guard import client_of
from postline.web.pages import render

FORM_KINDS = ("EmailConnection",)
_SPECS = {"EmailConnection": (forms.CONNECTION, forms.connection_change, forms.NEW_CONNECTION)}


def asset_url(kind: str, name: str) -> str:
    return f"/assets/{quote(kind, safe='')}/{quote(name, safe='')}"


def _resolved(project: Any, sections: tuple, values: Mapping[str, Any]) -> dict[str, str]:
    """Field -> what its macros expand to now (a secret's value as ``***``)."""
    ctx = project._loaded.context(strict=False)
    out: dict[str, str] = {}
    for f in forms.fields_of(sections):
        value = values.get(f.key)
        if not f.macro or not isinstance(value, str) or not has_macros(value):
            continue
        try:
            exp = expand_tracked(value, ctx)
            out[f.key] = MASK if exp.sensitive else exp.text
        except SecretError:
            out[f.key] = MASK
        except ConfigError as exc:
            out[f.key] = f"cannot expand: {exc.message}"
    return out


def _secret_keys(project: Any) -> list[str]:
    secrets = project._loaded.secrets
    return [f"{a}.{k}" for a in secrets.asset_names() for k in secrets.keys_of(a)]


def _files(project: Any) -> list[str]:
    return [p.relative_to(project.root).as_posix()
            for p in find_files(project.root, skip=(project.state_dir,))]


def form_page(con: Any, request: Request, *, kind: str, name: str | None,
              values: Mapping[str, Any], problems: list | None = None, file: str = "",
              digest: str = "", conflict: str = "") -> str:
    """HTML body of the form of ``kind`` (``name`` None: a new asset)."""
    project = con.workspace.project
    sections, _, _ = _SPECS[kind]
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
                  conflict=conflict, reload_url=action if not is_new else action,
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


def save(con: Any, request: Request, kind: str, name: str | None,
         form: Mapping[str, list[str]]) -> tuple[str | None, str]:
    """Validate and write the posted form. Returns (URL to go to, '') when saved, else
    (None, the form page again with the problems beside their fields)."""
    from postline.assets.problems import Problem

    project = con.workspace.project
    sections, to_change, _ = _SPECS[kind]
    posted = {k: v[0] for k, v in form.items() if v}
    values = {f.key: (f.key in form) if f.widget == "checkbox" else posted.get(f.key, "")
              for f in forms.fields_of(sections)}
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
        if change.get("name") != name:
            return None, form_page(con, request, kind=kind, name=name, values=values,
                                   problems=[Problem(entry.doc.file, entry.doc.line,
                                             "renaming is not done from this form; keep the "
                                             f"name {name}", entry.label, "name")], **again)
        new_text = writer.edited_text(text, kind=kind, name=name, change=change)
    label = f"{kind}/{change['name']}"
    checked = con.workspace.check({path: new_text})
    shown_file = next((p.file for p in checked.problems if p.asset == label), "")
    mine = [p for p in checked.problems if p.asset == label or
            (p.asset is None and p.severity == "error" and p.file == shown_file)]
    if any(p.severity == "error" for p in mine) or not any(
            e.kind == kind and e.name == change["name"] for e in checked.entries()):
        return None, form_page(con, request, kind=kind, name=name, values=values,
                               problems=mine or [Problem(str(path), 1, "the asset could "
                                                 "not be read back", label)], **again)
    writer.replace_file(path, new_text)
    new_raw = _doc_data(path, new_text, kind, change["name"])
    con.audit.record(client=client_of(request.scope), action="create" if name is None
                     else "edit", asset=label,
                     file=path.relative_to(project.root).as_posix(),
                     changed=audit.changes(raw, new_raw, all_secret=kind == "Secret"))
    return asset_url(kind, change["name"]) + "?saved=1", ""


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
                                       values=dict(_SPECS[kind][2]), file=f"{kind}.yaml")
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
        values = forms.values_of(entry.doc.data, _SPECS[kind][0])
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
        except ConfigError as exc:
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

    app.add_api_route("/new/{kind}", new_form, methods=["GET"], include_in_schema=False)
    app.add_api_route("/new/{kind}", post_new, methods=["POST"], include_in_schema=False)
    app.add_api_route("/assets/{kind}/{name}/edit", edit_form, methods=["GET"],
                      include_in_schema=False)
    app.add_api_route("/assets/{kind}/{name}/edit", post_edit, methods=["POST"],
                      include_in_schema=False)
