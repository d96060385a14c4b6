""""Sign in" on a connection page: the device flow of ``postline login`` from the console.

``POST .../signin`` starts the flow in a background thread and shows the page once the
authority gave a code: the link, the code and a QR code of the link (segno, inline SVG).
The page asks ``.../signin/live`` every two seconds until the person approved (or the code
expired): then it shows the account and when the token expires. The token cache is sealed
in the state directory, exactly as ``postline login`` leaves it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from postline.errors import ConfigError, PostlineError
from postline.web.pages import render

WAIT_FOR_CODE = 30.0   # seconds the POST waits for the authority's first answer


@dataclass
class SignIn:
    """One running (or finished) device flow of a connection."""

    connection: str
    directions: list[str]
    flow: dict | None = None
    direction: str = ""
    signed_in: list[dict[str, str]] = field(default_factory=list)
    error: str = ""
    done: bool = False
    started: float = field(default_factory=time.time)
    _shown: threading.Event = field(default_factory=threading.Event, repr=False)

    def qr_svg(self) -> str:
        """The link as a QR code (inline SVG), or '' without a flow."""
        import io

        import segno

        if not self.flow:
            return ""
        out = io.BytesIO()
        segno.make(self.url(), error="m").save(out, kind="svg", scale=4, xmldecl=False,
                                               svgns=True, title="QR code of the link")
        return out.getvalue().decode()

    def url(self) -> str:
        """The verification link, only when it is an http(s) URL (it comes from the
        authority and becomes a link on the page: never a javascript: one)."""
        flow = self.flow or {}
        url = str(flow.get("verification_uri_complete") or flow.get("verification_uri") or "")
        return url if url.lower().startswith(("https://", "http://")) else ""


def _device_directions(conn: Any) -> list[str]:
    if conn.type == "microsoft365":
        return ["microsoft365"] if conn.microsoft365.credential.type == \
            "oauth_device_flow" else []
    return [d for d in ("incoming", "outgoing") if conn.endpoint(d)
            and conn.endpoint(d).credential.type == "oauth_device_flow"]


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "unknown"


def _run(project: Any, conn: Any, state: SignIn) -> None:
    from postline.auth import oauth
    from postline.protocols import endpoint_of
    from postline.state import token_cache

    def show(direction: str):
        def shown(flow: dict) -> None:
            state.flow, state.direction = flow, direction
            state._shown.set()
        return shown

    try:
        if conn.type == "microsoft365":
            from postline.protocols.graph_login import login

            account, _ = login(project, conn, show("microsoft365"))
            state.signed_in.append({"direction": "microsoft365", "account": account,
                                    "expires": "when Microsoft says (about an hour)"})
            return
        done: dict[tuple, Any] = {}
        for direction in state.directions:
            ep = endpoint_of(conn, direction)
            cred = ep.credential
            path = token_cache.cache_path(project.state_dir, conn.name, direction)
            same = (cred.authority, cred.client_id, tuple(cred.scopes), ep.ca_file)
            if same in done:   # one approval serves both directions when they ask the same
                token_cache.save(project, path, token_cache.load(project, done[same][0]) or "")
                state.signed_in.append({**done[same][1], "direction": direction})
                continue
            oauth.forget_providers()
            provider = oauth.DeviceFlowProvider(
                source=project, connection=conn.name, direction=direction,
                authority=cred.authority, client_id=cred.client_id, scopes=list(cred.scopes),
                ca_file=ep.ca_file, verify=ep.verify_identity, timeout=ep.connect_timeout)
            account = provider.login(show(direction))
            row = {"direction": direction, "account": account,
                   "expires": _when(getattr(provider, "_expires", None))}
            state.signed_in.append(row)
            done[same] = (path, row)
    except PostlineError as exc:
        state.error = str(exc)
    except Exception as exc:   # noqa: BLE001 - the page must say it ended
        state.error = f"the sign-in stopped on {type(exc).__name__}: {exc}"
    finally:
        state.done = True
        state._shown.set()


class SignIns:
    """The sign-ins of one ``serve``, by connection name (one at a time per connection)."""

    def __init__(self) -> None:
        self._by_name: dict[str, SignIn] = {}
        self._lock = threading.Lock()

    def start(self, project: Any, name: str) -> SignIn:
        """Start (or join the running) device flow of connection ``name`` and wait until
        the authority gave a code or refused. Raises ConfigError when the connection has
        no device-flow credential or is invalid."""
        conn = project.get("EmailConnection", name)
        directions = _device_directions(conn)
        if not directions:
            raise ConfigError(f"connection {name!r} uses no oauth_device_flow credential",
                              hint="only device-flow credentials need signing in")
        if project._loaded.secrets.public_key is None:
            raise ConfigError(f"signing in stores the token sealed to the project's key, and "
                              f"{project.root} has none (postline.pub)",
                              hint=f"run 'postline keys create {project.root}' first")
        with self._lock:
            state = self._by_name.get(name)
            if state is None or state.done:
                state = SignIn(connection=name, directions=directions)
                self._by_name[name] = state
                threading.Thread(target=_run, args=(project, conn, state), daemon=True,
                                 name=f"signin-{name}").start()
        state._shown.wait(WAIT_FOR_CODE)
        return state

    def get(self, name: str) -> SignIn | None:
        return self._by_name.get(name)


def page(state: SignIn | None, name: str) -> str:
    """HTML body of the sign-in page of connection ``name``."""
    return render("signin.html", name=name, live=live(state))


def live(state: SignIn | None) -> str:
    """The part of the sign-in page that changes while waiting (HTML)."""
    return render("signin_live.html", s=state, qr=state.qr_svg() if state and
                  not state.done else "")
