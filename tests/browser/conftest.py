"""Fixtures of the console's browser tests: Debian's chromium driven by Playwright.

- ``browser`` (module): one headless chromium (``/usr/bin/chromium``, installed by
  scripts/bootstrap.sh; never ``playwright install``) with a fresh profile directory.
- ``console`` (function): ``postline serve`` started as a subprocess on a copy of a project
  on a random free port -> :class:`Console` (its URL, project directory, token, log).
  Tests pick the project with ``@pytest.mark.project("examples/local")`` (the default) or a
  ``console_project`` fixture (a directory the test wrote; ``console_env``: its environment, ``console_args``: more
  arguments of serve), extra environment with
  ``@pytest.mark.serve_env(...)``, extra arguments with ``@pytest.mark.serve_args(...)``.
  A test that uses ``mail_stack`` / ``mailbox_user`` gets the stack's POSTLINE_STACK_*
  variables, and the demo project's user is its fresh ``mailbox_user``.
- ``page`` (function): a new tab already logged in to ``console``.
- ``browser_helpers.shot(page, name)``: a full-page screenshot kept as a test artifact in
  ``$POSTLINE_ARTIFACTS`` (default ``tests/artifacts/``, ignored by git).

The browser is skipped (failed with CI=true) only when chromium or playwright is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser_helpers import ARGS, CHROMIUM, POSTLINE, REPO, TOKEN, free_port


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "project(path): the project the console serves")
    config.addinivalue_line("markers", "serve_env(**env): extra environment of the server")
    config.addinivalue_line("markers", "serve_args(*args): extra arguments of postline serve")


def _unavailable(why: str) -> None:
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"browser tests cannot run in CI: {why}", pytrace=False)
    pytest.skip(why)






# Module scope, not session: Playwright's sync API keeps an event loop running in the main
# thread while it is open, and every later test that calls asyncio.run() there would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[test]')")
    if not os.path.exists(CHROMIUM):
        _unavailable(f"{CHROMIUM} is missing (scripts/bootstrap.sh installs Debian's chromium)")
    profile = tempfile.mkdtemp(prefix="postline-chromium-")
    with sync_playwright() as pw:
        # a persistent context is how Playwright takes a --user-data-dir: a fresh one here
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1100, "height": 900}, locale="en-US")
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)




@dataclass
class Console:
    url: str
    project: Path
    token: str
    log: Path
    state_dir: Path
    env: dict[str, str]

    def postline(self, *args: str, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess:
        """Run the postline CLI (as a user would, in a subprocess) and capture its output."""
        return subprocess.run([POSTLINE, *args], text=True,
                              capture_output=True, timeout=120,
                              env={**os.environ, **(env or {})})


def _wait_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"postline serve exited with {proc.returncode}:\n"
                               f"{log.read_text()}")
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)   # polling for a condition (the port answering), not a fixed wait
    raise RuntimeError(f"postline serve did not answer within 60 s:\n{log.read_text()}")




def _optional(request: pytest.FixtureRequest, name: str, default):
    """The value of fixture ``name`` when the test module defines it, else ``default``."""
    try:
        return request.getfixturevalue(name)
    except pytest.FixtureLookupError:
        return default


def _stack_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The dev stack's POSTLINE_STACK_* variables when the test uses the stack, with the
    demo project's user set to the test's fresh ``mailbox_user``."""
    if "mail_stack" not in request.fixturenames and "mailbox_user" not in request.fixturenames:
        return {}
    from postline.cli.stack_cmds import env_vars

    env = env_vars(request.getfixturevalue("mail_stack"))
    env.pop("POSTLINE_KEY_FILE", None)
    if "mailbox_user" in request.fixturenames:
        user = request.getfixturevalue("mailbox_user")
        env.update(DEMO_USER=user.email, POSTLINE_DEMO_PASSWORD=user.password)
    return env


@pytest.fixture
def console(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Console]:
    marker = request.node.get_closest_marker("project")
    source = REPO / (marker.args[0] if marker else "examples/local")
    source = _optional(request, "console_project", source)   # one the test module writes
    project = tmp_path / "project"
    shutil.copytree(source, project, ignore=shutil.ignore_patterns(".postline-state"))
    env_marker = request.node.get_closest_marker("serve_env")
    args_marker = request.node.get_closest_marker("serve_args")
    port = free_port()
    state = tmp_path / "state"
    env = {**os.environ, "POSTLINE_API_TOKEN": TOKEN, "POSTLINE_STATE_DIR": str(state),
           "POSTLINE_DEMO_PASSWORD": os.environ.get("POSTLINE_DEMO_PASSWORD", "unused"),
           **_stack_env(request), **(env_marker.kwargs if env_marker else {}),
           **_optional(request, "console_env", {})}
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([POSTLINE, "serve", project.name,
                                 "--port", str(port), *(args_marker.args if args_marker
                                                        else ()),
                                 *_optional(request, "console_args", [])],
                                # as a person types it: paths on the pages read project/...
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, proc, log)
        yield Console(url=url, project=project, token=TOKEN, log=log, state_dir=state, env=env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def page(browser, console: Console):
    """A tab logged in to ``console`` (through the login form, as a person would)."""
    tab = browser.new_page()
    browser.clear_cookies()
    tab.on("dialog", lambda dialog: dialog.accept())   # the confirmations of state changes
    tab.goto(console.url + "/")
    tab.get_by_label("API token (POSTLINE_API_TOKEN)").fill(console.token)
    tab.get_by_role("button", name="Log in").click()
    tab.wait_for_url(console.url + "/")
    try:
        yield tab
    finally:
        tab.close()
