"""The console's page templates: Jinja2 from ``postline/web/templates`` with autoescape on,
and the one script of the console, ``/static/console.js``, both shipped in the package (no
build step, no CDN: the console runs on closed networks)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from postline.version import __version__

# inline styles (one <style> per page), scripts only from this server, forms only to it
CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
           "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin"}


@cache
def environment() -> Environment:
    """The template environment (autoescape for .html, undefined names fail loudly)."""
    from jinja2 import StrictUndefined

    return Environment(loader=PackageLoader("postline.web", "templates"),
                       autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True)


def render(template: str, **context: Any) -> str:
    """``template`` rendered with ``context`` (plus ``version``)."""
    return environment().get_template(template).render(version=__version__, **context)


def page(template: str, *, status: int = 200, headers: dict[str, str] | None = None,
         **context: Any) -> HTMLResponse:
    """An HTML response of ``template`` with the console's security headers."""
    context.setdefault("logged_in", True)
    context.setdefault("read_only", False)
    context.setdefault("csrf", "")
    return HTMLResponse(render(template, **context), status_code=status,
                        headers={**HEADERS, **(headers or {})})


@cache
def script() -> bytes:
    """The console's JavaScript."""
    return files("postline.web").joinpath("static/console.js").read_bytes()


def script_response() -> Response:
    """``/static/console.js``: served by postline itself, cacheable for an hour."""
    return Response(script(), media_type="text/javascript",
                    headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"})
